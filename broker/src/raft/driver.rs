//! The Raft driver: one thread, one loop, every group.
//!
//! Each round drains all queued proposals, ticks the groups when due, then handles the
//! Ready of every group in raft-rs's documented order with two twists borrowed from TiKV's
//! raftstore: the entries and hard states of *all* groups go into one `WriteBatch`
//! (group commit), and that batch is made durable by the log writer thread while the driver
//! goes on (raft-rs's asynchronous Ready: `advance_append_async`, then `on_persist_ready`
//! when the writer reports back). Entries commit only once persisted, so nothing is applied
//! or acknowledged before its fsync. Applied state goes into a second, unsynced batch: it
//! can be rebuilt from the log, so it needs no fsync of its own. The loop sleeps on its
//! channel between rounds; it never polls.
//!
//! Messages to peers are collected over a round and handed to the [`Transport`] once per
//! destination (batched Raft traffic). Those that raft-rs allows before persisting (a
//! leader's appends) leave at once; the rest (votes, append responses) are held until the
//! writer reports their Ready durable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost011::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Message};
use raft::{RawNode, Ready};
use rocksdb::WriteBatch;

use super::writer::{self, PersistJob};
use super::{Applied, DriverMsg, Membership, ProposeError, RaftHandle, Reply, Transport};
use crate::log::{self, AppendOutcome, PartitionMachine, PartitionShared};
use crate::metadata::{self, Catalog, MetadataMachine, Outcome, TopicRecord, TopicView};
use crate::metrics;
use crate::storage::{self, blob_gc::BlobGc, keys, Db, GroupStorage};

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
}

struct Proposal {
    term: u64,
    reply: Reply,
    since: Instant,
}

struct Group {
    node: RawNode<GroupStorage>,
    /// `None` for the metadata group, whose machine lives in [`Driver::meta`].
    partition: Option<PartitionMachine>,
    proposals: BTreeMap<u64, Proposal>,
    applied: u64,
    /// Ticks left during which this node, the preferred leader of a new group, campaigns
    /// again while no leader is known (its first vote requests may reach peers that have
    /// not created the group yet).
    preferred_ticks: u8,
    /// When each voter last had every committed entry (leader only): the basis of ISR.
    caught_up: HashMap<u64, Instant>,
}

/// A voter stays in sync while, this recently, it had every committed entry and the leader
/// had heard from it within an election timeout (Kafka's replica.lag.time.max.ms).
const ISR_LAG: Duration = Duration::from_secs(3);

/// Ticks of a new group during which its preferred leader retries its campaign.
const PREFERRED_CAMPAIGN_TICKS: u8 = 9;

/// What one round of Ready handling must do once its writes are on disk.
#[derive(Default)]
struct Round {
    replies: Vec<(Reply, Result<Applied, ProposeError>, Instant)>,
    published: HashSet<u64>,
    effects: Vec<Outcome>,
}

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
    /// Blob GC, checked with every retention pass.
    blob_gc: BlobGc,
}

impl Driver {
    /// Loads every group, replays committed entries, and starts the driver thread.
    pub fn start(
        cfg: DriverConfig,
        db: Db,
        catalog: Arc<Catalog>,
        transport: Box<dyn Transport>,
    ) -> anyhow::Result<(RaftHandle, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel();
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
            blob_gc: BlobGc::default(),
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
        while driver.handle_readies()? {}
        driver.flush_outbox();
        let (writer_tx, writer_thread) = writer::start(driver.db.clone(), tx.clone())?;
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
        Ok((RaftHandle { tx }, thread))
    }

    fn run(mut self) {
        let mut next_tick = Instant::now() + self.cfg.tick;
        let mut next_retention = Instant::now() + self.cfg.retention_check;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(msg) => {
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
                for (gid, g) in self.groups.iter_mut() {
                    g.node.tick();
                    retry_preferred_campaign(g);
                    if let Some(target) = self.meta.targets.get(gid) {
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
                next_tick = now + self.cfg.tick;
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
            loop {
                match self.handle_readies() {
                    Ok(true) => continue,
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
                    // A group not (yet) known here, e.g. a topic whose creation this node
                    // has not applied: drop; the leader sends again.
                    if let Some(g) = self.groups.get_mut(&gid) {
                        if let Err(e) = g.node.step(m) {
                            tracing::debug!(group = gid, error = %e, "raft message rejected");
                        }
                    }
                }
                true
            }
            DriverMsg::TransferLeadership(reply) => {
                let _ = reply.send(self.transfer_leadership());
                true
            }
            DriverMsg::Join { node, reply } => {
                let _ = reply.send(self.join(node));
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

    fn on_persisted(&mut self, gid: u64, number: u64) {
        if let Some(messages) = self.held.remove(&(gid, number)) {
            queue_messages(&mut self.outbox, gid, messages);
        }
        if let Some(g) = self.groups.get_mut(&gid) {
            g.node.on_persist_ready(number);
        }
    }

    fn flush_outbox(&mut self) {
        for (to, messages) in self.outbox.drain() {
            self.transport.send(to, messages);
        }
    }

    /// Asks each group this node leads to hand leadership to its most caught-up other
    /// voter (raft-rs sends it TimeoutNow once it has every entry).
    fn transfer_leadership(&mut self) -> usize {
        let me = self.cfg.node_id;
        let mut started = 0;
        for g in self.groups.values_mut() {
            let raft = &g.node.raft;
            if raft.state != raft::StateRole::Leader {
                continue;
            }
            let voters = raft.prs().conf().voters().ids();
            let target = raft
                .prs()
                .iter()
                .filter(|(id, _)| **id != me && voters.contains(**id))
                .max_by_key(|(_, p)| p.matched)
                .map(|(id, _)| *id);
            if let Some(to) = target {
                g.node.transfer_leader(to);
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
        if g.node.raft.state != raft::StateRole::Leader {
            let _ = reply.send(Err(ProposeError::NotLeader));
            return;
        }
        match g.node.propose(vec![], data) {
            Ok(()) => {
                let index = g.node.raft.raft_log.last_index();
                let term = g.node.raft.term;
                g.proposals.insert(
                    index,
                    Proposal {
                        term,
                        reply,
                        since: Instant::now(),
                    },
                );
            }
            Err(e) => {
                tracing::debug!(group, error = %e, "proposal dropped");
                let _ = reply.send(Err(ProposeError::NotLeader));
            }
        }
    }

    /// One round over every group with a Ready. Returns whether anything was handled.
    fn handle_readies(&mut self) -> anyhow::Result<bool> {
        let ids: Vec<u64> = self
            .groups
            .iter()
            .filter(|(_, g)| g.node.has_ready())
            .map(|(id, _)| *id)
            .collect();
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
        for (id, mut rd) in readies {
            let g = self.groups.get_mut(&id).expect("listed above");
            queue_messages(&mut self.outbox, id, rd.take_messages());
            if !rd.snapshot().is_empty() {
                tracing::warn!(group = id, "ignoring a Raft snapshot: not supported yet");
            }
            let committed = rd.take_committed_entries();
            apply_entries(&mut self.meta, id, g, committed, &mut apply_wb, &mut round);
            if rd.entries().is_empty() && rd.hs().is_none() {
                // Nothing to persist: finish this Ready in place.
                queue_messages(&mut self.outbox, id, rd.take_persisted_messages());
                let mut light = g.node.advance(rd);
                queue_messages(&mut self.outbox, id, light.take_messages());
                if let Some(commit) = light.commit_index() {
                    g.node.mut_store().stage_commit(commit, &mut apply_wb);
                }
                let committed = light.take_committed_entries();
                apply_entries(&mut self.meta, id, g, committed, &mut apply_wb, &mut round);
            } else {
                // (Taken, not copied: the storage's entry cache keeps them until applied.)
                g.node
                    .mut_store()
                    .stage_append(rd.take_entries(), &mut raft_wb);
                if let Some(hs) = rd.hs() {
                    g.node
                        .mut_store()
                        .stage_hard_state(hs.clone(), &mut raft_wb);
                }
                let held = rd.take_persisted_messages();
                if !held.is_empty() {
                    self.held.insert((id, rd.number()), held);
                }
                persisting.push((id, rd.number()));
                g.node.advance_append_async(rd);
            }
            g.node.advance_apply_to(g.applied);
            g.node.mut_store().release_cache(g.applied);
            match &g.partition {
                Some(p) => publish_raft_view(&g.node, &mut g.caught_up, &p.shared),
                None => self
                    .catalog
                    .set_metadata_leader(g.node.raft.leader_id, g.node.raft.term),
            }
        }
        if !persisting.is_empty() {
            self.persist(raft_wb, persisting, vec![])?;
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
        let job = PersistJob {
            batch,
            readies,
            flushed,
        };
        if let Some(writer) = &self.writer {
            return writer
                .send(job)
                .map_err(|_| anyhow::anyhow!("raft log writer stopped"));
        }
        let mut job = job;
        storage::write(&self.db, std::mem::take(&mut job.batch), true)?;
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
                for gid in record.groups {
                    if let Some(g) = self.groups.remove(&gid) {
                        for (_, p) in g.proposals {
                            let _ = p.reply.send(Err(ProposeError::UnknownGroup));
                        }
                    }
                    GroupStorage::stage_destroy(gid, &mut wb);
                }
                // Through the writer, so it lands after any of the groups' queued writes.
                self.persist(wb, vec![], vec![])?;
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
                for (gid, voters) in targets {
                    if voters.contains(&self.cfg.node_id) && !self.groups.contains_key(&gid) {
                        self.open_new_replica(gid)?;
                    }
                }
            }
            Outcome::BrokerRegistered(record) => {
                tracing::info!(node = record.id, kafka = %format!("{}:{}", record.host, record.port), cluster = %record.cluster_addr, "broker registered");
                self.catalog.set_broker(record);
            }
            _ => {}
        }
        Ok(())
    }

    /// Starts hosting a partition this node was just made a target voter of. The group
    /// starts with the partition's *initial* voters, as its log does (later membership
    /// changes are entries in that log); the leader adds this node as a learner and sends
    /// it the log from the start.
    fn open_new_replica(&mut self, gid: u64) -> anyhow::Result<()> {
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
        let machine = PartitionMachine::load(&self.db, shared)?;
        tracing::info!(group = gid, "hosting a new replica");
        self.open_group_with(gid, Some(machine), &initial, &[], false)
    }

    /// Forgets a replica that its group no longer counts as a voter (a finished move away
    /// from this node): its log and state are deleted.
    fn drop_removed_replica(&mut self, gid: u64) {
        if let Some(g) = self.groups.remove(&gid) {
            for (_, p) in g.proposals {
                let _ = p.reply.send(Err(ProposeError::NotLeader));
            }
        }
        let mut wb = WriteBatch::default();
        GroupStorage::stage_destroy(gid, &mut wb);
        if let Err(e) = self.persist(wb, vec![], vec![]) {
            tracing::error!(group = gid, error = %e, "dropping a removed replica failed");
        }
        tracing::info!(group = gid, "replica moved away; its log is deleted");
    }

    /// Opens the groups of the partitions this node is a replica of; the others get a
    /// view only, kept current by their leaders' reports.
    fn open_topic(&mut self, name: &str, record: &TopicRecord) -> anyhow::Result<()> {
        let me = self.cfg.node_id;
        let mut partitions = Vec::with_capacity(record.groups.len());
        for (i, &gid) in record.groups.iter().enumerate() {
            let shared = Arc::new(PartitionShared::new(name.to_string(), i as i32, gid));
            let replicas = record
                .replicas_of(i)
                .map(<[u64]>::to_vec)
                .unwrap_or_else(|| vec![me]);
            if replicas.contains(&me) {
                let machine = PartitionMachine::load(&self.db, shared.clone())?;
                self.open_group(gid, Some(machine), &replicas, &[])?;
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
    fn open_group(
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
    fn open_group_with(
        &mut self,
        gid: u64,
        partition: Option<PartitionMachine>,
        voters: &[u64],
        learners: &[u64],
        may_campaign: bool,
    ) -> anyhow::Result<()> {
        let node_id = self.cfg.node_id;
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
            Group {
                node,
                partition,
                proposals: BTreeMap::new(),
                applied,
                preferred_ticks: if preferred {
                    PREFERRED_CAMPAIGN_TICKS
                } else {
                    0
                },
                caught_up: HashMap::new(),
            },
        );
        Ok(())
    }

    /// Drops whole batches older than retention.ms or beyond retention.bytes, moving the
    /// log start offset and compacting the Raft log below them.
    fn enforce_retention(&mut self) -> anyhow::Result<()> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut wb = WriteBatch::default();
        let mut moved = Vec::new();
        for (name, record) in &self.meta.topics {
            let setting = |key: &str, default: i64| {
                record
                    .configs
                    .get(key)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(default)
            };
            let retention_ms = setting("retention.ms", self.cfg.retention_ms);
            let retention_bytes = setting("retention.bytes", self.cfg.retention_bytes);
            if retention_ms < 0 && retention_bytes < 0 {
                continue;
            }
            for gid in &record.groups {
                let Some(g) = self.groups.get_mut(gid) else {
                    continue;
                };
                let Some(p) = g.partition.as_mut() else {
                    continue;
                };
                let total = p.shared.log_bytes();
                let plan = log::read::retention_plan(&self.db, &p.shared, |b, dropped| {
                    let too_old = retention_ms >= 0 && b.max_timestamp < now_ms - retention_ms;
                    let too_big = retention_bytes >= 0
                        && total.saturating_sub(dropped + b.size as u64) >= retention_bytes as u64;
                    too_old || too_big
                });
                let Some((new_start, raft_index, dropped)) = plan else {
                    continue;
                };
                if !followers_have(&g.node, raft_index) {
                    // Compacting entries a follower still needs would leave it to a
                    // snapshot; wait until every voter has them.
                    continue;
                }
                wb.delete_range(
                    keys::offset_index_key(*gid, 0),
                    keys::offset_index_key(*gid, new_start),
                );
                p.truncate_front(new_start, dropped, &mut wb);
                g.node.mut_store().stage_compact(raft_index, &mut wb)?;
                moved.push(*gid);
                tracing::info!(topic = %name, partition = p.shared.partition, new_start, "retention moved log start");
            }
        }
        if moved.is_empty() {
            return Ok(());
        }
        let moved: HashSet<u64> = moved.into_iter().collect();
        let flushed = self.publish(&moved);
        self.persist(wb, vec![], flushed)
    }
}

/// One membership change of a group whose voters differ from its target, proposed by its
/// leader (one at a time: raft-rs refuses a second while one is pending). Added replicas
/// join as learners and become voters once caught up, so the group never counts on a
/// voter that cannot vote yet; a leader that is itself moved away first hands leadership
/// to a target voter.
fn step_towards_target(gid: u64, g: &mut Group, target: &[u64], me: u64) {
    let raft = &g.node.raft;
    if raft.state != raft::StateRole::Leader || raft.has_pending_conf() {
        return;
    }
    let cs = raft.prs().conf().to_conf_state();
    let committed = raft.raft_log.committed;
    let caught_up = |id: &u64| raft.prs().get(*id).is_some_and(|p| p.matched >= committed);
    let change = if let Some(add) = target
        .iter()
        .find(|id| !cs.voters.contains(id) && !cs.learners.contains(id))
    {
        Some((ConfChangeType::AddLearnerNode, *add))
    } else if let Some(promote) = cs
        .learners
        .iter()
        .find(|id| target.contains(id) && caught_up(id))
    {
        Some((ConfChangeType::AddNode, *promote))
    } else if cs.learners.iter().any(|id| target.contains(id)) {
        None // a new replica is still catching up
    } else if let Some(remove) = cs
        .voters
        .iter()
        .chain(cs.learners.iter())
        .find(|id| !target.contains(id))
    {
        if *remove == me {
            let to = target
                .iter()
                .filter(|id| caught_up(id))
                .max_by_key(|id| raft.prs().get(**id).map_or(0, |p| p.matched));
            if let Some(to) = to {
                g.node.transfer_leader(*to);
            }
            None
        } else {
            Some((ConfChangeType::RemoveNode, *remove))
        }
    } else {
        None
    };
    if let Some((change_type, node_id)) = change {
        let cc = ConfChange {
            change_type: change_type as i32,
            node_id,
            ..Default::default()
        };
        match g.node.propose_conf_change(vec![], cc) {
            Ok(()) => tracing::info!(group = gid, ?change_type, node_id, "moving replicas"),
            Err(e) => tracing::debug!(group = gid, error = %e, "membership change not proposed"),
        }
    }
}

/// Whether this node's replica was moved away: not in the target, and the group's leader
/// reports voters without it.
fn replica_removed(g: &Group, target: &[u64], me: u64) -> bool {
    if target.contains(&me) || g.node.raft.state == raft::StateRole::Leader {
        return false;
    }
    let Some(p) = &g.partition else {
        return false;
    };
    let reported = p.shared.reported_voters();
    !reported.is_empty() && !reported.contains(&me) && reported.iter().all(|v| target.contains(v))
}

fn retry_preferred_campaign(g: &mut Group) {
    if g.preferred_ticks == 0 {
        return;
    }
    g.preferred_ticks -= 1;
    if g.node.raft.leader_id != 0 {
        g.preferred_ticks = 0;
    } else if g.preferred_ticks.is_multiple_of(3) {
        let _ = g.node.campaign();
    }
}

/// Whether every voter has the entries up to `index` (always true on a follower, which
/// does not know its peers' progress and only compacts what it has applied itself).
fn followers_have(node: &RawNode<GroupStorage>, index: u64) -> bool {
    let raft = &node.raft;
    if raft.state != raft::StateRole::Leader {
        return true;
    }
    raft.prs()
        .conf()
        .voters()
        .ids()
        .iter()
        .all(|id| raft.prs().get(id).is_some_and(|p| p.matched >= index))
}

/// Shares the group's leader, term, voters and in-sync voters with request handlers and
/// the admin API. Only the leader knows which voters are in sync (followers learn it from
/// the leader's reports): those that had every committed entry within [`ISR_LAG`] and
/// that it heard from recently.
fn publish_raft_view(
    node: &RawNode<GroupStorage>,
    caught_up: &mut HashMap<u64, Instant>,
    shared: &PartitionShared,
) {
    let raft = &node.raft;
    let mut voters: Vec<u64> = raft.prs().conf().voters().ids().iter().collect();
    voters.sort_unstable();
    let in_sync: Option<Vec<u64>> = (raft.state == raft::StateRole::Leader).then(|| {
        let committed = raft.raft_log.committed;
        let now = Instant::now();
        voters
            .iter()
            .copied()
            .filter(|id| {
                let Some(p) = raft.prs().get(*id) else {
                    return false;
                };
                if *id == raft.id {
                    return true;
                }
                // (raft-rs clears `recent_active` at every quorum check and sets it again
                // on the next response, so it only refreshes the mark, never clears it.)
                if p.matched >= committed && p.recent_active {
                    caught_up.insert(*id, now);
                }
                caught_up
                    .get(id)
                    .is_some_and(|t| now.duration_since(*t) < ISR_LAG)
            })
            .collect()
    });
    shared.set_raft_view(raft.leader_id, raft.term, &voters, in_sync.as_deref());
}

/// Bytes the entries of these Readies take in a WriteBatch (keys and headers included).
fn staged_bytes(readies: &[(u64, Ready)]) -> usize {
    const PER_ENTRY: usize = 64; // key, entry header, batch record overhead
    readies
        .iter()
        .flat_map(|(_, rd)| rd.entries())
        .map(|e| e.data.len() + e.context.len() + PER_ENTRY)
        .sum::<usize>()
        + 256
}

fn queue_messages(
    outbox: &mut HashMap<u64, Vec<(u64, Message)>>,
    gid: u64,
    messages: Vec<Message>,
) {
    for m in messages {
        outbox.entry(m.to).or_default().push((gid, m));
    }
}

/// Applies a committed membership change to the group and stores its new voters.
fn apply_conf_change(gid: u64, g: &mut Group, e: &Entry, wb: &mut WriteBatch) {
    let result = if e.entry_type == EntryType::EntryConfChange as i32 {
        ConfChange::decode(e.data.as_slice())
            .map_err(|e| e.to_string())
            .and_then(|cc| g.node.apply_conf_change(&cc).map_err(|e| e.to_string()))
    } else {
        ConfChangeV2::decode(e.data.as_slice())
            .map_err(|e| e.to_string())
            .and_then(|cc| g.node.apply_conf_change(&cc).map_err(|e| e.to_string()))
    };
    match result {
        Ok(cs) => {
            tracing::info!(group = gid, voters = ?cs.voters, learners = ?cs.learners, "membership changed");
            g.node.mut_store().stage_conf_state(cs, wb);
        }
        Err(err) => {
            tracing::error!(group = gid, index = e.index, error = %err, "bad membership change")
        }
    }
}

/// Applies committed entries of one group and resolves the proposals waiting on them.
fn apply_entries(
    meta: &mut MetadataMachine,
    gid: u64,
    g: &mut Group,
    entries: Vec<Entry>,
    wb: &mut WriteBatch,
    round: &mut Round,
) {
    for e in entries {
        g.applied = e.index;
        let outcome = if e.entry_type != EntryType::EntryNormal as i32 {
            apply_conf_change(gid, g, &e, wb);
            None
        } else if let Some(p) = g.partition.as_mut() {
            let out = p.apply(e.index, e.term, &e.data, wb);
            if let Some(AppendOutcome::Appended { .. }) = out {
                round.published.insert(gid);
            }
            out.map(Applied::Partition)
        } else {
            let out = meta.apply(e.index, &e.data, wb);
            if let Some(o) = &out {
                if matches!(
                    o,
                    Outcome::TopicCreated(..)
                        | Outcome::TopicDeleted(..)
                        | Outcome::OffsetsCommitted(..)
                        | Outcome::BrokerRegistered(..)
                        | Outcome::ClusterId(..)
                        | Outcome::TargetsSet(..)
                ) {
                    round.effects.push(o.clone());
                }
            }
            out.map(Applied::Metadata)
        };
        if g.partition.is_some() && outcome.is_none() {
            round.published.insert(gid);
        }
        // Proposals at or below this index are decided now.
        while let Some(entry) = g.proposals.first_entry() {
            if *entry.key() > e.index {
                break;
            }
            let (index, p) = entry.remove_entry();
            let result = match (&outcome, index == e.index && p.term == e.term) {
                (Some(o), true) => Ok(o.clone()),
                _ => Err(ProposeError::NotLeader),
            };
            round.replies.push((p.reply, result, p.since));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::tests::make_batch;
    use crate::metadata::Command;
    use crate::raft::Pending;

    fn config() -> DriverConfig {
        DriverConfig {
            node_id: 1,
            voters: vec![1],
            learners: vec![],
            tick: Duration::from_millis(100),
            retention_check: Duration::from_secs(3600),
            retention_ms: -1,
            retention_bytes: -1,
        }
    }

    /// A single-node driver (no peers) over `db`.
    fn start_single(
        cfg: DriverConfig,
        db: &Db,
        catalog: &Arc<Catalog>,
    ) -> (RaftHandle, JoinHandle<()>) {
        Driver::start(
            cfg,
            db.clone(),
            catalog.clone(),
            Box::new(crate::raft::NoPeers),
        )
        .unwrap()
    }

    async fn create_topic(h: &RaftHandle, name: &str, partitions: i32) -> Vec<u64> {
        let command = Command::CreateTopic {
            name: name.into(),
            id: uuid::Uuid::new_v4(),
            partitions,
            configs: Default::default(),
            replicas: vec![],
        };
        match h.propose_metadata(&command, Duration::from_secs(5)).await {
            Ok(Outcome::TopicCreated(_, record)) => record.groups,
            other => panic!("create failed: {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_batches_fsyncs_and_state_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = storage::open(dir.path()).unwrap();
        let catalog = Arc::new(Catalog::default());
        let (h, thread) = start_single(config(), &db, &catalog);
        let groups = create_topic(&h, "t", 4).await;
        assert_eq!(catalog.topic("t").unwrap().partitions.len(), 4);

        let syncs_before = metrics::RAFT_SYNC_SECONDS.get_sample_count();
        // 400 single-record batches over 4 partitions, all queued before any is awaited.
        let pending: Vec<(u64, Pending)> = (0..400)
            .map(|i| {
                let g = groups[i % 4];
                (g, h.propose(g, make_batch(1, -1, -1, b"payload").to_vec()))
            })
            .collect();
        let mut offsets: HashMap<u64, Vec<i64>> = HashMap::new();
        for (g, p) in pending {
            match p.wait(Duration::from_secs(10)).await.unwrap() {
                Applied::Partition(AppendOutcome::Appended { base_offset }) => {
                    offsets.entry(g).or_default().push(base_offset)
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let syncs = metrics::RAFT_SYNC_SECONDS.get_sample_count() - syncs_before;
        assert!(
            syncs < 100,
            "400 proposals took {syncs} fsyncs: no group commit"
        );
        for g in &groups {
            assert_eq!(offsets[g], (0..100).collect::<Vec<i64>>(), "group {g}");
        }
        for p in &catalog.topic("t").unwrap().partitions {
            assert_eq!(p.high_watermark(), 100);
        }

        h.shutdown();
        thread.join().unwrap();
        drop(db);

        // Restart from disk: topics, offsets and the data itself are back.
        let db = storage::open(dir.path()).unwrap();
        let catalog = Arc::new(Catalog::default());
        let (h, thread) = start_single(config(), &db, &catalog);
        let t = catalog.topic("t").expect("topic survives restart");
        for p in &t.partitions {
            assert_eq!(p.high_watermark(), 100);
            let data = log::read::read(&db, p, 99, 1 << 20).unwrap();
            let stamped = i64::from_be_bytes(data[0..8].try_into().unwrap());
            assert_eq!(stamped, 99);
        }
        // Offsets continue where they stopped.
        let next = h
            .propose(groups[0], make_batch(2, -1, -1, b"x").to_vec())
            .wait(Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            next,
            Applied::Partition(AppendOutcome::Appended { base_offset: 100 })
        );
        h.shutdown();
        thread.join().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_by_bytes_moves_log_start_and_compacts_raft_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = storage::open(dir.path()).unwrap();
        let catalog = Arc::new(Catalog::default());
        let mut cfg = config();
        cfg.retention_check = Duration::from_millis(200);
        let (h, thread) = start_single(cfg, &db, &catalog);
        let command = Command::CreateTopic {
            name: "small".into(),
            id: uuid::Uuid::new_v4(),
            partitions: 1,
            configs: [("retention.bytes".to_string(), "1000".to_string())].into(),
            replicas: vec![],
        };
        let group = match h.propose_metadata(&command, Duration::from_secs(5)).await {
            Ok(Outcome::TopicCreated(_, r)) => r.groups[0],
            other => panic!("{other:?}"),
        };
        for _ in 0..20 {
            h.propose(group, make_batch(1, -1, -1, &[0u8; 200]).to_vec())
                .wait(Duration::from_secs(5))
                .await
                .unwrap();
        }
        let p = catalog.partition("small", 0).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while p.log_start() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(p.log_start() > 0, "retention never moved the log start");
        assert!(
            p.log_bytes() <= 1000 + 261,
            "log still holds {} bytes",
            p.log_bytes()
        );
        assert_eq!(p.high_watermark(), 20);
        // Reading below the new start finds the first retained batch, never a hole.
        let data = log::read::read(&db, &p, 0, 1 << 20).unwrap();
        let first = i64::from_be_bytes(data[0..8].try_into().unwrap());
        assert_eq!(first, p.log_start());
        h.shutdown();
        thread.join().unwrap();
    }
}
