//! OffsetFetch: committed offsets of one group (v1-7) or several (v8+); -1 when none.

use std::sync::Arc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::str_bytes;
use crate::broker::Broker;
use crate::metadata::CommittedOffset;

/// Per topic, each requested partition with its committed offset (if any).
type Found = Vec<(TopicName, Vec<(i32, Option<CommittedOffset>)>)>;

/// (topic, partition, committed) for the requested partitions, or all the group has.
fn lookup(broker: &Broker, group: &str, topics: Option<Vec<(TopicName, Vec<i32>)>>) -> Found {
    match topics {
        Some(topics) => topics
            .into_iter()
            .map(|(name, partitions)| {
                let found = partitions
                    .into_iter()
                    .map(|p| (p, broker.catalog.committed_offset(group, &name, p)))
                    .collect();
                (name, found)
            })
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<
                String,
                Vec<(i32, Option<CommittedOffset>)>,
            > = Default::default();
            for o in broker.catalog.group_offsets(group) {
                by_topic
                    .entry(o.topic.clone())
                    .or_default()
                    .push((o.partition, Some(o)));
            }
            by_topic
                .into_iter()
                .map(|(t, mut ps)| {
                    ps.sort_by_key(|(p, _)| *p);
                    (TopicName(str_bytes(t)), ps)
                })
                .collect()
        }
    }
}

fn fields(o: &Option<CommittedOffset>) -> (i64, i32, Option<String>) {
    match o {
        Some(o) => (
            o.offset,
            o.leader_epoch,
            Some(o.metadata.clone().unwrap_or_default()),
        ),
        None => (-1, -1, Some(String::new())),
    }
}

pub fn handle(broker: &Arc<Broker>, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect()
                });
                let topics = lookup(broker, &g.group_id, wanted)
                    .into_iter()
                    .map(|(name, ps)| {
                        let partitions = ps
                            .iter()
                            .map(|(p, o)| {
                                let (offset, epoch, meta) = fields(o);
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(meta.map(str_bytes))
                            })
                            .collect();
                        OffsetFetchResponseTopics::default()
                            .with_name(name)
                            .with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let topics = lookup(broker, &req.group_id, wanted)
        .into_iter()
        .map(|(name, ps)| {
            let partitions = ps
                .iter()
                .map(|(p, o)| {
                    let (offset, epoch, meta) = fields(o);
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(*p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(if version >= 5 { epoch } else { -1 })
                        .with_metadata(meta.map(str_bytes))
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}
