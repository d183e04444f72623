//! Produce: validates each record batch (CRC32C, magic v2, size) without decoding its
//! records, proposes it to the partition's Raft group, and answers once every batch of the
//! request is committed and has its offset — for acks=1 and acks=all alike. Proposals are
//! queued before this returns, so a pipelining producer's batches keep their order.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse, ResponseKind};

use super::{errors, str_bytes, Ctx, Reply};
use crate::broker::Broker;
use crate::group::records::OFFSETS_TOPIC;
use crate::log::batch::{self, BatchError};
use crate::log::{AppendOutcome, PartitionShared};
use crate::metrics;
use crate::raft::{Applied, Pending, ProposeError};

/// Kafka's default `max.message.bytes`.
const DEFAULT_MAX_BATCH_BYTES: usize = 1_048_588;

enum PartitionWork {
    Failed(i16),
    Proposed {
        shared: Arc<PartitionShared>,
        batches: Vec<(Pending, i64, u64)>,
    },
}

pub fn handle(broker: &Arc<Broker>, req: ProduceRequest, ctx: Ctx) -> anyhow::Result<Reply> {
    let transactional = req.transactional_id.is_some();
    let mut work = Vec::with_capacity(req.topic_data.len());
    for t in req.topic_data {
        let view = broker.catalog.topic(&t.name);
        let max_batch = view
            .as_ref()
            .and_then(|v| v.configs.get("max.message.bytes"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_BATCH_BYTES);
        let mut partitions = Vec::with_capacity(t.partition_data.len());
        for p in t.partition_data {
            let shared = view.as_ref().and_then(|v| {
                usize::try_from(p.index)
                    .ok()
                    .and_then(|i| v.partitions.get(i).cloned())
            });
            let item = match shared {
                // Only the group coordinators write there (Kafka refuses it the same way).
                Some(_) if t.name.as_str() == OFFSETS_TOPIC => {
                    PartitionWork::Failed(errors::INVALID_TOPIC_EXCEPTION)
                }
                _ if transactional => {
                    PartitionWork::Failed(errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
                }
                None => PartitionWork::Failed(errors::UNKNOWN_TOPIC_OR_PARTITION),
                // Whether this broker leads, and whether its disk has room, is the Raft
                // driver's to say: a refusal it makes is remembered, so that an
                // idempotent producer's next batches wait for the refused one (see
                // `raft::fence`).
                Some(shared) => propose(broker, shared, p.records.unwrap_or_default(), max_batch),
            };
            partitions.push((p.index, item));
        }
        work.push((t.name, partitions));
    }
    if req.acks == 0 {
        // Fire and forget: Kafka sends no response at all for acks=0.
        return Ok(Reply::Now(None));
    }
    let timeout = Duration::from_millis(req.timeout_ms.clamp(100, 300_000) as u64);
    let broker = broker.clone();
    Ok(Reply::Later(Box::pin(async move {
        let mut responses = Vec::with_capacity(work.len());
        let mut leaders_named = Vec::new();
        for (name, partitions) in work {
            let mut out = Vec::with_capacity(partitions.len());
            for (index, item) in partitions {
                let shared = item.shared().cloned();
                let mut r = finish(index, item, timeout, ctx.version).await;
                // (read after the refusal: the view then knows the new leader, if any)
                let leader = shared
                    .filter(|_| r.error_code == errors::NOT_LEADER_OR_FOLLOWER && ctx.version >= 10)
                    .and_then(|p| leader_hint(&p, broker.node_id as u64));
                if let Some((leader, epoch)) = leader {
                    r.current_leader = LeaderIdAndEpoch::default()
                        .with_leader_id(BrokerId(leader as i32))
                        .with_leader_epoch(epoch);
                    leaders_named.push(leader as i32);
                }
                out.push(r);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(out),
            );
        }
        let response = ResponseKind::Produce(
            ProduceResponse::default()
                .with_responses(responses)
                .with_node_endpoints(endpoints(&broker, &ctx, &leaders_named)),
        );
        match ctx.encode(&response) {
            Ok(frame) => Some(frame),
            Err(e) => {
                tracing::error!("{e:#}");
                None
            }
        }
    })))
}

/// Where a refused producer should go: the leader this broker knows, or, while this
/// broker hands its leadership over (SIGTERM, a drain), the voter taking it, at the term
/// it will take it in. Without a hint franz-go waits for its 5 s metadata minimum age.
fn leader_hint(p: &PartitionShared, me: u64) -> Option<(u64, i32)> {
    match p.leader() {
        Some(leader) if leader != me => Some((leader, p.leader_epoch())),
        _ => p.transferee().filter(|(to, _)| *to != me),
    }
}

impl PartitionWork {
    fn shared(&self) -> Option<&Arc<PartitionShared>> {
        match self {
            PartitionWork::Proposed { shared, .. } => Some(shared),
            PartitionWork::Failed(_) => None,
        }
    }
}

/// KIP-951: a NOT_LEADER_OR_FOLLOWER answer names the partition's current leader and
/// that broker's address, so that the client sends its retry there at once instead of
/// waiting for a metadata refresh (franz-go refreshes at most every 5 s by default; that
/// wait was most of the produce stall of a rolling restart).
fn endpoints(broker: &Broker, ctx: &Ctx, leaders: &[i32]) -> Vec<NodeEndpoint> {
    if leaders.is_empty() {
        return Vec::new();
    }
    super::metadata::advertised_brokers(broker, ctx.listener)
        .into_iter()
        .filter(|b| leaders.contains(&b.id))
        .map(|b| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(b.id))
                .with_host(str_bytes(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(str_bytes))
        })
        .collect()
}

fn propose(
    broker: &Broker,
    shared: Arc<PartitionShared>,
    records: bytes::Bytes,
    max_batch: usize,
) -> PartitionWork {
    let batches = match batch::split_and_validate(&records) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(topic = %shared.topic, partition = shared.partition, "rejected batch: {e}");
            return PartitionWork::Failed(match e {
                BatchError::Corrupt | BatchError::CrcMismatch => errors::CORRUPT_MESSAGE,
                BatchError::UnsupportedMagic(_) => errors::UNSUPPORTED_FOR_MESSAGE_FORMAT,
                BatchError::Transactional => errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                BatchError::Empty => errors::INVALID_RECORD,
            });
        }
    };
    if batches.iter().any(|(b, _)| b.len() > max_batch) {
        return PartitionWork::Failed(errors::MESSAGE_TOO_LARGE);
    }
    let batches = batches
        .into_iter()
        .map(|(bytes, header)| {
            (
                broker.raft.propose(shared.group, bytes.to_vec()),
                header.record_count as i64,
                bytes.len() as u64,
            )
        })
        .collect();
    PartitionWork::Proposed { shared, batches }
}

async fn finish(
    index: i32,
    item: PartitionWork,
    timeout: Duration,
    version: i16,
) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default()
        .with_index(index)
        .with_log_append_time_ms(-1);
    let (shared, batches) = match item {
        PartitionWork::Failed(code) => return response.with_error_code(code).with_base_offset(-1),
        PartitionWork::Proposed { shared, batches } => (shared, batches),
    };
    let mut base_offset = None;
    let mut error = errors::NONE;
    for (pending, records, size) in batches {
        let offset = match pending.wait(timeout).await {
            Ok(Applied::Partition(AppendOutcome::Appended { base_offset })) => {
                metrics::PRODUCED_RECORDS.inc_by(records as u64);
                metrics::PRODUCED_BYTES.inc_by(size);
                Ok(base_offset)
            }
            Ok(Applied::Partition(AppendOutcome::Duplicate { base_offset })) => Ok(base_offset),
            Ok(Applied::Partition(AppendOutcome::Rejected { error_code })) => Err(error_code),
            Ok(Applied::Metadata(_) | Applied::Partition(AppendOutcome::LogStartMoved { .. })) => {
                Err(errors::UNKNOWN_SERVER_ERROR)
            }
            // The topic exists; this broker holds no replica of the partition.
            Err(ProposeError::UnknownGroup) => Err(errors::NOT_LEADER_OR_FOLLOWER),
            Err(e) => Err(errors::for_propose(e)),
        };
        match offset {
            Ok(o) => {
                base_offset.get_or_insert(o);
            }
            Err(code) if error == errors::NONE => error = code,
            Err(_) => {}
        }
    }
    if error != errors::NONE {
        return response.with_error_code(error).with_base_offset(-1);
    }
    response
        .with_base_offset(base_offset.unwrap_or(-1))
        .with_log_start_offset(if version >= 5 { shared.log_start() } else { -1 })
}
