//! OffsetCommit: committed offsets are replicated through the metadata Raft group, so they
//! survive restarts; many commits arriving together share one fsync.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::errors;
use crate::broker::Broker;
use crate::metadata::{Command, CommittedOffset, Outcome};

pub async fn handle(broker: &Arc<Broker>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = req.group_id.to_string();
    let membership = if broker.is_group_coordinator() {
        broker
            .groups
            .validate_commit(&group, &req.member_id, req.generation_id_or_member_epoch)
    } else {
        errors::NOT_COORDINATOR
    };
    let mut offsets = Vec::new();
    // (topic, partition, error known before proposing)
    let mut results: Vec<(usize, i32, i16)> = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        for p in &t.partitions {
            let code = if membership != errors::NONE {
                membership
            } else if broker
                .catalog
                .partition(&t.name, p.partition_index)
                .is_none()
            {
                errors::UNKNOWN_TOPIC_OR_PARTITION
            } else {
                offsets.push(CommittedOffset {
                    topic: t.name.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                });
                errors::NONE
            };
            results.push((ti, p.partition_index, code));
        }
    }
    let commit_code = if offsets.is_empty() {
        errors::NONE
    } else {
        let command = Command::CommitOffsets { group, offsets };
        match crate::cluster::propose_metadata(broker, &command, Duration::from_secs(30)).await {
            Ok(Outcome::OffsetsCommitted(..)) => errors::NONE,
            Ok(_) => errors::UNKNOWN_SERVER_ERROR,
            Err(e) => errors::for_propose(e),
        }
    };
    let topics = req
        .topics
        .iter()
        .enumerate()
        .map(|(ti, t)| {
            let partitions = results
                .iter()
                .filter(|(i, _, _)| *i == ti)
                .map(|&(_, partition, code)| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(partition)
                        .with_error_code(if code == errors::NONE {
                            commit_code
                        } else {
                            code
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
