//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use std::sync::Arc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::broker::Broker;

pub async fn handle(broker: &Arc<Broker>, req: HeartbeatRequest) -> HeartbeatResponse {
    let code = broker
        .groups
        .heartbeat(&req.group_id, &req.member_id, req.generation_id);
    HeartbeatResponse::default().with_error_code(code)
}
