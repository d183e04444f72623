//! Fetch: serves whole stored batches (offsets and leader epoch stamped) up to the high
//! watermark. Long-polls without spinning: when less than `min_bytes` is available it
//! sleeps on the catalog's append signal until data arrives or `max_wait_ms` passes.
//! Fetch sessions are not offered (session id 0), so clients send full requests.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use tokio::time::Instant;

use super::errors;
use crate::broker::Broker;
use crate::log::read;
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
        let (response, bytes, errored) = read_all(broker, &req, version);
        if bytes >= min_bytes || errored || Instant::now() >= deadline {
            metrics::FETCHED_BYTES.inc_by(bytes as u64);
            return response;
        }
        tokio::select! {
            _ = appended.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// One pass over the requested partitions: the response, its record bytes, and whether
/// any partition failed (errors are returned at once rather than long-polled).
fn read_all(broker: &Broker, req: &FetchRequest, version: i16) -> (FetchResponse, usize, bool) {
    let mut budget = if req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    let mut total = 0usize;
    let mut errored = false;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let view = if t.topic.is_empty() {
            broker.catalog.topic_by_id(t.topic_id)
        } else {
            broker.catalog.topic(&t.topic)
        };
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for fp in &t.partitions {
            let data = PartitionData::default().with_partition_index(fp.partition);
            let shared = view.as_ref().and_then(|v| {
                usize::try_from(fp.partition)
                    .ok()
                    .and_then(|i| v.partitions.get(i).cloned())
            });
            let Some(p) = shared else {
                errored = true;
                partitions.push(data.with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION));
                continue;
            };
            if !broker.leads(&p) {
                // Clients fetch from leaders; this one refreshes its metadata and moves on.
                errored = true;
                partitions.push(data.with_error_code(errors::NOT_LEADER_OR_FOLLOWER));
                continue;
            }
            let (hw, start) = (p.high_watermark(), p.log_start());
            let data = data
                .with_high_watermark(hw)
                .with_last_stable_offset(hw)
                .with_log_start_offset(if version >= 5 { start } else { -1 });
            if fp.fetch_offset < start || fp.fetch_offset > hw {
                errored = true;
                partitions.push(data.with_error_code(errors::OFFSET_OUT_OF_RANGE));
                continue;
            }
            let limit = (fp.partition_max_bytes.max(0) as usize).min(budget);
            let records = if fp.fetch_offset == hw || limit == 0 {
                Ok(bytes::Bytes::new())
            } else {
                read::read(&broker.db, &p, fp.fetch_offset, limit)
            };
            match records {
                Ok(records) => {
                    total += records.len();
                    budget = budget.saturating_sub(records.len());
                    partitions.push(data.with_records(Some(records)));
                }
                Err(e) => {
                    tracing::error!(topic = %p.topic, partition = p.partition, "fetch failed: {e:#}");
                    errored = true;
                    partitions.push(data.with_error_code(errors::UNKNOWN_SERVER_ERROR));
                }
            }
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
        errored,
    )
}
