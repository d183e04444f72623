//! OffsetCommit: the group's coordinator writes the offsets as one record batch to the
//! group's `__consumer_offsets` partition and answers once Raft committed it (many
//! commits arriving together share one fsync), so they survive the coordinator.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::errors;
use crate::broker::Broker;
use crate::group::records::{self, Key, OffsetValue, MAX_METADATA_BYTES, OFFSETS_TOPIC};
use crate::group::Committed;
use crate::log::AppendOutcome;
use crate::raft::{Applied, ProposeError};

const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// One requested partition: its topic's index in the request, and either the offset to
/// write or the error it already has.
struct Item {
    topic: usize,
    partition: i32,
    outcome: Result<(String, OffsetValue), i16>,
}

pub async fn handle(broker: &Arc<Broker>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = req.group_id.to_string();
    let coordinator_partition =
        broker
            .groups
            .validate_commit(&group, &req.member_id, req.generation_id_or_member_epoch);
    let now = records::now_ms();
    let mut items = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let topic = broker.catalog.topic(&t.name);
        for p in &t.partitions {
            let outcome = match (&coordinator_partition, &topic) {
                (Err(code), _) => Err(*code),
                (Ok(_), Some(topic)) if (p.partition_index as usize) < topic.partitions.len() => {
                    match &p.committed_metadata {
                        Some(m) if m.len() > MAX_METADATA_BYTES => {
                            Err(errors::OFFSET_METADATA_TOO_LARGE)
                        }
                        m => Ok((
                            t.name.to_string(),
                            OffsetValue {
                                offset: p.committed_offset,
                                leader_epoch: p.committed_leader_epoch,
                                metadata: m.as_ref().map(|m| m.to_string()),
                                topic_id: topic.id,
                                commit_ms: now,
                            },
                        )),
                    }
                }
                (Ok(_), _) => Err(errors::UNKNOWN_TOPIC_OR_PARTITION),
            };
            items.push(Item {
                topic: ti,
                partition: p.partition_index,
                outcome,
            });
        }
    }
    let write_code = match coordinator_partition {
        Ok(partition) => write(broker, &group, partition, &items).await,
        Err(_) => errors::NONE,
    };
    let topics = req
        .topics
        .iter()
        .enumerate()
        .map(|(ti, t)| {
            let partitions = items
                .iter()
                .filter(|i| i.topic == ti)
                .map(|i| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(i.partition)
                        .with_error_code(match i.outcome {
                            Ok(_) => write_code,
                            Err(code) => code,
                        })
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// Writes the valid items' offsets to the coordinator partition and, once committed,
/// makes them the group's; answers the error code they all get.
async fn write(broker: &Broker, group: &str, partition: i32, items: &[Item]) -> i16 {
    let offsets: Vec<(&str, i32, &OffsetValue)> = items
        .iter()
        .filter_map(|i| {
            let (topic, value) = i.outcome.as_ref().ok()?;
            Some((topic.as_str(), i.partition, value))
        })
        .collect();
    if offsets.is_empty() {
        return errors::NONE;
    }
    let Some(shared) = broker.catalog.partition(OFFSETS_TOPIC, partition) else {
        return errors::NOT_COORDINATOR;
    };
    let batch: Vec<(Key, Option<Vec<u8>>)> = offsets
        .iter()
        .map(|(topic, p, value)| {
            let key = Key::Offset {
                group: group.to_string(),
                topic: topic.to_string(),
                partition: *p,
            };
            (
                key,
                Some(serde_json::to_vec(value).expect("offsets serialize")),
            )
        })
        .collect();
    let pending = broker
        .raft
        .propose(shared.group, records::encode_batch(&batch).to_vec());
    let base = match pending.wait(WRITE_TIMEOUT).await {
        Ok(Applied::Partition(AppendOutcome::Appended { base_offset })) => base_offset,
        Ok(other) => {
            tracing::warn!(group, ?other, "unexpected outcome of an offset commit");
            return errors::UNKNOWN_SERVER_ERROR;
        }
        // The coordinator moved: the client looks it up again and retries there.
        Err(ProposeError::NotLeader | ProposeError::ShuttingDown | ProposeError::UnknownGroup) => {
            return errors::NOT_COORDINATOR
        }
        Err(e) => return errors::for_propose(e),
    };
    let committed = offsets
        .into_iter()
        .enumerate()
        .map(|(i, (topic, p, v))| {
            let c = Committed {
                offset: v.offset,
                leader_epoch: v.leader_epoch,
                metadata: v.metadata.clone(),
                topic_id: v.topic_id,
                position: base + i as i64,
            };
            (topic.to_string(), p, c)
        })
        .collect();
    broker.groups.offsets_committed(group, committed);
    errors::NONE
}
