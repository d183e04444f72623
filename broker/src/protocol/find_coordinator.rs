//! FindCoordinator: this broker coordinates every consumer group. Transaction
//! coordination is not offered.

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::{errors, str_bytes};
use crate::broker::Broker;

const GROUP_KEY: i8 = 0;

pub fn handle(
    broker: &Arc<Broker>,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let (code, message) = if req.key_type == GROUP_KEY {
        (errors::NONE, None)
    } else {
        (
            errors::COORDINATOR_NOT_AVAILABLE,
            Some(str_bytes("transactions are not supported")),
        )
    };
    let (node, host, port) = if code == errors::NONE {
        (
            BrokerId(broker.node_id),
            str_bytes(broker.host.clone()),
            broker.port,
        )
    } else {
        (BrokerId(-1), str_bytes(""), -1)
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
