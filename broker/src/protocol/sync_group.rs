//! SyncGroup: the leader hands in assignments; every member receives its own.

use std::sync::Arc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::str_bytes;
use crate::broker::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    req: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let assignments = req
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let (code, assignment, protocol) = broker
        .groups
        .sync(
            &req.group_id,
            &req.member_id,
            req.generation_id,
            assignments,
        )
        .await;
    let response = SyncGroupResponse::default()
        .with_error_code(code)
        .with_assignment(assignment);
    if version < 5 {
        return response;
    }
    response
        .with_protocol_type(req.protocol_type)
        .with_protocol_name(protocol.map(str_bytes))
}
