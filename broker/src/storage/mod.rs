//! Durable storage: one RocksDB instance holds every Raft group's log and state, and
//! partition groups' entries are written once, to files of their own ([`log_files`]),
//! with RocksDB holding a pointer to each.
//!
//! The Raft log *is* the partition log: a produced record batch is one Raft entry whose
//! payload is the batch exactly as the client sent it.

pub mod blob_gc;
pub mod keys;
pub mod log_files;
pub mod raft_storage;
pub mod space;

use std::borrow::Cow;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use raft::eraftpb::{Entry, EntryType};
use rocksdb::{Options, WriteBatch, WriteOptions, DB};

pub use raft_storage::GroupStorage;
pub use space::DiskSpace;

pub use log_files::{FileWrite, LogFiles, Pointer};

/// RocksDB and the log files beside it; derefs to the database, which most users need.
pub struct Store {
    db: DB,
    pub files: LogFiles,
}

impl Deref for Store {
    type Target = DB;

    fn deref(&self) -> &DB {
        &self.db
    }
}

impl Store {
    /// The encoded entry a stored value stands for: the value itself, or what its pointer
    /// names in `group`'s files.
    pub fn entry_bytes<'a>(&self, group: u64, raw: &'a [u8]) -> std::io::Result<Cow<'a, [u8]>> {
        match Pointer::decode(raw) {
            Some(p) => Ok(Cow::Owned(self.files.entry(group, &p)?)),
            None => Ok(Cow::Borrowed(raw)),
        }
    }
}

pub type Db = Arc<Store>;

pub fn open(dir: &Path) -> anyhow::Result<Db> {
    std::fs::create_dir_all(dir)?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_max_background_jobs(2);
    // Entries are already compressed by producers; spend no CPU recompressing them.
    opts.set_compression_type(rocksdb::DBCompressionType::None);
    // Memtables are most of a busy broker's memory: 32 MiB, at most three, keep its
    // resident size well under a JVM broker's while flushes stay infrequent.
    opts.set_write_buffer_size(32 << 20);
    opts.set_max_write_buffer_number(3);
    // Record batches are large values written once and deleted by retention: keep them in
    // blob files so compactions move only keys and small index values, not the data.
    // Blob GC starts off; `blob_gc::BlobGc` switches it on while garbage dominates.
    opts.set_enable_blob_files(true);
    opts.set_min_blob_size(1024);
    opts.set_blob_file_size(256 << 20);
    opts.set_enable_blob_gc(false);
    opts.set_keep_log_file_num(3);
    let db = DB::open(&opts, dir.join("rocksdb"))
        .map_err(|e| anyhow::anyhow!("opening RocksDB under {}: {e}", dir.display()))?;
    let files = LogFiles::new(dir.join("log"));
    Ok(Arc::new(Store { db, files }))
}

/// Writes a batch; `sync` makes it (and every earlier write) durable before returning.
pub fn write(db: &DB, batch: WriteBatch, sync: bool) -> Result<(), rocksdb::Error> {
    let mut opts = WriteOptions::default();
    opts.set_sync(sync);
    db.write_opt(batch, &opts)
}

/// Entry header: term (8) + entry type (1) + context length (4).
const ENTRY_HEADER: usize = 13;

pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut v = Vec::new();
    encode_entry_into(entry, &mut v);
    v
}

/// Encodes into `v` (cleared first), so one buffer can serve many entries.
pub fn encode_entry_into(entry: &Entry, v: &mut Vec<u8>) {
    v.clear();
    append_entry(entry, v);
}

/// Bytes `entry` takes encoded.
pub fn encoded_len(entry: &Entry) -> usize {
    ENTRY_HEADER + entry.context.len() + entry.data.len()
}

/// Encodes `entry` at the end of `v`.
pub fn append_entry(entry: &Entry, v: &mut Vec<u8>) {
    v.reserve(encoded_len(entry));
    v.extend_from_slice(&entry.term.to_be_bytes());
    v.push(entry.entry_type as u8);
    v.extend_from_slice(&(entry.context.len() as u32).to_be_bytes());
    v.extend_from_slice(&entry.context);
    v.extend_from_slice(&entry.data);
}

/// A stored entry's term, without copying its payload.
pub fn entry_term(raw: &[u8]) -> u64 {
    u64::from_be_bytes(raw[0..8].try_into().expect("entry header"))
}

/// The stored entry's payload (a record batch for partition groups).
pub fn entry_data(raw: &[u8]) -> &[u8] {
    let ctx_len = u32::from_be_bytes(raw[9..13].try_into().expect("entry header")) as usize;
    &raw[ENTRY_HEADER + ctx_len..]
}

/// The payload of a stored entry that came from elsewhere (a snapshot), or `None` when
/// its header does not fit its length.
pub fn checked_entry_data(raw: &[u8]) -> Option<&[u8]> {
    let ctx_len = u32::from_be_bytes(raw.get(9..13)?.try_into().ok()?) as usize;
    raw.get(ENTRY_HEADER.checked_add(ctx_len)?..)
}

pub fn decode_entry(index: u64, raw: &[u8]) -> Entry {
    let ctx_len = u32::from_be_bytes(raw[9..13].try_into().expect("entry header")) as usize;
    let entry_type = match raw[8] {
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        _ => EntryType::EntryNormal,
    };
    Entry {
        entry_type: entry_type as i32,
        term: entry_term(raw),
        index,
        context: raw[ENTRY_HEADER..ENTRY_HEADER + ctx_len].to_vec(),
        data: raw[ENTRY_HEADER + ctx_len..].to_vec(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trips_with_payload_verbatim() {
        let entry = Entry {
            entry_type: EntryType::EntryConfChange as i32,
            term: 7,
            index: 42,
            context: b"ctx".to_vec(),
            data: b"record batch bytes".to_vec(),
            ..Default::default()
        };
        let raw = encode_entry(&entry);
        assert_eq!(entry_term(&raw), 7);
        assert_eq!(entry_data(&raw), b"record batch bytes");
        assert_eq!(decode_entry(42, &raw), entry);
    }
}
