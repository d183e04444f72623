//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use std::sync::Arc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::broker::Broker;

pub async fn handle(broker: &Arc<Broker>, req: HeartbeatRequest) -> HeartbeatResponse {
    let code = if broker.is_group_coordinator() {
        broker
            .groups
            .heartbeat(&req.group_id, &req.member_id, req.generation_id)
    } else {
        crate::protocol::errors::NOT_COORDINATOR
    };
    HeartbeatResponse::default().with_error_code(code)
}
