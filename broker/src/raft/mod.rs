//! Raft replication: one driver thread runs every group (the metadata group and one group
//! per partition), and request handlers talk to it through a [`RaftHandle`]. Messages to
//! other brokers leave through a [`Transport`]; theirs arrive through [`RaftHandle::step`].

mod driver;
mod fence;
mod group;
mod logger;
mod membership;
mod metadata_quorum;
#[cfg(test)]
mod tests;
mod view;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use raft::eraftpb::Message;
use tokio::sync::oneshot;

pub use driver::{Driver, DriverConfig};
pub use writer::WriteHook;

use crate::log::snapshot::Received;
use crate::log::AppendOutcome;
use crate::metadata;

/// What applying a proposed entry produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Partition(AppendOutcome),
    Metadata(metadata::Outcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("this node is not the leader of the group")]
    NotLeader,
    #[error("the group does not exist")]
    UnknownGroup,
    #[error("timed out waiting for the entry to commit")]
    Timeout,
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("the broker's disk is short of space")]
    DiskFull,
}

type Reply = oneshot::Sender<Result<Applied, ProposeError>>;

/// The metadata group's members and leader as this node knows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub leader: u64,
}

/// Carries Raft messages to other brokers: `(group, message)` pairs, all for node `to`.
/// Sending must not block the driver; a lost message is fine, Raft sends again.
pub trait Transport: Send + 'static {
    fn send(&self, to: u64, messages: Vec<(u64, Message)>);
}

/// The transport of a single-node cluster: every group's only voter is this node.
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, to: u64, messages: Vec<(u64, Message)>) {
        tracing::warn!(
            to,
            count = messages.len(),
            "dropping Raft messages: no peers are configured"
        );
    }
}

pub(crate) enum DriverMsg {
    Propose {
        group: u64,
        data: Vec<u8>,
        reply: Reply,
    },
    /// The log writer made these Readies (group, ready number) durable.
    Persisted(Vec<(u64, u64)>),
    /// Raft messages from a peer, `(group, message)`.
    Step(Vec<(u64, Message)>),
    /// Hand leadership of every group this node leads to its most caught-up voter that
    /// is in sync and not among `down`; answers how many transfers were started.
    TransferLeadership {
        down: Vec<u64>,
        reply: oneshot::Sender<usize>,
    },
    /// A broker without cluster state asks to join: answers the metadata group's
    /// membership (and, on its leader, adds the broker as a learner).
    Join {
        node: u64,
        reply: oneshot::Sender<Membership>,
    },
    /// A snapshot of `group` received whole (its files on disk), with the Raft message
    /// that announces it (MsgSnapshot).
    InstallSnapshot {
        group: u64,
        message: Box<Message>,
        received: Received,
    },
    /// Whether the snapshot of `group` this node sent to `to` arrived.
    SnapshotSent {
        group: u64,
        to: u64,
        delivered: bool,
    },
    /// A peer refuses connections (its process is gone): groups it leads elect at once.
    PeerDown(u64),
    Shutdown,
}

/// Cheap to clone; every connection holds one.
#[derive(Clone)]
pub struct RaftHandle {
    tx: mpsc::Sender<DriverMsg>,
    pulse: Arc<Pulse>,
}

/// When the driver's loop last went round: it goes round at least once a tick, so a pulse
/// older than a few ticks means a stalled driver (health probes read it).
#[derive(Debug)]
pub struct Pulse {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Pulse {
    fn new() -> Self {
        Pulse {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn beat(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the driver's loop last went round.
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}

/// A proposal in flight; await it for the outcome once the entry is committed and applied.
pub struct Pending(oneshot::Receiver<Result<Applied, ProposeError>>);

impl RaftHandle {
    /// Queues an entry for `group`. Proposals queued together share one fsync.
    pub fn propose(&self, group: u64, data: Vec<u8>) -> Pending {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(DriverMsg::Propose { group, data, reply });
        Pending(rx)
    }

    pub async fn propose_metadata(
        &self,
        command: &metadata::Command,
        timeout: Duration,
    ) -> Result<metadata::Outcome, ProposeError> {
        let data = serde_json::to_vec(command).expect("commands serialize");
        match self
            .propose(metadata::METADATA_GROUP, data)
            .wait(timeout)
            .await?
        {
            Applied::Metadata(outcome) => Ok(outcome),
            Applied::Partition(_) => Err(ProposeError::UnknownGroup),
        }
    }

    /// Delivers messages that a peer sent to this node's groups.
    pub fn step(&self, messages: Vec<(u64, Message)>) {
        let _ = self.tx.send(DriverMsg::Step(messages));
    }

    /// Starts moving leadership of every group this node leads to another voter in sync
    /// (none of the brokers in `down`), and returns how many transfers were started
    /// (groups without such a voter stay).
    pub async fn transfer_leadership(&self, down: Vec<u64>) -> usize {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(DriverMsg::TransferLeadership { down, reply });
        rx.await.unwrap_or(0)
    }

    /// See [`DriverMsg::Join`].
    pub async fn join(&self, node: u64) -> Result<Membership, ProposeError> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(DriverMsg::Join { node, reply });
        rx.await.map_err(|_| ProposeError::ShuttingDown)
    }

    /// Hands a snapshot received from a peer to the driver, which installs it if Raft
    /// still wants it.
    pub fn install_snapshot(&self, group: u64, message: Message, received: Received) {
        let _ = self.tx.send(DriverMsg::InstallSnapshot {
            group,
            message: Box::new(message),
            received,
        });
    }

    /// Tells Raft whether a snapshot sent to `to` arrived (it sends another if not).
    pub fn snapshot_sent(&self, group: u64, to: u64, delivered: bool) {
        let _ = self.tx.send(DriverMsg::SnapshotSent {
            group,
            to,
            delivered,
        });
    }

    /// Tells the driver that `node`'s broker refuses connections (see `driver/failover.rs`).
    pub fn peer_down(&self, node: u64) {
        let _ = self.tx.send(DriverMsg::PeerDown(node));
    }

    pub fn shutdown(&self) {
        let _ = self.tx.send(DriverMsg::Shutdown);
    }

    /// The driver loop's pulse.
    pub fn pulse(&self) -> Arc<Pulse> {
        self.pulse.clone()
    }
}

impl Pending {
    pub async fn wait(self, timeout: Duration) -> Result<Applied, ProposeError> {
        match tokio::time::timeout(timeout, self.0).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ProposeError::ShuttingDown),
            Err(_) => Err(ProposeError::Timeout),
        }
    }
}
