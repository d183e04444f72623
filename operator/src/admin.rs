//! The brokers' admin API (gRPC, `chronik-api`) as the operator uses it: cluster status
//! for the status subresource, and the restart gates and leadership drain of a rolling
//! upgrade. Each broker serves it on its cluster port; the operator reaches a broker
//! through its pod's DNS name under the headless Service (the [`Endpoints`] of a
//! [`Context`](crate::reconcile::Context); tests point them at local brokers).

use std::sync::Arc;
use std::time::Duration;

use chronik_api::admin::v1::admin_client::AdminClient;
use chronik_api::admin::v1::restart_check_request::Phase;
use chronik_api::admin::v1::{
    ClusterStatusRequest, ClusterStatusResponse, DecommissionRequest, DecommissionStatusRequest,
    DecommissionStatusResponse, DrainLeadershipRequest, DrainLeadershipResponse, RebalanceRequest,
    RebalanceStatusRequest, RebalanceStatusResponse, RestartCheckRequest, RestartCheckResponse,
};
use tonic::transport::{Channel, Endpoint};

use crate::crd::{ChronikCluster, ChronikClusterStatus, PartitionDetail, PartitionSummary};
use crate::resources::{Names, CLUSTER_PORT};

/// How many partitions `status.partitionDetails` lists (the CRD's cap).
pub const MAX_PARTITION_DETAILS: usize = 50;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the admin API of broker `id` of a cluster answers, as an `http://host:port` URI.
pub type Endpoints = Arc<dyn Fn(&ChronikCluster, i32) -> String + Send + Sync>;

/// Broker pods through the headless Service: `<cluster>-<id>.<headless>.<ns>.svc`.
pub fn pod_endpoints() -> Endpoints {
    Arc::new(|cluster, id| {
        let names = Names::of(cluster);
        format!(
            "http://{}-{id}.{}.{}.svc:{CLUSTER_PORT}",
            names.cluster, names.headless_service, names.namespace
        )
    })
}

async fn connect(uri: &str) -> Result<AdminClient<Channel>, String> {
    let channel = Endpoint::from_shared(uri.to_string())
        .map_err(|e| format!("{uri}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .map_err(|e| format!("{uri}: {e}"))?;
    Ok(AdminClient::new(channel))
}

pub async fn cluster_status(uri: &str) -> Result<ClusterStatusResponse, String> {
    let request = ClusterStatusRequest {
        include_partitions: true,
    };
    connect(uri)
        .await?
        .cluster_status(request)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| format!("{uri}: {}", s.message()))
}

pub async fn restart_check(
    uri: &str,
    node: i32,
    phase: Phase,
) -> Result<RestartCheckResponse, String> {
    let request = RestartCheckRequest {
        node_id: node,
        phase: phase as i32,
    };
    connect(uri)
        .await?
        .restart_check(request)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| format!("{uri}: {}", s.message()))
}

/// Asks broker `node` (at `uri`, its own endpoint) to hand its leaderships away.
pub async fn drain_leadership(uri: &str, node: i32) -> Result<DrainLeadershipResponse, String> {
    let mut client = connect(uri).await?;
    client
        .drain_leadership(DrainLeadershipRequest { node_id: node })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| format!("{uri}: {}", s.message()))
}

/// Starts a rebalance (any broker answers for the cluster).
pub async fn rebalance(uri: &str) -> Result<(), String> {
    connect(uri)
        .await?
        .rebalance(RebalanceRequest {})
        .await
        .map(|_| ())
        .map_err(|s| format!("{uri}: {}", s.message()))
}

pub async fn rebalance_status(uri: &str) -> Result<RebalanceStatusResponse, String> {
    connect(uri)
        .await?
        .rebalance_status(RebalanceStatusRequest::default())
        .await
        .map(|r| r.into_inner())
        .map_err(|s| format!("{uri}: {}", s.message()))
}

/// Starts moving every replica off broker `node` (asked of any broker), onto brokers
/// other than `also_leaving`.
pub async fn decommission(uri: &str, node: i32, also_leaving: &[i32]) -> Result<(), String> {
    connect(uri)
        .await?
        .decommission(DecommissionRequest {
            node_id: node,
            also_leaving: also_leaving.to_vec(),
        })
        .await
        .map(|_| ())
        .map_err(|s| format!("{uri}: {}", s.message()))
}

pub async fn decommission_status(
    uri: &str,
    node: i32,
) -> Result<DecommissionStatusResponse, String> {
    connect(uri)
        .await?
        .decommission_status(DecommissionStatusRequest { node_id: node })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| format!("{uri}: {}", s.message()))
}

/// Asks the brokers in `ids` in turn until one answers ClusterStatus.
pub async fn first_cluster_status(
    endpoints: &Endpoints,
    cluster: &ChronikCluster,
    ids: &[i32],
) -> Result<ClusterStatusResponse, String> {
    let mut errors = Vec::new();
    for id in ids {
        match cluster_status(&endpoints(cluster, *id)).await {
            Ok(s) => return Ok(s),
            Err(e) => errors.push(e),
        }
    }
    Err(if errors.is_empty() {
        "no broker is ready to ask".into()
    } else {
        errors.join("; ")
    })
}

/// Folds a broker's ClusterStatus into the status subresource: leader and replica counts
/// per broker, the partition summary, and up to [`MAX_PARTITION_DETAILS`] partitions with
/// the unhealthy ones (no leader, then under-replicated) first.
pub fn apply_cluster_status(status: &mut ChronikClusterStatus, cs: &ClusterStatusResponse) {
    for b in &mut status.brokers {
        let reported = cs.brokers.iter().find(|r| r.node_id == b.id);
        b.leaders = reported.map(|r| r.leader_count as i32);
        b.replicas = reported.map(|r| r.replica_count as i32);
        b.metadata = if cs.metadata_voters.contains(&b.id) {
            Some("voter".into())
        } else if cs.metadata_learners.contains(&b.id) {
            Some("learner".into())
        } else {
            None
        };
    }
    let summary = cs.summary.unwrap_or_default();
    status.partitions = Some(PartitionSummary {
        total: summary.total as i32,
        under_replicated: summary.under_replicated as i32,
        offline: summary.offline as i32,
        leaderless: summary.leaderless as i32,
    });
    // Partitions in trouble first, then the users' topics, then internal ones
    // (`__consumer_offsets`), so that the capped list shows what matters.
    let mut partitions: Vec<&_> = cs.partitions.iter().collect();
    partitions.sort_by_key(|p| {
        (
            p.leader >= 0,
            p.isr.len() >= p.replicas.len(),
            p.topic.starts_with("__"),
            p.topic.clone(),
            p.partition,
        )
    });
    status.partition_details = partitions
        .into_iter()
        .take(MAX_PARTITION_DETAILS)
        .map(|p| PartitionDetail {
            topic: p.topic.clone(),
            partition: p.partition,
            leader: (p.leader >= 0).then_some(p.leader),
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
        })
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BrokerStatus;
    use chronik_api::admin::v1::{BrokerStatus as Reported, PartitionStatus};

    fn partition(topic: &str, n: i32, leader: i32, isr: Vec<i32>) -> PartitionStatus {
        PartitionStatus {
            topic: topic.into(),
            partition: n,
            leader,
            replicas: vec![1, 2, 3],
            isr,
            ..Default::default()
        }
    }

    #[test]
    fn unhealthy_partitions_come_first_and_details_are_capped() {
        let mut partitions: Vec<PartitionStatus> = (0..16)
            .map(|i| partition("__consumer_offsets", i, 1, vec![1, 2, 3]))
            .chain((0..44).map(|i| partition("a", i, 1, vec![1, 2, 3])))
            .collect();
        partitions.push(partition("z", 0, 2, vec![2, 3]));
        partitions.push(partition("z", 1, -1, vec![]));
        let cs = ClusterStatusResponse {
            brokers: vec![Reported {
                node_id: 1,
                leader_count: 60,
                replica_count: 62,
                ..Default::default()
            }],
            partitions,
            summary: Some(chronik_api::admin::v1::PartitionSummary {
                total: 62,
                under_replicated: 2,
                offline: 1,
                leaderless: 1,
            }),
            metadata_voters: vec![1],
            metadata_learners: vec![2],
            ..Default::default()
        };
        let mut status = ChronikClusterStatus {
            brokers: vec![
                BrokerStatus {
                    id: 1,
                    ..Default::default()
                },
                BrokerStatus {
                    id: 2,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        apply_cluster_status(&mut status, &cs);
        assert_eq!(status.partition_details.len(), MAX_PARTITION_DETAILS);
        assert_eq!(
            (
                &status.partition_details[0].topic[..],
                status.partition_details[0].leader
            ),
            ("z", None)
        );
        assert_eq!(status.partition_details[1].isr, vec![2, 3]);
        // Then every partition of the users' topic, before the internal ones.
        assert!(status.partition_details[2..46]
            .iter()
            .all(|p| p.topic == "a"));
        assert_eq!(status.partition_details[46].topic, "__consumer_offsets");
        assert_eq!(status.partitions.as_ref().unwrap().under_replicated, 2);
        assert_eq!(status.brokers[0].leaders, Some(60));
        assert_eq!(status.brokers[0].replicas, Some(62));
        assert_eq!(status.brokers[1].leaders, None, "broker 2 was not reported");
        assert_eq!(status.brokers[0].metadata.as_deref(), Some("voter"));
        assert_eq!(status.brokers[1].metadata.as_deref(), Some("learner"));
    }
}
