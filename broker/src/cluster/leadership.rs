//! Leadership reports: every few hundred milliseconds each broker tells its peers which
//! groups it leads, with their voters and in-sync voters. Brokers that do not host a
//! partition learn its leader this way (to answer Metadata), followers learn the ISR
//! only a leader knows, and the reports double as a liveness signal for ClusterStatus.

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
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.clone().wait() => return,
        }
        let peers = broker.peers.ids();
        if peers.is_empty() {
            continue; // (a single broker: no one to tell, and its thousands of leaderships cost)
        }
        let report = build_report(&broker);
        for peer in peers {
            let Some(channel) = broker.peers.channel(peer) else {
                continue;
            };
            let report = report.clone();
            // One slow or dead peer must not delay the others' reports.
            tokio::spawn(async move {
                let mut client = ClusterClient::new(channel);
                let call = client.report_leadership(report);
                let _ = tokio::time::timeout(Duration::from_secs(1), call).await;
            });
        }
    }
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
    }
}
