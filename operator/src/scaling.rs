//! Scaling with partition moves, through the brokers' admin API:
//! - scale-up: once every broker pod is Ready, a broker that holds no replica (a new one)
//!   triggers a Rebalance (`spec.rebalance.onScaleUp`), and the cluster is Rebalancing
//!   until the brokers report every move done;
//! - scale-down: the brokers above the new size are decommissioned highest ordinal first
//!   (their replicas move away) and the StatefulSet keeps them until they hold nothing;
//!   a size below the highest replication factor in use is refused.

use chronik_api::admin::v1::ClusterStatusResponse;

use crate::admin;
use crate::crd::ChronikCluster;
use crate::reconcile::Context;

/// What scaling asks of this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scale {
    /// StatefulSet replicas to apply (above `spec.replicas` while brokers drain).
    pub replicas: i32,
    pub moving: bool,
    pub reason: &'static str,
    pub message: String,
    /// Why a scale-down is refused, if it is.
    pub refused: Option<String>,
    /// A rebalance was started by this reconcile (for the Event).
    pub started: bool,
    /// Moves the brokers report stalled, each with why.
    pub stalled: Vec<String>,
}

impl Scale {
    fn settled(replicas: i32) -> Scale {
        Scale {
            replicas,
            moving: false,
            reason: "Balanced",
            message: String::new(),
            refused: None,
            started: false,
            stalled: vec![],
        }
    }

    /// Moving, or stalled when the brokers say some moves are.
    fn moving_or_stalled(
        replicas: i32,
        reason: &'static str,
        message: String,
        stalled: Vec<String>,
    ) -> Scale {
        let reason = if stalled.is_empty() {
            reason
        } else {
            "MoveStalled"
        };
        Scale {
            stalled,
            ..Scale::moving(replicas, reason, message)
        }
    }

    fn moving(replicas: i32, reason: &'static str, message: String) -> Scale {
        Scale {
            replicas,
            moving: true,
            reason,
            message,
            refused: None,
            started: false,
            stalled: vec![],
        }
    }
}

/// The brokers to decommission when shrinking from `current` to `wanted`, highest first.
pub fn leaving(current: i32, wanted: i32) -> Vec<i32> {
    ((wanted + 1)..=current).rev().collect()
}

/// The highest replication factor in use.
pub fn max_replication_factor(cs: &ClusterStatusResponse) -> usize {
    cs.partitions
        .iter()
        .map(|p| p.replicas.len())
        .max()
        .unwrap_or(0)
}

/// Whether a ready broker that stays (id within `wanted`) holds no replica while the
/// cluster has partitions: a new broker that a rebalance should fill.
pub fn has_empty_broker(cs: &ClusterStatusResponse, wanted: i32) -> bool {
    cs.summary.is_some_and(|s| s.total > 0)
        && cs
            .brokers
            .iter()
            .any(|b| b.ready && b.node_id <= wanted && b.replica_count == 0)
}

/// Whether brokers above `wanted` still run: decommissioned, empty, their pods on the way
/// out. A rebalance now would hand them replicas again just before they go.
pub fn leavers_still_running(cs: &ClusterStatusResponse, wanted: i32) -> bool {
    cs.brokers.iter().any(|b| b.ready && b.node_id > wanted)
}

pub async fn plan(
    ctx: &Context,
    cluster: &ChronikCluster,
    current: Option<i32>,
    cs: Option<&ClusterStatusResponse>,
    ready: &[i32],
) -> Scale {
    let wanted = cluster.spec.replicas;
    let uri = ready.first().map(|id| (ctx.endpoints)(cluster, *id));
    match (current, uri, cs) {
        (Some(current), _, _) if current > wanted => {
            let (Some(uri), Some(cs)) = (ready.first().map(|id| (ctx.endpoints)(cluster, *id)), cs)
            else {
                return Scale::moving(
                    current,
                    "WaitingForBrokers",
                    "scale-down waits for a broker's admin API to move replicas away".into(),
                );
            };
            scale_down(&uri, cs, current, wanted).await
        }
        (_, Some(uri), Some(cs)) if cluster.spec.rebalance.on_scale_up => {
            rebalance_if_needed(&uri, cs, wanted, ready).await
        }
        _ => Scale::settled(wanted),
    }
}

async fn scale_down(uri: &str, cs: &ClusterStatusResponse, current: i32, wanted: i32) -> Scale {
    let rf = max_replication_factor(cs);
    if (wanted as usize) < rf {
        return Scale {
            refused: Some(format!(
                "cannot scale down to {wanted} brokers: a topic has replication factor {rf}"
            )),
            ..Scale::settled(current)
        };
    }
    let all_leaving = leaving(current, wanted);
    for &id in &all_leaving {
        match admin::decommission_status(uri, id).await {
            Ok(s) if s.done => continue,
            Ok(s) => {
                if let Err(e) = admin::decommission(uri, id, &all_leaving).await {
                    return Scale::moving(current, "DecommissionFailed", e);
                }
                return Scale::moving_or_stalled(
                    current,
                    "Decommissioning",
                    format!("moving replicas off broker {id}: {}", s.message),
                    s.stalled,
                );
            }
            Err(e) => return Scale::moving(current, "GateUnavailable", e),
        }
    }
    Scale {
        message: format!(
            "brokers {:?} hold no replica any more",
            leaving(current, wanted)
        ),
        ..Scale::settled(wanted)
    }
}

async fn rebalance_if_needed(
    uri: &str,
    cs: &ClusterStatusResponse,
    wanted: i32,
    ready: &[i32],
) -> Scale {
    match admin::rebalance_status(uri).await {
        Ok(s) if !s.done => {
            return Scale::moving_or_stalled(wanted, "Rebalancing", s.message, s.stalled)
        }
        Ok(_) => {}
        Err(e) => return Scale::moving(wanted, "GateUnavailable", e),
    }
    if (ready.len() as i32) < wanted
        || leavers_still_running(cs, wanted)
        || !has_empty_broker(cs, wanted)
    {
        return Scale::settled(wanted);
    }
    match admin::rebalance(uri).await {
        Ok(()) => Scale {
            started: true,
            ..Scale::moving(
                wanted,
                "RebalanceStarted",
                "moving replicas onto the new brokers".into(),
            )
        },
        Err(e) => Scale::moving(wanted, "RebalanceFailed", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chronik_api::admin::v1::{BrokerStatus, PartitionStatus, PartitionSummary};

    #[test]
    fn shrinking_drains_the_highest_ordinals_first() {
        assert_eq!(leaving(5, 3), vec![5, 4]);
        assert!(leaving(3, 3).is_empty());
        assert!(leaving(3, 4).is_empty());
    }

    #[test]
    fn new_empty_brokers_and_replication_factors_are_seen() {
        let cs = ClusterStatusResponse {
            brokers: vec![
                BrokerStatus {
                    node_id: 1,
                    ready: true,
                    replica_count: 2,
                    ..Default::default()
                },
                BrokerStatus {
                    node_id: 4,
                    ready: true,
                    replica_count: 0,
                    ..Default::default()
                },
            ],
            partitions: vec![PartitionStatus {
                replicas: vec![1, 2, 3],
                ..Default::default()
            }],
            summary: Some(PartitionSummary {
                total: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(has_empty_broker(&cs, 4));
        assert_eq!(max_replication_factor(&cs), 3);
        let empty = ClusterStatusResponse::default();
        assert!(
            !has_empty_broker(&empty, 4),
            "no partitions: nothing to rebalance"
        );
        // Scaled down to 3 and broker 4 emptied by its decommission, its pod still
        // stopping: not a broker to fill, and no rebalance until it is gone.
        assert!(!has_empty_broker(&cs, 3));
        assert!(leavers_still_running(&cs, 3));
        assert!(!leavers_still_running(&cs, 4));
    }
}
