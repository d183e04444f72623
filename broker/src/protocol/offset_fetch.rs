//! OffsetFetch: committed offsets of one group (v1-7) or several (v8+); -1 when none.
//! Answered by the group's coordinator from what it read from the group's coordinator
//! partition. An offset committed for a topic that was deleted since (even if a topic of
//! the same name exists again) is no longer the group's.

use std::sync::Arc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::str_bytes;
use crate::broker::Broker;
use crate::group::Committed;

/// Per topic, each requested partition with its committed offset (if any).
type Found = Vec<(TopicName, Vec<(i32, Option<Committed>)>)>;

/// (topic, partition, committed) for the requested partitions, or all the group has; or
/// the error that keeps this broker from answering for the group.
fn lookup(
    broker: &Broker,
    group: &str,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> Result<Found, i16> {
    let current = |topic: &str, c: Committed| {
        let id = broker.catalog.topic(topic).map(|t| t.id);
        (id == Some(c.topic_id)).then_some(c)
    };
    match topics {
        Some(topics) => {
            let mut out = Vec::with_capacity(topics.len());
            for (name, partitions) in topics {
                let mut found = Vec::with_capacity(partitions.len());
                for p in partitions {
                    let c = broker.groups.committed(group, &name, p)?;
                    found.push((p, c.and_then(|c| current(&name, c))));
                }
                out.push((name, found));
            }
            Ok(out)
        }
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<(i32, Option<Committed>)>> =
                Default::default();
            for (topic, partition, c) in broker.groups.group_offsets(group)? {
                if let Some(c) = current(&topic, c) {
                    by_topic
                        .entry(topic)
                        .or_default()
                        .push((partition, Some(c)));
                }
            }
            Ok(by_topic
                .into_iter()
                .map(|(t, ps)| (TopicName(str_bytes(t)), ps))
                .collect())
        }
    }
}

fn fields(o: &Option<Committed>) -> (i64, i32, Option<String>) {
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
                let found = match lookup(broker, &g.group_id, wanted) {
                    Ok(found) => found,
                    Err(code) => {
                        return OffsetFetchResponseGroup::default()
                            .with_group_id(g.group_id)
                            .with_error_code(code)
                    }
                };
                let topics = found
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
    let wanted: Option<Vec<(TopicName, Vec<i32>)>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let found = match lookup(broker, &req.group_id, wanted.clone()) {
        Ok(found) => found,
        Err(code) => return refused(code, wanted.unwrap_or_default()),
    };
    let topics = found
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

/// A v0-7 answer for a group this broker does not serve now: the error at the top (v2+)
/// and on every requested partition (v0-1 have no top-level error).
fn refused(code: i16, wanted: Vec<(TopicName, Vec<i32>)>) -> OffsetFetchResponse {
    let topics = wanted
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|p| {
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(-1)
                        .with_error_code(code)
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default()
        .with_error_code(code)
        .with_topics(topics)
}
