//! Raft snapshots of a partition: what a leader sends a replica that needs entries its log
//! no longer has, and how that replica installs it.
//!
//! A partition's Raft log is its partition log, so retention compacts the Raft log itself,
//! and a replica that needs entries its leader dropped (one added after retention moved the
//! log start, or one that was away for long) cannot catch up from the log. Its leader sends
//! a snapshot instead: the partition's state at an applied index (next offset, log start,
//! idempotent producers: the snapshot's `data`, see [`describe`]) and every batch it
//! retains up to that index, read in bounded chunks ([`read_batches`]). Batches keep their
//! offsets, Raft indexes and terms, so every replica serves the same offsets and leader
//! epochs, and producer state travels as stored, so every replica keeps deduplicating
//! alike.
//!
//! The receiver writes what arrives into SST files beside the database ([`Builder`]) and
//! installs them with one ingestion ([`install`]), which RocksDB makes atomic: range
//! deletions in the files drop whatever the replica held of the group before, and a crash
//! leaves either the old state or the new one. After it the replica's Raft log starts
//! after the snapshot's index; the batches up to that index are partition data that
//! fetches find through the offset index, as always.

use std::path::{Path, PathBuf};

use chronik_api::cluster::v1::{PartitionSnapshot, ProducerEntry, StoredBatch};
use prost::Message as _;
use prost011::Message as _;
use raft::eraftpb::{Snapshot, SnapshotMetadata};
use rocksdb::{
    Direction, IngestExternalFileOptions, IteratorMode, Options, ReadOptions, SstFileWriter,
};

use super::partition::{AppliedState, IndexedBatch};
use crate::storage::raft_storage::{self, snapshot_unavailable as unavailable, store_error};
use crate::storage::{self, keys, Db};

/// Bytes of record batches per chunk sent (a chunk holds at least one batch).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Length of an offset-index row (see [`IndexedBatch::encode`]).
const INDEX_ROW_LEN: usize = 36;

/// The snapshot of partition group `group` at the index its stored applied state has
/// reached. Applied state, producers and membership are written by one batch, so a
/// point-in-time read of the three is consistent. Unavailable (raft-rs asks again later)
/// while nothing is stored as applied.
pub fn describe(db: &Db, group: u64) -> raft::Result<Snapshot> {
    let snap = db.snapshot();
    let get = |key: Vec<u8>| snap.get(key).map_err(store_error);
    let applied = match get(keys::group_key(keys::APPLIED, group))? {
        Some(raw) => AppliedState::decode(&raw).ok_or_else(unavailable)?,
        None => return Err(unavailable()),
    };
    if applied.index == 0 {
        return Err(unavailable());
    }
    let term = raft_storage::stored_term(&snap, group, applied.index)?;
    let conf_state = raft_storage::stored_conf_state(&snap, group)?;
    let prefix = keys::group_key(keys::PRODUCER, group);
    let mut opts = ReadOptions::default();
    opts.set_iterate_upper_bound(keys::prefix_end(&prefix));
    let mut producers = Vec::new();
    for item in snap.iterator_opt(IteratorMode::From(&prefix, Direction::Forward), opts) {
        let (k, v) = item.map_err(store_error)?;
        producers.push(ProducerEntry {
            producer_id: keys::u64_suffix(&k) as i64,
            state: v.to_vec(),
        });
    }
    let data = PartitionSnapshot {
        next_offset: applied.next_offset,
        log_start: applied.log_start,
        producers,
    };
    Ok(Snapshot {
        data: data.encode_to_vec(),
        metadata: Some(SnapshotMetadata {
            conf_state: Some(conf_state),
            index: applied.index,
            term,
        }),
    })
}

/// Reads the batches a snapshot carries (from its log start up to its next offset) from
/// one point-in-time view of RocksDB, handing them to `sink` in chunks of about
/// [`CHUNK_BYTES`]; `sink` answers false when the receiver is gone. Retention may have
/// dropped the oldest ones since the snapshot was described: the chunks then start later.
/// Returns the batches and bytes read.
pub fn read_batches(
    db: &Db,
    group: u64,
    data: &PartitionSnapshot,
    mut sink: impl FnMut(Vec<StoredBatch>) -> bool,
) -> anyhow::Result<(u64, u64)> {
    let snap = db.snapshot();
    let mut opts = ReadOptions::default();
    opts.set_iterate_upper_bound(keys::offset_index_key(group, data.next_offset.max(0)));
    let start = keys::offset_index_key(group, data.log_start.max(0));
    let rows = snap.iterator_opt(IteratorMode::From(&start, Direction::Forward), opts);
    let mut entries_opts = ReadOptions::default();
    entries_opts.set_iterate_upper_bound(keys::entry_key(group, u64::MAX));
    let mut entries = snap.raw_iterator_opt(entries_opts);
    let (mut chunk, mut chunk_bytes) = (Vec::new(), 0usize);
    let (mut batches, mut bytes) = (0u64, 0u64);
    for row in rows {
        let (k, v) = row?;
        let b = IndexedBatch::decode(&k, &v);
        entries.seek(keys::entry_key(group, b.raft_index));
        let stored = match (entries.key(), entries.value()) {
            (Some(k), Some(v)) if keys::u64_suffix(k) == b.raft_index => v,
            _ => {
                entries.status()?;
                anyhow::bail!("log entry {} of group {group} is missing", b.raft_index);
            }
        };
        // Sent inline whatever the sender keeps in files: the receiver writes it once,
        // into the SST it ingests.
        let entry = match db.entry_bytes(group, stored) {
            Ok(entry) => entry.into_owned(),
            // Retention deleted the oldest files meanwhile: start later, as above. (Files
            // go oldest first, so none is missing once one was read.)
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && batches == 0 => continue,
            Err(e) => return Err(e.into()),
        };
        chunk_bytes += entry.len() + v.len();
        bytes += storage::entry_data(&entry).len() as u64;
        batches += 1;
        chunk.push(StoredBatch {
            last_offset: b.last_offset,
            index: v.to_vec(),
            entry,
        });
        if chunk_bytes >= CHUNK_BYTES {
            anyhow::ensure!(sink(std::mem::take(&mut chunk)), "the receiver went away");
            chunk_bytes = 0;
        }
    }
    if !chunk.is_empty() {
        anyhow::ensure!(sink(chunk), "the receiver went away");
    }
    Ok((batches, bytes))
}

/// Where snapshots being received are written: beside the database, on its file system,
/// so that ingesting them moves no data.
pub fn incoming_dir(db: &Db) -> PathBuf {
    let path = db.path();
    path.parent().unwrap_or(path).join("snapshots")
}

/// Removes what a transfer cut short by a restart left behind.
pub fn clear_incoming(db: &Db) {
    let dir = incoming_dir(db);
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot clear unfinished snapshots");
        }
    }
}

/// A snapshot received whole: its files wait to be ingested (deleted if never).
#[derive(Debug)]
pub struct Received {
    pub group: u64,
    pub index: u64,
    pub batches: u64,
    pub bytes: u64,
    pub files: Vec<PathBuf>,
}

impl Drop for Received {
    fn drop(&mut self) {
        // Ingested files were moved into the database; the rest are of no use.
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Installs a received snapshot: one atomic ingestion of its files.
pub fn install(db: &Db, received: &Received) -> Result<(), rocksdb::Error> {
    let mut opts = IngestExternalFileOptions::default();
    opts.set_move_files(true);
    db.ingest_external_file_opts(&opts, received.files.clone())
}

/// Writes a snapshot being received into SST files, checking that the batches follow on
/// from each other. Four files whose key ranges do not overlap (RocksDB ingests those
/// atomically together): applied state and membership; entries; producers and the
/// compaction point; the offset index. Each replaces the group's keys of its kinds.
pub struct Builder<'a> {
    opts: &'a Options,
    group: u64,
    index: u64,
    files: Vec<PathBuf>,
    entries: SstFileWriter<'a>,
    rows: SstFileWriter<'a>,
    first_offset: Option<i64>,
    next_offset: Option<i64>,
    last_raft_index: u64,
    batches: u64,
    bytes: u64,
    finished: bool,
}

impl<'a> Builder<'a> {
    pub fn new(opts: &'a Options, dir: &Path, group: u64, index: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let stem = format!("g{group}-i{index}-{}", uuid::Uuid::new_v4().simple());
        let files: Vec<PathBuf> = ["meta", "entries", "producers", "index"]
            .iter()
            .map(|part| dir.join(format!("{stem}-{part}.sst")))
            .collect();
        let entries = replacing(opts, &files[1], keys::ENTRY, group)?;
        let rows = replacing(opts, &files[3], keys::OFFSET_INDEX, group)?;
        Ok(Builder {
            opts,
            group,
            index,
            files,
            entries,
            rows,
            first_offset: None,
            next_offset: None,
            last_raft_index: 0,
            batches: 0,
            bytes: 0,
            finished: false,
        })
    }

    /// Adds the next batches of the stream.
    pub fn add(&mut self, batches: &[StoredBatch]) -> anyhow::Result<()> {
        for b in batches {
            anyhow::ensure!(
                b.index.len() == INDEX_ROW_LEN,
                "offset-index row of {} bytes",
                b.index.len()
            );
            let key = keys::offset_index_key(self.group, b.last_offset.max(0));
            let row = IndexedBatch::decode(&key, &b.index);
            let data = storage::checked_entry_data(&b.entry)
                .ok_or_else(|| anyhow::anyhow!("malformed entry at index {}", row.raft_index))?;
            anyhow::ensure!(
                b.last_offset >= row.base_offset && row.base_offset >= 0,
                "batch with offsets {}..={}",
                row.base_offset,
                b.last_offset
            );
            anyhow::ensure!(
                row.raft_index > self.last_raft_index && row.raft_index <= self.index,
                "batch at Raft index {} after {} (snapshot at {})",
                row.raft_index,
                self.last_raft_index,
                self.index
            );
            if let Some(next) = self.next_offset {
                anyhow::ensure!(
                    row.base_offset == next,
                    "batch at offset {} where {next} was due",
                    row.base_offset
                );
            }
            anyhow::ensure!(
                data.len() == row.size as usize,
                "batch of {} bytes indexed as {}",
                data.len(),
                row.size
            );
            self.entries
                .put(keys::entry_key(self.group, row.raft_index), &b.entry)?;
            self.rows.put(&key, &b.index)?;
            self.first_offset.get_or_insert(row.base_offset);
            self.next_offset = Some(b.last_offset + 1);
            self.last_raft_index = row.raft_index;
            self.batches += 1;
            self.bytes += data.len() as u64;
        }
        Ok(())
    }

    /// Completes the files once the sender's trailer (`batches`, `bytes`) arrived.
    pub fn finish(
        mut self,
        snapshot: &Snapshot,
        batches: u64,
        bytes: u64,
    ) -> anyhow::Result<Received> {
        anyhow::ensure!(
            (batches, bytes) == (self.batches, self.bytes),
            "the sender sent {batches} batches of {bytes} bytes, {} of {} arrived",
            self.batches,
            self.bytes
        );
        let data = PartitionSnapshot::decode(snapshot.data.as_slice())?;
        let meta = snapshot
            .metadata
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("snapshot without metadata"))?;
        if let Some(next) = self.next_offset {
            anyhow::ensure!(
                next == data.next_offset,
                "batches end before offset {next}, the snapshot's next offset is {}",
                data.next_offset
            );
        }
        self.entries.finish()?;
        self.rows.finish()?;
        let group = self.group;
        let applied = AppliedState {
            index: meta.index,
            next_offset: data.next_offset,
            // The sender's log start may lie inside its first batch (DeleteRecords).
            log_start: self
                .first_offset
                .unwrap_or(data.next_offset)
                .max(data.log_start)
                .min(data.next_offset),
            log_bytes: self.bytes,
        };
        let conf_state = meta.conf_state.clone().unwrap_or_default();
        let mut first = SstFileWriter::create(self.opts);
        first.open(&self.files[0])?;
        first.put(keys::group_key(keys::APPLIED, group), applied.encode())?;
        first.put(
            keys::group_key(keys::CONF_STATE, group),
            conf_state.encode_to_vec(),
        )?;
        first.finish()?;
        let mut producers = replacing(self.opts, &self.files[2], keys::PRODUCER, group)?;
        let mut sorted = data.producers;
        sorted.sort_by_key(|p| p.producer_id as u64);
        for p in &sorted {
            producers.put(keys::producer_key(group, p.producer_id), &p.state)?;
        }
        producers.put(
            keys::group_key(keys::TRUNCATED, group),
            raft_storage::truncated_value(meta.index, meta.term),
        )?;
        producers.finish()?;
        self.finished = true;
        Ok(Received {
            group,
            index: meta.index,
            batches: self.batches,
            bytes: self.bytes,
            files: std::mem::take(&mut self.files),
        })
    }
}

impl Drop for Builder<'_> {
    fn drop(&mut self) {
        if !self.finished {
            for f in &self.files {
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

/// An SST file at `path` that, once ingested, replaces every key of `group` with tag `tag`
/// by what is put into it.
fn replacing<'a>(
    opts: &'a Options,
    path: &Path,
    tag: u8,
    group: u64,
) -> anyhow::Result<SstFileWriter<'a>> {
    let mut writer = SstFileWriter::create(opts);
    writer.open(path)?;
    let prefix = keys::group_key(tag, group);
    writer.delete_range(&prefix, &keys::prefix_end(&prefix))?;
    Ok(writer)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rocksdb::WriteBatch;

    use super::*;
    use crate::log::batch::tests::make_batch;
    use crate::log::{read, PartitionMachine, PartitionShared};
    use crate::storage::GroupStorage;

    /// A partition on its own database: `count` idempotent batches of producer 7 applied
    /// at Raft indexes 2.., the first `dropped` of them removed by retention.
    fn leader_partition(dir: &Path, count: i32, dropped: i64) -> (Db, PartitionMachine) {
        let db = storage::open(dir).unwrap();
        let mut wb = WriteBatch::default();
        let mut s = GroupStorage::create(db.clone(), 5, vec![1, 2], vec![], &mut wb);
        let shared = Arc::new(PartitionShared::new("t".into(), 0, 5));
        let mut m = PartitionMachine::load(&db, shared).unwrap();
        let mut entries = vec![raft::eraftpb::Entry {
            index: 1,
            term: 1,
            ..Default::default()
        }];
        for i in 0..count {
            entries.push(raft::eraftpb::Entry {
                index: i as u64 + 2,
                term: 1 + i as u64 / 10,
                data: make_batch(2, 7, i * 2, format!("payload-{i}").as_bytes()).to_vec(),
                ..Default::default()
            });
        }
        s.stage_append(entries.clone(), &mut wb, &mut vec![]);
        for e in &entries {
            m.apply(e.index, e.term, &e.data, &mut wb);
        }
        storage::write(&db, wb, true).unwrap();
        m.publish();
        if dropped > 0 {
            let mut wb = WriteBatch::default();
            wb.delete_range(
                keys::offset_index_key(5, 0),
                keys::offset_index_key(5, dropped * 2),
            );
            m.truncate_front(dropped * 2, 0, &mut wb);
            s.stage_compact(dropped as u64 + 1, &mut wb).unwrap();
            storage::write(&db, wb, true).unwrap();
            m.publish();
        }
        (db, m)
    }

    /// Sends the leader's snapshot through a builder on the follower's database.
    fn transfer(from: &Db, to: &Db, chunk_limit: usize) -> (Snapshot, Received) {
        let snapshot = describe(from, 5).unwrap();
        let data = PartitionSnapshot::decode(snapshot.data.as_slice()).unwrap();
        let opts = Options::default();
        let index = snapshot.metadata.as_ref().unwrap().index;
        let mut b = Builder::new(&opts, &incoming_dir(to), 5, index).unwrap();
        let mut chunks = 0;
        let (batches, bytes) = read_batches(from, 5, &data, |c| {
            assert!(c.len() <= chunk_limit);
            chunks += 1;
            b.add(&c).unwrap();
            true
        })
        .unwrap();
        assert!(chunks >= 1);
        let received = b.finish(&snapshot, batches, bytes).unwrap();
        (snapshot, received)
    }

    #[test]
    fn a_snapshot_installs_the_same_offsets_batches_and_producers() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (leader, m) = leader_partition(a.path(), 30, 12);
        assert_eq!((m.shared.log_start(), m.shared.high_watermark()), (24, 60));
        // The follower holds an old, diverging state of the group: it must go entirely.
        let (follower, _) = leader_partition(b.path(), 3, 0);
        let mut wb = WriteBatch::default();
        wb.put(keys::entry_key(5, 40), b"stale entry beyond the snapshot");
        storage::write(&follower, wb, true).unwrap();

        let (snapshot, received) = transfer(&leader, &follower, usize::MAX);
        assert_eq!(snapshot.metadata.as_ref().unwrap().index, 31);
        assert_eq!(snapshot.metadata.as_ref().unwrap().term, 3);
        assert_eq!(received.batches, 18);
        install(&follower, &received).unwrap();
        drop(received);
        assert_eq!(
            std::fs::read_dir(incoming_dir(&follower)).unwrap().count(),
            0
        );

        let shared = Arc::new(PartitionShared::new("t".into(), 0, 5));
        let mut copy = PartitionMachine::load(&follower, shared).unwrap();
        assert_eq!(copy.applied_index, 31);
        assert_eq!(
            (copy.shared.log_start(), copy.shared.high_watermark()),
            (24, 60)
        );
        let kept: usize = (12..30)
            .map(|i| make_batch(2, 7, i * 2, format!("payload-{i}").as_bytes()).len())
            .sum();
        assert_eq!(copy.shared.log_bytes(), kept as u64);
        for offset in [24, 25, 40, 59] {
            assert_eq!(
                read::read(&follower, &copy.shared, offset, 1 << 20).unwrap(),
                read::read(&leader, &m.shared, offset, 1 << 20).unwrap(),
                "offset {offset}"
            );
        }
        // Raft sees a log that starts after the snapshot; nothing stale is left.
        let s = GroupStorage::load(follower.clone(), 5).unwrap().unwrap();
        assert_eq!(raft::Storage::first_index(&s).unwrap(), 32);
        assert_eq!(raft::Storage::last_index(&s).unwrap(), 31);
        assert_eq!(raft::Storage::term(&s, 31).unwrap(), 3);
        assert!(follower.get(keys::entry_key(5, 40)).unwrap().is_none());
        assert!(follower.get(keys::entry_key(5, 4)).unwrap().is_none());
        // The producer's state came along: its retry is recognised, its next batch fits.
        let mut wb = WriteBatch::default();
        let retry = make_batch(2, 7, 58, b"payload-29");
        assert_eq!(
            copy.apply(32, 3, &retry, &mut wb),
            Some(crate::log::AppendOutcome::Duplicate { base_offset: 58 })
        );
        let next = make_batch(2, 7, 60, b"next");
        assert_eq!(
            copy.apply(33, 3, &next, &mut wb),
            Some(crate::log::AppendOutcome::Appended { base_offset: 60 })
        );
    }

    #[test]
    fn batches_travel_in_bounded_chunks_and_a_short_stream_is_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let big: Vec<u8> = vec![b'x'; 300 << 10];
        let leader = storage::open(a.path()).unwrap();
        let mut wb = WriteBatch::default();
        let mut s = GroupStorage::create(leader.clone(), 5, vec![1], vec![], &mut wb);
        // The leader keeps its batches in log files; they travel inline.
        s.keep_entries_in_files().unwrap();
        let mut files = vec![];
        let mut m =
            PartitionMachine::load(&leader, Arc::new(PartitionShared::new("t".into(), 0, 5)))
                .unwrap();
        for i in 1..=10u64 {
            let e = raft::eraftpb::Entry {
                index: i,
                term: 1,
                data: make_batch(1, -1, -1, &big).to_vec(),
                ..Default::default()
            };
            s.stage_append(vec![e.clone()], &mut wb, &mut files);
            m.apply(i, 1, &e.data, &mut wb);
        }
        assert_eq!(files.len(), 10);
        leader.files.write(&files).unwrap();
        storage::write(&leader, wb, true).unwrap();
        let follower = storage::open(b.path()).unwrap();
        // 300 KiB batches, 1 MiB chunks: four batches at most per chunk.
        let (_, received) = transfer(&leader, &follower, 4);
        assert_eq!(received.batches, 10);

        // A stream that lost its last chunk does not add up to the snapshot.
        let snapshot = describe(&leader, 5).unwrap();
        let data = PartitionSnapshot::decode(snapshot.data.as_slice()).unwrap();
        let opts = Options::default();
        let mut builder = Builder::new(&opts, &incoming_dir(&follower), 5, 10).unwrap();
        let mut chunks = vec![];
        read_batches(&leader, 5, &data, |c| {
            chunks.push(c);
            true
        })
        .unwrap();
        chunks.pop();
        let (mut n, mut bytes) = (0, 0);
        for c in &chunks {
            builder.add(c).unwrap();
            n += c.len() as u64;
            bytes += c.iter().map(|b| b.entry.len() as u64 - 13).sum::<u64>();
        }
        let err = builder.finish(&snapshot, n, bytes).unwrap_err();
        assert!(err.to_string().contains("batches end before"), "{err}");
        drop(received);
        assert_eq!(
            std::fs::read_dir(incoming_dir(&follower)).unwrap().count(),
            0
        );
    }
}
