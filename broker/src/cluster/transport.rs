//! Outgoing Raft traffic: one queue and one sending task per peer. Whatever the driver
//! queued while the previous call was in flight goes out in the next call, so Raft
//! messages of many groups share each round trip. Failed calls drop their messages:
//! Raft retransmits, and a peer that is down must not stall the driver.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronik_api::cluster::v1::cluster_client::ClusterClient;
use chronik_api::cluster::v1::{GroupMessage, StepRequest};
use prost011::Message as _;
use raft::eraftpb::Message;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::snapshot::{is_snapshot, SnapshotSender};
use super::{Peers, MAX_GRPC_MESSAGE};
use crate::metrics;

/// Bytes of Raft messages per call, well under the receiver's limit.
const MAX_CALL_BYTES: usize = 16 << 20;

pub struct GrpcTransport {
    me: u64,
    peers: Arc<Peers>,
    runtime: Handle,
    queues: Mutex<HashMap<u64, mpsc::UnboundedSender<Vec<GroupMessage>>>>,
    snapshots: Arc<SnapshotSender>,
}

impl GrpcTransport {
    /// Must be called inside the Tokio runtime that will run the sending tasks.
    pub fn new(me: u64, peers: Arc<Peers>, snapshots: Arc<SnapshotSender>) -> Self {
        GrpcTransport {
            me,
            peers,
            runtime: Handle::current(),
            queues: Mutex::default(),
            snapshots,
        }
    }
}

impl crate::raft::Transport for GrpcTransport {
    fn send(&self, to: u64, messages: Vec<(u64, Message)>) {
        let mut encoded = Vec::with_capacity(messages.len());
        for (group, m) in messages {
            if is_snapshot(&m) {
                self.snapshots.send(to, group, m);
                continue;
            }
            encoded.push(GroupMessage {
                group,
                message: m.encode_to_vec(),
            });
        }
        if encoded.is_empty() {
            return;
        }
        let mut queues = self.queues.lock().unwrap();
        let queue = queues.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            self.runtime
                .spawn(send_loop(self.me, to, self.peers.clone(), rx));
            tx
        });
        let _ = queue.send(encoded);
    }
}

async fn send_loop(
    me: u64,
    to: u64,
    peers: Arc<Peers>,
    mut rx: mpsc::UnboundedReceiver<Vec<GroupMessage>>,
) {
    let mut failing = false;
    while let Some(mut batch) = rx.recv().await {
        let mut bytes: usize = batch.iter().map(|m| m.message.len()).sum();
        while bytes < MAX_CALL_BYTES {
            let Ok(more) = rx.try_recv() else { break };
            bytes += more.iter().map(|m| m.message.len()).sum::<usize>();
            batch.extend(more);
        }
        let Some(channel) = peers.channel(to) else {
            continue;
        };
        let count = batch.len();
        let request = StepRequest {
            from_node: me,
            messages: batch,
        };
        let mut client = ClusterClient::new(channel).max_encoding_message_size(MAX_GRPC_MESSAGE);
        match tokio::time::timeout(Duration::from_secs(5), client.step(request)).await {
            Ok(Ok(_)) => {
                metrics::RAFT_MESSAGES_SENT.inc_by(count as u64);
                if failing {
                    tracing::info!(peer = to, "peer reachable again");
                    failing = false;
                }
            }
            Ok(Err(e)) => {
                metrics::RAFT_SEND_FAILURES.inc();
                if !failing {
                    peers.suspect(to);
                    tracing::warn!(peer = to, error = %e.message(), "cannot reach peer; Raft will retry");
                    failing = true;
                }
            }
            Err(_) => {
                metrics::RAFT_SEND_FAILURES.inc();
                if !failing {
                    tracing::warn!(peer = to, "peer did not answer in time; Raft will retry");
                    failing = true;
                }
            }
        }
    }
}
