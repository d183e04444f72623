//! Raft snapshots in the driver. A leader's snapshot is made by raft-rs through the
//! group's storage (`log::snapshot::describe` for a partition, `metadata::snapshot::
//! describe` for the metadata group, whose log the driver compacts here) and leaves
//! through the transport, which streams it and reports back here. A follower's arrives
//! whole on its disk (the cluster service received it) and is stepped into its group; the
//! Ready that restores it hands the files to the log writer, which ingests them ahead of
//! everything staged after, and once that write is reported the partition's state machine
//! (or the catalog) is loaded again from what was installed.

use raft::eraftpb::Message;
use raft::SnapshotStatus;
use rocksdb::WriteBatch;

use super::Driver;
use crate::log::snapshot::Received;
use crate::log::PartitionMachine;
use crate::metadata::{MetadataMachine, METADATA_GROUP};
use crate::metrics;

impl Driver {
    /// Steps a received snapshot into its group; keeps its files if raft-rs took it.
    pub(super) fn snapshot_received(
        &mut self,
        gid: u64,
        message: Box<Message>,
        received: Received,
    ) {
        let Some(g) = self.groups.get_mut(&gid) else {
            tracing::warn!(
                group = gid,
                "snapshot for a group this broker does not host: dropped"
            );
            return;
        };
        if g.restoring.is_some() {
            tracing::warn!(
                group = gid,
                "snapshot not taken: the group cannot install one now"
            );
            return;
        }
        let index = received.index;
        if let Err(e) = g.node.step(*message) {
            tracing::warn!(group = gid, error = %e, "snapshot message rejected");
            return;
        }
        let restoring = g
            .node
            .raft
            .raft_log
            .unstable_snapshot()
            .as_ref()
            .is_some_and(|s| s.get_metadata().index == index);
        if restoring {
            metrics::RAFT_SNAPSHOTS_RECEIVED.inc();
            // (A snapshot received earlier and not restored is replaced: its files go.)
            self.received_snapshots.insert(gid, received);
        } else {
            tracing::info!(
                group = gid,
                index,
                "snapshot not needed: the replica has caught up past it"
            );
        }
    }

    /// Tells raft-rs how a snapshot it sent fared: on failure it sends another.
    pub(super) fn snapshot_sent(&mut self, gid: u64, to: u64, delivered: bool) {
        if let Some(g) = self.groups.get_mut(&gid) {
            let status = if delivered {
                SnapshotStatus::Finish
            } else {
                SnapshotStatus::Failure
            };
            g.node.report_snapshot(to, status);
        }
    }

    /// Once the write with Ready `number` landed: if it installed the group's snapshot,
    /// loads the partition's state (or the catalog) from disk and lets raft-rs apply from
    /// there.
    pub(super) fn finish_restore(&mut self, gid: u64, number: u64) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let Some((ready, index)) = g.restoring else {
            return;
        };
        if ready > number {
            return;
        }
        g.restoring = None;
        g.applied = index;
        g.node.advance_apply_to(index);
        if let Some(p) = g.partition.as_mut() {
            p.shared.clear_unflushed();
            match PartitionMachine::load(&self.db, p.shared.clone()) {
                Ok(machine) => *p = machine,
                Err(e) => {
                    // The snapshot is on disk; without reading it nothing can be served.
                    tracing::error!(group = gid, error = %e, "loading an installed snapshot failed; stopping");
                    std::process::exit(70);
                }
            }
            tracing::info!(
                group = gid,
                index,
                log_start = p.shared.log_start(),
                high_watermark = p.shared.high_watermark(),
                "partition restored from a snapshot"
            );
        } else if let Err(e) = self.restore_catalog(index) {
            tracing::error!(error = %e, "loading an installed metadata snapshot failed; stopping");
            std::process::exit(70);
        }
    }

    /// Takes on the catalog a metadata snapshot installed: the machine is loaded again
    /// from disk, and what changed is done as applying the skipped entries would have
    /// done it (topics opened or deleted, replicas moved here, brokers and targets known).
    fn restore_catalog(&mut self, index: u64) -> anyhow::Result<()> {
        let (restored, offsets) = MetadataMachine::load(&self.db)?;
        let changes = self.meta.changes_to(&restored);
        self.meta = restored;
        self.catalog.replace_offsets(offsets);
        self.catalog.replace_targets(self.meta.targets.clone());
        metrics::METADATA_SNAPSHOTS_RESTORED.inc();
        tracing::info!(
            index,
            topics = self.meta.topics.len(),
            brokers = self.meta.brokers.len(),
            changes = changes.len(),
            "metadata restored from a snapshot"
        );
        for change in changes {
            self.apply_effect(change)?;
        }
        Ok(())
    }

    /// Compacts the metadata log behind what this broker applied once it holds more than
    /// `metadata_snapshot_entries` entries beyond [`METADATA_LOG_TAIL`]: members that
    /// need older entries get a snapshot of the catalog instead.
    pub(super) fn compact_metadata_log(&mut self) -> anyhow::Result<()> {
        let every = self.cfg.metadata_snapshot_entries;
        let Some(g) = self.groups.get_mut(&METADATA_GROUP) else {
            return Ok(());
        };
        let first = raft::Storage::first_index(g.node.store())?;
        let upto = self.meta.applied_index.saturating_sub(METADATA_LOG_TAIL);
        if every == 0 || g.restoring.is_some() || upto < first + every {
            return Ok(());
        }
        let mut wb = WriteBatch::default();
        g.node.mut_store().stage_compact(upto, &mut wb)?;
        tracing::info!(compacted_to = upto, "metadata log compacted");
        metrics::METADATA_LOG_COMPACTIONS.inc();
        self.persist(wb, vec![], vec![])
    }
}

/// Entries the metadata log keeps below the applied index when it compacts: a member a
/// little behind (an append on its way, a short restart) catches up from the log, not
/// from a snapshot.
pub const METADATA_LOG_TAIL: u64 = 100;
