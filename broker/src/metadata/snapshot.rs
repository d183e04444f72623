//! Raft snapshots of the metadata group. Its log gains an entry for every topic,
//! registration, placement change and producer id for as long as the cluster lives, and a
//! broker joining would replay all of it; so the driver compacts it once it holds
//! `metadata_snapshot_entries` applied entries beyond a short tail. A member that needs
//! entries from before the compaction point (a new broker, one that was away for long)
//! gets the catalog instead: every metadata record as stored at the snapshot's index
//! ([`describe`]), carried in the snapshot's data (the catalog is held in memory anyway,
//! and far smaller than a message may be).
//!
//! The receiver writes it into one SST file that replaces the group's records,
//! membership, applied index and log ([`write_files`]), ingested atomically as a
//! partition's snapshot is; the driver then reloads the machine from disk and brings what
//! this broker hosts in line with the new catalog ([`super::MetadataMachine::changes_to`]).

use std::path::Path;

use chronik_api::cluster::v1::{MetadataRecord, MetadataSnapshot};
use prost::Message as _;
use prost011::Message as _;
use raft::eraftpb::{Snapshot, SnapshotMetadata};
use rocksdb::{Direction, IteratorMode, Options, ReadOptions, SstFileWriter};

use super::METADATA_GROUP;
use crate::log::snapshot::Received;
use crate::storage::raft_storage::{self, snapshot_unavailable as unavailable, store_error};
use crate::storage::{keys, Db};

/// The metadata group's snapshot at the index its stored state has reached. The machine
/// writes its records and its applied index in one batch (membership changes too), so a
/// point-in-time read is consistent. Unavailable while nothing is applied.
pub fn describe(db: &Db, group: u64) -> raft::Result<Snapshot> {
    debug_assert_eq!(group, METADATA_GROUP);
    let snap = db.snapshot();
    let index = match snap
        .get(keys::group_key(keys::APPLIED, group))
        .map_err(store_error)?
    {
        Some(raw) if raw.len() >= 8 => u64::from_be_bytes(raw[0..8].try_into().expect("8")),
        _ => return Err(unavailable()),
    };
    if index == 0 {
        return Err(unavailable());
    }
    let term = raft_storage::stored_term(&snap, group, index)?;
    let conf_state = raft_storage::stored_conf_state(&snap, group)?;
    let prefix = [keys::METADATA];
    let mut opts = ReadOptions::default();
    opts.set_iterate_upper_bound(keys::prefix_end(&prefix));
    let mut records = Vec::new();
    for item in snap.iterator_opt(IteratorMode::From(&prefix, Direction::Forward), opts) {
        let (key, value) = item.map_err(store_error)?;
        records.push(MetadataRecord {
            key: key.to_vec(),
            value: value.to_vec(),
        });
    }
    Ok(Snapshot {
        data: MetadataSnapshot { records }.encode_to_vec(),
        metadata: Some(SnapshotMetadata {
            conf_state: Some(conf_state),
            index,
            term,
        }),
    })
}

/// Writes a received metadata snapshot into one SST file in `dir`: once ingested, the
/// group's applied index and membership are the snapshot's, its log is empty up to the
/// snapshot's index (the compaction point), and the metadata records are exactly the
/// snapshot's (a range deletion drops whatever this broker held before).
pub fn write_files(opts: &Options, dir: &Path, snapshot: &Snapshot) -> anyhow::Result<Received> {
    let meta = snapshot
        .metadata
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("snapshot without metadata"))?;
    let data = MetadataSnapshot::decode(snapshot.data.as_slice())?;
    let group = METADATA_GROUP;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!(
        "g{group}-i{}-{}-metadata.sst",
        meta.index,
        uuid::Uuid::new_v4().simple()
    ));
    // Received removes the file unless it is ingested, also when writing fails below.
    let received = Received {
        group,
        index: meta.index,
        batches: data.records.len() as u64,
        bytes: snapshot.data.len() as u64,
        files: vec![path.clone()],
    };
    let mut sst = SstFileWriter::create(opts);
    sst.open(&path)?;
    // Keys in ascending order: a|group, c|group, (e|group...), m..., t|group.
    sst.put(
        keys::group_key(keys::APPLIED, group),
        meta.index.to_be_bytes(),
    )?;
    let conf_state = meta.conf_state.clone().unwrap_or_default();
    sst.put(
        keys::group_key(keys::CONF_STATE, group),
        conf_state.encode_to_vec(),
    )?;
    let entries = keys::group_key(keys::ENTRY, group);
    sst.delete_range(&entries, &keys::prefix_end(&entries))?;
    let records = vec![keys::METADATA];
    sst.delete_range(&records, &keys::prefix_end(&records))?;
    let mut last: Option<&[u8]> = None;
    for r in &data.records {
        anyhow::ensure!(
            r.key.first() == Some(&keys::METADATA),
            "a metadata snapshot record outside the metadata keys"
        );
        anyhow::ensure!(
            last.is_none_or(|l| l < r.key.as_slice()),
            "metadata snapshot records out of order"
        );
        sst.put(&r.key, &r.value)?;
        last = Some(&r.key);
    }
    sst.put(
        keys::group_key(keys::TRUNCATED, group),
        raft_storage::truncated_value(meta.index, meta.term),
    )?;
    sst.finish()?;
    Ok(received)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rocksdb::WriteBatch;

    use super::*;
    use crate::log::snapshot::install;
    use crate::metadata::{BrokerRecord, Command, MetadataMachine, Outcome};
    use crate::storage::{self, GroupStorage};

    fn apply(m: &mut MetadataMachine, index: u64, command: &Command, wb: &mut WriteBatch) {
        m.apply(index, &serde_json::to_vec(command).unwrap(), wb);
    }

    fn topic(name: &str) -> Command {
        Command::CreateTopic {
            name: name.into(),
            id: uuid::Uuid::new_v4(),
            partitions: 2,
            configs: BTreeMap::new(),
            replicas: vec![vec![1, 2], vec![2, 1]],
        }
    }

    /// A metadata group with a log of `entries` entries (term 1) and `commands` applied.
    fn machine(dir: &Path, entries: u64, commands: &[Command]) -> (Db, MetadataMachine) {
        let db = storage::open(dir).unwrap();
        let mut wb = WriteBatch::default();
        let mut s = GroupStorage::create(db.clone(), METADATA_GROUP, vec![1, 2], vec![], &mut wb);
        let log: Vec<raft::eraftpb::Entry> = (1..=entries)
            .map(|index| raft::eraftpb::Entry {
                index,
                term: 1,
                ..Default::default()
            })
            .collect();
        s.stage_append(log, &mut wb, &mut vec![]);
        let (mut m, _) = MetadataMachine::load(&db).unwrap();
        for (i, c) in commands.iter().enumerate() {
            apply(&mut m, i as u64 + 1, c, &mut wb);
        }
        storage::write(&db, wb, true).unwrap();
        (db, m)
    }

    #[test]
    fn a_snapshot_replaces_the_receivers_catalog_exactly() {
        let broker = |id| {
            Command::RegisterBroker(BrokerRecord {
                id,
                host: "h".into(),
                port: 9092,
                cluster_addr: "h:1".into(),
                external: None,
                rack: Some("a".into()),
            })
        };
        let leader_dir = tempfile::tempdir().unwrap();
        let commands = [
            topic("kept"),
            broker(1),
            broker(2),
            Command::AllocateProducerId,
            topic("gone"),
            Command::DeleteTopic {
                name: "gone".into(),
            },
            Command::SetLeaving {
                nodes: vec![2],
                leaving: true,
            },
        ];
        let (leader, lm) = machine(leader_dir.path(), 9, &commands);
        let snapshot = describe(&leader, METADATA_GROUP).unwrap();
        assert_eq!(snapshot.get_metadata().index, 7);
        assert_eq!(snapshot.get_metadata().term, 1);
        assert_eq!(snapshot.get_metadata().get_conf_state().voters, vec![1, 2]);

        // The receiver is behind and diverged: a topic the leader deleted, none of the
        // leader's, and log entries past the snapshot's index.
        let follower_dir = tempfile::tempdir().unwrap();
        let (follower, before) = machine(follower_dir.path(), 12, &[topic("gone"), broker(3)]);
        let received = write_files(
            &Options::default(),
            &follower_dir.path().join("snapshots"),
            &snapshot,
        )
        .unwrap();
        install(&follower, &received).unwrap();
        let (after, _) = MetadataMachine::load(&follower).unwrap();
        assert_eq!(after.applied_index, 7);
        assert_eq!(
            after.topics.keys().collect::<Vec<_>>(),
            vec!["kept"],
            "exactly the leader's topics"
        );
        assert_eq!(after.topics["kept"], lm.topics["kept"]);
        assert_eq!(
            after.brokers.keys().copied().collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(after.leaving.iter().copied().collect::<Vec<_>>(), vec![2]);
        let storage = GroupStorage::load(follower.clone(), METADATA_GROUP)
            .unwrap()
            .unwrap();
        use raft::Storage;
        assert_eq!(storage.first_index().unwrap(), 8, "the log starts after it");
        assert_eq!(
            storage.last_index().unwrap(),
            7,
            "no entry of the old log is left"
        );
        assert_eq!(storage.term(7).unwrap(), 1);
        // Counters travel too: the next producer id follows the leader's.
        let mut after = after;
        let mut wb = WriteBatch::default();
        assert_eq!(
            after.apply(
                8,
                &serde_json::to_vec(&Command::AllocateProducerId).unwrap(),
                &mut wb
            ),
            Some(Outcome::ProducerId(1001))
        );

        // What the driver must do to host what the new catalog says.
        let changes = before.changes_to(&after);
        assert!(changes
            .iter()
            .any(|c| matches!(c, Outcome::TopicDeleted(name, _) if name == "gone")));
        assert!(changes
            .iter()
            .any(|c| matches!(c, Outcome::TopicCreated(name, _) if name == "kept")));
        assert!(changes.contains(&Outcome::LeavingSet(vec![2])));
        assert!(changes
            .iter()
            .any(|c| matches!(c, Outcome::BrokerRegistered(b) if b.id == 2)));
        assert!(
            after.changes_to(&after).is_empty(),
            "no change, nothing to do"
        );
    }

    #[test]
    fn a_malformed_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bad = MetadataSnapshot {
            records: vec![MetadataRecord {
                key: keys::group_key(keys::ENTRY, 3),
                value: vec![],
            }],
        };
        let snapshot = Snapshot {
            data: bad.encode_to_vec(),
            metadata: Some(SnapshotMetadata {
                index: 5,
                term: 1,
                ..Default::default()
            }),
        };
        let err = write_files(&Options::default(), dir.path(), &snapshot).unwrap_err();
        assert!(
            err.to_string().contains("outside the metadata keys"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no file left"
        );
    }
}
