//! Checkpoints of coordinator partitions. A `__consumer_offsets` partition is a log of
//! every commit and membership change: left alone it grows with each commit, and so does
//! what a new coordinator reads before it serves (Kafka compacts the topic; Chronik has
//! no log compaction). So once a partition holds `offsets_checkpoint_records` records
//! above its log start, its coordinator
//! 1. reads it up to the high watermark L, as a new coordinator would, keeping each key's
//!    latest value and where that value was set;
//! 2. restates every live value at the end of the log, each marked with the offset of the
//!    record it repeats (`records::encode_restated`);
//! 3. once those are committed, moves the log start to L with a control entry (as
//!    DeleteRecords does), and the retention pass frees what lies below.
//!
//! A reader starting at L sees the same state as one starting below it: every value set
//! below L is restated above it, and a restated value stands where its original stood, so
//! a commit or membership change written after the original (between L and the
//! restatement, or later) still wins. A coordinator that dies midway leaves restated
//! records beside their originals, which changes nothing; the next checkpoint starts
//! over. Checkpoints are skipped while the live state is more than half of the records
//! (restating it would not shrink the log much).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::ownership::replay;
use super::records::{self, Key, OFFSETS_TOPIC};
use super::Ownership;
use crate::broker::Broker;
use crate::log::control::Control;
use crate::log::{AppendOutcome, PartitionShared};
use crate::metrics;
use crate::raft::Applied;

/// Restated records per batch (one Raft entry each).
const RESTATE_BATCH: usize = 500;
/// How long each write of a checkpoint may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a partition waits after a failed checkpoint before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Which partitions are being checkpointed, and when each may be tried again.
#[derive(Clone, Default)]
pub struct Checkpoints {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    running: HashSet<i32>,
    /// A partition's next checkpoint waits for this high watermark (its log must grow by
    /// another `offsets_checkpoint_records` after one was skipped as not worth it) and
    /// this moment (after a failure).
    not_before: HashMap<i32, (i64, Instant)>,
}

/// What a checkpoint did.
enum Outcome {
    /// Restated `live` records and moved the log start from `from` to `to`.
    Done { from: i64, to: i64, live: usize },
    /// The live state is too large a share of the log for a checkpoint to pay.
    NotWorthIt { live: usize },
}

impl Checkpoints {
    /// Starts a checkpoint of every coordinator partition this broker serves whose log
    /// has grown past the threshold (and is not being checkpointed already).
    pub fn start_due(&self, broker: &Arc<Broker>) {
        let every = broker.settings.offsets_checkpoint_records as i64;
        if every == 0 {
            return;
        }
        let Some(topic) = broker.catalog.topic(OFFSETS_TOPIC) else {
            return;
        };
        for p in &topic.partitions {
            let Some(Ownership::Loaded(epoch)) = broker.groups.ownership(p.partition) else {
                continue;
            };
            let high_watermark = p.high_watermark();
            if high_watermark - p.log_start() < every {
                continue;
            }
            {
                let mut state = self.state.lock().unwrap();
                let waits = state
                    .not_before
                    .get(&p.partition)
                    .is_some_and(|(hw, at)| high_watermark < *hw || Instant::now() < *at);
                if waits || !state.running.insert(p.partition) {
                    continue;
                }
            }
            let (this, broker, shared) = (self.clone(), broker.clone(), p.clone());
            tokio::spawn(async move {
                let result = checkpoint(&broker, &shared, epoch).await;
                this.finished(&shared, every, result);
            });
        }
    }

    fn finished(&self, shared: &PartitionShared, every: i64, result: anyhow::Result<Outcome>) {
        let partition = shared.partition;
        let mut state = self.state.lock().unwrap();
        state.running.remove(&partition);
        match result {
            Ok(Outcome::Done { from, to, live }) => {
                metrics::OFFSETS_CHECKPOINTS.inc();
                state.not_before.remove(&partition);
                tracing::info!(
                    partition,
                    from,
                    to,
                    live,
                    "checkpointed {OFFSETS_TOPIC}-{partition}: live state restated, log start moved"
                );
            }
            Ok(Outcome::NotWorthIt { live }) => {
                tracing::debug!(
                    partition,
                    live,
                    "checkpoint skipped: the live state is most of the log"
                );
                let wait_for = shared.high_watermark() + every;
                state
                    .not_before
                    .insert(partition, (wait_for, Instant::now()));
            }
            Err(e) => {
                tracing::info!(partition, error = %e, "checkpoint of {OFFSETS_TOPIC}-{partition} failed; will try again");
                let retry = Instant::now() + RETRY_AFTER;
                state.not_before.insert(partition, (0, retry));
            }
        }
    }
}

async fn checkpoint(
    broker: &Arc<Broker>,
    shared: &Arc<PartitionShared>,
    epoch: i32,
) -> anyhow::Result<Outcome> {
    let (from, upto) = (shared.log_start(), shared.high_watermark());
    let (db, reader) = (broker.db.clone(), shared.clone());
    let live = tokio::task::spawn_blocking(move || live_records(&db, &reader, upto)).await??;
    if live.len() as i64 * 2 > upto - from {
        return Ok(Outcome::NotWorthIt { live: live.len() });
    }
    // Proposed together, committed in order: the log start moves only after all of them.
    let pending: Vec<_> = live
        .chunks(RESTATE_BATCH)
        .map(|chunk| {
            let batch = records::encode_restated(chunk);
            broker.raft.propose(shared.group, batch.to_vec())
        })
        .collect();
    for p in pending {
        match p.wait(WRITE_TIMEOUT).await {
            Ok(Applied::Partition(AppendOutcome::Appended { .. })) => {}
            other => anyhow::bail!("restating failed: {other:?}"),
        }
    }
    anyhow::ensure!(
        broker.groups.ownership(shared.partition) == Some(Ownership::Loaded(epoch)),
        "no longer the coordinator"
    );
    let entry = Control::LogStart(upto).encode();
    match broker
        .raft
        .propose(shared.group, entry)
        .wait(WRITE_TIMEOUT)
        .await
    {
        Ok(Applied::Partition(AppendOutcome::LogStartMoved { log_start })) => Ok(Outcome::Done {
            from,
            to: log_start,
            live: live.len(),
        }),
        other => anyhow::bail!("moving the log start failed: {other:?}"),
    }
}

/// Each key's latest value below `upto`, with the position that set it (tombstones and
/// barriers need no restating: a key without a value is as good as absent).
fn live_records(
    db: &crate::storage::Db,
    shared: &PartitionShared,
    upto: i64,
) -> anyhow::Result<Vec<(Key, Bytes, i64)>> {
    let mut latest: HashMap<Key, (i64, Option<Bytes>)> = HashMap::new();
    replay(db, shared, upto, |entry| {
        if matches!(entry.key, Key::Barrier { .. }) {
            return;
        }
        let position = entry.position();
        if latest.get(&entry.key).is_some_and(|(at, _)| *at > position) {
            return;
        }
        latest.insert(entry.key.clone(), (position, entry.value.clone()));
    })?;
    let mut live: Vec<_> = latest
        .into_iter()
        .filter_map(|(key, (at, value))| Some((key, value?, at)))
        .collect();
    live.sort_by_key(|(_, _, at)| *at); // (in the order they were set)
    Ok(live)
}
