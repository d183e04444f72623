//! DescribeGroups: state, protocol and members with their assignments.

use std::sync::Arc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::str_bytes;
use crate::broker::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            let described = DescribedGroup::default().with_group_id(id.clone());
            let g = match broker.groups.describe(&id) {
                Err(code) => return described.with_error_code(code),
                Ok((Some(g), _)) => g,
                // Kafka reports groups it has no members for as Dead (or Empty with offsets).
                Ok((None, has_offsets)) => {
                    let state = if has_offsets { "Empty" } else { "Dead" };
                    return described.with_group_state(str_bytes(state));
                }
            };
            described
                .with_group_state(str_bytes(g.state))
                .with_protocol_type(str_bytes(g.protocol_type))
                .with_protocol_data(str_bytes(g.protocol))
                .with_members(
                    g.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(m.member_id))
                                .with_group_instance_id(
                                    m.instance_id.filter(|_| version >= 4).map(str_bytes),
                                )
                                .with_client_id(str_bytes(m.client_id))
                                .with_client_host(str_bytes(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
