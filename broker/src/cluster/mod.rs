//! Brokers talking to each other over gRPC on `--cluster-addr`: who the peers are
//! ([`peers`]), Raft traffic ([`transport`] out, [`service`] in), metadata commands
//! forwarded to the metadata leader ([`forward`]), leadership reports that let every
//! broker answer Metadata for partitions it does not host ([`leadership`]), and each
//! broker's registration in the metadata log ([`registration`]).

pub mod forward;
pub mod leadership;
pub mod peers;
pub mod registration;
pub mod service;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;

use chronik_api::admin::v1::admin_server::AdminServer;
use chronik_api::cluster::v1::cluster_server::ClusterServer;

use crate::admin::AdminService;
use crate::broker::Broker;
use crate::shutdown::Shutdown;

pub use forward::propose_metadata;
pub use peers::Peers;

/// Largest gRPC message accepted: a Step batch carries many groups' appends.
pub const MAX_GRPC_MESSAGE: usize = 64 << 20;

/// Serves the cluster service (peers) and the admin API (operator, tools) on one port.
pub async fn serve(
    addr: SocketAddr,
    broker: Arc<Broker>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    tracing::info!(%addr, "cluster and admin gRPC listening");
    let cluster = ClusterServer::new(service::ClusterService::new(broker.clone()))
        .max_decoding_message_size(MAX_GRPC_MESSAGE);
    tonic::transport::Server::builder()
        .add_service(cluster)
        .add_service(AdminServer::new(AdminService::new(broker)))
        .serve_with_shutdown(addr, shutdown.wait())
        .await
        .map_err(|e| anyhow::anyhow!("gRPC on {addr}: {e}"))
}
