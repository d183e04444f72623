//! FindCoordinator: the metadata group's leader coordinates every consumer group (it
//! commits their offsets without a hop). Transaction coordination is not offered: asking
//! for a transaction coordinator fails at once with TRANSACTIONAL_ID_AUTHORIZATION_FAILED.

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::{errors, str_bytes, Ctx};
use crate::broker::Broker;

const GROUP_KEY: i8 = 0;

pub fn handle(
    broker: &Arc<Broker>,
    req: FindCoordinatorRequest,
    ctx: &Ctx,
) -> FindCoordinatorResponse {
    let version = ctx.version;
    let coordinator = broker.catalog.metadata_leader().and_then(|id| {
        super::metadata::advertised_brokers(broker, ctx.listener)
            .into_iter()
            .find(|b| b.0 == id as i32)
    });
    let (code, message) = match (&coordinator, req.key_type == GROUP_KEY) {
        // Not COORDINATOR_NOT_AVAILABLE: clients retry that forever. This error is fatal
        // to a transactional producer, which then says why.
        (_, false) => (
            errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            Some(str_bytes("transactions are not supported by this broker")),
        ),
        (None, true) => (
            errors::COORDINATOR_NOT_AVAILABLE,
            Some(str_bytes("the metadata group has no leader yet")),
        ),
        (Some(_), true) => (errors::NONE, None),
    };
    let (node, host, port) = match coordinator {
        Some((id, host, port)) if code == errors::NONE => (BrokerId(id), str_bytes(host), port),
        _ => (BrokerId(-1), str_bytes(""), -1),
    };
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(node)
                    .with_host(host.clone())
                    .with_port(port)
                    .with_error_code(code)
                    .with_error_message(message.clone())
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    FindCoordinatorResponse::default()
        .with_error_code(code)
        .with_error_message(message)
        .with_node_id(node)
        .with_host(host)
        .with_port(port)
}
