//! Raft replication: one driver thread runs every group (the metadata group and one group
//! per partition), and request handlers talk to it through a [`RaftHandle`].

mod driver;
mod writer;

use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::oneshot;

pub use driver::{Driver, DriverConfig};

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
}

type Reply = oneshot::Sender<Result<Applied, ProposeError>>;

pub(crate) enum DriverMsg {
    Propose {
        group: u64,
        data: Vec<u8>,
        reply: Reply,
    },
    /// The log writer made these Readies (group, ready number) durable.
    Persisted(Vec<(u64, u64)>),
    Shutdown,
}

/// Cheap to clone; every connection holds one.
#[derive(Clone)]
pub struct RaftHandle {
    tx: mpsc::Sender<DriverMsg>,
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

    pub fn shutdown(&self) {
        let _ = self.tx.send(DriverMsg::Shutdown);
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
