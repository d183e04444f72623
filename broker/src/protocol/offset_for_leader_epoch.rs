//! OffsetForLeaderEpoch: the end offset of a leader epoch, where epoch = Raft term.
//! Consumers use it after a leader change to detect log truncation.

use std::sync::Arc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::errors;
use crate::broker::Broker;
use crate::log::read;

pub fn handle(
    broker: &Arc<Broker>,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|op| {
                    let r = EpochEndOffset::default()
                        .with_partition(op.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    match broker.catalog.partition(&t.topic, op.partition) {
                        None => r.with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION),
                        Some(p) if !broker.leads(&p) => {
                            r.with_error_code(errors::NOT_LEADER_OR_FOLLOWER)
                        }
                        // A client that knows another leader epoch than ours is ahead of
                        // us (we may not have learned of a new term) or behind.
                        Some(p)
                            if op.current_leader_epoch >= 0
                                && op.current_leader_epoch != p.leader_epoch() =>
                        {
                            r.with_error_code(if op.current_leader_epoch < p.leader_epoch() {
                                errors::FENCED_LEADER_EPOCH
                            } else {
                                errors::UNKNOWN_LEADER_EPOCH
                            })
                        }
                        Some(p) => {
                            let (epoch, end) =
                                read::epoch_end_offset(&broker.db, &p, op.leader_epoch);
                            r.with_leader_epoch(epoch).with_end_offset(end)
                        }
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
