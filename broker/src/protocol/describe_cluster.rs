//! DescribeCluster: the registered brokers, the controller (the metadata group's leader)
//! and the cluster id.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{str_bytes, Listener};
use crate::broker::Broker;

pub fn handle(
    broker: &Arc<Broker>,
    _req: DescribeClusterRequest,
    listener: Listener,
) -> DescribeClusterResponse {
    let brokers = super::metadata::advertised_brokers(broker, listener)
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(str_bytes(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(str_bytes))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(broker.cluster_id()))
        .with_controller_id(BrokerId(
            broker.catalog.metadata_leader().map_or(-1, |id| id as i32),
        ))
        .with_brokers(brokers)
}
