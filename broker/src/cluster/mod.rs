//! Brokers talking to each other over gRPC on `--cluster-addr`: who the peers are
//! ([`peers`]), Raft traffic ([`transport`] out, [`service`] in), metadata commands
//! forwarded to the metadata leader ([`forward`]), leadership reports that let every
//! broker answer Metadata for partitions it does not host ([`leadership`]), each broker's
//! registration in the metadata log ([`registration`]), partition snapshots streamed to
//! replicas that need compacted entries ([`snapshot`]), and how a broker without cluster
//! state bootstraps a new cluster or joins an existing one ([`join`]).

pub mod discovery;
pub mod forward;
pub mod join;
pub mod leadership;
pub mod moves;
pub mod peers;
pub mod placement;
pub mod registration;
pub mod service;
pub mod snapshot;
pub mod transport;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use chronik_api::admin::v1::admin_server::AdminServer;
use chronik_api::cluster::v1::cluster_server::ClusterServer;

use tonic::transport::server::TcpIncoming;
use tonic::Status;

use crate::admin::AdminService;
use crate::broker::Broker;
use crate::shutdown::Shutdown;

pub use forward::propose_metadata;
pub use peers::Peers;

/// The registered brokers' racks, for placement.
pub fn racks(broker: &Broker) -> placement::Racks {
    placement::Racks::new(
        broker
            .registered_brokers()
            .into_iter()
            .map(|r| (r.id, r.rack)),
    )
}

/// Largest gRPC message accepted: a Step batch carries many groups' appends.
pub const MAX_GRPC_MESSAGE: usize = 64 << 20;

/// The broker, once built. The gRPC endpoint starts before it: a broker without cluster
/// state must answer its peers' Join calls while it finds out whether to bootstrap a
/// cluster or join one (see [`join`]).
pub struct Starting {
    broker: OnceLock<Arc<Broker>>,
    /// Whether this broker had cluster state (the metadata group) when it started.
    pub had_cluster_state: bool,
}

impl Starting {
    pub fn new(had_cluster_state: bool) -> Arc<Starting> {
        Arc::new(Starting {
            broker: OnceLock::new(),
            had_cluster_state,
        })
    }

    pub fn set(&self, broker: Arc<Broker>) {
        let _ = self.broker.set(broker);
    }

    /// The broker, or UNAVAILABLE while it is starting.
    pub fn broker(&self) -> Result<&Arc<Broker>, Status> {
        self.broker
            .get()
            .ok_or_else(|| Status::unavailable("the broker is starting"))
    }

    pub fn get(&self) -> Option<&Arc<Broker>> {
        self.broker.get()
    }
}

/// Binds `addr` (failing at once if it cannot) and serves the cluster service (peers) and
/// the admin API (operator, tools) on it until shutdown.
pub fn serve(
    addr: SocketAddr,
    starting: Arc<Starting>,
    shutdown: Shutdown,
) -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>>> {
    let incoming = TcpIncoming::bind(addr)
        .map_err(|e| anyhow::anyhow!("binding cluster address {addr}: {e}"))?;
    tracing::info!(%addr, "cluster and admin gRPC listening");
    let cluster = ClusterServer::new(service::ClusterService::new(starting.clone()))
        .max_decoding_message_size(MAX_GRPC_MESSAGE);
    let server = tonic::transport::Server::builder()
        .add_service(cluster)
        .add_service(AdminServer::new(AdminService::new(starting)));
    Ok(async move {
        server
            .serve_with_incoming_shutdown(incoming.with_nodelay(Some(true)), shutdown.wait())
            .await
            .map_err(|e| anyhow::anyhow!("gRPC on {addr}: {e}"))
    })
}
