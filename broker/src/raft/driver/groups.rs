//! Opening and closing the driver's groups: the partitions of a topic this node
//! replicates, a replica moved onto it, one moved away (deleted behind its pending
//! writes), and the wait that keeps a re-opened group from loading a half-deleted one.

use std::sync::mpsc;
use std::sync::Arc;

use raft::RawNode;
use rocksdb::WriteBatch;

use super::{Driver, PREFERRED_CAMPAIGN_TICKS};
use crate::log::{PartitionMachine, PartitionShared};
use crate::metadata::{TopicRecord, TopicView};
use crate::raft::group::Group;
use crate::raft::writer::PersistJob;
use crate::raft::ProposeError;
use crate::storage::{self, GroupStorage};

impl Driver {
    /// Starts hosting a partition this node was just made a target voter of. The group
    /// starts with the partition's *initial* voters, as its log does (later membership
    /// changes are entries in that log); the leader adds this node as a learner and sends
    /// it the log from the start.
    pub(super) fn open_new_replica(&mut self, gid: u64) -> anyhow::Result<()> {
        let Some((record, index)) = self
            .meta
            .topics
            .values()
            .find_map(|r| Some((r, r.groups.iter().position(|g| *g == gid)?)))
        else {
            return Ok(());
        };
        let initial = record
            .replicas_of(index)
            .map(<[u64]>::to_vec)
            .unwrap_or_else(|| vec![self.cfg.node_id]);
        let Some(shared) = self.catalog.partitions_by_group().remove(&gid) else {
            return Ok(());
        };
        // Moved away and straight back (a placement that changed its mind): start empty,
        // as any new replica does, not from the half-deleted old one.
        self.await_destroyed(gid);
        let machine = PartitionMachine::load(&self.db, shared)?;
        tracing::info!(group = gid, "hosting a new replica");
        self.open_group_with(gid, Some(machine), &initial, &[], false)
    }

    /// Forgets a replica that its group no longer counts as a voter (a finished move away
    /// from this node): its log and state are deleted.
    pub(super) fn drop_removed_replica(&mut self, gid: u64) {
        if let Some(g) = self.groups.remove(&gid) {
            if let Some(machine) = &g.partition {
                machine.shared.set_unhosted();
            }
            for (_, p) in g.proposals {
                let _ = p.reply.send(Err(ProposeError::NotLeader));
            }
        }
        let mut wb = WriteBatch::default();
        GroupStorage::stage_destroy(gid, &mut wb);
        if let Err(e) = self.destroy(vec![gid], wb) {
            tracing::error!(group = gid, error = %e, "dropping a removed replica failed");
        }
        tracing::info!(group = gid, "replica moved away; its log is deleted");
    }

    /// Waits until an earlier incarnation of `gid`, if any, is deleted from disk: at most
    /// the writer's current pass (a deletion needs no fsync of its own).
    pub(super) fn await_destroyed(&mut self, gid: u64) {
        if let Some(landed) = self.destroying.remove(&gid) {
            let _ = landed.recv();
        }
    }

    /// Queues the deletion of `groups` (staged in `batch`) behind their pending writes.
    pub(super) fn destroy(&mut self, groups: Vec<u64>, batch: WriteBatch) -> anyhow::Result<()> {
        self.destroying
            .retain(|_, landed| matches!(landed.try_recv(), Err(mpsc::TryRecvError::Empty)));
        let Some(writer) = &self.writer else {
            return self.submit(PersistJob {
                batch,
                remove_files: groups,
                ..Default::default()
            });
        };
        let mut landed = Vec::with_capacity(groups.len());
        for &gid in &groups {
            let (tx, rx) = mpsc::channel();
            landed.push(tx);
            self.destroying.insert(gid, rx);
        }
        let job = PersistJob {
            batch,
            landed,
            remove_files: groups,
            ..Default::default()
        };
        writer
            .send(job)
            .map_err(|_| anyhow::anyhow!("raft log writer stopped"))?;
        Ok(())
    }

    /// Opens the groups of the partitions this node is a replica of; the others get a
    /// view only, kept current by their leaders' reports.
    pub(super) fn open_topic(&mut self, name: &str, record: &TopicRecord) -> anyhow::Result<()> {
        let me = self.cfg.node_id;
        let mut partitions = Vec::with_capacity(record.groups.len());
        for (i, &gid) in record.groups.iter().enumerate() {
            let shared = Arc::new(PartitionShared::new(name.to_string(), i as i32, gid));
            let replicas = record
                .replicas_of(i)
                .map(<[u64]>::to_vec)
                .unwrap_or_else(|| vec![me]);
            let target = self.meta.targets.get(&gid);
            shared.set_assignment(target.unwrap_or(&replicas));
            let hosted = match target {
                // Moved here, or still here until the move away removes it: what the
                // disk holds says which (a finished move away deleted it).
                Some(t) => t.contains(&me) || GroupStorage::exists(&self.db, gid)?,
                None => replicas.contains(&me),
            };
            if hosted {
                self.await_destroyed(gid);
                let machine = PartitionMachine::load(&self.db, shared.clone())?;
                // A replica added by a move catches up from its leader; only the
                // partition's first voters campaign when the group is new.
                let may_campaign = replicas.contains(&me);
                self.open_group_with(gid, Some(machine), &replicas, &[], may_campaign)?;
            } else {
                shared.apply_report(0, 0, &replicas, &[]);
            }
            partitions.push(shared);
        }
        self.catalog.insert_topic(TopicView {
            name: name.to_string(),
            id: record.id,
            configs: record.configs.clone(),
            partitions,
        });
        Ok(())
    }

    /// Loads a group from disk, or creates it with `voters` and `learners` as its initial
    /// members.
    pub(super) fn open_group(
        &mut self,
        gid: u64,
        partition: Option<PartitionMachine>,
        voters: &[u64],
        learners: &[u64],
    ) -> anyhow::Result<()> {
        self.open_group_with(gid, partition, voters, learners, true)
    }

    /// As [`Driver::open_group`]; `may_campaign` is false for a replica added to a running
    /// group, which has everything to catch up on and no business campaigning.
    pub(super) fn open_group_with(
        &mut self,
        gid: u64,
        partition: Option<PartitionMachine>,
        voters: &[u64],
        learners: &[u64],
        may_campaign: bool,
    ) -> anyhow::Result<()> {
        let node_id = self.cfg.node_id;
        self.await_destroyed(gid);
        let (mut storage, created) = match GroupStorage::load(self.db.clone(), gid)? {
            Some(s) => (s, false),
            None => {
                let mut wb = WriteBatch::default();
                let s = GroupStorage::create(
                    self.db.clone(),
                    gid,
                    voters.to_vec(),
                    learners.to_vec(),
                    &mut wb,
                );
                storage::write(&self.db, wb, true)?;
                (s, true)
            }
        };
        let applied = match &partition {
            Some(p) => p.applied_index,
            None => self.meta.applied_index,
        };
        // The commit index is persisted lazily, so it may trail what was already applied
        // (and therefore committed); raise it so raft-rs does not re-deliver those entries.
        if storage.hard_state().commit < applied {
            let mut wb = WriteBatch::default();
            storage.stage_commit(applied, &mut wb);
            storage::write(&self.db, wb, true)?;
        }
        let snapshots: storage::raft_storage::SnapshotSource = match &partition {
            Some(_) => crate::log::snapshot::describe,
            None => crate::metadata::snapshot::describe,
        };
        storage.set_snapshot_source(snapshots);
        if partition.is_some() {
            storage.keep_entries_in_files()?;
        }
        let sole_voter = raft::Storage::initial_state(&storage)?.conf_state.voters == vec![node_id];
        let config = raft::Config {
            id: node_id,
            election_tick: 10,
            heartbeat_tick: 2,
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let mut node = RawNode::new(&config, storage, &self.logger)?;
        // A sole voter cannot lose, and a new group's first replica is its preferred
        // leader (assignments rotate it, spreading leadership): neither waits out an
        // election timeout.
        let preferred =
            may_campaign && created && voters.len() > 1 && voters.first() == Some(&node_id);
        if may_campaign && sole_voter || preferred {
            node.campaign()?;
        }
        self.groups.insert(
            gid,
            Group::new(
                node,
                partition,
                applied,
                if preferred {
                    PREFERRED_CAMPAIGN_TICKS
                } else {
                    0
                },
            ),
        );
        Ok(())
    }
}
