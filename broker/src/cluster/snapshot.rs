//! Raft snapshots between brokers. A partition leader's snapshot does not travel with the
//! other Raft messages: it is a stream of its own (`InstallSnapshot`), the Raft message
//! first, then the retained record batches in bounded chunks read from RocksDB only as
//! fast as the receiver takes them (gRPC flow control and a two-chunk channel bound the
//! memory on both sides, however large the partition), then a trailer. The metadata
//! group's snapshot takes the same way with its catalog inside the message and no chunks. The receiver
//! writes the chunks to files and hands the snapshot to its Raft driver only once the
//! trailer says everything arrived; a transfer cut short by either side leaves nothing
//! behind, and the leader's Raft sends a new one.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chronik_api::cluster::v1::cluster_client::ClusterClient;
use chronik_api::cluster::v1::snapshot_chunk::Chunk;
use chronik_api::cluster::v1::{
    InstallSnapshotResponse, PartitionSnapshot, SnapshotChunk, SnapshotHeader, SnapshotTrailer,
    StoredBatch, StoredBatches,
};
use prost::Message as _;
use prost011::Message as _;
use raft::eraftpb::{Message, MessageType};
use rocksdb::Options;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Peers, MAX_GRPC_MESSAGE};
use crate::log::snapshot::{self, Builder, Received};
use crate::metadata::{self, METADATA_GROUP};
use crate::metrics;
use crate::raft::RaftHandle;
use crate::storage::{Db, DiskSpace};

/// How long one transfer may take before the sender gives up (and Raft sends another).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);

/// Whether a Raft message is a snapshot, which leaves through [`SnapshotSender`].
pub fn is_snapshot(m: &Message) -> bool {
    m.msg_type == MessageType::MsgSnapshot as i32
}

/// Streams a leader's snapshots to its followers and tells the Raft driver how each fared.
pub struct SnapshotSender {
    me: u64,
    peers: Arc<Peers>,
    db: Db,
    /// The driver, known once it started (the transport is built before it).
    raft: Arc<OnceLock<RaftHandle>>,
    runtime: Handle,
    /// (peer, group) transfers under way: raft-rs sends one at a time per follower, and a
    /// repeat while one is on its way would only race it.
    in_flight: Mutex<HashSet<(u64, u64)>>,
}

impl SnapshotSender {
    /// Must be called inside the Tokio runtime that runs the transfers.
    pub fn new(me: u64, peers: Arc<Peers>, db: Db, raft: Arc<OnceLock<RaftHandle>>) -> Arc<Self> {
        Arc::new(SnapshotSender {
            me,
            peers,
            db,
            raft,
            runtime: Handle::current(),
            in_flight: Mutex::default(),
        })
    }

    /// Starts sending `message` (a MsgSnapshot of `group`) to broker `to`.
    pub fn send(self: &Arc<Self>, to: u64, group: u64, message: Message) {
        if !self.in_flight.lock().unwrap().insert((to, group)) {
            tracing::debug!(peer = to, group, "a snapshot is already on its way");
            return;
        }
        let this = self.clone();
        self.runtime.spawn(async move {
            let started = Instant::now();
            let result = this.transfer(to, group, message).await;
            this.in_flight.lock().unwrap().remove(&(to, group));
            let delivered = match result {
                Ok(r) => {
                    metrics::RAFT_SNAPSHOTS_SENT.inc();
                    metrics::RAFT_SNAPSHOT_BYTES_SENT.inc_by(r.bytes);
                    metrics::RAFT_SNAPSHOT_SECONDS.observe(started.elapsed().as_secs_f64());
                    tracing::info!(peer = to, group, batches = r.batches, bytes = r.bytes,
                        ms = started.elapsed().as_millis() as u64, "snapshot sent");
                    true
                }
                Err(e) => {
                    metrics::RAFT_SNAPSHOT_SEND_FAILURES.inc();
                    tracing::warn!(peer = to, group, error = %e, "snapshot not delivered; Raft will send another");
                    false
                }
            };
            if let Some(raft) = this.raft.get() {
                raft.snapshot_sent(group, to, delivered);
            }
        });
    }

    async fn transfer(
        &self,
        to: u64,
        group: u64,
        message: Message,
    ) -> anyhow::Result<InstallSnapshotResponse> {
        let channel = self
            .peers
            .channel(to)
            .ok_or_else(|| anyhow::anyhow!("no address known for broker {to}"))?;
        let snapshot = message
            .snapshot
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("a snapshot message without a snapshot"))?;
        // The metadata group's catalog is all in the message; a partition's batches follow.
        let data = match group {
            METADATA_GROUP => None,
            _ => Some(PartitionSnapshot::decode(snapshot.data.as_slice())?),
        };
        let catalog_bytes = snapshot.data.len() as u64;
        let (tx, rx) = mpsc::channel::<SnapshotChunk>(2);
        let header = Chunk::Header(SnapshotHeader {
            from_node: self.me,
            group,
            message: message.encode_to_vec(),
        });
        tx.send(chunk(header)).await?;
        let db = self.db.clone();
        let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let sink = |batches: Vec<StoredBatch>| {
                tx.blocking_send(chunk(Chunk::Batches(StoredBatches { batches })))
                    .is_ok()
            };
            let (batches, bytes) = match &data {
                Some(data) => snapshot::read_batches(&db, group, data, sink)?,
                None => (0, catalog_bytes),
            };
            // Only a stream that read everything ends with a trailer.
            tx.blocking_send(chunk(Chunk::Trailer(SnapshotTrailer { batches, bytes })))
                .map_err(|_| anyhow::anyhow!("the receiver went away"))?;
            Ok(())
        });
        let mut client = ClusterClient::new(channel).max_encoding_message_size(MAX_GRPC_MESSAGE);
        let call = client.install_snapshot(ReceiverStream::new(rx));
        let answer = tokio::time::timeout(TRANSFER_TIMEOUT, call).await;
        // (A dropped call dropped the stream too: the reader stops at its next chunk.)
        let read = reader.await?;
        let response = answer
            .map_err(|_| anyhow::anyhow!("no answer within {} s", TRANSFER_TIMEOUT.as_secs()))?
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        read?;
        Ok(response.into_inner())
    }
}

fn chunk(c: Chunk) -> SnapshotChunk {
    SnapshotChunk { chunk: Some(c) }
}

/// Receives the rest of a snapshot stream whose header carried `message` into files
/// beside the database. Succeeds only when the trailer came and everything adds up.
pub async fn receive(
    db: &Db,
    disk: &Arc<DiskSpace>,
    group: u64,
    message: &Message,
    mut stream: tonic::Streaming<SnapshotChunk>,
) -> anyhow::Result<Received> {
    let snapshot = match &message.snapshot {
        Some(s) if is_snapshot(message) && s.metadata.is_some() => s.clone(),
        _ => anyhow::bail!("the stream's Raft message is not a snapshot"),
    };
    let index = snapshot.get_metadata().index;
    let dir = snapshot::incoming_dir(db);
    // The files are written on a blocking thread, two chunks behind the network at most.
    let (tx, mut rx) = mpsc::channel::<Chunk>(2);
    let disk = disk.clone();
    let writer = tokio::task::spawn_blocking(move || -> anyhow::Result<Received> {
        let opts = Options::default();
        if group == METADATA_GROUP {
            // Everything came with the header: only the trailer may follow.
            return match rx.blocking_recv() {
                Some(Chunk::Trailer(_)) => metadata::snapshot::write_files(&opts, &dir, &snapshot),
                Some(_) => anyhow::bail!("record batches in a metadata snapshot"),
                None => anyhow::bail!("the stream ended before its trailer"),
            };
        }
        let mut builder = Builder::new(&opts, &dir, group, index)?;
        while let Some(c) = rx.blocking_recv() {
            // (A snapshot can be as large as the partition: stop before the disk fills.)
            anyhow::ensure!(
                !disk.is_full(),
                "the disk is short of space (storage_min_free_bytes)"
            );
            match c {
                Chunk::Batches(b) => builder.add(&b.batches)?,
                Chunk::Trailer(t) => return builder.finish(&snapshot, t.batches, t.bytes),
                Chunk::Header(_) => anyhow::bail!("a second header in one snapshot stream"),
            }
        }
        anyhow::bail!("the stream ended before its trailer")
    });
    let streamed = async {
        while let Some(c) = stream.message().await? {
            let c = c
                .chunk
                .ok_or_else(|| anyhow::anyhow!("an empty snapshot chunk"))?;
            let last = matches!(c, Chunk::Trailer(_));
            if tx.send(c).await.is_err() || last {
                break; // the writer stopped (it says why) or has everything
            }
        }
        anyhow::Ok(())
    }
    .await;
    drop(tx);
    let written = writer.await?;
    streamed?;
    let received = written?;
    metrics::RAFT_SNAPSHOT_BYTES_RECEIVED.inc_by(received.bytes);
    Ok(received)
}
