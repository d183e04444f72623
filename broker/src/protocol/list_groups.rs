//! ListGroups: the groups this broker coordinates (those of the `__consumer_offsets`
//! partitions it leads), with members or known only by committed offsets (Empty).
//! As in Kafka, a broker lists only the groups it coordinates: tools ask every broker and
//! merge the answers, so a broker that does not coordinate a group must not report it (it
//! would show an active group as Empty).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::str_bytes;
use crate::broker::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    req: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let groups: BTreeMap<String, (String, &'static str)> = broker
        .groups
        .list()
        .into_iter()
        .map(|g| (g.group_id, (g.protocol_type, g.state)))
        .collect();
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_string()).collect();
    let listed = groups
        .into_iter()
        .filter(|(_, (_, state))| {
            states.is_empty() || states.iter().any(|s| s.eq_ignore_ascii_case(state))
        })
        .map(|(id, (protocol_type, state))| {
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(protocol_type));
            if version >= 4 {
                listed.group_state = str_bytes(state);
            }
            if version >= 5 {
                listed.group_type = str_bytes("classic");
            }
            listed
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}
