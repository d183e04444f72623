//! The admin API (gRPC, `chronik-api`), served on `--cluster-addr` (see `cluster::serve`).
//!
//! Answers come from this broker's view of the cluster: its own Raft groups plus its
//! peers' leadership reports. Rebalance and Decommission commit new target voters for
//! partitions (see `cluster::placement`); each partition's leader then moves its group's
//! membership there, and the status calls report what is still moving.

use std::sync::Arc;

use chronik_api::admin::v1::admin_server::Admin;
use chronik_api::admin::v1::restart_check_request::Phase;
use chronik_api::admin::v1::*;
use tonic::{Request, Response, Status};

use crate::broker::Broker;
use crate::cluster::leadership::LIVENESS_WINDOW;
use crate::cluster::moves::{MoveWatch, Moving};
use crate::cluster::{placement, Starting};

/// Reasons listed by RestartCheck are capped; the count says how many partitions block.
const MAX_REASONS: usize = 20;

pub struct AdminService {
    starting: Arc<Starting>,
    moves: MoveWatch,
}

impl AdminService {
    pub fn new(starting: Arc<Starting>) -> Self {
        AdminService {
            starting,
            moves: MoveWatch::default(),
        }
    }
}

/// The stalled ones among `moving`, and a sentence on them for a status message.
fn stalled(moving: &[Moving]) -> (Vec<String>, String) {
    let stalled: Vec<String> = moving.iter().filter_map(|m| m.stalled.clone()).collect();
    let note = match stalled.len() {
        0 => String::new(),
        n => format!(
            "; {n} stalled: {}",
            stalled
                .iter()
                .take(MAX_REASONS)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    (stalled, note)
}

/// One partition as the admin API reports it.
fn partition_status(p: &crate::log::PartitionShared) -> PartitionStatus {
    let (replicas, isr) = p.replicas();
    let ids = |v: Vec<u64>| v.into_iter().map(|id| id as i32).collect();
    PartitionStatus {
        topic: p.topic.clone(),
        partition: p.partition,
        leader: p.leader().map_or(-1, |l| l as i32),
        leader_epoch: p.leader_epoch(),
        replicas: ids(replicas),
        isr: ids(isr),
        high_watermark: p.high_watermark(),
        log_start_offset: p.log_start(),
    }
}

/// Brokers that can take replicas: registered, this one or heard from recently, and not
/// being decommissioned (one that just stopped still looks alive for a few seconds).
fn live_brokers(b: &Broker) -> Vec<u64> {
    let me = b.node_id as u64;
    let mut ids: Vec<u64> = b
        .catalog
        .brokers()
        .iter()
        .map(|r| r.id)
        .filter(|id| *id == me || b.catalog.peer_alive(*id, LIVENESS_WINDOW))
        .filter(|id| !b.catalog.is_leaving(*id))
        .collect();
    ids.sort_unstable();
    ids
}

/// Every partition group with its current voters (a target counts as where it is going).
fn placement_of(b: &Broker) -> placement::Placement {
    placement_by_topic(b).into_iter().flatten().collect()
}

/// [`placement_of`], topic by topic.
fn placement_by_topic(b: &Broker) -> Vec<placement::Placement> {
    let targets = b.catalog.targets();
    b.catalog
        .topics()
        .iter()
        .map(|t| {
            t.partitions
                .iter()
                .map(|p| {
                    let voters = targets
                        .get(&p.group)
                        .cloned()
                        .unwrap_or_else(|| p.replicas().0);
                    (p.group, voters)
                })
                .collect()
        })
        .collect()
}

/// Gives a leaving node's partitions that have no target away from it one: those of a
/// topic made while its decommission started (placed before the node was marked leaving,
/// so the decommission's plan did not know them). Without this they would hold the
/// decommission up forever.
async fn move_strays(b: &Broker, node: u64) -> Result<(), Status> {
    if !b.catalog.is_leaving(node) {
        return Ok(());
    }
    let strays: placement::Placement = placement_of(b)
        .into_iter()
        .filter(|(_, voters)| voters.contains(&node))
        .collect();
    if strays.is_empty() {
        return Ok(());
    }
    let Ok(targets) =
        placement::decommission(&strays, &live_brokers(b), node, &crate::cluster::racks(b))
    else {
        return Ok(()); // nowhere to go: the status names what is left
    };
    tracing::info!(
        node,
        moves = targets.len(),
        "decommission: moving replicas placed after it started"
    );
    commit_targets(b, targets).await
}

async fn commit_targets(b: &Broker, targets: placement::Placement) -> Result<(), Status> {
    if targets.is_empty() {
        return Ok(());
    }
    let command = crate::metadata::Command::SetTargets { targets };
    crate::cluster::propose_metadata(b, &command, std::time::Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|e| Status::unavailable(format!("committing the new placement: {e}")))
}

fn led_by(b: &Broker, node: i32) -> usize {
    partitions(b).iter().filter(|p| p.leader == node).count()
}

/// Every registered broker (this one even before it registered), with liveness from
/// the peers' leadership reports and counts from the partitions' views.
fn broker_statuses(b: &Broker, partitions: &[PartitionStatus]) -> Vec<BrokerStatus> {
    let me = b.node_id;
    b.registered_brokers()
        .into_iter()
        .map(|r| {
            let id = r.id as i32;
            BrokerStatus {
                node_id: id,
                kafka_endpoint: format!("{}:{}", r.host, r.port),
                ready: if id == me {
                    b.catalog.is_ready()
                } else {
                    b.catalog.peer_alive(r.id, LIVENESS_WINDOW)
                },
                leader_count: partitions.iter().filter(|p| p.leader == id).count() as u32,
                replica_count: partitions
                    .iter()
                    .filter(|p| p.replicas.contains(&id))
                    .count() as u32,
                // Peers do not report their version yet; only ours is known.
                version: if id == me {
                    crate::version().to_string()
                } else {
                    String::new()
                },
            }
        })
        .collect()
}

fn partitions(b: &Broker) -> Vec<PartitionStatus> {
    b.catalog
        .topics()
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| partition_status(p)))
        .collect()
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let b = self.starting.broker()?;
        let partitions = partitions(b);
        let me = b.node_id;
        let summary = PartitionSummary {
            total: partitions.len() as u32,
            under_replicated: partitions
                .iter()
                .filter(|p| p.isr.len() < p.replicas.len())
                .count() as u32,
            offline: partitions.iter().filter(|p| p.isr.is_empty()).count() as u32,
            leaderless: partitions.iter().filter(|p| p.leader < 0).count() as u32,
        };
        let brokers = broker_statuses(b, &partitions);
        let (voters, learners) = b.catalog.metadata_members();
        let ids = |v: Vec<u64>| v.into_iter().map(|id| id as i32).collect();
        Ok(Response::new(ClusterStatusResponse {
            cluster_id: b.cluster_id(),
            node_id: me,
            brokers,
            summary: Some(summary),
            metadata_voters: ids(voters),
            metadata_learners: ids(learners),
            partitions: if request.into_inner().include_partitions {
                partitions
            } else {
                vec![]
            },
        }))
    }

    async fn drain_leadership(
        &self,
        request: Request<DrainLeadershipRequest>,
    ) -> Result<Response<DrainLeadershipResponse>, Status> {
        let b = self.starting.broker()?;
        let node = request.into_inner().node_id;
        if node != b.node_id {
            return Err(Status::failed_precondition(format!(
                "this is node {}; ask node {node}'s own admin endpoint to drain it",
                b.node_id
            )));
        }
        let before = led_by(b, node);
        crate::app::drain_leadership(b).await;
        let remaining = led_by(b, node);
        Ok(Response::new(DrainLeadershipResponse {
            transferred: before.saturating_sub(remaining) as u32,
            remaining: remaining as u32,
            message: if remaining == 0 {
                format!("node {node} leads no partition")
            } else {
                format!("{remaining} partitions have no other caught-up voter to take leadership")
            },
        }))
    }

    async fn rebalance(
        &self,
        _: Request<RebalanceRequest>,
    ) -> Result<Response<RebalanceResponse>, Status> {
        let b = self.starting.broker()?;
        let brokers = live_brokers(b);
        let targets =
            placement::rebalance(&placement_by_topic(b), &brokers, &crate::cluster::racks(b));
        let moves = targets.len();
        commit_targets(b, targets).await?;
        tracing::info!(moves, ?brokers, "rebalance started");
        Ok(Response::new(RebalanceResponse {
            rebalance_id: format!("rebalance-{}", b.catalog.targets().len()),
        }))
    }

    async fn rebalance_status(
        &self,
        _: Request<RebalanceStatusRequest>,
    ) -> Result<Response<RebalanceStatusResponse>, Status> {
        let b = self.starting.broker()?;
        let pending = self.moves.pending(b);
        let (stalled, note) = stalled(&pending);
        Ok(Response::new(RebalanceStatusResponse {
            done: pending.is_empty(),
            moves_pending: pending.len() as u32,
            message: if pending.is_empty() {
                "every partition has its target replicas".into()
            } else {
                format!(
                    "{} partitions are moving: {}{note}",
                    pending.len(),
                    pending
                        .iter()
                        .take(MAX_REASONS)
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            stalled,
        }))
    }

    async fn decommission(
        &self,
        request: Request<DecommissionRequest>,
    ) -> Result<Response<DecommissionResponse>, Status> {
        let b = self.starting.broker()?;
        let req = request.into_inner();
        let node = u64::try_from(req.node_id)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| Status::invalid_argument("node_id must be a broker id >= 1"))?;
        let leaving: Vec<u64> = req
            .also_leaving
            .iter()
            .filter_map(|n| u64::try_from(*n).ok())
            .collect();
        let mut brokers = live_brokers(b);
        brokers.retain(|b| !leaving.contains(b));
        let targets =
            placement::decommission(&placement_of(b), &brokers, node, &crate::cluster::racks(b))
                .map_err(|g| {
                    Status::failed_precondition(format!(
                        "partition group {g} has no other live broker to move to: its replication \
                 factor needs more brokers than the {} left",
                        brokers.len().saturating_sub(1)
                    ))
                })?;
        tracing::info!(node, moves = targets.len(), "decommission started");
        let mut leaving_now = leaving;
        leaving_now.push(node);
        let command = crate::metadata::Command::SetLeaving {
            nodes: leaving_now,
            leaving: true,
        };
        crate::cluster::propose_metadata(b, &command, std::time::Duration::from_secs(30))
            .await
            .map_err(|e| Status::unavailable(format!("marking the broker leaving: {e}")))?;
        commit_targets(b, targets).await?;
        Ok(Response::new(DecommissionResponse {}))
    }

    async fn decommission_status(
        &self,
        request: Request<DecommissionStatusRequest>,
    ) -> Result<Response<DecommissionStatusResponse>, Status> {
        let b = self.starting.broker()?;
        let node = request.into_inner().node_id;
        if let Ok(n) = u64::try_from(node) {
            move_strays(b, n).await?;
        }
        let remaining: Vec<String> = partitions(b)
            .into_iter()
            .filter(|p| p.replicas.contains(&node))
            .map(|p| format!("{}-{}", p.topic, p.partition))
            .collect();
        let (voters, _) = b.catalog.metadata_members();
        let votes = u64::try_from(node).is_ok_and(|n| voters.contains(&n));
        let leaving: Vec<Moving> = self
            .moves
            .pending(b)
            .into_iter()
            .filter(|m| u64::try_from(node).is_ok_and(|n| m.voters.contains(&n)))
            .collect();
        let (stalled, note) = stalled(&leaving);
        Ok(Response::new(DecommissionStatusResponse {
            stalled,
            done: remaining.is_empty() && !votes,
            replicas_remaining: remaining.len() as u32,
            message: if remaining.is_empty() && votes {
                format!(
                    "node {node} holds no replica but still votes in the metadata group \
                     (voters {voters:?}): its vote goes to another broker first"
                )
            } else if remaining.is_empty() {
                format!("node {node} holds no replica")
            } else {
                format!(
                    "node {node} still holds {}: {}{note}",
                    remaining.len(),
                    remaining
                        .iter()
                        .take(MAX_REASONS)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        }))
    }

    async fn restart_check(
        &self,
        request: Request<RestartCheckRequest>,
    ) -> Result<Response<RestartCheckResponse>, Status> {
        let b = self.starting.broker()?;
        let req = request.into_inner();
        let node = req.node_id;
        let hosted = partitions(b)
            .into_iter()
            .filter(|p| p.replicas.contains(&node));
        let blocking: Vec<String> = match req.phase() {
            Phase::Pre => hosted
                .filter_map(|p| pre_restart_blocker(&p, node))
                .collect(),
            Phase::Post => hosted
                .filter(|p| !p.isr.contains(&node))
                .map(|p| {
                    format!(
                        "{}-{}: node {node} is not in sync yet",
                        p.topic, p.partition
                    )
                })
                .collect(),
            Phase::Unspecified => {
                return Err(Status::invalid_argument("phase must be PRE or POST"))
            }
        };
        let ready = b.catalog.is_ready() || req.phase() == Phase::Pre;
        Ok(Response::new(RestartCheckResponse {
            safe: blocking.is_empty() && ready,
            blocking_partitions: blocking.len() as u32,
            reasons: blocking.into_iter().take(MAX_REASONS).collect(),
        }))
    }
}

/// Why restarting `node` would cost this partition its quorum, if it would: the voters
/// left in sync must still be a majority of all voters.
fn pre_restart_blocker(p: &PartitionStatus, node: i32) -> Option<String> {
    let majority = p.replicas.len() / 2 + 1;
    let others_in_sync = p.isr.iter().filter(|id| **id != node).count();
    (others_in_sync < majority).then(|| {
        format!(
            "{}-{}: {} of {} voters would stay in sync, {} needed",
            p.topic,
            p.partition,
            others_in_sync,
            p.replicas.len(),
            majority
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(replicas: Vec<i32>, isr: Vec<i32>) -> PartitionStatus {
        PartitionStatus {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            replicas,
            isr,
            ..Default::default()
        }
    }

    #[test]
    fn restart_gate_requires_a_majority_of_other_in_sync_voters() {
        assert!(pre_restart_blocker(&partition(vec![1], vec![1]), 1).is_some());
        assert!(pre_restart_blocker(&partition(vec![1, 2, 3], vec![1, 2, 3]), 1).is_none());
        assert!(pre_restart_blocker(&partition(vec![1, 2, 3], vec![1, 2]), 1).is_some());
        assert!(pre_restart_blocker(&partition(vec![1, 2, 3], vec![2, 3]), 1).is_none());
    }
}
