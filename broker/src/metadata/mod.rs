//! The metadata state machine, replicated through Raft group 0 (as KRaft's metadata log):
//! registered brokers, topics with their partition groups and replica assignments,
//! producer-id allocation, and committed consumer offsets. Commands are proposed by request handlers and applied by the Raft driver.

pub mod catalog;
pub mod snapshot;

use std::collections::BTreeMap;

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::storage::{keys, Db};

pub use catalog::{Catalog, TopicView};

/// Raft group id of the metadata log; partition groups are numbered from 1.
pub const METADATA_GROUP: u64 = 0;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Command {
    CreateTopic {
        name: String,
        id: Uuid,
        partitions: i32,
        configs: BTreeMap<String, String>,
        /// Voters of each partition's group, by partition index; the proposer chooses
        /// them so that applying stays deterministic.
        #[serde(default)]
        replicas: Vec<Vec<u64>>,
    },
    /// A broker announces (or updates) how clients and peers reach it.
    RegisterBroker(BrokerRecord),
    /// Names the cluster; only the first one applied counts, so every broker reports the
    /// same id.
    InitCluster {
        id: String,
    },
    /// New voters for partition groups (a rebalance or decommission); each group's leader
    /// changes its membership towards them.
    SetTargets {
        targets: Vec<(u64, Vec<u64>)>,
    },
    DeleteTopic {
        name: String,
    },
    AllocateProducerId,
    CommitOffsets {
        group: String,
        offsets: Vec<CommittedOffset>,
    },
    /// Marks brokers as leaving (a decommission) or back (a rebalance): a leaving broker
    /// hands its metadata vote to another before it goes, and gets none again.
    SetLeaving {
        nodes: Vec<u64>,
        leaving: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicRecord {
    pub id: Uuid,
    /// Raft group id of each partition, by partition index.
    pub groups: Vec<u64>,
    pub configs: BTreeMap<String, String>,
    /// Initial voters of each partition's group. Empty for topics made by a single-node
    /// broker before assignments were recorded: their one voter is that broker.
    #[serde(default)]
    pub replicas: Vec<Vec<u64>>,
}

impl TopicRecord {
    /// Initial voters of partition `index`, or `None` when the topic predates assignments.
    pub fn replicas_of(&self, index: usize) -> Option<&[u64]> {
        self.replicas.get(index).map(Vec::as_slice)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrokerRecord {
    pub id: u64,
    /// Advertised Kafka listener.
    pub host: String,
    pub port: i32,
    /// Advertised cluster (gRPC) endpoint, host:port.
    pub cluster_addr: String,
    /// Advertised address of the external Kafka listener, when it has one (clients
    /// outside the Kubernetes cluster: the node address and the broker's node port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<Endpoint>,
    /// The broker's rack, when it was started with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
}

/// A host and port that clients connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    TopicCreated(String, TopicRecord),
    TopicExists,
    TopicDeleted(String, TopicRecord),
    UnknownTopic,
    ProducerId(i64),
    OffsetsCommitted(String, Vec<CommittedOffset>),
    BrokerRegistered(BrokerRecord),
    ClusterId(String),
    TargetsSet(Vec<(u64, Vec<u64>)>),
    /// The brokers leaving after the change.
    LeavingSet(Vec<u64>),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counters {
    next_group: u64,
    next_producer_id: i64,
}

/// Owned by the Raft driver. Committed offsets are served from the [`Catalog`], which
/// the driver updates from [`Outcome::OffsetsCommitted`].
pub struct MetadataMachine {
    pub applied_index: u64,
    pub topics: BTreeMap<String, TopicRecord>,
    pub brokers: BTreeMap<u64, BrokerRecord>,
    pub cluster_id: Option<String>,
    /// Target voters of partition groups being moved, by group id.
    pub targets: BTreeMap<u64, Vec<u64>>,
    /// Brokers being decommissioned.
    pub leaving: std::collections::BTreeSet<u64>,
    counters: Counters,
    /// Keys of committed offsets by topic: deleting a topic deletes them (as in Kafka; a
    /// topic created again with the same name starts without the old group positions).
    offset_keys: BTreeMap<String, std::collections::BTreeSet<String>>,
}

fn offset_key_name(group: &str, o: &CommittedOffset) -> String {
    format!("{group}\0{}\0{}", o.topic, o.partition)
}

/// Committed offsets found on disk at start-up, by consumer group.
pub type StoredOffsets = Vec<(String, CommittedOffset)>;

impl MetadataMachine {
    pub fn load(db: &Db) -> anyhow::Result<(Self, StoredOffsets)> {
        let mut m = MetadataMachine {
            applied_index: 0,
            topics: BTreeMap::new(),
            brokers: BTreeMap::new(),
            cluster_id: None,
            targets: BTreeMap::new(),
            leaving: Default::default(),
            offset_keys: BTreeMap::new(),
            counters: Counters {
                next_group: 1,
                next_producer_id: 1000,
            },
        };
        if let Some(v) = db.get(keys::group_key(keys::APPLIED, METADATA_GROUP))? {
            m.applied_index = u64::from_be_bytes(v[0..8].try_into()?);
        }
        if let Some(v) = db.get(keys::metadata_key("counters", ""))? {
            m.counters = serde_json::from_slice(&v)?;
        }
        for (k, v) in scan(db, "topic")? {
            m.topics.insert(k, serde_json::from_slice(&v)?);
        }
        if let Some(v) = db.get(keys::metadata_key("cluster", "id"))? {
            m.cluster_id = Some(String::from_utf8_lossy(&v).into_owned());
        }
        for (_, v) in scan(db, "target")? {
            let (group, voters): (u64, Vec<u64>) = serde_json::from_slice(&v)?;
            m.targets.insert(group, voters);
        }
        for (k, _) in scan(db, "leaving")? {
            m.leaving.insert(k.parse()?);
        }
        for (_, v) in scan(db, "broker")? {
            let b: BrokerRecord = serde_json::from_slice(&v)?;
            m.brokers.insert(b.id, b);
        }
        let mut offsets: StoredOffsets = Vec::new();
        for (_, v) in scan(db, "offset")? {
            let (group, o): (String, CommittedOffset) = serde_json::from_slice(&v)?;
            m.index_offset(&group, &o);
            offsets.push((group, o));
        }
        Ok((m, offsets))
    }

    fn index_offset(&mut self, group: &str, o: &CommittedOffset) {
        self.offset_keys
            .entry(o.topic.clone())
            .or_default()
            .insert(offset_key_name(group, o));
    }

    /// Records entry `index` as applied: a membership change, or an empty entry.
    pub fn mark_applied(&mut self, index: u64, wb: &mut WriteBatch) {
        self.applied_index = index;
        wb.put(
            keys::group_key(keys::APPLIED, METADATA_GROUP),
            index.to_be_bytes(),
        );
    }

    pub fn apply(&mut self, index: u64, data: &[u8], wb: &mut WriteBatch) -> Option<Outcome> {
        self.mark_applied(index, wb);
        if data.is_empty() {
            return None;
        }
        let command: Command = match serde_json::from_slice(data) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(index, error = %e, "skipping undecodable metadata entry");
                return None;
            }
        };
        Some(self.execute(command, wb))
    }

    fn execute(&mut self, command: Command, wb: &mut WriteBatch) -> Outcome {
        match command {
            Command::CreateTopic {
                name,
                id,
                partitions,
                configs,
                replicas,
            } => {
                if self.topics.contains_key(&name) {
                    return Outcome::TopicExists;
                }
                let first = self.counters.next_group;
                self.counters.next_group += partitions as u64;
                self.save_counters(wb);
                let record = TopicRecord {
                    id,
                    groups: (first..first + partitions as u64).collect(),
                    configs,
                    replicas,
                };
                wb.put(
                    keys::metadata_key("topic", &name),
                    serde_json::to_vec(&record).expect("serializable"),
                );
                self.topics.insert(name.clone(), record.clone());
                Outcome::TopicCreated(name, record)
            }
            Command::DeleteTopic { name } => match self.topics.remove(&name) {
                Some(record) => {
                    wb.delete(keys::metadata_key("topic", &name));
                    for key in self.offset_keys.remove(&name).unwrap_or_default() {
                        wb.delete(keys::metadata_key("offset", &key));
                    }
                    for g in &record.groups {
                        if self.targets.remove(g).is_some() {
                            wb.delete(keys::metadata_key("target", &g.to_string()));
                        }
                    }
                    Outcome::TopicDeleted(name, record)
                }
                None => Outcome::UnknownTopic,
            },
            Command::AllocateProducerId => {
                let id = self.counters.next_producer_id;
                self.counters.next_producer_id += 1;
                self.save_counters(wb);
                Outcome::ProducerId(id)
            }
            Command::CommitOffsets { group, offsets } => {
                // A commit proposed before its topic's deletion and applied after it
                // must not bring the deleted topic's offsets back.
                let offsets: Vec<CommittedOffset> = offsets
                    .into_iter()
                    .filter(|o| self.topics.contains_key(&o.topic))
                    .collect();
                for o in &offsets {
                    wb.put(
                        keys::metadata_key("offset", &offset_key_name(&group, o)),
                        serde_json::to_vec(&(&group, o)).expect("serializable"),
                    );
                    self.index_offset(&group, o);
                }
                Outcome::OffsetsCommitted(group, offsets)
            }
            Command::SetTargets { targets } => {
                let known: std::collections::HashSet<u64> = self
                    .topics
                    .values()
                    .flat_map(|t| t.groups.iter().copied())
                    .collect();
                let targets: Vec<(u64, Vec<u64>)> = targets
                    .into_iter()
                    .filter(|(g, voters)| known.contains(g) && !voters.is_empty())
                    .collect();
                for (g, voters) in &targets {
                    wb.put(
                        keys::metadata_key("target", &g.to_string()),
                        serde_json::to_vec(&(g, voters)).expect("serializable"),
                    );
                    self.targets.insert(*g, voters.clone());
                }
                Outcome::TargetsSet(targets)
            }
            Command::SetLeaving { nodes, leaving } => {
                for node in nodes {
                    let key = keys::metadata_key("leaving", &node.to_string());
                    if leaving {
                        self.leaving.insert(node);
                        wb.put(key, []);
                    } else if self.leaving.remove(&node) {
                        wb.delete(key);
                    }
                }
                Outcome::LeavingSet(self.leaving.iter().copied().collect())
            }
            Command::InitCluster { id } => {
                let id = self.cluster_id.get_or_insert(id).clone();
                wb.put(keys::metadata_key("cluster", "id"), id.as_bytes());
                Outcome::ClusterId(id)
            }
            Command::RegisterBroker(record) => {
                // A broker that (re)starts is back, even if it was being decommissioned.
                if self.leaving.remove(&record.id) {
                    wb.delete(keys::metadata_key("leaving", &record.id.to_string()));
                }
                wb.put(
                    keys::metadata_key("broker", &record.id.to_string()),
                    serde_json::to_vec(&record).expect("serializable"),
                );
                self.brokers.insert(record.id, record.clone());
                Outcome::BrokerRegistered(record)
            }
        }
    }

    /// What changed from this catalog to `new` (one installed from a snapshot), as the
    /// outcomes that applying the skipped entries would have had: deletions first (a
    /// topic deleted and made again under its name is both), then creations, brokers,
    /// leaving brokers and placement targets. Committed offsets are not among them: the
    /// catalog takes them whole.
    pub fn changes_to(&self, new: &MetadataMachine) -> Vec<Outcome> {
        let same_topic = |name: &String, r: &TopicRecord, other: &BTreeMap<String, TopicRecord>| {
            other.get(name).is_some_and(|o| o.id == r.id)
        };
        let mut changes: Vec<Outcome> = self
            .topics
            .iter()
            .filter(|(name, r)| !same_topic(name, r, &new.topics))
            .map(|(name, r)| Outcome::TopicDeleted(name.clone(), r.clone()))
            .collect();
        changes.extend(
            new.topics
                .iter()
                .filter(|(name, r)| !same_topic(name, r, &self.topics))
                .map(|(name, r)| Outcome::TopicCreated(name.clone(), r.clone())),
        );
        if let Some(id) = new
            .cluster_id
            .as_ref()
            .filter(|id| self.cluster_id.as_ref() != Some(*id))
        {
            changes.push(Outcome::ClusterId(id.clone()));
        }
        changes.extend(
            new.brokers
                .values()
                .filter(|b| self.brokers.get(&b.id) != Some(*b))
                .map(|b| Outcome::BrokerRegistered(b.clone())),
        );
        if new.leaving != self.leaving {
            changes.push(Outcome::LeavingSet(new.leaving.iter().copied().collect()));
        }
        let targets: Vec<(u64, Vec<u64>)> = new
            .targets
            .iter()
            .filter(|(g, voters)| self.targets.get(g) != Some(*voters))
            .map(|(g, voters)| (*g, voters.clone()))
            .collect();
        if !targets.is_empty() {
            changes.push(Outcome::TargetsSet(targets));
        }
        changes
    }

    fn save_counters(&self, wb: &mut WriteBatch) {
        wb.put(
            keys::metadata_key("counters", ""),
            serde_json::to_vec(&self.counters).expect("serializable"),
        );
    }
}

fn scan(db: &Db, kind: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let prefix = keys::metadata_prefix(kind);
    let mut out = Vec::new();
    for item in db.prefix_iterator(&prefix) {
        let (k, v) = item?;
        if !k.starts_with(&prefix) {
            break;
        }
        out.push((
            String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
            v.to_vec(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_apply_and_survive_reload() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::open(dir.path()).unwrap();
        let (mut m, _) = MetadataMachine::load(&db).unwrap();
        let mut wb = WriteBatch::default();
        let create = Command::CreateTopic {
            name: "orders".into(),
            id: Uuid::new_v4(),
            partitions: 3,
            configs: BTreeMap::new(),
            replicas: vec![vec![1]; 3],
        };
        let data = serde_json::to_vec(&create).unwrap();
        assert!(matches!(
            m.apply(1, &data, &mut wb),
            Some(Outcome::TopicCreated(_, ref r)) if r.groups == vec![1, 2, 3]
        ));
        assert_eq!(m.apply(2, &data, &mut wb), Some(Outcome::TopicExists));
        let pid = serde_json::to_vec(&Command::AllocateProducerId).unwrap();
        assert_eq!(m.apply(3, &pid, &mut wb), Some(Outcome::ProducerId(1000)));
        let commit = Command::CommitOffsets {
            group: "g".into(),
            offsets: vec![CommittedOffset {
                topic: "orders".into(),
                partition: 1,
                offset: 42,
                leader_epoch: -1,
                metadata: None,
            }],
        };
        m.apply(4, &serde_json::to_vec(&commit).unwrap(), &mut wb);
        crate::storage::write(&db, wb, true).unwrap();

        let (mut m, offsets) = MetadataMachine::load(&db).unwrap();
        assert_eq!(m.applied_index, 4);
        assert_eq!(m.topics["orders"].groups, vec![1, 2, 3]);
        assert_eq!(offsets.len(), 1);
        assert_eq!((offsets[0].0.as_str(), offsets[0].1.offset), ("g", 42));
        let mut wb = WriteBatch::default();
        assert_eq!(m.apply(5, &pid, &mut wb), Some(Outcome::ProducerId(1001)));

        // Deleting the topic deletes its committed offsets; a late commit for it is void.
        let delete = Command::DeleteTopic {
            name: "orders".into(),
        };
        let delete = serde_json::to_vec(&delete).unwrap();
        assert!(matches!(
            m.apply(6, &delete, &mut wb),
            Some(Outcome::TopicDeleted(..))
        ));
        m.apply(7, &serde_json::to_vec(&commit).unwrap(), &mut wb);
        crate::storage::write(&db, wb, true).unwrap();
        let (_, offsets) = MetadataMachine::load(&db).unwrap();
        assert!(offsets.is_empty(), "{offsets:?}");
    }
}
