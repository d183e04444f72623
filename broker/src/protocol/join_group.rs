//! JoinGroup: enters the rebalance barrier; answers when the group's new generation forms.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::{str_bytes, Ctx};
use crate::broker::Broker;
use crate::group::JoinRequest;

pub async fn handle(broker: &Arc<Broker>, req: JoinGroupRequest, ctx: &Ctx) -> JoinGroupResponse {
    let session = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
    // v0 has no rebalance timeout; Kafka uses the session timeout then.
    let rebalance = match req.rebalance_timeout_ms {
        t if t > 0 && ctx.version >= 1 => Duration::from_millis(t as u64),
        _ => session,
    };
    let result = broker
        .groups
        .join(JoinRequest {
            group_id: req.group_id.to_string(),
            member_id: req.member_id.to_string(),
            instance_id: req.group_instance_id.map(|s| s.to_string()),
            client_id: ctx.client_id.to_string(),
            client_host: format!("/{}", ctx.peer.ip()),
            session_timeout: session,
            rebalance_timeout: rebalance,
            protocol_type: req.protocol_type.to_string(),
            protocols: req
                .protocols
                .into_iter()
                .map(|p| (p.name.to_string(), p.metadata))
                .collect(),
            require_known_member_id: ctx.version >= 4,
        })
        .await;
    JoinGroupResponse::default()
        .with_error_code(result.error_code)
        .with_generation_id(result.generation)
        .with_protocol_type(
            result
                .protocol_type
                .filter(|_| ctx.version >= 7)
                .map(str_bytes),
        )
        .with_protocol_name(result.protocol_name.map(str_bytes))
        .with_leader(str_bytes(result.leader))
        .with_member_id(str_bytes(result.member_id))
        .with_skip_assignment(result.skip_assignment && ctx.version >= 9)
        .with_members(
            result
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(id))
                        .with_group_instance_id(
                            instance.filter(|_| ctx.version >= 5).map(str_bytes),
                        )
                        .with_metadata(metadata)
                })
                .collect(),
        )
}
