//! Metadata commands go to the metadata group's leader. A broker that leads it proposes
//! locally; any other forwards the command there over gRPC. While leadership is moving
//! (or unknown) the command is retried until its deadline, so clients see a slow answer
//! rather than a spurious error.

use std::time::{Duration, Instant};

use chronik_api::cluster::v1::cluster_client::ClusterClient;
use chronik_api::cluster::v1::propose_metadata_response::Result as Answer;
use chronik_api::cluster::v1::ProposeMetadataRequest;

use crate::broker::Broker;
use crate::metadata::{Command, Outcome};
use crate::raft::ProposeError;

const RETRY_PAUSE: Duration = Duration::from_millis(100);

pub async fn propose_metadata(
    broker: &Broker,
    command: &Command,
    timeout: Duration,
) -> Result<Outcome, ProposeError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ProposeError::Timeout);
        }
        let result = match broker.catalog.metadata_leader() {
            Some(leader) if leader != broker.node_id as u64 => {
                forward(broker, leader, command, left).await
            }
            _ => broker.raft.propose_metadata(command, left).await,
        };
        match result {
            Err(ProposeError::NotLeader) => tokio::time::sleep(RETRY_PAUSE.min(left)).await,
            other => return other,
        }
    }
}

async fn forward(
    broker: &Broker,
    leader: u64,
    command: &Command,
    timeout: Duration,
) -> Result<Outcome, ProposeError> {
    let Some(channel) = broker.peers.channel(leader) else {
        return Err(ProposeError::NotLeader);
    };
    let request = ProposeMetadataRequest {
        command: serde_json::to_vec(command).expect("commands serialize"),
        timeout_ms: timeout.as_millis().min(u32::MAX as u128) as u32,
    };
    let mut client = ClusterClient::new(channel);
    let call = client.propose_metadata(request);
    let answer = match tokio::time::timeout(timeout, call).await {
        Err(_) => return Err(ProposeError::Timeout),
        Ok(Err(status)) => {
            // Unreachable or restarting: leadership will move or come back; retry.
            tracing::debug!(leader, error = %status.message(), "forwarding a metadata command failed");
            return Err(ProposeError::NotLeader);
        }
        Ok(Ok(response)) => response.into_inner().result,
    };
    match answer {
        Some(Answer::Outcome(bytes)) => serde_json::from_slice(&bytes).map_err(|e| {
            tracing::error!(leader, error = %e, "undecodable metadata outcome from the leader");
            ProposeError::NotLeader
        }),
        Some(Answer::Error(code)) => Err(error_from_code(&code)),
        None => Err(ProposeError::NotLeader),
    }
}

/// How a [`ProposeError`] travels in `ProposeMetadataResponse.error`.
pub fn error_code(e: ProposeError) -> &'static str {
    match e {
        ProposeError::NotLeader => "NOT_LEADER",
        ProposeError::UnknownGroup => "UNKNOWN_GROUP",
        ProposeError::Timeout => "TIMEOUT",
        ProposeError::ShuttingDown => "SHUTTING_DOWN",
        ProposeError::DiskFull => "DISK_FULL",
    }
}

fn error_from_code(code: &str) -> ProposeError {
    match code {
        "UNKNOWN_GROUP" => ProposeError::UnknownGroup,
        "TIMEOUT" => ProposeError::Timeout,
        "DISK_FULL" => ProposeError::DiskFull,
        // A leader shutting down hands leadership away: retry elsewhere.
        _ => ProposeError::NotLeader,
    }
}
