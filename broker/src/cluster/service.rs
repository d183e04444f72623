//! The cluster gRPC service that peers call: Raft messages in, metadata commands
//! forwarded by brokers that do not lead the metadata group, leadership reports, and
//! joins of brokers without cluster state.

use std::sync::Arc;
use std::time::Duration;

use chronik_api::cluster::v1::cluster_server::Cluster;
use chronik_api::cluster::v1::propose_metadata_response::Result as Answer;
use chronik_api::cluster::v1::*;
use prost011::Message as _;
use raft::eraftpb::Message;
use tonic::{Request, Response, Status};

use super::forward::error_code;
use super::{snapshot, Starting};
use crate::metadata::{self, Command};

pub struct ClusterService {
    starting: Arc<Starting>,
}

impl ClusterService {
    pub fn new(starting: Arc<Starting>) -> Self {
        ClusterService { starting }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn step(&self, request: Request<StepRequest>) -> Result<Response<StepResponse>, Status> {
        let broker = self.starting.broker()?;
        let request = request.into_inner();
        let mut messages = Vec::with_capacity(request.messages.len());
        for m in request.messages {
            let decoded = Message::decode(m.message.as_slice()).map_err(|e| {
                Status::invalid_argument(format!(
                    "undecodable Raft message from node {}: {e}",
                    request.from_node
                ))
            })?;
            messages.push((m.group, decoded));
        }
        broker.raft.step(messages);
        Ok(Response::new(StepResponse {}))
    }

    async fn propose_metadata(
        &self,
        request: Request<ProposeMetadataRequest>,
    ) -> Result<Response<ProposeMetadataResponse>, Status> {
        let broker = self.starting.broker()?;
        let request = request.into_inner();
        let command: Command = serde_json::from_slice(&request.command)
            .map_err(|e| Status::invalid_argument(format!("undecodable metadata command: {e}")))?;
        let timeout = Duration::from_millis(u64::from(request.timeout_ms.clamp(100, 60_000)));
        // Proposed here only: forwarding again could bounce between stale views.
        let result = match broker.raft.propose_metadata(&command, timeout).await {
            Ok(outcome) => {
                Answer::Outcome(serde_json::to_vec(&outcome).expect("outcomes serialize"))
            }
            Err(e) => Answer::Error(error_code(e).to_string()),
        };
        Ok(Response::new(ProposeMetadataResponse {
            result: Some(result),
        }))
    }

    async fn report_leadership(
        &self,
        request: Request<LeadershipReport>,
    ) -> Result<Response<LeadershipAck>, Status> {
        let broker = self.starting.broker()?;
        let report = request.into_inner();
        let from = report.from_node;
        let catalog = &broker.catalog;
        catalog.peer_seen(from);
        catalog.set_peer_stopping(from, report.stopping);
        let partitions = catalog.partitions_by_group();
        for g in report.groups {
            if g.group == metadata::METADATA_GROUP {
                catalog.set_metadata_leader(from, g.term);
            } else if let Some(p) = partitions.get(&g.group) {
                p.apply_report(from, g.term, &g.voters, &g.in_sync);
            }
        }
        Ok(Response::new(LeadershipAck {}))
    }

    async fn install_snapshot(
        &self,
        request: Request<tonic::Streaming<SnapshotChunk>>,
    ) -> Result<Response<InstallSnapshotResponse>, Status> {
        let broker = self.starting.broker()?.clone();
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(SnapshotChunk {
                chunk: Some(snapshot_chunk::Chunk::Header(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "a snapshot stream starts with its header",
                ))
            }
        };
        let (from, group) = (header.from_node, header.group);
        let message = Message::decode(header.message.as_slice()).map_err(|e| {
            Status::invalid_argument(format!("undecodable Raft message from node {from}: {e}"))
        })?;
        if broker.disk.is_full() && group != crate::metadata::METADATA_GROUP {
            // The sender's Raft tries again later; refusing now keeps the margin RocksDB
            // needs for what was already accepted (the catalog's few bytes still pass, so
            // the broker stays a working member).
            tracing::warn!(
                from,
                group,
                "short of disk space (storage_min_free_bytes): snapshot refused"
            );
            return Err(Status::resource_exhausted(format!(
                "node {} is short of disk space (storage_min_free_bytes): no snapshot of group {group} now",
                broker.node_id
            )));
        }
        let received = snapshot::receive(&broker.db, &broker.disk, group, &message, stream)
            .await
            .map_err(|e| {
                tracing::warn!(from, group, error = %e, "snapshot not received");
                Status::aborted(format!("snapshot of group {group} not received: {e}"))
            })?;
        tracing::info!(
            from,
            group,
            index = received.index,
            batches = received.batches,
            bytes = received.bytes,
            "snapshot received"
        );
        let answer = InstallSnapshotResponse {
            batches: received.batches,
            bytes: received.bytes,
        };
        broker.raft.install_snapshot(group, message, received);
        Ok(Response::new(answer))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let request = request.into_inner();
        let node = request.node_id;
        let Some(broker) = self.starting.get() else {
            // Still starting: without cluster state it has none to offer; with it, the
            // asker must wait until it can answer for it.
            if self.starting.had_cluster_state {
                return Err(Status::unavailable("the broker is starting"));
            }
            return Ok(Response::new(JoinResponse::default()));
        };
        if crate::broker::split_host_port(&request.cluster_addr).is_err() {
            return Err(Status::invalid_argument(format!(
                "cluster_addr {:?} is not host:port",
                request.cluster_addr
            )));
        }
        broker.peers.learn(node, request.cluster_addr);
        let m = broker
            .raft
            .join(node)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(JoinResponse {
            cluster_exists: true,
            voters: m.voters,
            learners: m.learners,
            leader: m.leader,
        }))
    }
}
