//! DescribeConfigs: topic configs (overrides and defaults) and the broker's settings.

use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::{errors, str_bytes};
use crate::broker::Broker;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// Config sources, as in Kafka.
const TOPIC_CONFIG: i8 = 1;
const DEFAULT_CONFIG: i8 = 5;

pub fn handle(broker: &Arc<Broker>, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let entries = match r.resource_type {
                TOPIC => match broker.catalog.topic(&r.resource_name) {
                    Some(t) => topic_entries(broker, &t.configs),
                    None => {
                        return result
                            .with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_error_message(Some(str_bytes("unknown topic")))
                    }
                },
                BROKER => broker_entries(broker),
                _ => {
                    return result
                        .with_error_code(errors::INVALID_REQUEST)
                        .with_error_message(Some(str_bytes("unsupported resource type")))
                }
            };
            let wanted = r.configuration_keys.map(|keys| {
                keys.iter()
                    .map(|k| k.as_str().to_string())
                    .collect::<Vec<_>>()
            });
            let configs = entries
                .into_iter()
                .filter(|(name, _, _)| wanted.as_ref().is_none_or(|w| w.iter().any(|k| k == name)))
                .map(|(name, value, source)| {
                    DescribeConfigsResourceResult::default()
                        .with_name(str_bytes(name))
                        .with_value(Some(str_bytes(value)))
                        .with_config_source(source)
                        .with_read_only(r.resource_type == BROKER)
                })
                .collect();
            result.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn topic_entries(
    broker: &Broker,
    overrides: &std::collections::BTreeMap<String, String>,
) -> Vec<(String, String, i8)> {
    let s = &broker.settings;
    let defaults = [
        ("retention.ms", s.retention_ms.to_string()),
        ("retention.bytes", s.retention_bytes.to_string()),
        ("cleanup.policy", "delete".to_string()),
        ("max.message.bytes", "1048588".to_string()),
        ("min.insync.replicas", "1".to_string()),
        ("compression.type", "producer".to_string()),
        ("message.timestamp.type", "CreateTime".to_string()),
    ];
    defaults
        .into_iter()
        .map(|(name, default)| match overrides.get(name) {
            Some(v) => (name.to_string(), v.clone(), TOPIC_CONFIG),
            None => (name.to_string(), default, DEFAULT_CONFIG),
        })
        .collect()
}

fn broker_entries(broker: &Broker) -> Vec<(String, String, i8)> {
    let s = &broker.settings;
    [
        ("num.partitions", s.default_partitions.to_string()),
        (
            "default.replication.factor",
            s.default_replication_factor.to_string(),
        ),
        (
            "auto.create.topics.enable",
            s.auto_create_topics.to_string(),
        ),
        ("log.retention.ms", s.retention_ms.to_string()),
        ("log.retention.bytes", s.retention_bytes.to_string()),
        ("socket.request.max.bytes", s.max_request_bytes.to_string()),
        (
            "group.initial.rebalance.delay.ms",
            s.group_initial_rebalance_delay_ms.to_string(),
        ),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v, DEFAULT_CONFIG))
    .collect()
}
