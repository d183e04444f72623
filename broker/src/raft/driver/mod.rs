//! The Raft driver: one thread, one loop, every group.
//!
//! Each round drains all queued proposals, ticks the groups when due, then handles the
//! Ready of every group in raft-rs's documented order with two twists borrowed from TiKV's
//! raftstore: the entries and hard states of *all* groups go into one `WriteBatch`
//! (group commit), and that batch is made durable by the log writer thread while the driver
//! goes on (raft-rs's asynchronous Ready: `advance_append_async`, then `on_persist_ready`
//! when the writer reports back). Entries commit only once persisted, so nothing is applied
//! or acknowledged before its fsync. Applied state goes into a second, unsynced batch: it
//! can be rebuilt from the log, so it needs no fsync of its own. Partition entries' bytes
//! travel beside the batch, for their log files (`storage::log_files`), and only pointers
//! go into it. The loop sleeps on its channel between rounds; it never polls.
//!
//! Messages to peers are collected over a round and handed to the [`Transport`] once per
//! destination (batched Raft traffic). Those that raft-rs allows before persisting (a
//! leader's appends) leave at once; the rest (votes, append responses) are held until the
//! writer reports their Ready durable.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raft::eraftpb::{ConfChange, ConfChangeType, Message};
use raft::Ready;
use rocksdb::WriteBatch;

mod failover;
mod groups;
mod retention;
mod snapshots;

use super::fence::Sequenced;
use super::group::{apply_entries, queue_messages, Finish, Group, Proposal, Round};
use super::membership::{replica_removed, retry_preferred_campaign, step_towards_target};
use super::metadata_quorum::{self, Brokers};
use super::view::{keeps_up, publish_raft_view};
use super::writer::{self, PersistJob, WriteHook};
use super::{DriverMsg, Membership, ProposeError, Pulse, RaftHandle, Reply, Transport};
use crate::log::snapshot::{self, Received};
use crate::log::PartitionShared;
use crate::metadata::catalog::LIVENESS_WINDOW;
use crate::metadata::{self, Catalog, MetadataMachine, Outcome, TopicRecord};
use crate::metrics;
use crate::storage::log_files::FILE_MIN_DATA;
use crate::storage::{self, blob_gc::BlobGc, Db, GroupStorage};

#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub node_id: u64,
    /// Voters of the metadata group when this node creates it: every broker of a new
    /// cluster, this one included (or, for a broker joining an existing cluster, the
    /// members it was told about).
    pub voters: Vec<u64>,
    /// Learners of the metadata group when this node creates it (a joining broker).
    pub learners: Vec<u64>,
    pub tick: Duration,
    pub retention_check: Duration,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    /// While its disk is short of space a follower leaves new partition entries
    /// unacknowledged (its leader commits with the other replicas).
    pub disk: Arc<storage::DiskSpace>,
    /// Voters the metadata group keeps; 0 picks 3, or 5 from five brokers on.
    pub metadata_voters: usize,
    /// Applied entries the metadata log gathers (beyond a short tail) before it is
    /// compacted behind a snapshot of the catalog; 0 never compacts.
    pub metadata_snapshot_entries: u64,
}

/// Whether a message is a partition append that would grow a disk short of space (the
/// metadata group's few bytes still pass, so the broker stays a working member).
fn refused_when_full(gid: u64, m: &Message) -> bool {
    gid != metadata::METADATA_GROUP
        && m.msg_type == raft::eraftpb::MessageType::MsgAppend as i32
        && !m.entries.is_empty()
}

/// Whether this node leads the group alone (no other voter, no learner): nothing in such
/// a group runs on a clock (no peer to send heartbeats to or to hear from, no election to
/// time, an in-sync set that is always just this node), so it is not ticked. A single
/// broker's partitions, and a single-replica topic's on any broker, cost nothing while
/// idle; a move that adds a replica sets a target first, and targeted groups are ticked.
fn leads_alone(node: &raft::RawNode<GroupStorage>) -> bool {
    let raft = &node.raft;
    raft.state == raft::StateRole::Leader && raft.prs().iter().len() == 1
}

/// Ticks of a new group during which its preferred leader retries its campaign.
const PREFERRED_CAMPAIGN_TICKS: u8 = 9;

pub struct Driver {
    cfg: DriverConfig,
    db: Db,
    catalog: Arc<Catalog>,
    rx: mpsc::Receiver<DriverMsg>,
    groups: HashMap<u64, Group>,
    meta: MetadataMachine,
    logger: slog::Logger,
    /// `None` while starting up, when Readies are persisted synchronously.
    writer: Option<mpsc::Sender<PersistJob>>,
    transport: Box<dyn Transport>,
    /// Messages to send at the end of this round, by destination node.
    outbox: HashMap<u64, Vec<(u64, Message)>>,
    /// Messages that may leave only once their Ready (group, number) is durable.
    held: HashMap<(u64, u64), Vec<Message>>,
    /// Groups whose deletion is queued in the log writer, with word of its landing: a
    /// group opened again (a replica moved away and straight back) must not load the
    /// old incarnation's state, nor have it deleted from under it.
    destroying: HashMap<u64, mpsc::Receiver<()>>,
    /// Snapshots received whole and stepped into their groups, waiting for the Ready
    /// that installs them.
    received_snapshots: HashMap<u64, Received>,
    /// Blob GC, checked with every retention pass.
    blob_gc: BlobGc,
    pulse: Arc<Pulse>,
}

impl Driver {
    /// Loads every group, replays committed entries, and starts the driver thread.
    pub fn start(
        cfg: DriverConfig,
        db: Db,
        catalog: Arc<Catalog>,
        transport: Box<dyn Transport>,
    ) -> anyhow::Result<(RaftHandle, JoinHandle<()>)> {
        Self::start_with(cfg, db, catalog, transport, None)
    }

    /// As [`Driver::start`], with a hook the log writer runs before each of its passes.
    pub fn start_with(
        cfg: DriverConfig,
        db: Db,
        catalog: Arc<Catalog>,
        transport: Box<dyn Transport>,
        write_hook: Option<WriteHook>,
    ) -> anyhow::Result<(RaftHandle, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel();
        let pulse = Arc::new(Pulse::new());
        // A transfer cut short by the last stop left files no one will install.
        snapshot::clear_incoming(&db);
        let (meta, offsets) = MetadataMachine::load(&db)?;
        for (group, o) in offsets {
            catalog.set_offset(&group, o);
        }
        for b in meta.brokers.values() {
            catalog.set_broker(b.clone());
        }
        if let Some(id) = &meta.cluster_id {
            catalog.set_cluster_id(id.clone());
        }
        catalog.set_targets(meta.targets.clone());
        catalog.set_leaving(meta.leaving.iter().copied());
        let mut driver = Driver {
            cfg,
            db,
            catalog,
            rx,
            groups: HashMap::new(),
            meta,
            logger: super::logger::root(),
            writer: None,
            transport,
            outbox: HashMap::new(),
            held: HashMap::new(),
            destroying: HashMap::new(),
            received_snapshots: HashMap::new(),
            blob_gc: BlobGc::default(),
            pulse: pulse.clone(),
        };
        let (voters, learners) = (driver.cfg.voters.clone(), driver.cfg.learners.clone());
        driver.open_group(metadata::METADATA_GROUP, None, &voters, &learners)?;
        let topics: Vec<(String, TopicRecord)> = driver
            .meta
            .topics
            .iter()
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        for (name, record) in topics {
            driver.open_topic(&name, &record)?;
        }
        // Replay what was committed but not yet applied before the last shutdown.
        while driver.handle_readies(None)? {}
        driver.flush_outbox();
        let (writer_tx, writer_thread) = writer::start(driver.db.clone(), tx.clone(), write_hook)?;
        driver.writer = Some(writer_tx);
        tracing::info!(
            groups = driver.groups.len(),
            topics = driver.meta.topics.len(),
            "raft driver ready"
        );
        let thread = std::thread::Builder::new()
            .name("raft-driver".into())
            .spawn(move || {
                driver.run();
                let _ = writer_thread.join();
            })?;
        Ok((RaftHandle { tx, pulse }, thread))
    }

    fn run(mut self) {
        let mut next_tick = Instant::now() + self.cfg.tick;
        let mut next_retention = Instant::now() + self.cfg.retention_check;
        loop {
            self.pulse.beat();
            fail::fail_point!("raft-driver");
            let wait = next_tick.saturating_duration_since(Instant::now());
            // Which groups may have a Ready this round: after any message, any group;
            // after a tick alone, only the groups ticked (an idle broker's groups that
            // lead alone are neither ticked nor looked at).
            let mut ticked: Vec<u64> = Vec::new();
            let mut messaged = false;
            match self.rx.recv_timeout(wait) {
                Ok(msg) => {
                    messaged = true;
                    if !self.handle_msg(msg) {
                        break;
                    }
                    // Take everything already queued: these proposals share the next fsync.
                    while let Ok(msg) = self.rx.try_recv() {
                        if !self.handle_msg(msg) {
                            return self.stop();
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            if now >= next_tick {
                let me = self.cfg.node_id;
                let mut removed = Vec::new();
                // (The metadata group's quorum keeping below may propose in it.)
                let mut ticked_now = vec![metadata::METADATA_GROUP];
                for (gid, g) in self.groups.iter_mut() {
                    let target = self.meta.targets.get(gid);
                    if target.is_none() && leads_alone(&g.node) {
                        continue;
                    }
                    ticked_now.push(*gid);
                    g.node.tick();
                    retry_preferred_campaign(g);
                    if let Some(target) = target {
                        step_towards_target(*gid, g, target, me);
                        if replica_removed(g, target, me) {
                            removed.push(*gid);
                        }
                    }
                    // Followers catch up without producing a Ready on the leader, so the
                    // leader refreshes its in-sync view on the clock too.
                    if g.node.raft.state == raft::StateRole::Leader {
                        if let Some(p) = &g.partition {
                            publish_raft_view(&g.node, &mut g.caught_up, &p.shared);
                        }
                    }
                }
                for gid in removed {
                    self.drop_removed_replica(gid);
                }
                self.keep_metadata_quorum();
                if let Err(e) = self.compact_metadata_log() {
                    tracing::warn!(error = %e, "compacting the metadata log failed");
                }
                next_tick = now + self.cfg.tick;
                ticked_now.sort_unstable();
                ticked_now.dedup(); // (each group's Ready is taken once a round)
                ticked = ticked_now;
            }
            if now >= next_retention {
                if let Err(e) = self.enforce_retention() {
                    tracing::error!(error = %e, "retention pass failed");
                }
                if let Err(e) = self.blob_gc.adjust(&self.db) {
                    tracing::warn!(error = %e, "blob GC check failed");
                }
                next_retention = now + self.cfg.retention_check;
            }
            let mut scope = (!messaged).then_some(ticked);
            loop {
                match self.handle_readies(scope.as_deref()) {
                    Ok(true) => {
                        scope = None; // (what it handled may have led to more anywhere)
                        continue;
                    }
                    Ok(false) => break,
                    Err(e) => {
                        // The log could not be made durable: nothing may be acknowledged.
                        tracing::error!(error = %e, "raft storage write failed; stopping");
                        std::process::exit(70);
                    }
                }
            }
            self.flush_outbox();
        }
        self.stop();
    }

    fn stop(mut self) {
        // Closing the writer's channel lets it finish what is queued, then exit.
        self.writer = None;
        tracing::info!("raft driver stopped");
    }

    /// Returns false when the driver should stop.
    fn handle_msg(&mut self, msg: DriverMsg) -> bool {
        match msg {
            DriverMsg::Propose { group, data, reply } => {
                self.propose(group, data, reply);
                true
            }
            DriverMsg::Persisted(readies) => {
                for (gid, number) in readies {
                    self.on_persisted(gid, number);
                }
                true
            }
            DriverMsg::Step(messages) => {
                for (gid, m) in messages {
                    if m.msg_type == raft::eraftpb::MessageType::MsgSnapshot as i32 {
                        // Snapshots come with their data (InstallSnapshot), never bare.
                        tracing::warn!(group = gid, "dropping a snapshot message without its data");
                        continue;
                    }
                    // A group not (yet) known here, e.g. a topic whose creation this node
                    // has not applied: drop; the leader sends again.
                    if let Some(g) = self.groups.get_mut(&gid) {
                        if self.cfg.disk.is_full() && refused_when_full(gid, &m) {
                            continue;
                        }
                        if let Err(e) = g.node.step(m) {
                            tracing::debug!(group = gid, error = %e, "raft message rejected");
                        }
                    }
                }
                true
            }
            DriverMsg::TransferLeadership { down, reply } => {
                let _ = reply.send(self.transfer_leadership(&down));
                true
            }
            DriverMsg::Join { node, reply } => {
                let _ = reply.send(self.join(node));
                true
            }
            DriverMsg::InstallSnapshot {
                group,
                message,
                received,
            } => {
                self.snapshot_received(group, message, received);
                true
            }
            DriverMsg::SnapshotSent {
                group,
                to,
                delivered,
            } => {
                self.snapshot_sent(group, to, delivered);
                true
            }
            DriverMsg::PeerDown(peer) => {
                self.peer_down(peer);
                true
            }
            DriverMsg::Shutdown => false,
        }
    }

    /// The metadata group's membership; its leader also adds `node` as a learner (one
    /// membership change at a time: while one is pending raft-rs drops the next, and the
    /// joining broker simply asks again).
    fn join(&mut self, node: u64) -> Membership {
        let Some(g) = self.groups.get_mut(&metadata::METADATA_GROUP) else {
            return Membership::default();
        };
        let cs = g.node.raft.prs().conf().to_conf_state();
        let member = cs.voters.contains(&node) || cs.learners.contains(&node);
        if !member && g.node.raft.state == raft::StateRole::Leader {
            let cc = ConfChange {
                change_type: ConfChangeType::AddLearnerNode as i32,
                node_id: node,
                ..Default::default()
            };
            match g.node.propose_conf_change(vec![], cc) {
                Ok(()) => {
                    tracing::info!(node, "adding a broker to the metadata group as a learner")
                }
                Err(e) => tracing::debug!(node, error = %e, "membership change not proposed yet"),
            }
        }
        Membership {
            voters: cs.voters,
            learners: cs.learners,
            leader: g.node.raft.leader_id,
        }
    }

    /// On the metadata leader: the next change that keeps the metadata quorum whole.
    fn keep_metadata_quorum(&mut self) {
        // Only the leader decides: followers skip building the view on every tick.
        let Some(g) = self
            .groups
            .get_mut(&metadata::METADATA_GROUP)
            .filter(|g| g.node.raft.state == raft::StateRole::Leader)
        else {
            return;
        };
        let catalog = &self.catalog;
        let alive = |id: u64| catalog.peer_alive(id, LIVENESS_WINDOW);
        let brokers = Brokers {
            me: self.cfg.node_id,
            registered: self.meta.brokers.keys().copied().collect(),
            leaving: &self.meta.leaving,
            alive: &alive,
            configured: self.cfg.metadata_voters,
        };
        metadata_quorum::step(g, &brokers);
    }

    fn on_persisted(&mut self, gid: u64, number: u64) {
        if let Some(messages) = self.held.remove(&(gid, number)) {
            queue_messages(&mut self.outbox, gid, messages);
        }
        if let Some(g) = self.groups.get_mut(&gid) {
            g.written(number);
        }
        self.finish_restore(gid, number);
    }

    fn flush_outbox(&mut self) {
        for (to, messages) in self.outbox.drain() {
            self.transport.send(to, messages);
        }
    }

    /// Asks each group this node leads to hand leadership to its most caught-up other
    /// voter (raft-rs sends it TimeoutNow once it has every entry).
    fn transfer_leadership(&mut self, down: &[u64]) -> usize {
        let me = self.cfg.node_id;
        let mut started = 0;
        for g in self.groups.values_mut() {
            let raft = &g.node.raft;
            if raft.state != raft::StateRole::Leader {
                continue;
            }
            let voters = raft.prs().conf().voters().ids();
            // Only to a voter in sync (so heard from lately) whose broker is not `down`:
            // raft-rs holds proposals back while a transfer is pending, so one to a voter
            // that is gone or far behind would leave the group unable to take writes
            // until an election timeout (and a broker stopping after its peers would wait
            // that out for nothing). Without such a voter the group stays, as Kafka's
            // controlled shutdown leaves a partition whose ISR is only its leader.
            // (Not raft-rs's `recent_active`: check_quorum clears it for every follower
            // each election timeout until its next response.)
            let target = raft
                .prs()
                .iter()
                .filter(|(id, _)| {
                    **id != me
                        && voters.contains(**id)
                        && !down.contains(id)
                        // (Only partition groups keep ISR marks; in the others Raft
                        // catches the target up before it hands over.)
                        && (g.partition.is_none() || keeps_up(&g.caught_up, **id))
                })
                .max_by_key(|(_, p)| p.matched)
                .map(|(id, _)| *id);
            if let Some(to) = target {
                g.hand_over(to);
                started += 1;
            }
        }
        started
    }

    fn propose(&mut self, group: u64, data: Vec<u8>, reply: Reply) {
        let Some(g) = self.groups.get_mut(&group) else {
            let _ = reply.send(Err(ProposeError::UnknownGroup));
            return;
        };
        let sequenced = g.partition.as_ref().and_then(|_| Sequenced::of(&data));
        if g.node.raft.state != raft::StateRole::Leader {
            g.refuse(sequenced, reply, ProposeError::NotLeader);
            return;
        }
        if g.partition.is_some() && self.cfg.disk.is_full() {
            // Refused here rather than before proposing, so that the fence applies: a
            // producer's next batch must not land while this one waits for space.
            g.refuse(sequenced, reply, ProposeError::DiskFull);
            return;
        }
        if sequenced.is_some_and(|b| g.fences.holds_back(b, Instant::now())) {
            let _ = reply.send(Err(ProposeError::NotLeader));
            return;
        }
        match g.node.propose(vec![], data) {
            Ok(()) => {
                let index = g.node.raft.raft_log.last_index();
                let term = g.node.raft.term;
                let replaced = g.proposals.insert(
                    index,
                    Proposal {
                        term,
                        reply,
                        since: Instant::now(),
                        sequenced,
                    },
                );
                // A proposal of an earlier term at this index was overwritten unanswered
                // (leadership lost and regained between two Readies): it was not written.
                if let Some(old) = replaced {
                    g.refuse(old.sequenced, old.reply, ProposeError::NotLeader);
                }
            }
            Err(e) => {
                tracing::debug!(group, error = %e, "proposal dropped");
                g.refuse(sequenced, reply, ProposeError::NotLeader);
            }
        }
    }

    /// One round over every group with a Ready. Returns whether anything was handled.
    /// Handles the Readies of the groups in `scope` (all when `None`); false when none
    /// had one.
    fn handle_readies(&mut self, scope: Option<&[u64]>) -> anyhow::Result<bool> {
        let ids: Vec<u64> = match scope {
            None => self
                .groups
                .iter()
                .filter(|(_, g)| g.node.has_ready())
                .map(|(id, _)| *id)
                .collect(),
            Some(ids) => ids
                .iter()
                .copied()
                .filter(|id| self.groups.get(id).is_some_and(|g| g.node.has_ready()))
                .collect(),
        };
        if ids.is_empty() {
            return Ok(false);
        }
        let readies: Vec<(u64, Ready)> = ids
            .into_iter()
            .map(|id| {
                let g = self.groups.get_mut(&id).expect("listed above");
                (id, g.node.ready())
            })
            .collect();
        // Sized up front: a batch grown by doubling copies every record batch again.
        let mut raft_wb = WriteBatch::with_capacity_bytes(staged_bytes(&readies));
        let mut apply_wb = WriteBatch::default();
        let mut round = Round::default();
        let mut persisting = Vec::new();
        for (id, rd) in readies {
            if let Some(number) = self.handle_ready(id, rd, &mut raft_wb, &mut apply_wb, &mut round)
            {
                persisting.push((id, number));
            }
        }
        if !persisting.is_empty() {
            self.submit(PersistJob {
                batch: raft_wb,
                readies: persisting,
                ingest: std::mem::take(&mut round.ingest),
                files: std::mem::take(&mut round.files),
                collect_files: std::mem::take(&mut round.collect_files),
                ..Default::default()
            })?;
        }
        // Applied state is stored by the writer with its next batch; until then readers
        // find new batches in the partitions' unflushed index, so replies need not wait.
        let flushed = self.publish(&round.published);
        if !apply_wb.is_empty() || !flushed.is_empty() {
            self.persist(apply_wb, vec![], flushed)?;
        }
        self.finish_round(round)?;
        Ok(true)
    }

    /// One group's Ready in raft-rs's order: messages a leader may send at once, applying
    /// what is committed, then staging entries and hard state for the log writer. Returns
    /// the Ready's number when it must be written before it counts as persisted.
    fn handle_ready(
        &mut self,
        id: u64,
        mut rd: Ready,
        raft_wb: &mut WriteBatch,
        apply_wb: &mut WriteBatch,
        round: &mut Round,
    ) -> Option<u64> {
        let g = self.groups.get_mut(&id).expect("group with a Ready");
        g.took_ready(rd.number());
        let stepped_down = rd
            .ss()
            .is_some_and(|ss| ss.raft_state != raft::StateRole::Leader);
        queue_messages(&mut self.outbox, id, rd.take_messages());
        if !rd.snapshot().is_empty() {
            let meta = rd.snapshot().get_metadata();
            let received = self
                .received_snapshots
                .remove(&id)
                .filter(|r| r.index == meta.index)
                .expect("raft-rs restores only snapshots stepped in with their data");
            round.ingest.push(received);
            g.node.mut_store().restore(meta);
            round.collect_files.extend(g.node.store().file_collection());
            g.restoring = Some((rd.number(), meta.index));
        }
        let committed = rd.take_committed_entries();
        apply_entries(&mut self.meta, id, g, committed, apply_wb, round);
        let mut written = None;
        if rd.entries().is_empty() && rd.hs().is_none() && rd.snapshot().is_empty() {
            match g.finish_without_write() {
                Finish::InPlace => {
                    queue_messages(&mut self.outbox, id, rd.take_persisted_messages());
                    let mut light = g.node.advance(rd);
                    queue_messages(&mut self.outbox, id, light.take_messages());
                    if let Some(commit) = light.commit_index() {
                        g.node.mut_store().stage_commit(commit, apply_wb);
                    }
                    let committed = light.take_committed_entries();
                    apply_entries(&mut self.meta, id, g, committed, apply_wb, round);
                }
                Finish::AfterWrite(number) => {
                    // Its messages (append responses among them) speak for entries that
                    // an earlier, still queued write holds: they leave after it.
                    let held = rd.take_persisted_messages();
                    if !held.is_empty() {
                        self.held.entry((id, number)).or_default().extend(held);
                    }
                    g.node.advance_append_async(rd);
                }
            }
        } else {
            // (Taken, not copied: the storage's entry cache keeps them until applied.)
            let entries = rd.take_entries();
            g.node
                .mut_store()
                .stage_append(entries, raft_wb, &mut round.files);
            if let Some(hs) = rd.hs() {
                g.node.mut_store().stage_hard_state(hs.clone(), raft_wb);
            }
            let held = rd.take_persisted_messages();
            if !held.is_empty() {
                self.held.insert((id, rd.number()), held);
            }
            g.writing(rd.number());
            written = Some(rd.number());
            g.node.advance_append_async(rd);
        }
        if stepped_down && g.partition.is_some() {
            g.fail_proposals(round);
        }
        g.node.advance_apply_to(g.applied);
        g.node.mut_store().release_cache(g.applied);
        match &g.partition {
            Some(p) => publish_raft_view(&g.node, &mut g.caught_up, &p.shared),
            None => {
                let raft = &g.node.raft;
                self.catalog.set_metadata_leader(raft.leader_id, raft.term);
                let cs = raft.prs().conf().to_conf_state();
                self.catalog.set_metadata_members(cs.voters, cs.learners);
            }
        }
        written
    }

    fn publish(&mut self, groups: &HashSet<u64>) -> Vec<(Arc<PartitionShared>, i64)> {
        let mut flushed = Vec::with_capacity(groups.len());
        for id in groups {
            if let Some(p) = self.groups.get_mut(id).and_then(|g| g.partition.as_mut()) {
                let last = p.publish();
                flushed.push((p.shared.clone(), last));
            }
        }
        if !groups.is_empty() {
            self.catalog.notify_appended();
        }
        flushed
    }

    /// Hands a batch to the log writer, or (while starting up) writes it here.
    fn persist(
        &mut self,
        batch: WriteBatch,
        readies: Vec<(u64, u64)>,
        flushed: Vec<(Arc<PartitionShared>, i64)>,
    ) -> anyhow::Result<()> {
        self.submit(PersistJob {
            batch,
            readies,
            flushed,
            ..Default::default()
        })
    }

    /// Hands a job to the log writer, or (while starting up) carries it out here, in the
    /// writer's order: snapshots, log files, the batch, then the files it freed.
    fn submit(&mut self, job: PersistJob) -> anyhow::Result<()> {
        if let Some(writer) = &self.writer {
            return writer
                .send(job)
                .map_err(|_| anyhow::anyhow!("raft log writer stopped"));
        }
        let mut job = job;
        for received in std::mem::take(&mut job.ingest) {
            snapshot::install(&self.db, &received)?;
        }
        self.db.files.write(&job.files)?;
        storage::write(&self.db, std::mem::take(&mut job.batch), true)?;
        job.tidy_files(&self.db);
        for (gid, number) in job.written() {
            self.on_persisted(gid, number);
        }
        Ok(())
    }

    fn finish_round(&mut self, round: Round) -> anyhow::Result<()> {
        for effect in round.effects {
            self.apply_effect(effect)?;
        }
        for (reply, result, since) in round.replies {
            metrics::RAFT_COMMIT_SECONDS.observe(since.elapsed().as_secs_f64());
            let _ = reply.send(result);
        }
        Ok(())
    }

    fn apply_effect(&mut self, effect: Outcome) -> anyhow::Result<()> {
        match effect {
            Outcome::TopicCreated(name, record) => self.open_topic(&name, &record)?,
            Outcome::TopicDeleted(name, record) => {
                self.catalog.remove_topic(&name);
                let mut wb = WriteBatch::default();
                for &gid in &record.groups {
                    if let Some(g) = self.groups.remove(&gid) {
                        for (_, p) in g.proposals {
                            let _ = p.reply.send(Err(ProposeError::UnknownGroup));
                        }
                    }
                    GroupStorage::stage_destroy(gid, &mut wb);
                }
                // Through the writer, so it lands after any of the groups' queued writes.
                self.destroy(record.groups, wb)?;
                tracing::info!(topic = %name, "topic deleted");
            }
            Outcome::OffsetsCommitted(group, offsets) => {
                for o in offsets {
                    self.catalog.set_offset(&group, o);
                }
            }
            Outcome::ClusterId(id) => self.catalog.set_cluster_id(id),
            Outcome::TargetsSet(targets) => {
                self.catalog.set_targets(targets.clone());
                let partitions = self.catalog.partitions_by_group();
                for (gid, voters) in &targets {
                    if let Some(p) = partitions.get(gid) {
                        p.set_assignment(voters);
                    }
                }
                for (gid, voters) in targets {
                    if voters.contains(&self.cfg.node_id) && !self.groups.contains_key(&gid) {
                        self.open_new_replica(gid)?;
                    }
                }
            }
            Outcome::BrokerRegistered(record) => {
                tracing::info!(node = record.id, kafka = %format!("{}:{}", record.host, record.port), cluster = %record.cluster_addr, "broker registered");
                self.catalog.set_broker(record);
                self.catalog.set_leaving(self.meta.leaving.iter().copied());
            }
            Outcome::LeavingSet(leaving) => {
                tracing::info!(?leaving, "brokers leaving the cluster");
                self.catalog.set_leaving(leaving);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Bytes the entries of these Readies take in a WriteBatch (keys and headers included).
fn staged_bytes(readies: &[(u64, Ready)]) -> usize {
    const PER_ENTRY: usize = 64; // key, entry header or pointer, batch record overhead
    readies
        .iter()
        .flat_map(|(_, rd)| rd.entries())
        .map(|e| match e.data.len() {
            inline if inline < FILE_MIN_DATA => inline + e.context.len() + PER_ENTRY,
            _ => PER_ENTRY, // (the metadata group's large entries are few)
        })
        .sum::<usize>()
        + 256
}
