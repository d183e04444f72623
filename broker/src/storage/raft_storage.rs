//! `raft::Storage` for one Raft group, backed by the shared RocksDB.
//!
//! Writes are *staged* into a caller-owned `WriteBatch` so that the driver can persist the
//! Ready states of many groups with a single fsync. Because that write happens later, on
//! the log writer thread, while raft-rs already treats handed-off entries as stable (its
//! asynchronous Ready), staged entries are kept in an in-memory cache until they are
//! applied (and therefore durable): reads of the tail never miss, and applying committed
//! entries does not read back from RocksDB what was just written.
//!
//! A partition group's entries go to its log files instead ([`super::log_files`]): staged
//! as [`FileWrite`]s that the log writer appends and syncs before the batch holding their
//! pointers.

use std::collections::VecDeque;

use prost011::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::log_files::{Collect, Pointer, Tail, FILE_BYTES, FILE_MIN_DATA};
use super::{decode_entry, entry_term, keys, Db, FileWrite};

/// Makes the snapshot raft-rs asks for when a follower needs compacted entries: the
/// group's state machine knows what its state is (see `log::snapshot::describe`).
pub type SnapshotSource = fn(&Db, u64) -> raft::Result<Snapshot>;

pub struct GroupStorage {
    db: Db,
    group: u64,
    /// How snapshots are made; `None` until the driver sets it (a group that cannot make
    /// one never compacts its log).
    snapshots: Option<SnapshotSource>,
    hard_state: HardState,
    conf_state: ConfState,
    /// Entries up to and including this index were compacted away.
    truncated_index: u64,
    truncated_term: u64,
    last_index: u64,
    /// Staged entries not yet applied, contiguous by index.
    cache: VecDeque<Entry>,
    /// Where the next entry goes in this group's log files; `None` keeps every entry
    /// inline in RocksDB (the metadata group, whose log is small and snapshotted whole).
    tail: Option<Tail>,
}

impl GroupStorage {
    /// A brand-new group whose initial members are `voters` and `learners`; its state is
    /// staged into `batch`.
    pub fn create(
        db: Db,
        group: u64,
        voters: Vec<u64>,
        learners: Vec<u64>,
        batch: &mut WriteBatch,
    ) -> Self {
        let conf_state = ConfState {
            voters,
            learners,
            ..Default::default()
        };
        // Files an earlier incarnation left (a crash between its deletion and its files'):
        // nothing points into them.
        if let Err(e) = db.files.remove_group(group) {
            tracing::warn!(group, error = %e, "could not delete an earlier replica's log files");
        }
        batch.put(
            keys::group_key(keys::CONF_STATE, group),
            conf_state.encode_to_vec(),
        );
        GroupStorage {
            db,
            group,
            snapshots: None,
            hard_state: HardState::default(),
            conf_state,
            truncated_index: 0,
            truncated_term: 0,
            last_index: 0,
            cache: VecDeque::new(),
            tail: None,
        }
    }

    /// Loads a group that exists on disk, or `None` if it was never created.
    /// Whether this node holds a replica of `group` on disk.
    pub fn exists(db: &Db, group: u64) -> anyhow::Result<bool> {
        Ok(db.get(keys::group_key(keys::CONF_STATE, group))?.is_some())
    }

    pub fn load(db: Db, group: u64) -> anyhow::Result<Option<Self>> {
        let Some(cs) = db.get(keys::group_key(keys::CONF_STATE, group))? else {
            return Ok(None);
        };
        let conf_state = ConfState::decode(cs.as_slice())?;
        let hard_state = match db.get(keys::group_key(keys::HARD_STATE, group))? {
            Some(raw) => decode_hard_state(&raw)?,
            None => HardState::default(),
        };
        let (truncated_index, truncated_term) =
            match db.get(keys::group_key(keys::TRUNCATED, group))? {
                Some(raw) if raw.len() == 16 => (
                    u64::from_be_bytes(raw[0..8].try_into()?),
                    u64::from_be_bytes(raw[8..16].try_into()?),
                ),
                _ => (0, 0),
            };
        let mut storage = GroupStorage {
            db,
            group,
            snapshots: None,
            hard_state,
            conf_state,
            truncated_index,
            truncated_term,
            last_index: truncated_index,
            cache: VecDeque::new(),
            tail: None,
        };
        storage.last_index = storage.find_last_index().max(truncated_index);
        Ok(Some(storage))
    }

    fn find_last_index(&self) -> u64 {
        let upper = keys::entry_key(self.group, u64::MAX);
        let lower = keys::entry_key(self.group, 0);
        let mut it = self
            .db
            .iterator(IteratorMode::From(&upper, Direction::Reverse));
        match it.next() {
            Some(Ok((k, _))) if k.as_ref() >= lower.as_slice() && k.len() == 17 => {
                keys::u64_suffix(&k)
            }
            _ => 0,
        }
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// From now on entries with a payload worth it go to the group's log files.
    pub fn keep_entries_in_files(&mut self) -> std::io::Result<()> {
        self.tail = Some(self.db.files.tail(self.group)?);
        Ok(())
    }

    /// What deleting this group's dead log files needs to know, once what was staged so
    /// far (a compaction, a restored snapshot) is written.
    pub fn file_collection(&self) -> Option<Collect> {
        self.tail.map(|t| Collect {
            group: self.group,
            newest: t.file,
            from_index: self.truncated_index + 1,
        })
    }

    /// Lets the group send snapshots, made by `source`.
    pub fn set_snapshot_source(&mut self, source: SnapshotSource) {
        self.snapshots = Some(source);
    }

    /// Takes on a snapshot raft-rs restored: the log now starts after its index. (What the
    /// snapshot installs on disk, the log writer ingests before anything staged after
    /// this; until then a restart finds the old state whole.)
    pub fn restore(&mut self, meta: &SnapshotMetadata) {
        self.truncated_index = meta.index;
        self.truncated_term = meta.term;
        self.last_index = meta.index;
        self.cache.clear();
        // What the files hold now lies below the snapshot: a new file lets them all go.
        if let Some(tail) = self.tail.as_mut().filter(|t| t.end > 0) {
            *tail = Tail {
                file: tail.file + 1,
                end: 0,
            };
        }
        if let Some(cs) = &meta.conf_state {
            self.conf_state = cs.clone();
        }
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
    }

    /// Appends entries, replacing any conflicting suffix (Raft may overwrite uncommitted
    /// entries), and keeps them in the entry cache. Entries bound for the log files are
    /// added to `files`, their pointers to `batch`.
    pub fn stage_append(
        &mut self,
        entries: Vec<Entry>,
        batch: &mut WriteBatch,
        files: &mut Vec<FileWrite>,
    ) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        let (first, last) = (first.index, last.index);
        let mut value = Vec::new();
        let mut appending: Option<FileWrite> = None;
        for e in &entries {
            let key = keys::entry_key(self.group, e.index);
            let Some(tail) = self.tail.as_mut().filter(|_| e.data.len() >= FILE_MIN_DATA) else {
                super::encode_entry_into(e, &mut value);
                batch.put(key, &value);
                continue;
            };
            let w = appending.get_or_insert_with(|| FileWrite {
                group: self.group,
                file: tail.file,
                pos: tail.end,
                bytes: Vec::with_capacity(entries.iter().map(super::encoded_len).sum()),
            });
            let at = w.bytes.len();
            super::append_entry(e, &mut w.bytes);
            let pointer = Pointer {
                term: e.term,
                entry_type: e.entry_type as u8,
                file: w.file,
                pos: w.pos + at as u64,
                len: (w.bytes.len() - at) as u32,
                context_len: e.context.len() as u32,
            };
            batch.put(key, pointer.encode());
            if w.pos + w.bytes.len() as u64 >= FILE_BYTES {
                // Full: the next entry starts the next file.
                *tail = Tail {
                    file: tail.file + 1,
                    end: 0,
                };
                files.extend(appending.take());
            }
        }
        if let (Some(w), Some(tail)) = (appending, self.tail.as_mut()) {
            tail.end = w.pos + w.bytes.len() as u64;
            files.push(w);
        }
        if last < self.last_index {
            batch.delete_range(
                keys::entry_key(self.group, last + 1),
                keys::entry_key(self.group, self.last_index + 1),
            );
        }
        debug_assert!(first > self.truncated_index);
        self.last_index = last;
        // Keep the cache contiguous: drop what the new entries replace (or everything,
        // should they not follow on).
        match self.cache.front().map(|e| e.index) {
            Some(front) if first >= front && first <= front + self.cache.len() as u64 => {
                self.cache.truncate((first - front) as usize)
            }
            _ => self.cache.clear(),
        }
        self.cache.extend(entries);
    }

    /// Forgets cached entries up to `applied`: applied entries are durable in RocksDB.
    pub fn release_cache(&mut self, applied: u64) {
        while self.cache.front().is_some_and(|e| e.index <= applied) {
            self.cache.pop_front();
        }
    }

    fn cached(&self, idx: u64) -> Option<&Entry> {
        let front = self.cache.front()?.index;
        idx.checked_sub(front)
            .and_then(|offset| self.cache.get(offset as usize))
    }

    pub fn stage_hard_state(&mut self, hs: HardState, batch: &mut WriteBatch) {
        batch.put(
            keys::group_key(keys::HARD_STATE, self.group),
            encode_hard_state(&hs),
        );
        self.hard_state = hs;
    }

    /// Records the voters and learners after a membership change was applied.
    pub fn stage_conf_state(&mut self, cs: ConfState, batch: &mut WriteBatch) {
        batch.put(
            keys::group_key(keys::CONF_STATE, self.group),
            cs.encode_to_vec(),
        );
        self.conf_state = cs;
    }

    pub fn stage_commit(&mut self, commit: u64, batch: &mut WriteBatch) {
        if commit > self.hard_state.commit {
            let mut hs = self.hard_state.clone();
            hs.commit = commit;
            self.stage_hard_state(hs, batch);
        }
    }

    /// Drops entries up to and including `index` (which must be applied).
    pub fn stage_compact(&mut self, index: u64, batch: &mut WriteBatch) -> raft::Result<()> {
        // From the start: batches a snapshot installed lie at or below the compaction
        // point, partition data outside the Raft log, and go when retention drops them.
        let dropped = (
            keys::entry_key(self.group, 0),
            keys::entry_key(self.group, index + 1),
        );
        if index <= self.truncated_index {
            batch.delete_range(dropped.0, dropped.1);
            return Ok(());
        }
        let term = self.term_of(index)?;
        batch.delete_range(dropped.0, dropped.1);
        batch.put(
            keys::group_key(keys::TRUNCATED, self.group),
            truncated_value(index, term),
        );
        self.truncated_index = index;
        self.truncated_term = term;
        self.release_cache(index);
        Ok(())
    }

    /// Deletes every key of this group (used when a topic is deleted).
    pub fn stage_destroy(group: u64, batch: &mut WriteBatch) {
        for tag in [
            keys::ENTRY,
            keys::OFFSET_INDEX,
            keys::PRODUCER,
            keys::HARD_STATE,
            keys::CONF_STATE,
            keys::TRUNCATED,
            keys::APPLIED,
        ] {
            let prefix = keys::group_key(tag, group);
            batch.delete_range(prefix.clone(), keys::prefix_end(&prefix));
        }
    }

    fn term_of(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated_index {
            return Ok(self.truncated_term);
        }
        if idx < self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(e) = self.cached(idx) {
            return Ok(e.term);
        }
        match self.db.get_pinned(keys::entry_key(self.group, idx)) {
            Ok(Some(raw)) => Ok(entry_term(&raw)),
            Ok(None) => Err(raft::Error::Store(StorageError::Unavailable)),
            Err(e) => Err(raft::Error::Store(StorageError::Other(Box::new(e)))),
        }
    }
}

impl raft::Storage for GroupStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let cache_front = self.cache.front().map_or(u64::MAX, |e| e.index);
        if low >= cache_front {
            return Ok(self.entries_from_cache(low, high, max_size));
        }
        let mut out = self.entries_from_db(low, high.min(cache_front), max_size)?;
        let size: u64 = out.iter().map(|e| e.data.len() as u64).sum();
        if high > cache_front && out.len() as u64 == cache_front - low {
            out.extend(self.entries_from_cache(cache_front, high, max_size.saturating_sub(size)));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.term_of(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let unavailable = raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable);
        let snapshot = match self.snapshots {
            Some(source) => source(&self.db, self.group)?,
            None => return Err(unavailable),
        };
        // The follower goes on from the entry after the snapshot, which this log must
        // still have: a stored state older than the compaction point (its write still
        // queued) will do a moment later.
        match &snapshot.metadata {
            Some(m) if m.index >= self.truncated_index => Ok(snapshot),
            _ => Err(unavailable),
        }
    }
}

impl GroupStorage {
    /// Cached entries in `[low, high)`, at least one, then up to `max_size` bytes.
    fn entries_from_cache(&self, low: u64, high: u64, max_size: u64) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut size = 0u64;
        for idx in low..high {
            let Some(e) = self.cached(idx) else { break };
            size += e.data.len() as u64;
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e.clone());
        }
        out
    }

    fn entries_from_db(&self, low: u64, high: u64, max_size: u64) -> raft::Result<Vec<Entry>> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(keys::entry_key(self.group, high));
        let start = keys::entry_key(self.group, low);
        let it = self
            .db
            .iterator_opt(IteratorMode::From(&start, Direction::Forward), opts);
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for item in it {
            let (k, v) = item.map_err(|e| raft::Error::Store(StorageError::Other(Box::new(e))))?;
            size += Pointer::decode(&v).map_or(v.len() as u64, |p| p.len as u64);
            if !out.is_empty() && size > max_size {
                break;
            }
            let raw = self
                .db
                .entry_bytes(self.group, &v)
                .map_err(|e| raft::Error::Store(StorageError::Other(Box::new(e))))?;
            out.push(decode_entry(keys::u64_suffix(&k), &raw));
        }
        if out.len() as u64 != high - low && size <= max_size {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(out)
    }
}

/// What a snapshot reports while a group's stored state cannot make one (raft-rs asks again).
pub fn snapshot_unavailable() -> raft::Error {
    raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)
}

/// A RocksDB failure as raft-rs's storage error.
pub fn store_error(e: rocksdb::Error) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

/// The stored compaction point of a group (`T | group`): index, then term.
pub fn truncated_value(index: u64, term: u64) -> Vec<u8> {
    let mut raw = index.to_be_bytes().to_vec();
    raw.extend_from_slice(&term.to_be_bytes());
    raw
}

/// The term of `group`'s entry `index` in a point-in-time view: from the entry, or from
/// the compaction point when the log was compacted exactly there.
pub fn stored_term(snap: &rocksdb::Snapshot<'_>, group: u64, index: u64) -> raft::Result<u64> {
    if let Some(raw) = snap
        .get(keys::entry_key(group, index))
        .map_err(store_error)?
    {
        if raw.len() >= 8 {
            return Ok(super::entry_term(&raw));
        }
    }
    match snap
        .get(keys::group_key(keys::TRUNCATED, group))
        .map_err(store_error)?
    {
        Some(t) if t.len() == 16 && t[0..8] == index.to_be_bytes() => {
            Ok(u64::from_be_bytes(t[8..16].try_into().expect("8 bytes")))
        }
        _ => Err(snapshot_unavailable()),
    }
}

/// `group`'s voters and learners in a point-in-time view.
pub fn stored_conf_state(snap: &rocksdb::Snapshot<'_>, group: u64) -> raft::Result<ConfState> {
    match snap
        .get(keys::group_key(keys::CONF_STATE, group))
        .map_err(store_error)?
    {
        Some(raw) => ConfState::decode(raw.as_slice()).map_err(|_| snapshot_unavailable()),
        None => Err(snapshot_unavailable()),
    }
}

fn encode_hard_state(hs: &HardState) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&hs.term.to_be_bytes());
    v.extend_from_slice(&hs.vote.to_be_bytes());
    v.extend_from_slice(&hs.commit.to_be_bytes());
    v
}

fn decode_hard_state(raw: &[u8]) -> anyhow::Result<HardState> {
    anyhow::ensure!(raw.len() == 24, "hard state has {} bytes", raw.len());
    Ok(HardState {
        term: u64::from_be_bytes(raw[0..8].try_into()?),
        vote: u64::from_be_bytes(raw[8..16].try_into()?),
        commit: u64::from_be_bytes(raw[16..24].try_into()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn appends_truncates_compacts_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::open(dir.path()).unwrap();
        let mut batch = WriteBatch::default();
        let mut s = GroupStorage::create(db.clone(), 9, vec![1], vec![], &mut batch);
        s.stage_append(
            vec![entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")],
            &mut batch,
            &mut vec![],
        );
        // A new leader overwrites the uncommitted tail.
        s.stage_append(vec![entry(2, 2, b"B")], &mut batch, &mut vec![]);
        s.stage_hard_state(
            HardState {
                term: 2,
                vote: 1,
                commit: 2,
            },
            &mut batch,
        );
        crate::storage::write(&db, batch, true).unwrap();

        assert_eq!(s.last_index().unwrap(), 2);
        let got = s
            .entries(1, 3, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got, vec![entry(1, 1, b"a"), entry(2, 2, b"B")]);
        assert_eq!(s.term(2).unwrap(), 2);

        let mut batch = WriteBatch::default();
        s.stage_compact(1, &mut batch).unwrap();
        crate::storage::write(&db, batch, true).unwrap();
        assert!(s
            .entries(1, 3, None, GetEntriesContext::empty(false))
            .is_err());

        let reloaded = GroupStorage::load(db, 9).unwrap().unwrap();
        assert_eq!(reloaded.first_index().unwrap(), 2);
        assert_eq!(reloaded.last_index().unwrap(), 2);
        assert_eq!(reloaded.term(1).unwrap(), 1);
        assert_eq!(reloaded.hard_state().commit, 2);
        let state = reloaded.initial_state().unwrap();
        assert_eq!(state.conf_state.voters, vec![1]);
    }

    /// A crash in the middle of a round: its entries reached the file (any prefix of
    /// them), their pointers never reached RocksDB.
    fn crash_during_an_append(cut_at: impl Fn(u64, u64) -> u64) -> (u64, u64) {
        let dir = tempfile::tempdir().unwrap();
        let payload = |i: u64| vec![i as u8; FILE_MIN_DATA];
        let (durable_end, written_end) = {
            let db = crate::storage::open(dir.path()).unwrap();
            let mut batch = WriteBatch::default();
            let mut s = GroupStorage::create(db.clone(), 3, vec![1], vec![], &mut batch);
            s.keep_entries_in_files().unwrap();
            let mut files = vec![];
            let first: Vec<Entry> = (1..=3).map(|i| entry(i, 1, &payload(i))).collect();
            s.stage_append(first, &mut batch, &mut files);
            db.files.write(&files).unwrap();
            crate::storage::write(&db, batch, true).unwrap();
            let durable_end = s.tail.unwrap().end;
            let (mut batch, mut files) = (WriteBatch::default(), vec![]);
            s.stage_append(vec![entry(4, 1, &payload(4))], &mut batch, &mut files);
            db.files.write(&files).unwrap();
            (durable_end, s.tail.unwrap().end)
        };
        let file = dir.path().join("log/3/00000000000000000001.log");
        let cut = cut_at(durable_end, written_end);
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.set_len(cut).unwrap();
        drop(f);

        let db = crate::storage::open(dir.path()).unwrap();
        let mut s = GroupStorage::load(db.clone(), 3).unwrap().unwrap();
        s.keep_entries_in_files().unwrap();
        assert_eq!(s.last_index().unwrap(), 3, "cut at {cut}");
        let got = s
            .entries(1, 4, None, GetEntriesContext::empty(false))
            .unwrap();
        let want: Vec<Entry> = (1..=3).map(|i| entry(i, 1, &payload(i))).collect();
        assert_eq!(got, want, "cut at {cut}");
        // The log goes on after whatever the crash left, and reads back whole.
        let (mut batch, mut files) = (WriteBatch::default(), vec![]);
        let next = vec![entry(4, 2, &[9u8; 300]), entry(5, 2, &[8u8; 400])];
        s.stage_append(next.clone(), &mut batch, &mut files);
        assert_eq!(files[0].pos, cut, "appends start at the file's end");
        db.files.write(&files).unwrap();
        crate::storage::write(&db, batch, true).unwrap();
        drop(s);
        let s = GroupStorage::load(db, 3).unwrap().unwrap();
        let got = s
            .entries(1, 6, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got[3..], next[..], "cut at {cut}");
        (durable_end, written_end)
    }

    #[test]
    fn a_file_cut_anywhere_in_its_last_write_recovers_exactly_what_was_durable() {
        let (durable, written) = crash_during_an_append(|_, written| written);
        assert!(written > durable);
        for cut in durable..written {
            crash_during_an_append(|_, _| cut);
        }
    }

    #[test]
    fn entries_in_files_read_back_across_a_rewritten_tail_and_a_roll() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::open(dir.path()).unwrap();
        let mut batch = WriteBatch::default();
        let mut s = GroupStorage::create(db.clone(), 8, vec![1], vec![], &mut batch);
        s.keep_entries_in_files().unwrap();
        let big = |i: u64, term: u64| entry(i, term, &vec![(i + term) as u8; 1000]);
        let mut files = vec![];
        s.stage_append((1..=4).map(|i| big(i, 1)).collect(), &mut batch, &mut files);
        // A new leader rewrites the uncommitted tail; a small entry stays inline.
        s.stage_append(
            vec![big(3, 2), entry(4, 2, b"small")],
            &mut batch,
            &mut files,
        );
        s.tail = Some(Tail {
            file: 1,
            end: FILE_BYTES - 10,
        });
        s.stage_append(vec![big(5, 2), big(6, 2)], &mut batch, &mut files);
        assert_eq!(s.tail.map(|t| t.file), Some(2), "a full file rolls");
        db.files.write(&files).unwrap();
        crate::storage::write(&db, batch, true).unwrap();
        let want = vec![
            big(1, 1),
            big(2, 1),
            big(3, 2),
            entry(4, 2, b"small"),
            big(5, 2),
            big(6, 2),
        ];
        s.release_cache(6);
        let got = s
            .entries(1, 7, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got, want);
        assert_eq!(s.term(5).unwrap(), 2);
        // Nothing lives in file 1 once the log is compacted past entry 5.
        let mut batch = WriteBatch::default();
        s.stage_compact(5, &mut batch).unwrap();
        crate::storage::write(&db, batch, true).unwrap();
        assert_eq!(
            db.files
                .collect(&db, &s.file_collection().unwrap())
                .unwrap(),
            1
        );
        let got = s
            .entries(6, 7, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got, vec![big(6, 2)]);
    }

    #[test]
    fn entries_respect_max_size_but_return_at_least_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::open(dir.path()).unwrap();
        let mut batch = WriteBatch::default();
        let mut s = GroupStorage::create(db.clone(), 1, vec![1], vec![], &mut batch);
        let big = vec![7u8; 1000];
        s.stage_append(
            vec![entry(1, 1, &big), entry(2, 1, &big)],
            &mut batch,
            &mut vec![],
        );
        crate::storage::write(&db, batch, true).unwrap();
        let got = s
            .entries(1, 3, 10, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.len(), 1);
    }
}
