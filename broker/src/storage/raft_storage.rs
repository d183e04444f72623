//! `raft::Storage` for one Raft group, backed by the shared RocksDB.
//!
//! Reads go to RocksDB (entries are not cached: the memtable and block cache already hold
//! the recent tail). Writes are *staged* into a caller-owned `WriteBatch` so that the
//! driver can persist the Ready states of many groups with a single fsync.

use prost011::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::{decode_entry, entry_term, keys, Db};

pub struct GroupStorage {
    db: Db,
    group: u64,
    hard_state: HardState,
    conf_state: ConfState,
    /// Entries up to and including this index were compacted away.
    truncated_index: u64,
    truncated_term: u64,
    last_index: u64,
}

impl GroupStorage {
    /// A brand-new group whose initial voters are `voters`; its state is staged into `batch`.
    pub fn create(db: Db, group: u64, voters: Vec<u64>, batch: &mut WriteBatch) -> Self {
        let conf_state = ConfState {
            voters,
            ..Default::default()
        };
        batch.put(
            keys::group_key(keys::CONF_STATE, group),
            conf_state.encode_to_vec(),
        );
        GroupStorage {
            db,
            group,
            hard_state: HardState::default(),
            conf_state,
            truncated_index: 0,
            truncated_term: 0,
            last_index: 0,
        }
    }

    /// Loads a group that exists on disk, or `None` if it was never created.
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
            hard_state,
            conf_state,
            truncated_index,
            truncated_term,
            last_index: truncated_index,
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

    /// Appends entries, replacing any conflicting suffix (Raft may overwrite uncommitted entries).
    pub fn stage_append(&mut self, entries: &[Entry], batch: &mut WriteBatch) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        for e in entries {
            batch.put(keys::entry_key(self.group, e.index), super::encode_entry(e));
        }
        if last.index < self.last_index {
            batch.delete_range(
                keys::entry_key(self.group, last.index + 1),
                keys::entry_key(self.group, self.last_index + 1),
            );
        }
        debug_assert!(first.index > self.truncated_index);
        self.last_index = last.index;
    }

    pub fn stage_hard_state(&mut self, hs: HardState, batch: &mut WriteBatch) {
        batch.put(
            keys::group_key(keys::HARD_STATE, self.group),
            encode_hard_state(&hs),
        );
        self.hard_state = hs;
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
        if index <= self.truncated_index {
            return Ok(());
        }
        let term = self.term_of(index)?;
        batch.delete_range(
            keys::entry_key(self.group, self.truncated_index + 1),
            keys::entry_key(self.group, index + 1),
        );
        let mut raw = index.to_be_bytes().to_vec();
        raw.extend_from_slice(&term.to_be_bytes());
        batch.put(keys::group_key(keys::TRUNCATED, self.group), raw);
        self.truncated_index = index;
        self.truncated_term = term;
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
            size += v.len() as u64;
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(decode_entry(keys::u64_suffix(&k), &v));
        }
        if out.len() as u64 != high - low && size <= max_size {
            return Err(raft::Error::Store(StorageError::Unavailable));
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
        // Snapshots are only needed to catch up followers, which arrive with replication.
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
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
        let mut s = GroupStorage::create(db.clone(), 9, vec![1], &mut batch);
        s.stage_append(
            &[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")],
            &mut batch,
        );
        // A new leader overwrites the uncommitted tail.
        s.stage_append(&[entry(2, 2, b"B")], &mut batch);
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

    #[test]
    fn entries_respect_max_size_but_return_at_least_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::open(dir.path()).unwrap();
        let mut batch = WriteBatch::default();
        let mut s = GroupStorage::create(db.clone(), 1, vec![1], &mut batch);
        let big = vec![7u8; 1000];
        s.stage_append(&[entry(1, 1, &big), entry(2, 1, &big)], &mut batch);
        crate::storage::write(&db, batch, true).unwrap();
        let got = s
            .entries(1, 3, 10, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.len(), 1);
    }
}
