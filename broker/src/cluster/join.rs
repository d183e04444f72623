//! A broker that starts without cluster state (no metadata group on disk) must either
//! bootstrap a new cluster with its peers or join the existing one. It asks every peer
//! (`Join`) until one of two things is true:
//! - some peer has cluster state that counts this broker as a member (a voter of the
//!   metadata group, when it was one of the brokers the cluster was created with, or a
//!   learner the metadata leader just added): it starts with that membership and catches
//!   up from the metadata log;
//! - every peer answered and none has cluster state: they are all new, and bootstrap
//!   together with the metadata group's voters being all of them.
//!
//! A peer that cannot be reached keeps the question open: bootstrapping without hearing
//! from everyone could split one cluster into two.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chronik_api::cluster::v1::cluster_client::ClusterClient;
use chronik_api::cluster::v1::JoinRequest;

use super::Peers;

const ASK_INTERVAL: Duration = Duration::from_millis(300);
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Initial members of the metadata group for this broker: (voters, learners).
pub async fn bootstrap_or_join(
    me: u64,
    cluster_addr: &str,
    peers: &Arc<Peers>,
) -> (Vec<u64>, Vec<u64>) {
    let ids = peers.ids();
    let mut last_log = Instant::now();
    loop {
        let mut unanswered = Vec::new();
        let mut exists = false;
        for &id in &ids {
            let Some(channel) = peers.channel(id) else {
                unanswered.push(id);
                continue;
            };
            let mut client = ClusterClient::new(channel);
            let call = client.join(JoinRequest {
                node_id: me,
                cluster_addr: cluster_addr.to_string(),
            });
            match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    if !r.cluster_exists {
                        continue;
                    }
                    exists = true;
                    if r.voters.contains(&me) || r.learners.contains(&me) {
                        let role = if r.voters.contains(&me) {
                            "voter"
                        } else {
                            "learner"
                        };
                        tracing::info!(peer = id, role, voters = ?r.voters, learners = ?r.learners, "joining the existing cluster");
                        return (r.voters, r.learners);
                    }
                }
                _ => unanswered.push(id),
            }
        }
        if !exists && unanswered.is_empty() {
            let mut voters = ids.clone();
            voters.push(me);
            voters.sort_unstable();
            tracing::info!(
                ?voters,
                "no peer has cluster state: bootstrapping a new cluster"
            );
            return (voters, vec![]);
        }
        if last_log.elapsed() > Duration::from_secs(5) {
            tracing::info!(
                waiting_for = ?unanswered,
                cluster_exists = exists,
                "waiting to bootstrap or join the cluster"
            );
            last_log = Instant::now();
        }
        tokio::time::sleep(ASK_INTERVAL).await;
    }
}
