//! Peer discovery through DNS SRV records (`--peer-srv`), as a Kubernetes headless Service
//! publishes them for its named ports: one record per broker pod, whose target is the
//! pod's stable name (`<statefulset>-<ordinal>.<service>...`, the ordinal being the node
//! id) and whose port is the cluster port. Resolved with hickory-resolver before the
//! broker decides to bootstrap or join, then every [`REFRESH`] so that new brokers are
//! found; the addresses found are the peers' until they register their own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

use super::Peers;
use crate::shutdown::Shutdown;

pub const REFRESH: Duration = Duration::from_secs(10);

/// The system resolver, or the DNS server at `server` when given.
pub fn resolver(server: Option<SocketAddr>) -> anyhow::Result<TokioResolver> {
    let provider = TokioRuntimeProvider::default();
    let builder = match server {
        None => Resolver::builder(provider)
            .map_err(|e| anyhow::anyhow!("reading the system DNS configuration: {e}"))?,
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            Resolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], vec![ns]),
                provider,
            )
        }
    };
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("building the DNS resolver: {e}"))
}

/// The node id a pod name carries: the number after the last `-` of its first label.
pub fn node_id_of(target: &str) -> Option<u64> {
    let host = target.split('.').next()?;
    host.rsplit('-').next()?.parse().ok().filter(|id| *id > 0)
}

/// The brokers the SRV record `name` lists, as (node id, ip:port).
pub async fn resolve(resolver: &TokioResolver, name: &str) -> Result<Vec<(u64, String)>, String> {
    let lookup = resolver
        .srv_lookup(name)
        .await
        .map_err(|e| format!("SRV {name}: {e}"))?;
    let mut found = Vec::new();
    for record in lookup.answers() {
        let RData::SRV(srv) = &record.data else {
            continue;
        };
        let target = srv.target.to_utf8();
        let Some(id) = node_id_of(&target) else {
            tracing::warn!(%target, "SRV target without a node id (<name>-<ordinal>); ignored");
            continue;
        };
        match resolver.lookup_ip(target.as_str()).await {
            Ok(ips) => {
                if let Some(ip) = ips.iter().next() {
                    found.push((id, SocketAddr::new(ip, srv.port).to_string()));
                }
            }
            Err(e) => tracing::debug!(%target, error = %e, "SRV target has no address yet"),
        }
    }
    found.sort();
    Ok(found)
}

/// Resolves until at least one broker is found (the headless Service lists pods as soon as
/// they exist, ready or not), and records what it found.
pub async fn first_discovery(resolver: &TokioResolver, name: &str, peers: &Arc<Peers>) {
    loop {
        match resolve(resolver, name).await {
            Ok(found) if !found.is_empty() => {
                tracing::info!(srv = name, ?found, "peers discovered");
                for (id, addr) in found {
                    peers.learn(id, addr);
                }
                return;
            }
            Ok(_) => tracing::info!(srv = name, "no peers in DNS yet"),
            Err(e) => tracing::info!(error = %e, "peer discovery failed; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub async fn refresh_loop(
    resolver: TokioResolver,
    name: String,
    peers: Arc<Peers>,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = shutdown.clone().wait() => return,
        }
        match resolve(&resolver, &name).await {
            Ok(found) => {
                for (id, addr) in found {
                    peers.learn(id, addr);
                }
            }
            Err(e) => tracing::debug!(error = %e, "peer discovery failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::node_id_of;

    #[test]
    fn node_ids_come_from_pod_names() {
        assert_eq!(
            node_id_of("events-3.events-headless.kafka.svc.cluster.local."),
            Some(3)
        );
        assert_eq!(node_id_of("chronik-12"), Some(12));
        assert_eq!(node_id_of("events-0.x"), None);
        assert_eq!(node_id_of("events.x"), None);
    }
}
