//! The read view of cluster state that request handlers use. Only the Raft driver writes
//! it, after the corresponding entries are applied and their effects are on disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;
use uuid::Uuid;

use super::CommittedOffset;
use crate::log::PartitionShared;

#[derive(Debug)]
pub struct TopicView {
    pub name: String,
    pub id: Uuid,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<Arc<PartitionShared>>,
}

type OffsetKey = (String, String, i32);

pub struct Catalog {
    topics: RwLock<BTreeMap<String, Arc<TopicView>>>,
    offsets: RwLock<HashMap<OffsetKey, CommittedOffset>>,
    /// Bumped whenever records become visible, waking long-polling fetches.
    appended: watch::Sender<u64>,
    ready: AtomicBool,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            topics: RwLock::default(),
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

    pub fn remove_topic(&self, name: &str) {
        self.topics.write().unwrap().remove(name);
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
