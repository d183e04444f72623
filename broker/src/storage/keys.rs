//! RocksDB key layout.
//!
//! Everything lives in one column family and one write-ahead log so that a single synced
//! `WriteBatch` can carry the Raft state of many groups at once (group commit). Keys start
//! with a one-byte tag, then the Raft group id big-endian, so one group's keys of one kind
//! are contiguous and sort by their numeric suffix.

/// Raft log entry: `E | group | index`.
pub const ENTRY: u8 = b'e';
/// Raft hard state: `H | group`.
pub const HARD_STATE: u8 = b'h';
/// Raft conf state: `C | group`.
pub const CONF_STATE: u8 = b'c';
/// Log compaction point (index, term): `T | group`.
pub const TRUNCATED: u8 = b't';
/// Applied state of a group's state machine: `A | group`.
pub const APPLIED: u8 = b'a';
/// Partition offset index: `X | group | last_offset` -> where the batch lives.
pub const OFFSET_INDEX: u8 = b'x';
/// Idempotent producer state: `P | group | producer_id`.
pub const PRODUCER: u8 = b'p';
/// Metadata state machine records: `M | kind | name...`.
pub const METADATA: u8 = b'm';

pub fn group_key(tag: u8, group: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(tag);
    k.extend_from_slice(&group.to_be_bytes());
    k
}

pub fn group_u64_key(tag: u8, group: u64, suffix: u64) -> Vec<u8> {
    let mut k = group_key(tag, group);
    k.extend_from_slice(&suffix.to_be_bytes());
    k
}

pub fn entry_key(group: u64, index: u64) -> Vec<u8> {
    group_u64_key(ENTRY, group, index)
}

/// Offsets are never negative, so their big-endian bytes sort numerically.
pub fn offset_index_key(group: u64, last_offset: i64) -> Vec<u8> {
    group_u64_key(OFFSET_INDEX, group, last_offset as u64)
}

pub fn producer_key(group: u64, producer_id: i64) -> Vec<u8> {
    group_u64_key(PRODUCER, group, producer_id as u64)
}

/// The suffix after `tag | group` of a key produced by [`group_u64_key`].
pub fn u64_suffix(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[9..17].try_into().expect("17-byte key"))
}

pub fn metadata_key(kind: &str, name: &str) -> Vec<u8> {
    let mut k = vec![METADATA];
    k.extend_from_slice(kind.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn metadata_prefix(kind: &str) -> Vec<u8> {
    let mut k = vec![METADATA];
    k.extend_from_slice(kind.as_bytes());
    k.push(0);
    k
}

/// Exclusive upper bound of every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}
