//! Fetch: serves whole stored batches (offsets and leader epoch stamped) up to the high
//! watermark. Long-polls without spinning: when less than `min_bytes` is available it
//! sleeps on the catalog's append signal until data arrives or `max_wait_ms` passes.
//! Fetch sessions are not offered (session id 0), so clients send full requests.
//!
//! Follower fetching (KIP-392): a consumer that names its rack (`client.rack`, Fetch v11+)
//! is told by the leader to read from an in-sync replica in that rack, and any replica
//! serves a consumer's fetch up to the high watermark it knows (every replica applies
//! only committed entries, so its high watermark never runs ahead of the leader's). A
//! follower a little behind the offset asked (a consumer that came from the leader's
//! tail: the commit reaches followers one round trip later) waits for it within the
//! fetch's max wait; still behind then, or asked for an offset below its log start, it
//! answers NOT_LEADER_OR_FOLLOWER, on which clients go back to the leader (whose answer
//! on the range is the one that counts: OFFSET_OUT_OF_RANGE would make a client that
//! came here with stale metadata reset its position).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use tokio::time::Instant;

use super::errors;
use crate::broker::Broker;
use crate::cluster::leadership::LIVENESS_WINDOW;
use crate::log::read;
use crate::log::PartitionShared;
use crate::metrics;

/// Upper bound on how long one fetch may park, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub async fn handle(broker: &Arc<Broker>, req: FetchRequest, version: i16) -> FetchResponse {
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let mut appended = broker.catalog.subscribe_appends();
    loop {
        appended.borrow_and_update();
        let patient = Instant::now() < deadline;
        let (response, bytes, answer_now) = read_all(broker, &req, version, patient);
        if bytes >= min_bytes || answer_now || Instant::now() >= deadline {
            metrics::FETCHED_BYTES.inc_by(bytes as u64);
            return response;
        }
        tokio::select! {
            _ = appended.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// The record buffers of a response, for the frame to send from where they are.
pub fn record_buffers(response: &FetchResponse) -> Vec<bytes::Bytes> {
    response
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.clone())
        .filter(|r| !r.is_empty())
        .collect()
}

/// One pass over the requested partitions: the response, its record bytes, and whether
/// to answer without waiting for more: a partition failed or names a preferred read
/// replica (the client should hear either at once rather than after a long poll). While
/// `patient`, a follower behind the offset asked answers with no records rather than
/// an error.
fn read_all(
    broker: &Broker,
    req: &FetchRequest,
    version: i16,
    patient: bool,
) -> (FetchResponse, usize, bool) {
    // A consumer (not a replica) on a version that knows preferred read replicas.
    let from_consumer = version >= 11 && req.replica_id.0 < 0;
    let pass = Pass {
        broker,
        version,
        patient,
        from_consumer,
        client_rack: Some(req.rack_id.as_str()).filter(|r| from_consumer && !r.is_empty()),
    };
    let mut budget = if req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    let mut total = 0usize;
    let mut answer_now = false;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let view = if t.topic.is_empty() {
            broker.catalog.topic_by_id(t.topic_id)
        } else {
            broker.catalog.topic(&t.topic)
        };
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for fp in &t.partitions {
            let shared = view.as_ref().and_then(|v| {
                usize::try_from(fp.partition)
                    .ok()
                    .and_then(|i| v.partitions.get(i).cloned())
            });
            let data = PartitionData::default().with_partition_index(fp.partition);
            let limit = (fp.partition_max_bytes.max(0) as usize).min(budget);
            let (data, now) = match shared {
                Some(p) => pass.partition(&p, fp, data, limit),
                None => (
                    data.with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION),
                    true,
                ),
            };
            let bytes = data.records.as_ref().map_or(0, |r| r.len());
            total += bytes;
            budget = budget.saturating_sub(bytes);
            answer_now |= now;
            partitions.push(data);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(t.topic_id)
                .with_partitions(partitions),
        );
    }
    (
        FetchResponse::default().with_responses(topics),
        total,
        answer_now,
    )
}

/// What one pass knows of the request.
struct Pass<'a> {
    broker: &'a Broker,
    version: i16,
    patient: bool,
    from_consumer: bool,
    client_rack: Option<&'a str>,
}

impl Pass<'_> {
    /// One partition's answer (records up to `limit` bytes, at least one batch), and
    /// whether it should go out at once.
    fn partition(
        &self,
        p: &PartitionShared,
        fp: &FetchPartition,
        data: PartitionData,
        limit: usize,
    ) -> (PartitionData, bool) {
        let broker = self.broker;
        let leads = broker.leads(p);
        let serves = leads || (self.from_consumer && p.is_hosted());
        if !serves {
            // Clients fetch from leaders; this one refreshes its metadata and moves on.
            return (data.with_error_code(errors::NOT_LEADER_OR_FOLLOWER), true);
        }
        let (hw, start) = (p.high_watermark(), p.log_start());
        let data = data
            .with_high_watermark(hw)
            .with_last_stable_offset(hw)
            .with_log_start_offset(if self.version >= 5 { start } else { -1 });
        let in_range = start <= fp.fetch_offset && fp.fetch_offset <= hw;
        if !leads && !in_range {
            if self.patient && fp.fetch_offset > hw {
                // Behind the consumer by a commit round trip, most likely: wait.
                return (data, false);
            }
            // Only the leader's range is authoritative: OFFSET_OUT_OF_RANGE from here
            // would make a client with stale metadata reset its position. This sends it
            // back to the leader, which answers for the range.
            tracing::debug!(topic = %p.topic, partition = p.partition, offset = fp.fetch_offset,
                hw, start, "a consumer asked a follower outside its range: sent to the leader");
            return (data.with_error_code(errors::NOT_LEADER_OR_FOLLOWER), true);
        }
        if !in_range {
            return (data.with_error_code(errors::OFFSET_OUT_OF_RANGE), true);
        }
        if let Some(replica) = self
            .client_rack
            .filter(|_| leads)
            .and_then(|rack| preferred_read_replica(broker, p, rack))
        {
            // No records: the client reads them from the replica in its rack.
            metrics::FETCH_REDIRECTS.inc();
            tracing::debug!(topic = %p.topic, partition = p.partition, offset = fp.fetch_offset,
                replica, "a consumer in another rack is sent to a replica in its rack");
            return (data.with_preferred_read_replica(BrokerId(replica)), true);
        }
        let records = if fp.fetch_offset == hw || limit == 0 {
            Ok(bytes::Bytes::new())
        } else {
            read::read(&broker.db, p, fp.fetch_offset, limit)
        };
        match records {
            Ok(records) => {
                if !leads {
                    metrics::FOLLOWER_FETCHED_BYTES.inc_by(records.len() as u64);
                }
                if self.from_consumer {
                    tracing::debug!(topic = %p.topic, partition = p.partition, leads,
                        offset = fp.fetch_offset, hw, bytes = records.len(), rack = self.client_rack,
                        "a consumer's fetch served");
                }
                (data.with_records(Some(records)), false)
            }
            Err(e) => {
                tracing::error!(topic = %p.topic, partition = p.partition, "fetch failed: {e:#}");
                (data.with_error_code(errors::UNKNOWN_SERVER_ERROR), true)
            }
        }
    }
}

/// The replica a consumer in `rack` should read `p` from, when this leader is not in that
/// rack and an in-sync replica that is heard from is (KIP-392's rack-aware selector).
/// Partitions take turns among several such replicas.
fn preferred_read_replica(broker: &Broker, p: &PartitionShared, rack: &str) -> Option<i32> {
    if broker.rack.as_deref() == Some(rack) {
        return None;
    }
    let me = broker.node_id as u64;
    let (_, in_sync) = p.replicas();
    let in_sync_seen = || -> Vec<(u64, bool)> {
        let alive = |id| broker.catalog.peer_alive(id, LIVENESS_WINDOW);
        p.replicas()
            .1
            .into_iter()
            .map(|id| (id, alive(id)))
            .collect()
    };
    let candidates: Vec<u64> = in_sync
        .into_iter()
        .filter(|id| *id != me && broker.catalog.peer_alive(*id, LIVENESS_WINDOW))
        .filter(|id| {
            broker
                .catalog
                .broker(*id)
                .is_some_and(|b| b.rack.as_deref() == Some(rack))
        })
        .collect();
    if candidates.is_empty() {
        // (Why a consumer in another rack reads from this leader: the in-sync view and
        // which of those replicas were heard from.)
        tracing::debug!(topic = %p.topic, partition = p.partition, rack, in_sync_seen = ?in_sync_seen(),
            "no in-sync replica in the consumer's rack: the leader serves it");
        return None;
    }
    let pick = candidates[p.partition.unsigned_abs() as usize % candidates.len()];
    i32::try_from(pick).ok()
}
