//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), or the first offset at or
//! after a timestamp.

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::errors;
use crate::broker::Broker;
use crate::log::read;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub fn handle(broker: &Arc<Broker>, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|lp| {
                    let r = ListOffsetsPartitionResponse::default()
                        .with_partition_index(lp.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1);
                    let Some(p) = broker.catalog.partition(&t.name, lp.partition_index) else {
                        return r.with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION);
                    };
                    if !broker.leads(&p) {
                        return r.with_error_code(errors::NOT_LEADER_OR_FOLLOWER);
                    }
                    let found = match lp.timestamp {
                        LATEST => Some((p.high_watermark(), -1)),
                        EARLIEST => Some((p.log_start(), -1)),
                        MAX_TIMESTAMP => read::max_timestamp(&broker.db, &p),
                        ts => read::offset_for_timestamp(&broker.db, &p, ts),
                    };
                    match found {
                        Some((offset, ts)) => r
                            .with_offset(offset)
                            .with_timestamp(ts)
                            .with_leader_epoch(if version >= 4 { p.leader_epoch() } else { -1 }),
                        None => r,
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
