//! Read side of a partition log: fetch, offset lookup by time, and epoch end offsets.
//! Everything is answered from RocksDB through the offset index, bounded by the published
//! high watermark so that readers never see uncommitted or half-applied data.

use bytes::{Bytes, BytesMut};
use rocksdb::{Direction, IteratorMode, ReadOptions};

use super::batch;
use super::partition::{IndexedBatch, PartitionShared};
use crate::storage::{entry_data, keys, Db, Pointer};

/// Iterates indexed batches whose last offset is at least `from`, below the high watermark:
/// those in RocksDB, then the newest ones whose index entries are still being written.
fn batches_from<'a>(
    db: &'a Db,
    p: &PartitionShared,
    from: i64,
) -> impl Iterator<Item = IndexedBatch> + 'a {
    // Order matters: high watermark, then the unflushed snapshot, then RocksDB. A batch
    // leaves the unflushed set only after it is in RocksDB, so none can slip between.
    let hw = p.high_watermark();
    let from = from.max(0);
    let unflushed = p.unflushed_range(from, hw);
    let mut opts = ReadOptions::default();
    opts.set_iterate_upper_bound(keys::offset_index_key(p.group, hw.max(0)));
    let start = keys::offset_index_key(p.group, from);
    let on_disk = db
        .iterator_opt(IteratorMode::From(&start, Direction::Forward), opts)
        .map_while(Result::ok)
        .map(|(k, v)| IndexedBatch::decode(&k, &v));
    let mut newest_seen = -1;
    on_disk.chain(unflushed).filter(move |b| {
        let fresh = b.last_offset > newest_seen;
        newest_seen = newest_seen.max(b.last_offset);
        fresh
    })
}

/// Reads whole batches starting with the one that holds `offset`, up to `max_bytes`
/// (always at least one batch, as Kafka does, so a large batch cannot stall a consumer).
///
/// A partition's batches are consecutive Raft entries (apart from the odd configuration or
/// leader-election entry), so one iterator walks them: a point lookup per batch would
/// search every memtable and level again for each one.
pub fn read(db: &Db, p: &PartitionShared, offset: i64, max_bytes: usize) -> anyhow::Result<Bytes> {
    let mut batches = batches_from(db, p, offset).peekable();
    let Some(first) = batches.peek() else {
        return Ok(Bytes::new());
    };
    // Created after `batches_from` read the high watermark: every entry below it is
    // already in RocksDB, hence in this iterator's snapshot.
    let mut opts = ReadOptions::default();
    opts.set_iterate_upper_bound(keys::entry_key(p.group, u64::MAX));
    let mut entries = db.raw_iterator_opt(opts);
    entries.seek(keys::entry_key(p.group, first.raft_index));
    let mut out = BytesMut::with_capacity(max_bytes.min(first.size as usize * 8));
    for b in batches {
        if !out.is_empty() && out.len() + b.size as usize > max_bytes {
            break;
        }
        while entries
            .key()
            .is_some_and(|k| keys::u64_suffix(k) < b.raft_index)
        {
            entries.next();
        }
        let raw = match (entries.key(), entries.value()) {
            (Some(k), Some(v)) if keys::u64_suffix(k) == b.raft_index => v,
            _ => {
                entries.status()?;
                anyhow::bail!("log entry {} of {} missing", b.raft_index, p.topic);
            }
        };
        let Some(pointer) = Pointer::decode(raw) else {
            batch::put_stamped(&mut out, entry_data(raw), b.base_offset, b.term as i32);
            continue;
        };
        // Straight from the log file into the response, stamped there.
        let (pos, len) = pointer.data()?;
        let at = out.len();
        out.resize(at + len, 0);
        if let Err(e) = db.files.read(p.group, pointer.file, pos, &mut out[at..]) {
            out.truncate(at);
            if at > 0 && e.kind() == std::io::ErrorKind::NotFound {
                break; // retention deleted the file meanwhile: serve what was read
            }
            return Err(e.into());
        }
        batch::stamp(&mut out[at..], b.base_offset, b.term as i32)?;
        if out.len() >= max_bytes {
            break;
        }
    }
    Ok(out.freeze())
}

/// ListOffsets by timestamp: the first record at or after the log start whose timestamp
/// is at least `ts`, with that timestamp. The offset index narrows the search to the
/// first batch whose largest timestamp qualifies; its records (decompressed if need be)
/// give the exact one.
pub fn offset_for_timestamp(db: &Db, p: &PartitionShared, ts: i64) -> Option<(i64, i64)> {
    let b = batches_from(db, p, p.log_start()).find(|b| b.max_timestamp >= ts)?;
    let exact = record_times(db, p, &b)
        .into_iter()
        .find(|&(offset, t)| t >= ts && offset >= p.log_start());
    Some(exact.unwrap_or((b.base_offset.max(p.log_start()), b.max_timestamp)))
}

/// ListOffsets' MAX_TIMESTAMP: the first record with the largest timestamp.
pub fn max_timestamp(db: &Db, p: &PartitionShared) -> Option<(i64, i64)> {
    // (The earliest batch among equals: `reduce` keeps `x` on ties.)
    let b = batches_from(db, p, p.log_start()).reduce(|x, b| {
        if x.max_timestamp >= b.max_timestamp {
            x
        } else {
            b
        }
    })?;
    let exact = record_times(db, p, &b)
        .into_iter()
        .find(|&(_, t)| t == b.max_timestamp);
    Some(exact.unwrap_or((b.last_offset, b.max_timestamp)))
}

/// (offset, timestamp) of each record in batch `b`; empty if it cannot be decoded (the
/// callers then answer for the batch as a whole).
fn record_times(db: &Db, p: &PartitionShared, b: &IndexedBatch) -> Vec<(i64, i64)> {
    let decoded = read(db, p, b.base_offset, 1)
        .and_then(|mut bytes| kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes));
    match decoded {
        Ok(set) => set
            .records
            .iter()
            .map(|r| (r.offset, r.timestamp))
            .collect(),
        Err(e) => {
            tracing::warn!(topic = %p.topic, partition = p.partition, offset = b.base_offset,
                error = %e, "cannot decode a stored batch's records");
            vec![]
        }
    }
}

/// For OffsetForLeaderEpoch, Kafka's answer from its leader-epoch cache (epochs are Raft
/// terms): the current epoch ends at the high watermark; an older one at the first offset
/// of the next epoch with data, reported as the largest epoch <= the one asked for (or as
/// asked, when that precedes every retained epoch); an epoch beyond the current one, or a
/// negative one, is unknown (-1, -1).
pub fn epoch_end_offset(db: &Db, p: &PartitionShared, epoch: i32) -> (i32, i64) {
    let current = p.leader_epoch();
    if epoch < 0 || epoch > current {
        return (-1, -1);
    }
    if epoch == current {
        return (current, p.high_watermark());
    }
    let mut floor: Option<i32> = None;
    for b in batches_from(db, p, p.log_start()) {
        let term = b.term as i32;
        if term > epoch {
            return (floor.unwrap_or(epoch), b.base_offset);
        }
        floor = Some(term);
    }
    // No data after `epoch`: the next epoch began where the log ends.
    (floor.unwrap_or(epoch), p.high_watermark())
}

/// The stored batches, oldest first, that `drop(batch, bytes dropped before it)` selects
/// for retention, up to the first it keeps; returns (new log start, last raft index
/// dropped, bytes dropped). Starts at the oldest stored batch, which may lie below the
/// log start (a control entry moved it).
pub fn retention_plan(
    db: &Db,
    p: &PartitionShared,
    mut drop: impl FnMut(&IndexedBatch, u64) -> bool,
) -> Option<(i64, u64, u64)> {
    let mut plan: Option<(i64, u64, u64)> = None;
    let mut dropped = 0u64;
    for b in batches_from(db, p, 0) {
        if !drop(&b, dropped) {
            break;
        }
        dropped += b.size as u64;
        plan = Some((b.last_offset + 1, b.raft_index, dropped));
    }
    plan
}
