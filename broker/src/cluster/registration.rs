//! Each broker records in the metadata log how clients and peers reach it, so that
//! Metadata responses list every broker and peers find each other's current address.
//! The first broker to find the cluster unnamed names it. A broker is ready (`/readyz`)
//! once the cluster has an id, its registration is applied, and it knows a leader for
//! every partition (from its own groups or its peers' reports; it stops waiting for that
//! after [`LEADERS_WAIT`], since a partition may truly be leaderless), so that clients
//! that find it ready get usable metadata.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use crate::metadata::{BrokerRecord, Command};

const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
pub const LEADERS_WAIT: Duration = Duration::from_secs(5);
use crate::shutdown::Shutdown;

pub async fn register(broker: Arc<Broker>, record: BrokerRecord, shutdown: Shutdown) {
    loop {
        let named = broker.catalog.cluster_id().is_some();
        // (A broker marked leaving registers again: starting, it is back.)
        let registered = broker.catalog.broker(record.id).as_ref() == Some(&record)
            && !broker.catalog.is_leaving(record.id);
        if named && registered {
            wait_for_leaders(&broker).await;
            broker.catalog.set_ready();
            tracing::info!(node = record.id, cluster_id = %broker.cluster_id(), "broker registered; ready");
            return;
        }
        let command = if named {
            Command::RegisterBroker(record.clone())
        } else {
            Command::InitCluster {
                id: broker.proposed_cluster_id.clone(),
            }
        };
        if let Err(e) = super::propose_metadata(&broker, &command, PROPOSE_TIMEOUT).await {
            tracing::info!(error = %e, "registration not committed yet (waiting for a metadata quorum)");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.clone().wait() => return,
        }
    }
}

async fn wait_for_leaders(broker: &Broker) {
    let deadline = tokio::time::Instant::now() + LEADERS_WAIT;
    loop {
        let leaderless = broker
            .catalog
            .topics()
            .iter()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.leader().is_none())
            .count();
        if leaderless == 0 {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                leaderless,
                "ready with partitions whose leader is not known yet"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
