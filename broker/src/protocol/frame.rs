//! Response frames as a list of byte segments, so that the record bytes a Fetch read go to
//! the socket from the buffer they were read into.
//!
//! kafka-protocol encodes the whole response, as for every other API; the encoder writes
//! each records field with one `put_slice` of the `Bytes` the handler put there, and
//! [`SegmentedBuf`] takes those slices by reference (a reference-counted clone) instead of
//! copying them. A 1 MiB fetch response is then a few hundred bytes of encoded fields
//! between the record buffers, written with one vectored write: the records are copied
//! once on their way out (into the socket), as they were copied once on their way in
//! (from the page cache).

use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::Encodable;

/// Slices shorter than this are copied even when shared: a segment of its own would cost
/// more (an iovec, a refcount) than the copy.
const SHARE_MIN: usize = 1024;

/// Frames a response: size prefix, header of `header_version`, then what `body` encodes.
pub fn plain(
    correlation_id: i32,
    header_version: i16,
    body: impl FnOnce(&mut BytesMut) -> anyhow::Result<()>,
) -> anyhow::Result<Frame> {
    let mut buf = BytesMut::with_capacity(256);
    let size = write_frame(&mut buf, correlation_id, header_version, body)?;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze().into())
}

/// As [`plain`], with any of the `shared` buffers the body writes referenced rather than
/// copied.
pub fn sharing(
    correlation_id: i32,
    header_version: i16,
    shared: &[Bytes],
    body: impl FnOnce(&mut SegmentedBuf) -> anyhow::Result<()>,
) -> anyhow::Result<Frame> {
    let mut buf = SegmentedBuf::new(shared);
    let size = write_frame(&mut buf, correlation_id, header_version, body)?;
    Ok(buf.finish_frame(size))
}

/// Writes a size placeholder, the header and the body; returns the size to put in place.
fn write_frame<B: ByteBufMut>(
    buf: &mut B,
    correlation_id: i32,
    header_version: i16,
    body: impl FnOnce(&mut B) -> anyhow::Result<()>,
) -> anyhow::Result<i32> {
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(buf, header_version)?;
    body(buf)?;
    Ok(i32::try_from(buf.offset() - 4)?)
}

/// One response frame (size prefix included), as consecutive segments.
#[derive(Debug)]
pub struct Frame {
    parts: Vec<Bytes>,
}

impl Frame {
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame as one contiguous buffer.
    #[cfg(test)]
    fn to_bytes(&self) -> Bytes {
        match self.parts.as_slice() {
            [one] => one.clone(),
            parts => parts.concat().into(),
        }
    }
}

impl From<Bytes> for Frame {
    fn from(b: Bytes) -> Self {
        Frame { parts: vec![b] }
    }
}

/// A segment being built: bytes the encoder wrote, or a shared buffer it named.
enum Part {
    Owned(BytesMut),
    Shared(Bytes),
}

impl Part {
    fn len(&self) -> usize {
        match self {
            Part::Owned(b) => b.len(),
            Part::Shared(b) => b.len(),
        }
    }
}

/// A `ByteBufMut` that copies what the encoder writes, except slices that are exactly one
/// of the `shared` buffers: those become segments of their own. Gaps (which the message
/// encoders do not use; record batch encoders do) work inside the bytes written around
/// them, which is all a gap ever spans.
pub struct SegmentedBuf<'a> {
    shared: &'a [Bytes],
    parts: Vec<Part>,
    /// Length of every part but the last.
    before_last: usize,
}

impl<'a> SegmentedBuf<'a> {
    pub fn new(shared: &'a [Bytes]) -> Self {
        SegmentedBuf {
            shared,
            parts: vec![Part::Owned(BytesMut::with_capacity(256))],
            before_last: 0,
        }
    }

    /// The frame written, its first four bytes set to `size`.
    fn finish_frame(mut self, size: i32) -> Frame {
        if let Some(Part::Owned(first)) = self.parts.first_mut() {
            first[0..4].copy_from_slice(&size.to_be_bytes());
        }
        Frame {
            parts: self.finish(),
        }
    }

    /// The segments written, each owned one frozen.
    fn finish(self) -> Vec<Bytes> {
        self.parts
            .into_iter()
            .filter(|p| p.len() > 0)
            .map(|p| match p {
                Part::Owned(b) => b.freeze(),
                Part::Shared(b) => b,
            })
            .collect()
    }

    fn push(&mut self, part: Part) {
        self.before_last += self.parts.last().map_or(0, Part::len);
        self.parts.push(part);
    }

    /// The owned part writes go to, started anew after a shared one.
    fn tail(&mut self) -> &mut BytesMut {
        if !matches!(self.parts.last(), Some(Part::Owned(_))) {
            self.push(Part::Owned(BytesMut::with_capacity(256)));
        }
        match self.parts.last_mut() {
            Some(Part::Owned(b)) => b,
            _ => unreachable!("an owned part was just pushed"),
        }
    }

    fn shared_match(&self, src: &[u8]) -> Option<Bytes> {
        if src.len() < SHARE_MIN {
            return None;
        }
        self.shared
            .iter()
            .find(|b| b.as_ptr() == src.as_ptr() && b.len() == src.len())
            .cloned()
    }
}

// SAFETY: every method delegates to the tail `BytesMut`, whose own implementation upholds
// the trait's contract; `put_slice` only adds whole parts.
unsafe impl BufMut for SegmentedBuf<'_> {
    fn remaining_mut(&self) -> usize {
        usize::MAX - self.offset()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of the chunk `chunk_mut` returned,
        // which is the tail's.
        unsafe { self.tail().advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.tail().chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        match self.shared_match(src) {
            Some(shared) => self.push(Part::Shared(shared)),
            None => self.tail().extend_from_slice(src),
        }
    }
}

impl ByteBufMut for SegmentedBuf<'_> {
    fn offset(&self) -> usize {
        self.before_last + self.parts.last().map_or(0, Part::len)
    }

    /// Moves the end of the buffer (a gap only ever moves it forward).
    fn seek(&mut self, offset: usize) {
        self.tail();
        let len = offset.saturating_sub(self.before_last);
        self.tail().resize(len, 0);
    }

    /// The bytes of `r`, which lie inside one owned part (a gap the encoder left).
    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let mut start = 0;
        for part in &mut self.parts {
            let len = part.len();
            if r.start >= start && r.end <= start + len {
                if let Part::Owned(b) = part {
                    return &mut b[r.start - start..r.end - start];
                }
            }
            start += len;
        }
        panic!("range {r:?} is not inside bytes the encoder wrote")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::{Decodable, Encodable};

    fn response(records: &[Bytes]) -> FetchResponse {
        let partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_records(Some(r.clone()))
            })
            .collect();
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(kafka_protocol::messages::TopicName(
                crate::protocol::str_bytes("t"),
            ))
            .with_partitions(partitions)])
    }

    #[test]
    fn shared_records_are_referenced_and_the_frame_decodes_as_encoded() {
        let records = vec![
            Bytes::from(vec![7u8; 5000]),
            Bytes::from(vec![1u8; 10]), // too small to share: copied
            Bytes::from(vec![9u8; 70_000]),
        ];
        let shared = records.clone();
        for version in [4, 11, 12, 16] {
            let resp = response(&records);
            let mut plain = BytesMut::new();
            resp.encode(&mut plain, version).unwrap();
            let mut seg = SegmentedBuf::new(&shared);
            resp.encode(&mut seg, version).unwrap();
            let parts = seg.finish();
            let frame = Frame { parts };
            assert!(
                frame.to_bytes() == plain.freeze(),
                "v{version}: frames differ"
            );
            // The large record buffers are the very allocations the handler made.
            for big in [&records[0], &records[2]] {
                assert!(
                    frame.parts().iter().any(|p| p.as_ptr() == big.as_ptr()),
                    "v{version}: records copied"
                );
            }
            let mut back = frame.to_bytes();
            let decoded = FetchResponse::decode(&mut back, version).unwrap();
            let got: Vec<Bytes> = decoded.responses[0]
                .partitions
                .iter()
                .filter_map(|p| p.records.clone())
                .collect();
            assert!(got == records, "v{version}: records differ after decoding");
        }
    }

    #[test]
    fn gaps_work_in_written_bytes() {
        let shared = [Bytes::from(vec![3u8; 2000])];
        let mut seg = SegmentedBuf::new(&shared);
        seg.put_u8(1);
        seg.put_slice(&shared[0]);
        let gap = seg.put_gap(4);
        seg.put_u8(2);
        seg.gap_buf(gap).copy_from_slice(&[9, 9, 9, 9]);
        let bytes = Frame {
            parts: seg.finish(),
        }
        .to_bytes();
        assert_eq!(bytes.len(), 1 + 2000 + 4 + 1);
        assert_eq!(&bytes[2001..], &[9, 9, 9, 9, 2]);
    }
}
