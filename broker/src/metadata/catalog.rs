//! The read view of cluster state that request handlers use. Only the Raft driver writes
//! it, after the corresponding entries are applied and their effects are on disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use uuid::Uuid;

use super::{BrokerRecord, CommittedOffset};
use crate::log::PartitionShared;

#[derive(Debug)]
pub struct TopicView {
    pub name: String,
    pub id: Uuid,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<Arc<PartitionShared>>,
}

type OffsetKey = (String, String, i32);

/// The metadata group's leader and term, as last seen or reported.
#[derive(Debug, Default, Clone, Copy)]
struct MetadataLeader {
    leader: u64,
    term: u64,
}

/// A peer that has not reported its leaderships for this long is considered down.
pub const LIVENESS_WINDOW: Duration = Duration::from_secs(3);

pub struct Catalog {
    topics: RwLock<BTreeMap<String, Arc<TopicView>>>,
    brokers: RwLock<BTreeMap<u64, BrokerRecord>>,
    cluster_id: RwLock<Option<String>>,
    /// Target voters of partition groups being moved (rebalance, decommission).
    targets: RwLock<BTreeMap<u64, Vec<u64>>>,
    metadata_leader: Mutex<MetadataLeader>,
    /// The metadata group's (voters, learners) as this broker's Raft knows them.
    metadata_members: Mutex<(Vec<u64>, Vec<u64>)>,
    /// Brokers being decommissioned.
    leaving: RwLock<std::collections::BTreeSet<u64>>,
    /// When each peer last reported its leaderships: a live peer reports every few
    /// hundred milliseconds.
    peer_seen: Mutex<HashMap<u64, Instant>>,
    /// Peers that refused a connection since they last reported: their process is gone.
    peer_refused: Mutex<std::collections::HashSet<u64>>,
    /// Peers whose last report said they are shutting down.
    peer_stopping: Mutex<std::collections::HashSet<u64>>,
    offsets: RwLock<HashMap<OffsetKey, CommittedOffset>>,
    /// Bumped whenever records become visible, waking long-polling fetches.
    appended: watch::Sender<u64>,
    ready: AtomicBool,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            topics: RwLock::default(),
            brokers: RwLock::default(),
            cluster_id: RwLock::default(),
            targets: RwLock::default(),
            metadata_leader: Mutex::default(),
            metadata_members: Mutex::default(),
            leaving: RwLock::default(),
            peer_seen: Mutex::default(),
            peer_refused: Mutex::default(),
            peer_stopping: Mutex::default(),
            offsets: RwLock::default(),
            appended: watch::channel(0).0,
            ready: AtomicBool::new(false),
        }
    }
}

impl Catalog {
    pub fn topic(&self, name: &str) -> Option<Arc<TopicView>> {
        self.topics.read().unwrap().get(name).cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<TopicView>> {
        self.topics
            .read()
            .unwrap()
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    pub fn topics(&self) -> Vec<Arc<TopicView>> {
        self.topics.read().unwrap().values().cloned().collect()
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<PartitionShared>> {
        let t = self.topic(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|i| t.partitions.get(i).cloned())
    }

    /// Every partition, hosted here or not, by Raft group id.
    pub fn partitions_by_group(&self) -> HashMap<u64, Arc<PartitionShared>> {
        self.topics
            .read()
            .unwrap()
            .values()
            .flat_map(|t| t.partitions.iter().map(|p| (p.group, p.clone())))
            .collect()
    }

    /// The cluster id from the metadata log, once a broker has named the cluster.
    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id.read().unwrap().clone()
    }

    pub fn set_cluster_id(&self, id: String) {
        *self.cluster_id.write().unwrap() = Some(id);
    }

    pub fn targets(&self) -> BTreeMap<u64, Vec<u64>> {
        self.targets.read().unwrap().clone()
    }

    pub fn set_targets(&self, targets: impl IntoIterator<Item = (u64, Vec<u64>)>) {
        self.targets.write().unwrap().extend(targets);
    }

    /// Takes on the targets of a catalog restored from a snapshot.
    pub fn replace_targets(&self, targets: BTreeMap<u64, Vec<u64>>) {
        *self.targets.write().unwrap() = targets;
    }

    pub fn brokers(&self) -> Vec<BrokerRecord> {
        self.brokers.read().unwrap().values().cloned().collect()
    }

    pub fn broker(&self, id: u64) -> Option<BrokerRecord> {
        self.brokers.read().unwrap().get(&id).cloned()
    }

    pub fn set_broker(&self, record: BrokerRecord) {
        self.brokers.write().unwrap().insert(record.id, record);
    }

    /// The metadata group's leader (the controller, and every group's coordinator).
    pub fn metadata_leader(&self) -> Option<u64> {
        Some(self.metadata_leader.lock().unwrap().leader).filter(|id| *id != 0)
    }

    pub fn metadata_leader_term(&self) -> (u64, u64) {
        let m = self.metadata_leader.lock().unwrap();
        (m.leader, m.term)
    }

    /// Records the metadata group's leader for `term`; older terms are ignored.
    pub fn set_metadata_leader(&self, leader: u64, term: u64) {
        let mut m = self.metadata_leader.lock().unwrap();
        if term >= m.term {
            *m = MetadataLeader { leader, term };
        }
    }

    /// The metadata group's voters and learners, sorted.
    pub fn metadata_members(&self) -> (Vec<u64>, Vec<u64>) {
        self.metadata_members.lock().unwrap().clone()
    }

    pub fn set_metadata_members(&self, mut voters: Vec<u64>, mut learners: Vec<u64>) {
        voters.sort_unstable();
        learners.sort_unstable();
        *self.metadata_members.lock().unwrap() = (voters, learners);
    }

    pub fn is_leaving(&self, id: u64) -> bool {
        self.leaving.read().unwrap().contains(&id)
    }

    pub fn set_leaving(&self, leaving: impl IntoIterator<Item = u64>) {
        *self.leaving.write().unwrap() = leaving.into_iter().collect();
    }

    pub fn peer_seen(&self, id: u64) {
        self.peer_seen.lock().unwrap().insert(id, Instant::now());
        self.peer_refused.lock().unwrap().remove(&id);
    }

    pub fn set_peer_stopping(&self, id: u64, stopping: bool) {
        let mut set = self.peer_stopping.lock().unwrap();
        if stopping {
            set.insert(id);
        } else {
            set.remove(&id);
        }
    }

    /// Whether a peer could take a leadership over now: it reported lately, has not
    /// refused a connection since, and did not say it is shutting down.
    pub fn peer_can_take_over(&self, id: u64) -> bool {
        self.peer_alive(id, LIVENESS_WINDOW)
            && !self.peer_down(id)
            && !self.peer_stopping.lock().unwrap().contains(&id)
    }

    /// A peer refused a connection: its process is gone (until it reports again).
    /// Answers whether this is news (it was not known to be down).
    pub fn peer_refused(&self, id: u64) -> bool {
        self.peer_refused.lock().unwrap().insert(id)
    }

    /// Whether a peer refused its last connection and has not reported since: leaders
    /// there are not advertised, so that clients ask again until a new leader is known
    /// instead of waiting on a broker that is gone.
    pub fn peer_down(&self, id: u64) -> bool {
        self.peer_refused.lock().unwrap().contains(&id)
    }

    /// Whether a peer reported within `window`.
    pub fn peer_alive(&self, id: u64, window: Duration) -> bool {
        self.peer_seen
            .lock()
            .unwrap()
            .get(&id)
            .is_some_and(|t| t.elapsed() < window)
    }

    pub fn partition_count(&self) -> usize {
        self.topics
            .read()
            .unwrap()
            .values()
            .map(|t| t.partitions.len())
            .sum()
    }

    pub fn insert_topic(&self, view: TopicView) {
        self.topics
            .write()
            .unwrap()
            .insert(view.name.clone(), Arc::new(view));
    }

    /// Forgets a deleted topic and every group's committed offsets in it.
    pub fn remove_topic(&self, name: &str) {
        self.topics.write().unwrap().remove(name);
        self.offsets
            .write()
            .unwrap()
            .retain(|(_, t, _), _| t != name);
    }

    pub fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Option<CommittedOffset> {
        self.offsets
            .read()
            .unwrap()
            .get(&(group.to_string(), topic.to_string(), partition))
            .cloned()
    }

    /// All committed offsets of a group, for OffsetFetch with a null topic list.
    pub fn group_offsets(&self, group: &str) -> Vec<CommittedOffset> {
        self.offsets
            .read()
            .unwrap()
            .iter()
            .filter(|((g, _, _), _)| g == group)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Groups that have committed offsets.
    pub fn offset_groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self
            .offsets
            .read()
            .unwrap()
            .keys()
            .map(|(g, _, _)| g.clone())
            .collect();
        groups.sort();
        groups.dedup();
        groups
    }

    /// Takes on the committed offsets of a catalog restored from a snapshot.
    pub fn replace_offsets(&self, offsets: impl IntoIterator<Item = (String, CommittedOffset)>) {
        *self.offsets.write().unwrap() = offsets
            .into_iter()
            .map(|(group, o)| ((group, o.topic.clone(), o.partition), o))
            .collect();
    }

    pub fn set_offset(&self, group: &str, o: CommittedOffset) {
        self.offsets
            .write()
            .unwrap()
            .insert((group.to_string(), o.topic.clone(), o.partition), o);
    }

    pub fn notify_appended(&self) {
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe_appends(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
