//! A partition's state machine: applies committed Raft entries (record batches) by giving
//! them Kafka offsets, deduplicating idempotent producers, and indexing them for fetches.
//!
//! Offsets are a pure function of the committed log, so every replica assigns the same ones
//! and a restart simply re-applies entries after the persisted applied index.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocksdb::WriteBatch;

use super::batch::{self, BatchHeader};
use super::control::Control;
use crate::protocol::errors;
use crate::storage::{keys, Db};

/// A leader reports its groups every few hundred milliseconds; a report older than this
/// speaks for a leader that may be gone.
const REPORT_FRESH: Duration = Duration::from_secs(2);

/// How many recent batches per producer are remembered for duplicate detection (as Kafka).
const PRODUCER_WINDOW: usize = 5;

/// The part of a partition that request handlers read while the Raft driver writes it.
#[derive(Debug)]
pub struct PartitionShared {
    pub topic: String,
    pub partition: i32,
    pub group: u64,
    high_watermark: AtomicI64,
    log_start: AtomicI64,
    leader_epoch: AtomicI32,
    /// Node id of the Raft leader, 0 when there is none.
    leader: AtomicU64,
    /// The voter this node, as leader, is handing leadership to, and the epoch it takes
    /// it in (kept after this node stepped down until it learns the new leader).
    transferee: Mutex<Option<(u64, i32)>>,
    /// Voters of the group and those caught up with the leader's commit index.
    replicas: Mutex<(Vec<u64>, Vec<u64>)>,
    /// Voters as the leader last reported them (a replica removed from the group learns
    /// it this way: it never sees its removal commit).
    reported_voters: Mutex<Vec<u64>>,
    /// When a leader last reported this group, if ever.
    reported_at: Mutex<Option<Instant>>,
    /// Whether this node hosts a replica (its own Raft view is then the authority).
    hosted: AtomicBool,
    /// The replicas as assigned (the target voters of a move, else the initial ones),
    /// preferred leader first: the order Kafka's tools expect replicas listed in.
    assignment: Mutex<Vec<u64>>,
    log_bytes: AtomicU64,
    /// Applied batches whose offset-index entries may not be in RocksDB yet (the log
    /// writer stores them with its next batch); readers merge these with the index.
    unflushed: Mutex<BTreeMap<i64, IndexedBatch>>,
}

impl PartitionShared {
    pub fn new(topic: String, partition: i32, group: u64) -> Self {
        PartitionShared {
            topic,
            partition,
            group,
            high_watermark: AtomicI64::new(0),
            log_start: AtomicI64::new(0),
            leader_epoch: AtomicI32::new(0),
            leader: AtomicU64::new(0),
            transferee: Mutex::new(None),
            replicas: Mutex::new((vec![], vec![])),
            reported_voters: Mutex::new(vec![]),
            reported_at: Mutex::new(None),
            hosted: AtomicBool::new(false),
            assignment: Mutex::new(vec![]),
            log_bytes: AtomicU64::new(0),
            unflushed: Mutex::new(BTreeMap::new()),
        }
    }

    /// Unflushed batches with last offset in `[from, below)`, oldest first.
    pub fn unflushed_range(&self, from: i64, below: i64) -> Vec<IndexedBatch> {
        if from >= below {
            return vec![];
        }
        self.unflushed
            .lock()
            .unwrap()
            .range(from..below)
            .map(|(_, b)| *b)
            .collect()
    }

    /// Forgets unflushed batches up to `last_offset`: their index entries are on disk.
    pub fn mark_flushed(&self, last_offset: i64) {
        let mut unflushed = self.unflushed.lock().unwrap();
        *unflushed = unflushed.split_off(&(last_offset + 1));
    }
    /// Forgets every unflushed batch: a snapshot replaced the log they belonged to.
    pub fn clear_unflushed(&self) {
        self.unflushed.lock().unwrap().clear();
    }
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }
    pub fn log_start(&self) -> i64 {
        self.log_start.load(Ordering::Acquire)
    }
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }
    /// The Raft leader's node id, if the group has one. A broker without a replica knows
    /// only what leaders report: a leader that stopped reporting is not advertised.
    pub fn leader(&self) -> Option<u64> {
        let leader = Some(self.leader.load(Ordering::Acquire)).filter(|id| *id != 0)?;
        if !self.hosted.load(Ordering::Acquire) && !self.report_is_fresh() {
            return None;
        }
        Some(leader)
    }

    /// The voter this node's leadership is being handed to (a SIGTERM, a drain, a move)
    /// and the epoch it takes over in: refused producers are told to go there at once.
    pub fn transferee(&self) -> Option<(u64, i32)> {
        *self.transferee.lock().unwrap()
    }

    pub fn set_transferee(&self, to: Option<(u64, i32)>) {
        *self.transferee.lock().unwrap() = to;
    }

    fn set_leadership(&self, leader: u64, term: u64) {
        self.leader.store(leader, Ordering::Release);
        self.leader_epoch.store(term as i32, Ordering::Release);
    }

    fn report_is_fresh(&self) -> bool {
        self.reported_at
            .lock()
            .unwrap()
            .is_some_and(|at| at.elapsed() < REPORT_FRESH)
    }

    /// (voters, in-sync voters) as last seen by the Raft driver.
    pub fn replicas(&self) -> (Vec<u64>, Vec<u64>) {
        self.replicas.lock().unwrap().clone()
    }

    /// Records the partition's assigned replicas, preferred leader first.
    pub fn set_assignment(&self, replicas: &[u64]) {
        *self.assignment.lock().unwrap() = replicas.to_vec();
    }

    /// The voters as Kafka lists a partition's replicas: in assignment order (the first
    /// is the preferred leader), then any voter outside the assignment (a move under
    /// way) in id order.
    pub fn replicas_in_assignment_order(&self) -> (Vec<u64>, Vec<u64>) {
        let (mut voters, in_sync) = self.replicas();
        let assignment = self.assignment.lock().unwrap();
        let rank = |id: &u64| {
            assignment
                .iter()
                .position(|a| a == id)
                .unwrap_or(usize::MAX)
        };
        voters.sort_by_key(|id| (rank(id), *id));
        (voters, in_sync)
    }

    /// Records the group's Raft view as this node's driver sees it. Only a leader knows
    /// which voters are in sync (`Some`); a follower keeps what its leader reported for
    /// the same term and otherwise assumes just the leader.
    ///
    /// When this node's Raft knows no leader, none is advertised (clients then get
    /// LEADER_NOT_AVAILABLE and ask again) unless a leader of this term is reporting
    /// right now, which our Raft has simply not heard from yet. A leader that stepped
    /// down, or one that went silent, is never kept.
    pub fn set_raft_view(&self, leader: u64, term: u64, voters: &[u64], in_sync: Option<&[u64]>) {
        self.hosted.store(true, Ordering::Release);
        let mut r = self.replicas.lock().unwrap();
        let known = self.leader.load(Ordering::Acquire);
        let epoch = self.leader_epoch();
        let reported_now = self.report_is_fresh();
        if (term as i32) < epoch
            || (term as i32 == epoch && leader == 0 && known != 0 && reported_now)
        {
            // A leader's report arrived before our own Raft caught up (a newer term, or
            // the leader of this term that we have not heard from yet): keep it.
            return;
        }
        let same_leadership =
            self.leader.load(Ordering::Acquire) == leader && self.leader_epoch() == term as i32;
        let mut in_sync = match in_sync {
            Some(s) => s.to_vec(),
            None if same_leadership && !r.1.is_empty() => r.1.clone(),
            None => [leader].into_iter().filter(|id| *id != 0).collect(),
        };
        // A voter just removed can linger in the leader's progress for a moment: the
        // in-sync set is always a subset of the replicas.
        in_sync.retain(|id| voters.contains(id));
        self.set_leadership(leader, term);
        if r.0 != voters || r.1 != in_sync {
            *r = (voters.to_vec(), in_sync);
        }
    }

    /// Takes a leader's report of its group (from a peer, or for a partition this node
    /// does not host). Reports from older terms than the one known are stale: ignored.
    pub fn apply_report(&self, leader: u64, term: u64, voters: &[u64], in_sync: &[u64]) {
        let mut r = self.replicas.lock().unwrap();
        if (term as i32) < self.leader_epoch() {
            return;
        }
        self.set_leadership(leader, term);
        let in_sync = in_sync.iter().copied().filter(|id| voters.contains(id));
        *r = (voters.to_vec(), in_sync.collect());
        *self.reported_voters.lock().unwrap() = voters.to_vec();
        if leader != 0 {
            *self.reported_at.lock().unwrap() = Some(Instant::now());
        }
    }

    /// The voters in the leader's last report; empty before any.
    pub fn reported_voters(&self) -> Vec<u64> {
        self.reported_voters.lock().unwrap().clone()
    }

    /// Whether this broker holds a replica of the partition (its log, readable here).
    pub fn is_hosted(&self) -> bool {
        self.hosted.load(Ordering::Acquire)
    }

    /// This broker's replica is gone (moved away): its leadership view is the leaders'
    /// reports again, and it serves no fetches.
    pub fn set_unhosted(&self) {
        self.hosted.store(false, Ordering::Release);
    }

    /// Whether `node` is the current leader as far as this broker knows.
    pub fn is_led_by(&self, node: u64) -> bool {
        self.leader() == Some(node)
    }

    pub fn log_bytes(&self) -> u64 {
        self.log_bytes.load(Ordering::Relaxed)
    }
}

/// Where a batch lives: the value of an offset-index key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexedBatch {
    pub raft_index: u64,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub term: u64,
    pub size: u32,
}

impl IndexedBatch {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(36);
        v.extend_from_slice(&self.raft_index.to_be_bytes());
        v.extend_from_slice(&self.base_offset.to_be_bytes());
        v.extend_from_slice(&self.max_timestamp.to_be_bytes());
        v.extend_from_slice(&self.term.to_be_bytes());
        v.extend_from_slice(&self.size.to_be_bytes());
        v
    }

    pub fn decode(key: &[u8], v: &[u8]) -> Self {
        let u = |r: std::ops::Range<usize>| u64::from_be_bytes(v[r].try_into().unwrap());
        IndexedBatch {
            raft_index: u(0..8),
            base_offset: u(8..16) as i64,
            max_timestamp: u(16..24) as i64,
            term: u(24..32),
            size: u32::from_be_bytes(v[32..36].try_into().unwrap()),
            last_offset: keys::u64_suffix(key) as i64,
        }
    }
}

/// The result of applying one produced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    Appended {
        base_offset: i64,
    },
    /// A retry of a batch already in the log: acknowledged with its original offset.
    Duplicate {
        base_offset: i64,
    },
    Rejected {
        error_code: i16,
    },
    /// A control entry moved the log start offset (to this, if it was not there already).
    LogStartMoved {
        log_start: i64,
    },
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ProducerState {
    epoch: i16,
    /// (first sequence, last sequence, base offset) of the most recent batches.
    recent: VecDeque<(i32, i32, i64)>,
}

impl ProducerState {
    fn encode(&self) -> Vec<u8> {
        let mut v = self.epoch.to_be_bytes().to_vec();
        for (first, last, offset) in &self.recent {
            v.extend_from_slice(&first.to_be_bytes());
            v.extend_from_slice(&last.to_be_bytes());
            v.extend_from_slice(&offset.to_be_bytes());
        }
        v
    }

    fn decode(v: &[u8]) -> Option<Self> {
        let epoch = i16::from_be_bytes(v.get(0..2)?.try_into().ok()?);
        let recent = v[2..]
            .chunks_exact(16)
            .map(|c| {
                (
                    i32::from_be_bytes(c[0..4].try_into().unwrap()),
                    i32::from_be_bytes(c[4..8].try_into().unwrap()),
                    i64::from_be_bytes(c[8..16].try_into().unwrap()),
                )
            })
            .collect();
        Some(ProducerState { epoch, recent })
    }
}

/// Owned by the Raft driver; the only writer of a partition's state.
pub struct PartitionMachine {
    pub shared: Arc<PartitionShared>,
    pub applied_index: u64,
    next_offset: i64,
    log_start: i64,
    log_bytes: u64,
    producers: HashMap<i64, ProducerState>,
    /// Batches applied since the last `publish`.
    applied_batches: Vec<IndexedBatch>,
    /// Whether batches wholly below the log start may still be stored (a control entry
    /// moved it): the retention pass drops them.
    pub below_start: bool,
}

impl PartitionMachine {
    pub fn load(db: &Db, shared: Arc<PartitionShared>) -> anyhow::Result<Self> {
        let group = shared.group;
        let mut m = PartitionMachine {
            shared,
            applied_index: 0,
            next_offset: 0,
            log_start: 0,
            log_bytes: 0,
            producers: HashMap::new(),
            applied_batches: Vec::new(),
            below_start: false,
        };
        if let Some(v) = db.get(keys::group_key(keys::APPLIED, group))? {
            let a = AppliedState::decode(&v)
                .ok_or_else(|| anyhow::anyhow!("applied state of group {group} is damaged"))?;
            m.applied_index = a.index;
            m.next_offset = a.next_offset;
            m.log_start = a.log_start;
            m.log_bytes = a.log_bytes;
            // (Whether a control entry left batches below the start is not stored: the
            // first retention pass looks.)
            m.below_start = a.log_start > 0;
        }
        let prefix = keys::group_key(keys::PRODUCER, group);
        for item in db.prefix_iterator(&prefix) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if let Some(state) = ProducerState::decode(&v) {
                m.producers.insert(keys::u64_suffix(&k) as i64, state);
            }
        }
        m.publish();
        Ok(m)
    }

    /// Makes applied batches visible to fetches (through the unflushed index until the
    /// apply batch is written). Returns the last offset published.
    pub fn publish(&mut self) -> i64 {
        let s = &self.shared;
        if !self.applied_batches.is_empty() {
            let mut unflushed = s.unflushed.lock().unwrap();
            for b in self.applied_batches.drain(..) {
                unflushed.insert(b.last_offset, b);
            }
        }
        s.log_start.store(self.log_start, Ordering::Release);
        s.log_bytes.store(self.log_bytes, Ordering::Relaxed);
        s.high_watermark.store(self.next_offset, Ordering::Release);
        self.next_offset - 1
    }

    /// Applies one committed entry; its writes go to `wb`, handed to the log writer.
    pub fn apply(
        &mut self,
        raft_index: u64,
        term: u64,
        data: &[u8],
        wb: &mut WriteBatch,
    ) -> Option<AppendOutcome> {
        self.applied_index = raft_index;
        if let Some(Control::LogStart(offset)) = Control::decode(data) {
            let log_start = self.raise_log_start(offset);
            self.stage_applied(wb);
            return Some(AppendOutcome::LogStartMoved { log_start });
        }
        // Empty entries are appended by new Raft leaders; they carry no records.
        let outcome = (data.len() >= batch::HEADER_LEN).then(|| {
            let header = batch::parse_header(data);
            self.append(raft_index, term, data.len() as u32, &header, wb)
        });
        self.stage_applied(wb);
        outcome
    }

    fn append(
        &mut self,
        raft_index: u64,
        term: u64,
        size: u32,
        h: &BatchHeader,
        wb: &mut WriteBatch,
    ) -> AppendOutcome {
        if h.is_idempotent() {
            if let Err(outcome) = self.check_sequence(h) {
                return outcome;
            }
        }
        let base_offset = self.next_offset;
        let indexed = IndexedBatch {
            raft_index,
            base_offset,
            last_offset: base_offset + h.last_offset_delta as i64,
            max_timestamp: h.max_timestamp,
            term,
            size,
        };
        wb.put(
            keys::offset_index_key(self.shared.group, indexed.last_offset),
            indexed.encode(),
        );
        self.applied_batches.push(indexed);
        self.next_offset = indexed.last_offset + 1;
        self.log_bytes += size as u64;
        if h.is_idempotent() {
            let state = self.producers.entry(h.producer_id).or_default();
            if state.epoch != h.producer_epoch {
                state.epoch = h.producer_epoch;
                state.recent.clear();
            }
            state
                .recent
                .push_back((h.base_sequence, h.last_sequence(), base_offset));
            if state.recent.len() > PRODUCER_WINDOW {
                state.recent.pop_front();
            }
            wb.put(
                keys::producer_key(self.shared.group, h.producer_id),
                state.encode(),
            );
        }
        AppendOutcome::Appended { base_offset }
    }

    /// Kafka's idempotence rules: duplicates of the last five batches are acknowledged
    /// again, gaps are `OUT_OF_ORDER_SEQUENCE_NUMBER`, fenced epochs `INVALID_PRODUCER_EPOCH`.
    fn check_sequence(&self, h: &BatchHeader) -> Result<(), AppendOutcome> {
        let reject = |error_code| Err(AppendOutcome::Rejected { error_code });
        let Some(state) = self.producers.get(&h.producer_id) else {
            return if h.base_sequence == 0 {
                Ok(())
            } else {
                reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER)
            };
        };
        if h.producer_epoch < state.epoch {
            return reject(errors::INVALID_PRODUCER_EPOCH);
        }
        if h.producer_epoch > state.epoch {
            return if h.base_sequence == 0 {
                Ok(())
            } else {
                reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER)
            };
        }
        if let Some(&(_, _, base_offset)) = state
            .recent
            .iter()
            .find(|(first, last, _)| *first == h.base_sequence && *last == h.last_sequence())
        {
            return Err(AppendOutcome::Duplicate { base_offset });
        }
        let expected = state
            .recent
            .back()
            .map(|&(_, last, _)| if last == i32::MAX { 0 } else { last + 1 })
            .unwrap_or(0);
        if h.base_sequence != expected {
            return reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER);
        }
        Ok(())
    }

    /// Records that retention dropped the batches below `new_start` (a batch boundary):
    /// the log start moves there unless a control entry already moved it further (into
    /// the batch that now comes first).
    pub fn truncate_front(&mut self, new_start: i64, dropped_bytes: u64, wb: &mut WriteBatch) {
        self.log_start = self.log_start.max(new_start.min(self.next_offset));
        self.log_bytes = self.log_bytes.saturating_sub(dropped_bytes);
        self.stage_applied(wb);
    }

    /// Kafka's DeleteRecords on the log: records below `offset` are gone (reads below the
    /// new start are out of range at once; the retention pass drops the stored batches
    /// wholly below it). The start never moves back nor past the high watermark.
    fn raise_log_start(&mut self, offset: i64) -> i64 {
        let offset = offset.min(self.next_offset);
        if offset > self.log_start {
            self.log_start = offset;
            self.below_start = true;
        }
        self.log_start
    }

    /// Records that entry `raft_index` (a membership change, no batch) was applied, so
    /// that the stored applied state stays level with the stored membership: a snapshot
    /// reads both as of one index.
    pub fn mark_applied(&mut self, raft_index: u64, wb: &mut WriteBatch) {
        self.applied_index = raft_index;
        self.stage_applied(wb);
    }

    fn stage_applied(&self, wb: &mut WriteBatch) {
        let state = AppliedState {
            index: self.applied_index,
            next_offset: self.next_offset,
            log_start: self.log_start,
            log_bytes: self.log_bytes,
        };
        wb.put(
            keys::group_key(keys::APPLIED, self.shared.group),
            state.encode(),
        );
    }
}

/// A partition's applied state as stored under `a group`: how far its log was applied
/// and what that made of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedState {
    pub index: u64,
    pub next_offset: i64,
    pub log_start: i64,
    pub log_bytes: u64,
}

impl AppliedState {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32);
        v.extend_from_slice(&self.index.to_be_bytes());
        v.extend_from_slice(&self.next_offset.to_be_bytes());
        v.extend_from_slice(&self.log_start.to_be_bytes());
        v.extend_from_slice(&self.log_bytes.to_be_bytes());
        v
    }

    pub fn decode(v: &[u8]) -> Option<Self> {
        if v.len() != 32 {
            return None;
        }
        let u = |r: std::ops::Range<usize>| u64::from_be_bytes(v[r].try_into().unwrap());
        Some(AppliedState {
            index: u(0..8),
            next_offset: u(8..16) as i64,
            log_start: u(16..24) as i64,
            log_bytes: u(24..32),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::tests::make_batch;

    fn machine(dir: &std::path::Path) -> (Db, PartitionMachine) {
        let db = crate::storage::open(dir).unwrap();
        let shared = Arc::new(PartitionShared::new("t".into(), 0, 5));
        let m = PartitionMachine::load(&db, shared).unwrap();
        (db, m)
    }

    fn apply(db: &Db, m: &mut PartitionMachine, idx: u64, data: &[u8]) -> Option<AppendOutcome> {
        let mut wb = WriteBatch::default();
        let out = m.apply(idx, 1, data, &mut wb);
        crate::storage::write(db, wb, false).unwrap();
        m.publish();
        out
    }

    #[test]
    fn assigns_offsets_and_dedups_idempotent_retries() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut m) = machine(dir.path());
        assert_eq!(apply(&db, &mut m, 1, b""), None);
        let b0 = make_batch(3, 77, 0, b"x");
        let b1 = make_batch(2, 77, 3, b"y");
        assert_eq!(
            apply(&db, &mut m, 2, &b0),
            Some(AppendOutcome::Appended { base_offset: 0 })
        );
        assert_eq!(
            apply(&db, &mut m, 3, &b1),
            Some(AppendOutcome::Appended { base_offset: 3 })
        );
        // The producer retries the first batch: same offset back, nothing appended.
        assert_eq!(
            apply(&db, &mut m, 4, &b0),
            Some(AppendOutcome::Duplicate { base_offset: 0 })
        );
        let gap = make_batch(1, 77, 9, b"z");
        assert_eq!(
            apply(&db, &mut m, 5, &gap),
            Some(AppendOutcome::Rejected {
                error_code: errors::OUT_OF_ORDER_SEQUENCE_NUMBER
            })
        );
        assert_eq!(m.shared.high_watermark(), 5);

        // State survives a reload: the retry is still recognised.
        drop(m);
        let shared = Arc::new(PartitionShared::new("t".into(), 0, 5));
        let mut m = PartitionMachine::load(&db, shared).unwrap();
        assert_eq!(m.applied_index, 5);
        assert_eq!(m.shared.high_watermark(), 5);
        assert_eq!(
            apply(&db, &mut m, 6, &b1),
            Some(AppendOutcome::Duplicate { base_offset: 3 })
        );
        let plain = make_batch(4, -1, -1, b"w");
        assert_eq!(
            apply(&db, &mut m, 7, &plain),
            Some(AppendOutcome::Appended { base_offset: 5 })
        );
    }

    #[test]
    fn a_control_entry_moves_the_log_start_forward_only_and_within_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut m) = machine(dir.path());
        apply(&db, &mut m, 1, &make_batch(10, -1, -1, b"x"));
        let moved = |log_start| Some(AppendOutcome::LogStartMoved { log_start });
        let start = |o| Control::LogStart(o).encode();
        assert_eq!(apply(&db, &mut m, 2, &start(4)), moved(4));
        assert!(m.below_start, "the batch below is still stored");
        assert_eq!(apply(&db, &mut m, 3, &start(2)), moved(4));
        assert_eq!(apply(&db, &mut m, 4, &start(99)), moved(10));
        assert_eq!((m.shared.log_start(), m.shared.high_watermark()), (10, 10));
        // Retention dropping the batch (a boundary below the start) keeps the start.
        let mut wb = WriteBatch::default();
        m.truncate_front(0, 0, &mut wb);
        crate::storage::write(&db, wb, false).unwrap();
        assert_eq!(m.publish(), 9);
        assert_eq!(m.shared.log_start(), 10);
        // Offsets continue; the start and the applied index survive a reload.
        assert_eq!(
            apply(&db, &mut m, 5, &make_batch(1, -1, -1, b"y")),
            Some(AppendOutcome::Appended { base_offset: 10 })
        );
        let shared = Arc::new(PartitionShared::new("t".into(), 0, 5));
        let m = PartitionMachine::load(&db, shared).unwrap();
        assert_eq!((m.applied_index, m.shared.log_start()), (5, 10));
        assert_eq!(m.shared.high_watermark(), 11);
    }
}
