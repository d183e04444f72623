//! Metadata: brokers, the controller, and topics with their partitions' leaders, replicas
//! and in-sync replicas (from this broker's view, kept current by leadership reports). Unknown topics are created when
//! the client allows it and `auto_create_topics` is on.

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};

use super::{create_topics, errors, str_bytes, Ctx, Listener};
use crate::broker::Broker;
use crate::group::records::OFFSETS_TOPIC;
use crate::metadata::TopicView;

pub async fn handle(broker: &Arc<Broker>, req: MetadataRequest, ctx: &Ctx) -> MetadataResponse {
    let version = ctx.version;
    // v0 has no null list: an empty list means all topics there.
    let requested: Option<Vec<_>> = match req.topics {
        Some(t) if !(t.is_empty() && version == 0) => Some(t),
        _ => None,
    };
    let topics = match requested {
        None => broker
            .catalog
            .topics()
            .iter()
            .map(|t| describe(broker, t, version))
            .collect(),
        Some(requested) => {
            let auto_create = broker.settings.auto_create_topics
                && (version < 4 || req.allow_auto_topic_creation);
            let mut out = Vec::with_capacity(requested.len());
            for t in requested {
                let view = match &t.name {
                    Some(name) => lookup_or_create(broker, name, auto_create).await,
                    None => Err(errors::UNKNOWN_TOPIC_ID),
                }
                .and_then(|v| v.ok_or(errors::UNKNOWN_TOPIC_OR_PARTITION));
                let view = match (view, &t.name) {
                    (Err(_), None) if !t.topic_id.is_nil() => broker
                        .catalog
                        .topic_by_id(t.topic_id)
                        .ok_or(errors::UNKNOWN_TOPIC_ID),
                    (v, _) => v,
                };
                out.push(match view {
                    Ok(v) => describe(broker, &v, version),
                    Err(code) => MetadataResponseTopic::default()
                        .with_error_code(code)
                        .with_name(t.name.clone())
                        .with_topic_id(if version >= 10 {
                            t.topic_id
                        } else {
                            uuid::Uuid::nil()
                        }),
                });
            }
            out
        }
    };
    let brokers = advertised_brokers(broker, ctx.listener)
        .into_iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(str_bytes(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(str_bytes))
        })
        .collect();
    let mut response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics);
    if version >= 1 {
        response.controller_id =
            BrokerId(broker.catalog.metadata_leader().map_or(-1, |id| id as i32));
    }
    if version >= 2 {
        response.cluster_id = Some(str_bytes(broker.cluster_id()));
    }
    response
}

/// A broker as clients reach it on one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// Every registered broker at its internal address (this one even before it registered).
pub fn known_brokers(broker: &Broker) -> Vec<BrokerAddress> {
    broker
        .registered_brokers()
        .into_iter()
        .map(|b| BrokerAddress {
            id: b.id as i32,
            host: b.host,
            port: b.port,
            rack: b.rack,
        })
        .collect()
}

/// The brokers as clients of `listener` reach them: on the external listener, only the
/// brokers that have one, at their external addresses (as Kafka lists a listener's
/// endpoints only).
pub fn advertised_brokers(broker: &Broker, listener: Listener) -> Vec<BrokerAddress> {
    if listener == Listener::Internal {
        return known_brokers(broker);
    }
    broker
        .registered_brokers()
        .into_iter()
        .filter_map(|b| {
            b.external.map(|e| BrokerAddress {
                id: b.id as i32,
                host: e.host,
                port: e.port,
                rack: b.rack,
            })
        })
        .collect()
}

/// Looks a topic up, creating it if allowed; `Ok(None)` means unknown and not created.
async fn lookup_or_create(
    broker: &Arc<Broker>,
    name: &TopicName,
    auto_create: bool,
) -> Result<Option<Arc<TopicView>>, i16> {
    if let Some(v) = broker.catalog.topic(name) {
        return Ok(Some(v));
    }
    if name.as_str() == OFFSETS_TOPIC {
        // Made with its own partition count and factor, as the first group needs it.
        if auto_create {
            create_topics::ensure_offsets_topic(broker);
        }
        return Ok(None);
    }
    if !auto_create {
        return Ok(None);
    }
    create_topics::validate_name(name)?;
    let partitions = broker.settings.default_partitions;
    let rf = broker.settings.default_replication_factor;
    match create_topics::create(broker, name, partitions, rf, Default::default()).await {
        Ok(_) | Err((errors::TOPIC_ALREADY_EXISTS, _)) => Ok(broker.catalog.topic(name)),
        Err((code, _)) => Err(code),
    }
}

fn describe(broker: &Broker, t: &TopicView, version: i16) -> MetadataResponseTopic {
    let ids = |v: Vec<u64>| {
        v.into_iter()
            .map(|id| BrokerId(id as i32))
            .collect::<Vec<_>>()
    };
    let partitions = t
        .partitions
        .iter()
        .map(|p| {
            let (replicas, in_sync) = p.replicas_in_assignment_order();
            let response = MetadataResponsePartition::default()
                .with_partition_index(p.partition)
                .with_replica_nodes(ids(replicas))
                .with_isr_nodes(ids(in_sync));
            // (A leader whose broker refuses connections is gone: clients then ask again
            // soon and find the voter taking over, instead of waiting on it.)
            match p.leader().filter(|l| !broker.catalog.peer_down(*l)) {
                Some(leader) => response
                    .with_leader_id(BrokerId(leader as i32))
                    .with_leader_epoch(if version >= 7 { p.leader_epoch() } else { -1 }),
                None => response
                    .with_error_code(errors::LEADER_NOT_AVAILABLE)
                    .with_leader_id(BrokerId(-1)),
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(t.name.clone()))))
        .with_is_internal(version >= 1 && t.name == OFFSETS_TOPIC)
        .with_topic_id(if version >= 10 {
            t.id
        } else {
            uuid::Uuid::nil()
        })
        .with_partitions(partitions)
}
