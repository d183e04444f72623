//! Raft snapshots in the driver. A leader's snapshot of a partition is made by raft-rs
//! through the group's storage (`log::snapshot::describe`) and leaves through the
//! transport, which streams it and reports back here. A follower's arrives whole on its
//! disk (the cluster service received it) and is stepped into its group; the Ready that
//! restores it hands the files to the log writer, which ingests them ahead of everything
//! staged after, and once that write is reported the partition's state machine is loaded
//! again from what was installed.

use raft::eraftpb::Message;
use raft::SnapshotStatus;

use super::Driver;
use crate::log::snapshot::Received;
use crate::log::PartitionMachine;
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
        if g.partition.is_none() || g.restoring.is_some() {
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
    /// loads the partition's state from disk and lets raft-rs apply from there.
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
        }
        g.applied = index;
        g.node.advance_apply_to(index);
    }
}
