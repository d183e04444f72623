//! DeleteRecords: moves a partition's log start offset forward (records below it are
//! gone for every reader at once; their storage is freed by the next retention pass).
//! The partition's leader proposes a control entry (`log::control`), so every replica
//! moves its log start at the same point of the log; the answer is the new log start,
//! Kafka's "low watermark", once the entry is committed.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::errors;
use crate::broker::Broker;
use crate::group::records::OFFSETS_TOPIC;
use crate::log::control::Control;
use crate::log::AppendOutcome;
use crate::raft::{Applied, Pending, ProposeError};

/// DeleteRecords' offset -1: "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

/// One requested partition: proposed (with its pending entry), or answered already.
enum Work {
    Proposed(Pending),
    Done(Result<i64, i16>),
}

pub async fn handle(broker: &Arc<Broker>, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let timeout = Duration::from_millis(req.timeout_ms.clamp(100, 300_000) as u64);
    // Every partition's entry is proposed before any is awaited: they commit together.
    let mut work = Vec::new();
    for t in &req.topics {
        let items: Vec<(i32, Work)> = t
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition_index,
                    start(broker, &t.name, p.partition_index, p.offset),
                )
            })
            .collect();
        work.push((t.name.clone(), items));
    }
    let mut topics = Vec::with_capacity(work.len());
    for (name, items) in work {
        let mut partitions = Vec::with_capacity(items.len());
        for (index, item) in items {
            let outcome = match item {
                Work::Done(outcome) => outcome,
                Work::Proposed(pending) => finish(pending.wait(timeout).await),
            };
            let (low_watermark, code) = match outcome {
                Ok(low) => (low, errors::NONE),
                Err(code) => (-1, code),
            };
            partitions.push(
                DeleteRecordsPartitionResult::default()
                    .with_partition_index(index)
                    .with_low_watermark(low_watermark)
                    .with_error_code(code),
            );
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

/// Checks one partition's request and proposes its control entry if there is anything
/// to delete.
fn start(broker: &Arc<Broker>, topic: &str, partition: i32, offset: i64) -> Work {
    if topic == OFFSETS_TOPIC {
        // Its records are the consumer groups' offsets: only its coordinators trim it.
        return Work::Done(Err(errors::INVALID_TOPIC_EXCEPTION));
    }
    let Some(p) = broker.catalog.partition(topic, partition) else {
        return Work::Done(Err(errors::UNKNOWN_TOPIC_OR_PARTITION));
    };
    if !broker.leads(&p) {
        return Work::Done(Err(errors::NOT_LEADER_OR_FOLLOWER));
    }
    let high_watermark = p.high_watermark();
    let offset = if offset == HIGH_WATERMARK {
        high_watermark
    } else {
        offset
    };
    if offset < 0 || offset > high_watermark {
        return Work::Done(Err(errors::OFFSET_OUT_OF_RANGE));
    }
    if offset <= p.log_start() {
        return Work::Done(Ok(p.log_start()));
    }
    let entry = Control::LogStart(offset).encode();
    Work::Proposed(broker.raft.propose(p.group, entry))
}

fn finish(result: Result<Applied, ProposeError>) -> Result<i64, i16> {
    match result {
        Ok(Applied::Partition(AppendOutcome::LogStartMoved { log_start })) => Ok(log_start),
        Ok(other) => {
            tracing::warn!(?other, "unexpected outcome of a DeleteRecords entry");
            Err(errors::UNKNOWN_SERVER_ERROR)
        }
        Err(ProposeError::UnknownGroup) => Err(errors::NOT_LEADER_OR_FOLLOWER),
        Err(e) => Err(errors::for_propose(e)),
    }
}
