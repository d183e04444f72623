//! The cluster gRPC service that peers call: Raft messages in, metadata commands
//! forwarded by brokers that do not lead the metadata group, and leadership reports.

use std::sync::Arc;
use std::time::Duration;

use chronik_api::cluster::v1::cluster_server::Cluster;
use chronik_api::cluster::v1::propose_metadata_response::Result as Answer;
use chronik_api::cluster::v1::*;
use prost011::Message as _;
use raft::eraftpb::Message;
use tonic::{Request, Response, Status};

use super::forward::error_code;
use crate::broker::Broker;
use crate::metadata::{self, Command};

pub struct ClusterService {
    broker: Arc<Broker>,
}

impl ClusterService {
    pub fn new(broker: Arc<Broker>) -> Self {
        ClusterService { broker }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn step(&self, request: Request<StepRequest>) -> Result<Response<StepResponse>, Status> {
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
        self.broker.raft.step(messages);
        Ok(Response::new(StepResponse {}))
    }

    async fn propose_metadata(
        &self,
        request: Request<ProposeMetadataRequest>,
    ) -> Result<Response<ProposeMetadataResponse>, Status> {
        let request = request.into_inner();
        let command: Command = serde_json::from_slice(&request.command)
            .map_err(|e| Status::invalid_argument(format!("undecodable metadata command: {e}")))?;
        let timeout = Duration::from_millis(u64::from(request.timeout_ms.clamp(100, 60_000)));
        // Proposed here only: forwarding again could bounce between stale views.
        let result = match self.broker.raft.propose_metadata(&command, timeout).await {
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
        let report = request.into_inner();
        let from = report.from_node;
        let catalog = &self.broker.catalog;
        catalog.peer_seen(from);
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
}
