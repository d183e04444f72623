//! FindCoordinator: a consumer group's coordinator is the leader of the `__consumer_offsets`
//! partition it hashes to (see `group`); the topic is made the first time a group asks.
//! Transaction coordination is not offered: asking for a transaction coordinator fails at
//! once with TRANSACTIONAL_ID_AUTHORIZATION_FAILED.

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{errors, str_bytes, Ctx};
use crate::broker::Broker;
use crate::group::records;

const GROUP_KEY: i8 = 0;

/// The answer for one key: error code and message, or the coordinator's id and address.
struct Found {
    code: i16,
    message: Option<StrBytes>,
    node: (i32, String, i32),
}

impl Found {
    fn error(code: i16, message: &str) -> Self {
        Found {
            code,
            message: Some(str_bytes(message.to_string())),
            node: (-1, String::new(), -1),
        }
    }
}

fn find(broker: &Arc<Broker>, key: &str, key_type: i8, ctx: &Ctx) -> Found {
    if key_type != GROUP_KEY {
        // Not COORDINATOR_NOT_AVAILABLE: clients retry that forever. This error is fatal
        // to a transactional producer, which then says why.
        return Found::error(
            errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            "transactions are not supported by this broker",
        );
    }
    let Some(topic) = broker.catalog.topic(records::OFFSETS_TOPIC) else {
        super::create_topics::ensure_offsets_topic(broker);
        return Found::error(
            errors::COORDINATOR_NOT_AVAILABLE,
            "the offsets topic is being created",
        );
    };
    let partition = records::partition_for(key, topic.partitions.len());
    let leader = topic
        .partitions
        .get(partition as usize)
        .and_then(|p| p.leader())
        .and_then(|id| {
            super::metadata::advertised_brokers(broker, ctx.listener)
                .into_iter()
                .find(|b| b.id == id as i32)
                .map(|b| (b.id, b.host, b.port))
        });
    match leader {
        Some(node) => Found {
            code: errors::NONE,
            message: None,
            node,
        },
        None => Found::error(
            errors::COORDINATOR_NOT_AVAILABLE,
            "the group's coordinator partition has no leader yet",
        ),
    }
}

pub fn handle(
    broker: &Arc<Broker>,
    req: FindCoordinatorRequest,
    ctx: &Ctx,
) -> FindCoordinatorResponse {
    if ctx.version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let found = find(broker, &key, req.key_type, ctx);
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(found.node.0))
                    .with_host(str_bytes(found.node.1))
                    .with_port(found.node.2)
                    .with_error_code(found.code)
                    .with_error_message(found.message)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let found = find(broker, &req.key, req.key_type, ctx);
    FindCoordinatorResponse::default()
        .with_error_code(found.code)
        .with_error_message(found.message)
        .with_node_id(BrokerId(found.node.0))
        .with_host(str_bytes(found.node.1))
        .with_port(found.node.2)
}
