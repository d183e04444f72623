//! What a coordinator partition holds. Consumer groups hash to the partitions of the
//! internal `__consumer_offsets` topic, as in Kafka; each partition is an ordinary Raft
//! replicated partition whose leader coordinates its groups. Committed offsets are
//! records in that partition's log (key: group, topic, partition; value: the offset), so
//! they replicate, snapshot and move with the partition like any other data, and the
//! next leader rebuilds the coordinator's state by reading the log.
//!
//! Keys and values are JSON, not Kafka's binary schemas: nothing outside the brokers
//! needs to parse them, and tools that read `__consumer_offsets` raw see readable text.

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The internal topic of coordinator partitions (Kafka's name, so that clients that
/// skip internal topics recognise it).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Kafka's `offset.metadata.max.bytes`: longer commit metadata is refused.
pub const MAX_METADATA_BYTES: usize = 4096;

/// The coordinator partition of `group`: Java's `String.hashCode` made non-negative,
/// modulo the partition count, exactly as Kafka computes it, so that a group lands on the
/// same partition number here as there.
pub fn partition_for(group: &str, partitions: usize) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
    ((hash & 0x7fff_ffff) as usize % partitions.max(1)) as i32
}

/// A record's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Key {
    /// A committed offset (a null value deletes it).
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    /// A group's membership as of its last stable generation (a null value: the group
    /// has no members), so that the next coordinator knows its members and generation.
    Group { group: String },
    /// Written by each new leader of the partition before it serves its groups: once
    /// it is applied, every earlier record is too, so the log read after it is complete.
    Barrier { leader: u64, epoch: i32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// The committed topic's id: a topic deleted and made again under the same name has
    /// a new id, so the old topic's offsets do not apply to it (Kafka drops them with the
    /// topic).
    pub topic_id: Uuid,
    pub commit_ms: i64,
}

/// A group's membership (see [`Key::Group`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupValue {
    pub protocol_type: String,
    pub protocol: String,
    pub generation: i32,
    pub leader: String,
    pub members: Vec<MemberValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberValue {
    pub member_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    /// The member's metadata for the group's protocol.
    #[serde(with = "base64_bytes")]
    pub subscription: Bytes,
    #[serde(with = "base64_bytes")]
    pub assignment: Bytes,
}

/// Opaque client bytes as base64 strings (JSON has no byte strings).
mod base64_bytes {
    use base64::Engine;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

/// The header that marks a restated record (see [`encode_restated`]): its value is the
/// big-endian offset of the record it restates.
const RESTATES: &str = "chronik.restates";

/// One decoded record: its offset in the partition, its key and value (if any), and, for
/// a restated record, the offset of the record it restates.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub offset: i64,
    pub key: Key,
    pub value: Option<Bytes>,
    pub restates: Option<i64>,
}

impl Entry {
    /// Where the record stands in the partition's history: its own offset, or for a
    /// restated record the offset of the original. Of two records for a key, the one
    /// standing later wins, whatever order they are read in: a restated value never
    /// overrides a change made after the original.
    pub fn position(&self) -> i64 {
        self.restates.unwrap_or(self.offset)
    }
}

/// One record batch (magic 2, uncompressed, no producer id) holding `records`, ready to
/// be proposed to the partition's Raft group; the partition assigns its offsets.
pub fn encode_batch(records: &[(Key, Option<Vec<u8>>)]) -> Bytes {
    let records: Vec<_> = records
        .iter()
        .map(|(k, v)| (k, v.as_deref(), None))
        .collect();
    encode(&records)
}

/// One batch restating records: each `(key, value, offset)` repeats the value that the
/// record at `offset` gave `key`, marked with that offset (a checkpoint writes them before
/// it moves the log start past the originals).
pub fn encode_restated(records: &[(Key, Bytes, i64)]) -> Bytes {
    let records: Vec<_> = records
        .iter()
        .map(|(k, v, at)| (k, Some(&v[..]), Some(*at)))
        .collect();
    encode(&records)
}

/// A record to encode: key, value (None: a tombstone), the offset it restates if any.
type Unencoded<'a> = (&'a Key, Option<&'a [u8]>, Option<i64>);

fn encode(records: &[Unencoded]) -> Bytes {
    let now = now_ms();
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value, restates))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch where offset minus sequence changes; this
            // keeps one batch (one Raft entry) with the base sequence -1 of a producer
            // without idempotence.
            sequence: i as i32 - 1,
            timestamp: now,
            key: Some(Bytes::from(
                serde_json::to_vec(key).expect("keys serialize"),
            )),
            value: value.map(Bytes::copy_from_slice),
            headers: restates
                .map(|at| {
                    let at = Bytes::copy_from_slice(&at.to_be_bytes());
                    [(StrBytes::from_static_str(RESTATES), Some(at))].into()
                })
                .unwrap_or_default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("an uncompressed batch encodes");
    buf.freeze()
}

/// Records of some batches of a coordinator partition, and the offset after them.
#[derive(Debug, Default)]
pub struct Decoded {
    pub entries: Vec<Entry>,
    pub next_offset: i64,
}

/// Decodes the batches of a coordinator partition, as read from its log. Records whose
/// key is not ours (none should exist: clients cannot produce to the topic) are skipped.
pub fn decode(mut batches: Bytes) -> anyhow::Result<Decoded> {
    let mut out = Decoded::default();
    for set in RecordBatchDecoder::decode_all(&mut batches)? {
        for r in set.records {
            out.next_offset = out.next_offset.max(r.offset + 1);
            let Some(key) = r.key.as_ref().and_then(|k| serde_json::from_slice(k).ok()) else {
                continue;
            };
            let restates = r
                .headers
                .get(RESTATES.as_bytes())
                .and_then(|v| v.as_ref())
                .and_then(|v| Some(i64::from_be_bytes(v[..].try_into().ok()?)));
            out.entries.push(Entry {
                offset: r.offset,
                key,
                value: r.value,
                restates,
            });
        }
    }
    Ok(out)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_hash_to_the_partition_kafka_picks() {
        // Java's "my-group".hashCode() is -1906497762: Kafka masks the sign bit (Utils.abs).
        assert_eq!(partition_for("my-group", 50), 36);
        assert_eq!(partition_for("my-group", 16), 14);
        assert_eq!(partition_for("console-consumer-1", 50), 24);
        assert_eq!(partition_for("test-group-42", 50), 17);
        assert_eq!(partition_for("g", 50), 3);
        assert_eq!(partition_for("", 50), 0);
    }

    #[test]
    fn batches_round_trip_with_tombstones() {
        let key = Key::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
        };
        let value = OffsetValue {
            offset: 42,
            leader_epoch: 7,
            metadata: Some("m".into()),
            topic_id: Uuid::new_v4(),
            commit_ms: 1,
        };
        let bytes = encode_batch(&[
            (key.clone(), Some(serde_json::to_vec(&value).unwrap())),
            (key.clone(), None),
        ]);
        let mut raw = bytes.clone();
        let sets = RecordBatchDecoder::decode_all(&mut raw).unwrap();
        assert_eq!(sets.len(), 1, "one batch, hence one Raft entry");
        let headers = crate::log::batch::split_and_validate(&bytes).unwrap();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].1.record_count, 2);
        assert_eq!(headers[0].1.base_sequence, -1);
        let decoded = decode(bytes).unwrap();
        assert_eq!(decoded.next_offset, 2);
        let entries = decoded.entries;
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].key, key);
        assert_eq!((entries[0].offset, entries[1].offset), (0, 1));
        let back: OffsetValue = serde_json::from_slice(entries[0].value.as_ref().unwrap()).unwrap();
        assert_eq!(back, value);
        assert!(entries[1].value.is_none());
        assert_eq!((entries[0].restates, entries[0].position()), (None, 0));
    }

    #[test]
    fn restated_records_carry_the_position_of_their_original() {
        let key = Key::Group { group: "g".into() };
        let bytes = encode_restated(&[(key.clone(), Bytes::from_static(b"{}"), 12345)]);
        let entries = decode(bytes).unwrap().entries;
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].key, key);
        assert_eq!(entries[0].value.as_deref(), Some(&b"{}"[..]));
        assert_eq!((entries[0].offset, entries[0].restates), (0, Some(12345)));
        assert_eq!(entries[0].position(), 12345);
    }
}
