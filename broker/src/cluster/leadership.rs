//! Leadership reports: every few hundred milliseconds each broker tells its peers which
//! groups it leads, with their voters and in-sync voters. Brokers that do not host a
//! partition learn its leader this way (to answer Metadata), followers learn the ISR
//! only a leader knows, and the reports double as a liveness signal for ClusterStatus.
//! A peer that refuses a report's connection has lost its process: the Raft driver then
//! elects new leaders for its groups at once (`raft/driver/failover.rs`).

use std::sync::Arc;
use std::time::Duration;

use chronik_api::cluster::v1::cluster_client::ClusterClient;
use chronik_api::cluster::v1::{GroupLeadership, LeadershipReport};

use crate::broker::Broker;
use crate::metadata;
use crate::shutdown::Shutdown;

pub const REPORT_INTERVAL: Duration = Duration::from_millis(300);

pub use crate::metadata::catalog::LIVENESS_WINDOW;

pub async fn report_loop(broker: Arc<Broker>, shutdown: Shutdown) {
    let mut interval = tokio::time::interval(REPORT_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Every interval to every peer; at once to a peer a Raft call just failed to
        // reach (a refused report tells that its process is gone).
        let peers = tokio::select! {
            _ = interval.tick() => broker.peers.ids(),
            suspects = broker.peers.suspected() => suspects,
            _ = shutdown.clone().wait() => return,
        };
        if peers.is_empty() {
            continue; // (a single broker: no one to tell, and its thousands of leaderships cost)
        }
        let report = build_report(&broker);
        for peer in peers {
            let Some(channel) = broker.peers.channel(peer) else {
                continue;
            };
            let (report, broker) = (report.clone(), broker.clone());
            // One slow or dead peer must not delay the others' reports.
            tokio::spawn(async move {
                let mut client = ClusterClient::new(channel);
                let call = client.report_leadership(report);
                if let Ok(Err(status)) = tokio::time::timeout(Duration::from_secs(1), call).await {
                    // (Once per death: the reports that keep being refused change nothing.)
                    if refused(&status) && broker.catalog.peer_refused(peer) {
                        broker.raft.peer_down(peer);
                    }
                }
            });
        }
    }
}

/// Whether a call failed because nothing listens at the peer's address: its broker
/// process is gone. (A live peer that is slow or cut off times out instead.)
fn refused(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = e.source();
    }
    false
}

fn build_report(broker: &Broker) -> LeadershipReport {
    let me = broker.node_id as u64;
    let mut groups = Vec::new();
    let (meta_leader, meta_term) = broker.catalog.metadata_leader_term();
    if meta_leader == me {
        groups.push(GroupLeadership {
            group: metadata::METADATA_GROUP,
            term: meta_term,
            ..Default::default()
        });
    }
    for topic in broker.catalog.topics() {
        for p in topic.partitions.iter().filter(|p| p.is_led_by(me)) {
            let (voters, in_sync) = p.replicas();
            groups.push(GroupLeadership {
                group: p.group,
                term: p.leader_epoch().max(0) as u64,
                voters,
                in_sync,
            });
        }
    }
    LeadershipReport {
        from_node: me,
        groups,
        stopping: broker.peers.stopping(),
    }
}
