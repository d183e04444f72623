//! Record batches written once: the entries of partition groups live in append-only files
//! of their own, and RocksDB keeps a small pointer per entry.
//!
//! Why: kept in RocksDB, every byte produced was written twice (its write-ahead log, then a
//! blob file when the memtable was flushed), twice Kafka's disk traffic. Here the log
//! writer appends a round's entries to their groups' files and makes them durable
//! (`fdatasync`) before it writes the pointers, with the rest of the round's Raft state, in
//! one synced RocksDB batch. So a pointer that survives a crash always finds its bytes, and
//! bytes a crash left without a pointer are never read: the next append goes after them
//! (a group's next position is its newest file's length).
//!
//! Layout: `<data>/log/<group>/<file id, 20 digits>.log`. File ids rise; the newest file
//! is the one appended to, and rolls at [`FILE_BYTES`]. Raft's rewrite of an uncommitted
//! tail appends the new entries to the newest file too, so a group's live pointers, read
//! in index order, never go back to an older file: every file older than the one its first
//! pointer names holds nothing live and goes ([`LogFiles::collect`]) once retention has
//! moved the log start past it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rocksdb::{Direction, IteratorMode, ReadOptions, DB};

use super::keys;

/// Size at which a group's newest file is closed and the next one started: the unit in
/// which retention frees space.
pub const FILE_BYTES: u64 = 64 << 20;

/// Entries whose payload is smaller than this stay inline in RocksDB (elections' empty
/// entries, membership changes, control entries, small offset commits): a pointer would
/// save nothing.
pub const FILE_MIN_DATA: usize = 256;

/// Open files kept beyond those in use: enough for every busy partition of a broker,
/// bounded so that thousands of idle ones hold no descriptors.
const MAX_OPEN: usize = 512;

/// Marks a stored entry value as a pointer: byte 8 of an inline entry is its type (0-2).
const POINTER_TAG: u8 = 0xFE;

/// Length of an encoded [`Pointer`].
pub const POINTER_LEN: usize = 34;

/// Bytes before an encoded entry's context: term (8), type (1), context length (4).
const ENTRY_HEADER: u64 = 13;

/// Where an entry's encoded bytes are: its group's file `file`, `len` bytes at `pos`. Its
/// term comes first, as in an inline entry, so terms are read without the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pointer {
    pub term: u64,
    pub entry_type: u8,
    pub file: u64,
    pub pos: u64,
    pub len: u32,
    pub context_len: u32,
}

impl Pointer {
    pub fn encode(&self) -> [u8; POINTER_LEN] {
        let mut v = [0u8; POINTER_LEN];
        v[0..8].copy_from_slice(&self.term.to_be_bytes());
        v[8] = POINTER_TAG;
        v[9] = self.entry_type;
        v[10..18].copy_from_slice(&self.file.to_be_bytes());
        v[18..26].copy_from_slice(&self.pos.to_be_bytes());
        v[26..30].copy_from_slice(&self.len.to_be_bytes());
        v[30..34].copy_from_slice(&self.context_len.to_be_bytes());
        v
    }

    /// The pointer a stored entry value holds, or `None` for an inline entry.
    pub fn decode(raw: &[u8]) -> Option<Pointer> {
        if raw.len() != POINTER_LEN || raw[8] != POINTER_TAG {
            return None;
        }
        let u64_at = |i: usize| u64::from_be_bytes(raw[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_be_bytes(raw[i..i + 4].try_into().expect("4 bytes"));
        Some(Pointer {
            term: u64_at(0),
            entry_type: raw[9],
            file: u64_at(10),
            pos: u64_at(18),
            len: u32_at(26),
            context_len: u32_at(30),
        })
    }

    /// File position and length of the entry's payload (a record batch).
    pub fn data(&self) -> io::Result<(u64, usize)> {
        let skip = ENTRY_HEADER + self.context_len as u64;
        let len = (self.len as u64)
            .checked_sub(skip)
            .ok_or_else(|| corrupt("a log pointer shorter than its entry header"))?;
        Ok((self.pos + skip, len as usize))
    }
}

/// Bytes the log writer appends to a group's file, at `pos` (its length when staged).
pub struct FileWrite {
    pub group: u64,
    pub file: u64,
    pub pos: u64,
    pub bytes: Vec<u8>,
}

/// A group's newest file and its length: where the next entry goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tail {
    pub file: u64,
    pub end: u64,
}

impl Tail {
    /// Moves on to a new file once this one is full.
    pub fn advance(&mut self, written: u64) {
        self.end += written;
        if self.end >= FILE_BYTES {
            self.file += 1;
            self.end = 0;
        }
    }
}

/// Every group's files under one directory, with a bounded set of open handles shared by
/// the log writer and readers (positioned reads need no seek, so one handle serves all).
pub struct LogFiles {
    dir: PathBuf,
    open: Mutex<HashMap<(u64, u64), Arc<File>>>,
}

impl LogFiles {
    pub fn new(dir: PathBuf) -> Self {
        LogFiles {
            dir,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn group_dir(&self, group: u64) -> PathBuf {
        self.dir.join(group.to_string())
    }

    fn path(&self, group: u64, file: u64) -> PathBuf {
        self.group_dir(group).join(format!("{file:020}.log"))
    }

    /// The ids of `group`'s files, oldest first.
    fn file_ids(&self, group: u64) -> io::Result<Vec<u64>> {
        let mut ids = Vec::new();
        match std::fs::read_dir(self.group_dir(group)) {
            Ok(entries) => {
                for entry in entries {
                    let name = entry?.file_name();
                    let id = name
                        .to_str()
                        .and_then(|n| n.strip_suffix(".log"))
                        .and_then(|n| n.parse::<u64>().ok());
                    ids.extend(id);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Where `group`'s next entry goes: the end of its newest file (whatever a crash left
    /// there unreferenced included), or the start of file 1.
    pub fn tail(&self, group: u64) -> io::Result<Tail> {
        match self.file_ids(group)?.last() {
            Some(&file) => {
                let end = std::fs::metadata(self.path(group, file))?.len();
                let mut tail = Tail { file, end: 0 };
                tail.advance(end);
                Ok(tail)
            }
            None => Ok(Tail { file: 1, end: 0 }),
        }
    }

    fn handle(&self, group: u64, file: u64, create: bool) -> io::Result<Arc<File>> {
        let mut open = self.open.lock().expect("log files lock");
        if let Some(f) = open.get(&(group, file)) {
            return Ok(f.clone());
        }
        let path = self.path(group, file);
        let f = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => self.create(group, &path)?,
            Err(e) => return Err(e),
        };
        if open.len() >= MAX_OPEN {
            open.retain(|_, f| Arc::strong_count(f) > 1);
        }
        let f = Arc::new(f);
        open.insert((group, file), f.clone());
        Ok(f)
    }

    /// Creates a file and makes its name durable (its directory's entry, and the group's
    /// directory itself when that is new too).
    fn create(&self, group: u64, path: &Path) -> io::Result<File> {
        let dir = self.group_dir(group);
        let new_dir = !dir.exists();
        std::fs::create_dir_all(&dir)?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        File::open(&dir)?.sync_all()?;
        if new_dir {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(f)
    }

    /// Appends every write, then makes them durable: writeback of all of them is started
    /// first, so the files' syncs overlap instead of following one another.
    pub fn write(&self, writes: &[FileWrite]) -> io::Result<()> {
        let mut touched: Vec<((u64, u64), Arc<File>)> = Vec::new();
        for w in writes {
            let f = self.handle(w.group, w.file, true)?;
            f.write_all_at(&w.bytes, w.pos)?;
            start_writeback(&f, w.pos, w.bytes.len());
            if !touched.iter().any(|(k, _)| *k == (w.group, w.file)) {
                touched.push(((w.group, w.file), f));
            }
        }
        for (_, f) in touched {
            f.sync_data()?;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes of `group`'s file `file` at `pos`.
    pub fn read(&self, group: u64, file: u64, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        self.handle(group, file, false)?.read_exact_at(buf, pos)
    }

    /// The encoded entry `pointer` names.
    pub fn entry(&self, group: u64, pointer: &Pointer) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; pointer.len as usize];
        self.read(group, pointer.file, pointer.pos, &mut buf)?;
        Ok(buf)
    }

    /// Deletes every file of `group` (its group was deleted, or is being created anew).
    pub fn remove_group(&self, group: u64) -> io::Result<()> {
        self.forget(group, u64::MAX);
        match std::fs::remove_dir_all(self.group_dir(group)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Deletes `group`'s files older than `keep_from`; returns how many went.
    pub fn remove_below(&self, group: u64, keep_from: u64) -> io::Result<usize> {
        let gone: Vec<u64> = self
            .file_ids(group)?
            .into_iter()
            .filter(|&id| id < keep_from)
            .collect();
        self.forget(group, keep_from);
        for &id in &gone {
            std::fs::remove_file(self.path(group, id))?;
        }
        Ok(gone.len())
    }

    /// Closes the handles of `group`'s files older than `below` (readers holding one keep
    /// reading what they started).
    fn forget(&self, group: u64, below: u64) {
        let mut open = self.open.lock().expect("log files lock");
        open.retain(|&(g, file), _| g != group || file >= below);
    }

    /// Deletes the files of a group that no stored entry points into any more: those older
    /// than the file of its first pointer, and older than the file it appends to (which
    /// has no pointer until its first write lands).
    pub fn collect(&self, db: &DB, c: &Collect) -> io::Result<usize> {
        let keep_from = match first_pointer(db, c.group, c.from_index)
            .map_err(|e| io::Error::other(e.to_string()))?
        {
            Scan::Found(p) => p.file.min(c.newest),
            Scan::None => c.newest,
            Scan::GaveUp => return Ok(0),
        };
        self.remove_below(c.group, keep_from)
    }
}

/// What [`LogFiles::collect`] needs of a group: the file it appends to, and the first index
/// that may hold a pointer. Every pointer lies above the Raft log's compaction point:
/// entries up to it were deleted with the compaction, or came inline with a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Collect {
    pub group: u64,
    pub newest: u64,
    pub from_index: u64,
}

/// Entries looked at for a first pointer before giving up (a log of small inline records).
const SCAN_LIMIT: usize = 100_000;

enum Scan {
    Found(Pointer),
    None,
    GaveUp,
}

/// The first stored entry of `group` from `from_index` on that points into a file.
fn first_pointer(db: &DB, group: u64, from_index: u64) -> Result<Scan, rocksdb::Error> {
    let start = keys::entry_key(group, from_index);
    let mut opts = ReadOptions::default();
    opts.set_iterate_upper_bound(keys::entry_key(group, u64::MAX));
    let entries = db.iterator_opt(IteratorMode::From(&start, Direction::Forward), opts);
    for (seen, item) in entries.enumerate() {
        if seen == SCAN_LIMIT {
            return Ok(Scan::GaveUp);
        }
        let (_, v) = item?;
        if let Some(p) = Pointer::decode(&v) {
            return Ok(Scan::Found(p));
        }
    }
    Ok(Scan::None)
}

/// Asks the kernel to start writing a range out now; the sync that follows then waits for
/// writes already under way on every file instead of starting them one by one.
fn start_writeback(f: &File, pos: u64, len: usize) {
    // SAFETY: a plain syscall on a valid descriptor; failure only loses the head start.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            pos as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_round_trip_and_inline_entries_are_not_pointers() {
        let p = Pointer {
            term: 7,
            entry_type: 0,
            file: 3,
            pos: 1 << 33,
            len: 16_400,
            context_len: 5,
        };
        let raw = p.encode();
        assert_eq!(Pointer::decode(&raw), Some(p));
        assert_eq!(super::super::entry_term(&raw), 7);
        assert_eq!(p.data().unwrap(), ((1 << 33) + 18, 16_400 - 18));
        // An inline entry of the same length is never taken for a pointer.
        let mut inline = raw;
        inline[8] = 0;
        assert_eq!(Pointer::decode(&inline), None);
    }

    #[test]
    fn files_roll_and_a_new_tail_starts_after_whatever_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::new(dir.path().join("log"));
        assert_eq!(files.tail(4).unwrap(), Tail { file: 1, end: 0 });
        let write = |file, pos, bytes: &[u8]| FileWrite {
            group: 4,
            file,
            pos,
            bytes: bytes.to_vec(),
        };
        files
            .write(&[write(1, 0, b"hello "), write(1, 6, b"world")])
            .unwrap();
        assert_eq!(files.tail(4).unwrap(), Tail { file: 1, end: 11 });
        let mut buf = [0u8; 5];
        files.read(4, 1, 6, &mut buf).unwrap();
        assert_eq!(&buf, b"world");

        let mut tail = Tail { file: 1, end: 11 };
        tail.advance(FILE_BYTES);
        assert_eq!(tail, Tail { file: 2, end: 0 });
        files.write(&[write(2, 0, b"next")]).unwrap();
        assert_eq!(files.tail(4).unwrap(), Tail { file: 2, end: 4 });

        assert_eq!(files.remove_below(4, 2).unwrap(), 1);
        assert!(files.read(4, 1, 0, &mut buf).is_err());
        files.remove_group(4).unwrap();
        assert_eq!(files.tail(4).unwrap(), Tail { file: 1, end: 0 });
    }

    #[test]
    fn collection_keeps_the_first_pointed_file_and_the_one_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::open(dir.path()).unwrap();
        let bytes = |file| FileWrite {
            group: 6,
            file,
            pos: 0,
            bytes: vec![1; 64],
        };
        db.files
            .write(&[bytes(1), bytes(2), bytes(3), bytes(4)])
            .unwrap();
        let pointer = |file| Pointer {
            term: 1,
            entry_type: 0,
            file,
            pos: 0,
            len: 64,
            context_len: 0,
        };
        let mut wb = rocksdb::WriteBatch::default();
        // Inline entries (a snapshot's) below the compaction point, then the log: an
        // inline election entry, then pointers into files 3 and 4.
        for i in 1..=10 {
            wb.put(keys::entry_key(6, i), b"inline batch from a snapshot");
        }
        wb.put(keys::entry_key(6, 11), b"inline");
        wb.put(keys::entry_key(6, 12), pointer(3).encode());
        wb.put(keys::entry_key(6, 13), pointer(4).encode());
        crate::storage::write(&db, wb, true).unwrap();
        let c = Collect {
            group: 6,
            newest: 4,
            from_index: 11,
        };
        assert_eq!(db.files.collect(&db, &c).unwrap(), 2, "files 1 and 2 go");
        assert_eq!(db.files.file_ids(6).unwrap(), vec![3, 4]);
        // No pointer left (all compacted): only the file appended to stays.
        let c = Collect {
            from_index: 14,
            ..c
        };
        assert_eq!(db.files.collect(&db, &c).unwrap(), 1);
        assert_eq!(db.files.file_ids(6).unwrap(), vec![4]);
    }
}
