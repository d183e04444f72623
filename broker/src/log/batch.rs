//! Kafka v2 record batches, handled as opaque bytes.
//!
//! The broker never decodes and re-encodes records: it reads the fixed 61-byte batch
//! header, checks the CRC32C (which covers everything from `attributes` on), and stamps
//! `baseOffset` and `partitionLeaderEpoch` — fields outside the CRC — when serving them.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const HEADER_LEN: usize = 61;
const CRC_START: usize = 21;
const TRANSACTIONAL_FLAG: i16 = 0x10;
const CONTROL_FLAG: i16 = 0x20;

/// What the broker needs to know of a batch, read from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub last_offset_delta: i32,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
    pub attributes: i16,
}

impl BatchHeader {
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }

    pub fn last_sequence(&self) -> i32 {
        // Sequences wrap at i32::MAX back to 0, as in Kafka.
        ((self.base_sequence as i64 + self.last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("record set is truncated or malformed")]
    Corrupt,
    #[error("record batch CRC mismatch")]
    CrcMismatch,
    #[error("unsupported record batch magic {0}; only v2 is accepted")]
    UnsupportedMagic(i8),
    #[error("transactional or control batches are not supported")]
    Transactional,
    #[error("record batch holds no records")]
    Empty,
}

/// Splits a produced record set into validated batches (zero-copy slices of `records`).
pub fn split_and_validate(records: &Bytes) -> Result<Vec<(Bytes, BatchHeader)>, BatchError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < records.len() {
        let rest = &records[pos..];
        if rest.len() < HEADER_LEN {
            return Err(BatchError::Corrupt);
        }
        let batch_len = i32::from_be_bytes(rest[8..12].try_into().unwrap());
        if batch_len < (HEADER_LEN - 12) as i32 || 12 + batch_len as usize > rest.len() {
            return Err(BatchError::Corrupt);
        }
        let total = 12 + batch_len as usize;
        let batch = records.slice(pos..pos + total);
        let header = validate(&batch)?;
        out.push((batch, header));
        pos += total;
    }
    if out.is_empty() {
        return Err(BatchError::Corrupt);
    }
    Ok(out)
}

fn validate(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let magic = batch[16] as i8;
    if magic != 2 {
        return Err(BatchError::UnsupportedMagic(magic));
    }
    let crc = u32::from_be_bytes(batch[17..21].try_into().unwrap());
    if crc32c::crc32c(&batch[CRC_START..]) != crc {
        return Err(BatchError::CrcMismatch);
    }
    let header = parse_header(batch);
    if header.attributes & (TRANSACTIONAL_FLAG | CONTROL_FLAG) != 0 {
        return Err(BatchError::Transactional);
    }
    if header.record_count <= 0 || header.last_offset_delta < 0 {
        return Err(BatchError::Empty);
    }
    Ok(header)
}

/// Reads the header of a batch that was validated when it was produced.
pub fn parse_header(batch: &[u8]) -> BatchHeader {
    let mut b = &batch[21..HEADER_LEN];
    let attributes = b.get_i16();
    let last_offset_delta = b.get_i32();
    let _base_timestamp = b.get_i64();
    let max_timestamp = b.get_i64();
    let producer_id = b.get_i64();
    let producer_epoch = b.get_i16();
    let base_sequence = b.get_i32();
    let record_count = b.get_i32();
    BatchHeader {
        last_offset_delta,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        record_count,
        attributes,
    }
}

/// As [`put_stamped`], for a batch already in place.
pub fn stamp(batch: &mut [u8], base_offset: i64, leader_epoch: i32) -> anyhow::Result<()> {
    anyhow::ensure!(batch.len() >= 16, "a stored batch of {} bytes", batch.len());
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    Ok(())
}

/// Copies a stored batch into `out` with its offset and leader epoch filled in.
pub fn put_stamped(out: &mut BytesMut, stored: &[u8], base_offset: i64, leader_epoch: i32) {
    out.reserve(stored.len());
    out.put_i64(base_offset);
    out.put_slice(&stored[8..12]);
    out.put_i32(leader_epoch);
    out.put_slice(&stored[16..]);
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Builds a syntactically valid v2 batch with `count` opaque records.
    pub fn make_batch(count: i32, producer_id: i64, base_sequence: i32, payload: &[u8]) -> Bytes {
        let mut body = BytesMut::new();
        body.put_i16(0); // attributes
        body.put_i32(count - 1);
        body.put_i64(1_000); // base timestamp
        body.put_i64(2_000); // max timestamp
        body.put_i64(producer_id);
        body.put_i16(0);
        body.put_i32(base_sequence);
        body.put_i32(count);
        body.put_slice(payload);
        let mut b = BytesMut::new();
        b.put_i64(0);
        b.put_i32((4 + 1 + 4 + body.len()) as i32);
        b.put_i32(-1);
        b.put_i8(2);
        b.put_u32(crc32c::crc32c(&body));
        b.put_slice(&body);
        b.freeze()
    }

    #[test]
    fn accepts_valid_batches_and_stamps_outside_the_crc() {
        let mut set = BytesMut::new();
        set.put_slice(&make_batch(3, -1, -1, b"abc"));
        set.put_slice(&make_batch(2, 7, 5, b"de"));
        let set = set.freeze();
        let batches = split_and_validate(&set).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].1.record_count, 3);
        assert_eq!(batches[1].1.producer_id, 7);
        assert_eq!(batches[1].1.last_sequence(), 6);

        let mut out = BytesMut::new();
        put_stamped(&mut out, &batches[1].0, 42, 9);
        assert_eq!(&out[0..8], &42i64.to_be_bytes());
        assert_eq!(&out[12..16], &9i32.to_be_bytes());
        // Still valid after stamping: the CRC does not cover offset and epoch.
        assert!(split_and_validate(&out.freeze()).is_ok());
    }

    #[test]
    fn rejects_corruption() {
        let good = make_batch(1, -1, -1, b"x");
        let mut bad = BytesMut::from(&good[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(
            split_and_validate(&bad.freeze()),
            Err(BatchError::CrcMismatch)
        );
        assert_eq!(
            split_and_validate(&good.slice(0..good.len() - 1)),
            Err(BatchError::Corrupt)
        );
        assert_eq!(split_and_validate(&Bytes::new()), Err(BatchError::Corrupt));
        let mut v1 = BytesMut::from(&good[..]);
        v1[16] = 1;
        assert_eq!(
            split_and_validate(&v1.freeze()),
            Err(BatchError::UnsupportedMagic(1))
        );
    }

    #[test]
    fn sequences_wrap() {
        let h = BatchHeader {
            last_offset_delta: 2,
            max_timestamp: 0,
            producer_id: 1,
            producer_epoch: 0,
            base_sequence: i32::MAX - 1,
            record_count: 3,
            attributes: 0,
        };
        // MAX-1, MAX, then 0.
        assert_eq!(h.last_sequence(), 0);
    }
}
