//! Which coordinator partitions this broker serves. A watcher follows the leadership of
//! the offsets topic's partitions: when this broker becomes a partition's leader it
//! writes a barrier record (once applied, every earlier record is applied too), reads
//! the partition's log up to it and only then serves its groups; when leadership goes,
//! the groups go with it. While it serves them it also checkpoints the partitions that
//! grew large (`checkpoint`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpoint::Checkpoints;
use super::records::{self, Entry, GroupValue, Key, OFFSETS_TOPIC};
use super::{Committed, Loaded, Ownership};
use crate::broker::Broker;
use crate::log::{AppendOutcome, PartitionShared};
use crate::raft::Applied;
use crate::shutdown::Shutdown;
use crate::storage::Db;

/// How often leadership of the coordinator partitions is checked and group changes are
/// recorded.
const CHECK: Duration = Duration::from_millis(100);
/// How long a new leader waits for its barrier record to be applied.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from a coordinator partition's log at a time while loading it.
const READ_CHUNK: usize = 1 << 20;

/// Follows leadership and records group changes until shutdown.
pub async fn run(broker: Arc<Broker>, shutdown: Shutdown) {
    let mut interval = tokio::time::interval(CHECK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let checkpoints = Checkpoints::default();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.clone().wait() => return,
        }
        follow_leadership(&broker);
        record_changes(&broker);
        checkpoints.start_due(&broker);
    }
}

fn follow_leadership(broker: &Arc<Broker>) {
    let Some(topic) = broker.catalog.topic(OFFSETS_TOPIC) else {
        return;
    };
    broker.groups.set_partitions(topic.partitions.len());
    let me = broker.node_id as u64;
    for p in &topic.partitions {
        let led = p.is_led_by(me);
        let epoch = p.leader_epoch();
        match (broker.groups.ownership(p.partition), led) {
            (Some(Ownership::Loading(e) | Ownership::Loaded(e)), true) if e == epoch => {}
            (_, true) => {
                broker.groups.begin_load(p.partition, epoch);
                tokio::spawn(load(broker.clone(), p.clone(), epoch));
            }
            (Some(_), false) => {
                tracing::info!(
                    partition = p.partition,
                    "no longer coordinating the groups of {OFFSETS_TOPIC}-{}",
                    p.partition
                );
                broker.groups.unload(p.partition);
            }
            (None, false) => {}
        }
    }
}

/// Reads a coordinator partition this broker now leads, then serves its groups.
async fn load(broker: Arc<Broker>, shared: Arc<PartitionShared>, epoch: i32) {
    let started = Instant::now();
    let partition = shared.partition;
    let barrier = records::encode_batch(&[(
        Key::Barrier {
            leader: broker.node_id as u64,
            epoch,
        },
        None,
    )]);
    let upto = match broker
        .raft
        .propose(shared.group, barrier.to_vec())
        .wait(BARRIER_TIMEOUT)
        .await
    {
        Ok(Applied::Partition(AppendOutcome::Appended { base_offset })) => base_offset,
        other => {
            // Leadership moved (or the write failed): the watcher starts over if this
            // broker still leads at the next check.
            tracing::info!(partition, outcome = ?other, "coordinator partition barrier failed");
            if broker.groups.ownership(partition) == Some(Ownership::Loading(epoch)) {
                broker.groups.unload(partition);
            }
            return;
        }
    };
    let db = broker.db.clone();
    let reader = shared.clone();
    let read = tokio::task::spawn_blocking(move || read_partition(&db, &reader, upto)).await;
    let mut loaded = match read.map_err(anyhow::Error::from).and_then(|r| r) {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!(partition, error = %e, "reading a coordinator partition failed");
            broker.groups.unload(partition);
            return;
        }
    };
    adopt_legacy_offsets(&broker, &shared, &mut loaded.offsets);
    let groups = loaded.offsets.groups().count().max(loaded.groups.len());
    if broker.groups.finish_load(partition, epoch, loaded) {
        // (Quiet about partitions without groups: a broker takes many at start-up.)
        if groups == 0 {
            tracing::debug!(partition, epoch, "coordinating {OFFSETS_TOPIC}-{partition}");
            return;
        }
        tracing::info!(
            partition,
            epoch,
            groups,
            records = upto,
            ms = started.elapsed().as_millis() as u64,
            "coordinating the groups of {OFFSETS_TOPIC}-{partition}"
        );
    }
}

/// Reads the partition's records below `upto` (the barrier's offset) into the state a
/// coordinator serves from.
fn read_partition(db: &Db, shared: &PartitionShared, upto: i64) -> anyhow::Result<Loaded> {
    let mut loaded = Loaded::default();
    // Each group's latest membership record, by position (a restated one stands where
    // its original did), with tombstones: a restated membership must not bring back a
    // group emptied after it.
    let mut groups: HashMap<String, (i64, Option<GroupValue>)> = HashMap::new();
    replay(db, shared, upto, |entry| match &entry.key {
        Key::Group { group } => {
            let position = entry.position();
            if groups.get(group).is_some_and(|(at, _)| *at > position) {
                return;
            }
            let value = entry.value.as_ref();
            let value = value.and_then(|v| serde_json::from_slice::<GroupValue>(v).ok());
            groups.insert(group.clone(), (position, value));
        }
        _ => loaded.offsets.replay(entry),
    })?;
    loaded.groups = groups
        .into_iter()
        .filter_map(|(group, (_, value))| Some((group, value?)))
        .collect();
    Ok(loaded)
}

/// Hands every record of the partition from its log start up to `upto` to `each`, in
/// log order.
pub(super) fn replay(
    db: &Db,
    shared: &PartitionShared,
    upto: i64,
    mut each: impl FnMut(&Entry),
) -> anyhow::Result<()> {
    let mut next = shared.log_start();
    while next < upto {
        let bytes = crate::log::read::read(db, shared, next, READ_CHUNK)?;
        if bytes.is_empty() {
            anyhow::bail!(
                "{OFFSETS_TOPIC}-{} ends at {next}, before offset {upto}",
                shared.partition
            );
        }
        let decoded = records::decode(bytes)?;
        // (A read starts with the whole batch holding `next`: the log start may lie
        // inside it.)
        decoded
            .entries
            .iter()
            .filter(|e| e.offset >= next && e.offset < upto)
            .for_each(&mut each);
        anyhow::ensure!(decoded.next_offset > next, "no progress reading at {next}");
        next = decoded.next_offset;
    }
    Ok(())
}

/// Offsets committed before coordinator partitions existed live in the metadata log: the
/// groups of this partition that have none here yet start from those.
fn adopt_legacy_offsets(broker: &Broker, shared: &PartitionShared, offsets: &mut super::Offsets) {
    let n = broker.groups.partitions();
    for group in broker.catalog.offset_groups() {
        if records::partition_for(&group, n) != shared.partition || offsets.has_group(&group) {
            continue;
        }
        for o in broker.catalog.group_offsets(&group) {
            let Some(topic) = broker.catalog.topic(&o.topic) else {
                continue;
            };
            offsets.record(
                &group,
                &o.topic,
                o.partition,
                Committed {
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    metadata: o.metadata,
                    topic_id: topic.id,
                    position: -1,
                },
            );
        }
    }
}

/// Records group changes (a new stable generation, an emptied group) in their
/// coordinator partitions, so that the next coordinator knows the members and their
/// generation and their commits go on without a rebalance. Written shortly after the
/// change, not before the members hear of it: a coordinator lost in that moment leaves
/// the members to rejoin, as they would with no record at all.
fn record_changes(broker: &Arc<Broker>) {
    let mut by_partition: std::collections::BTreeMap<i32, Vec<_>> = Default::default();
    for (partition, group, change, value) in broker.groups.records_due() {
        by_partition
            .entry(partition)
            .or_default()
            .push((group, change, value));
    }
    for (partition, changes) in by_partition {
        tokio::spawn(record(broker.clone(), partition, changes));
    }
}

async fn record(
    broker: Arc<Broker>,
    partition: i32,
    changes: Vec<(String, u64, Option<GroupValue>)>,
) {
    let batch: Vec<(Key, Option<Vec<u8>>)> = changes
        .iter()
        .map(|(group, _, value)| {
            let value = value
                .as_ref()
                .map(|v| serde_json::to_vec(v).expect("groups serialize"));
            (
                Key::Group {
                    group: group.clone(),
                },
                value,
            )
        })
        .collect();
    let ok = match broker.catalog.partition(OFFSETS_TOPIC, partition) {
        Some(shared) => matches!(
            broker
                .raft
                .propose(shared.group, records::encode_batch(&batch).to_vec())
                .wait(BARRIER_TIMEOUT)
                .await,
            Ok(Applied::Partition(AppendOutcome::Appended { .. }))
        ),
        None => false,
    };
    for (group, change, _) in changes {
        broker.groups.group_recorded(&group, change, ok);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use rocksdb::WriteBatch;

    use super::*;
    use crate::log::PartitionMachine;
    use crate::storage::{self, GroupStorage};

    /// A coordinator partition on its own database holding `batches`, one Raft entry
    /// each, applied.
    fn partition(dir: &std::path::Path, batches: &[Bytes]) -> (Db, Arc<PartitionShared>) {
        let db = storage::open(dir).unwrap();
        let mut wb = WriteBatch::default();
        let mut store = GroupStorage::create(db.clone(), 5, vec![1], vec![], &mut wb);
        let shared = Arc::new(PartitionShared::new(OFFSETS_TOPIC.into(), 0, 5));
        let mut machine = PartitionMachine::load(&db, shared.clone()).unwrap();
        let entries: Vec<raft::eraftpb::Entry> = batches
            .iter()
            .enumerate()
            .map(|(i, b)| raft::eraftpb::Entry {
                index: i as u64 + 1,
                term: 1,
                data: b.to_vec(),
                ..Default::default()
            })
            .collect();
        store.stage_append(entries.clone(), &mut wb, &mut vec![]);
        for e in &entries {
            machine.apply(e.index, e.term, &e.data, &mut wb);
        }
        storage::write(&db, wb, true).unwrap();
        machine.publish();
        (db, shared)
    }

    /// A checkpoint restates a membership recorded before a group emptied (the tombstone
    /// was written between the checkpoint's read and its restatement): the group stays
    /// empty for a new coordinator, and a membership restated without a later change is
    /// loaded as recorded.
    #[test]
    fn a_restated_membership_never_brings_back_a_group_emptied_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let value = GroupValue {
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            generation: 4,
            leader: "m-1".into(),
            members: vec![],
        };
        let bytes = Bytes::from(serde_json::to_vec(&value).unwrap());
        let group = |g: &str| Key::Group { group: g.into() };
        let batches = [
            records::encode_batch(&[(group("g"), Some(bytes.to_vec()))]), // offset 0
            records::encode_batch(&[(group("h"), Some(bytes.to_vec()))]), // 1
            records::encode_batch(&[(group("g"), None)]),                 // 2: g empties
            records::encode_restated(&[
                (group("g"), bytes.clone(), 0),
                (group("h"), bytes.clone(), 1),
            ]), // 3, 4
        ];
        let (db, shared) = partition(dir.path(), &batches);
        assert_eq!(shared.high_watermark(), 5);
        let loaded = read_partition(&db, &shared, 5).unwrap();
        assert!(
            !loaded.groups.contains_key("g"),
            "{:?}",
            loaded.groups.keys()
        );
        assert_eq!(loaded.groups.get("h"), Some(&value));
    }
}
