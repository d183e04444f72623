//! Committed offsets of the groups this broker coordinates: rebuilt from their
//! coordinator partitions' logs when this broker becomes those partitions' leader, then
//! kept current by the commits it writes there itself.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use super::records::{Entry, Key, OffsetValue};

#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    /// Id of the topic committed for (see [`OffsetValue::topic_id`]).
    pub topic_id: Uuid,
    /// Offset of the record that set it in its coordinator partition: commits are
    /// applied in log order, whatever order their writers learn of them in.
    pub position: i64,
}

/// Per group, per (topic, partition).
#[derive(Debug, Default)]
pub struct Offsets {
    by_group: HashMap<String, BTreeMap<(String, i32), Committed>>,
}

impl Offsets {
    /// Replays one record of a coordinator partition's log. A value is taken unless a
    /// record standing later (see [`Entry::position`]) set the offset already. (Offsets
    /// are never deleted by a record today; a tombstone removes what is there.)
    pub fn replay(&mut self, entry: &Entry) {
        let Key::Offset {
            group,
            topic,
            partition,
        } = &entry.key
        else {
            return;
        };
        let value = entry
            .value
            .as_ref()
            .and_then(|v| serde_json::from_slice::<OffsetValue>(v).ok());
        match value {
            Some(v) => self.record(
                group,
                topic,
                *partition,
                Committed {
                    offset: v.offset,
                    leader_epoch: v.leader_epoch,
                    metadata: v.metadata,
                    topic_id: v.topic_id,
                    position: entry.position(),
                },
            ),
            None => {
                if let Some(g) = self.by_group.get_mut(group) {
                    g.remove(&(topic.clone(), *partition));
                    if g.is_empty() {
                        self.by_group.remove(group);
                    }
                }
            }
        }
    }

    /// Sets a committed offset unless a later record already set it.
    pub fn record(&mut self, group: &str, topic: &str, partition: i32, c: Committed) {
        let slot = self
            .by_group
            .entry(group.to_string())
            .or_default()
            .entry((topic.to_string(), partition));
        match slot {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                if e.get().position <= c.position {
                    e.insert(c);
                }
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(c);
            }
        }
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&Committed> {
        self.by_group
            .get(group)?
            .get(&(topic.to_string(), partition))
    }

    /// Every offset `group` has, in (topic, partition) order.
    pub fn of_group(&self, group: &str) -> Vec<(String, i32, Committed)> {
        self.by_group
            .get(group)
            .into_iter()
            .flatten()
            .map(|((t, p), c)| (t.clone(), *p, c.clone()))
            .collect()
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.by_group.contains_key(group)
    }

    pub fn groups(&self) -> impl Iterator<Item = &String> {
        self.by_group.keys()
    }

    /// Moves every group of `other` in (a partition just loaded).
    pub fn absorb(&mut self, other: Offsets) {
        self.by_group.extend(other.by_group);
    }

    /// Forgets the groups `drop` selects (a partition no longer led here).
    pub fn forget(&mut self, drop: impl Fn(&str) -> bool) {
        self.by_group.retain(|g, _| !drop(g));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(offset: i64, value: Option<i64>) -> Entry {
        Entry {
            offset,
            key: Key::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 0,
            },
            value: value.map(|o| {
                Bytes::from(
                    serde_json::to_vec(&OffsetValue {
                        offset: o,
                        leader_epoch: 0,
                        metadata: None,
                        topic_id: Uuid::nil(),
                        commit_ms: 0,
                    })
                    .unwrap(),
                )
            }),
            restates: None,
        }
    }

    #[test]
    fn replay_keeps_the_latest_record_and_honours_tombstones() {
        let mut o = Offsets::default();
        o.replay(&entry(0, Some(5)));
        o.replay(&entry(1, Some(9)));
        assert_eq!(o.get("g", "t", 0).unwrap().offset, 9);
        // A writer that learns late of an older commit does not undo a newer one.
        o.record(
            "g",
            "t",
            0,
            Committed {
                offset: 7,
                leader_epoch: 0,
                metadata: None,
                topic_id: Uuid::nil(),
                position: 0,
            },
        );
        assert_eq!(o.get("g", "t", 0).unwrap().offset, 9);
        o.replay(&entry(2, None));
        assert!(o.get("g", "t", 0).is_none());
        assert!(!o.has_group("g"));
    }

    #[test]
    fn a_restated_offset_never_overrides_a_later_commit() {
        let restated = |offset, value, restates| Entry {
            restates: Some(restates),
            ..entry(offset, Some(value))
        };
        // Read from below the checkpoint: original at 3, a newer commit at 10, then the
        // restatement of the original at 12.
        let mut below = Offsets::default();
        below.replay(&entry(3, Some(5)));
        below.replay(&entry(10, Some(8)));
        below.replay(&restated(12, 5, 3));
        assert_eq!(below.get("g", "t", 0).unwrap().offset, 8);
        // Read from the checkpoint's log start (10): the same answer.
        let mut above = Offsets::default();
        above.replay(&entry(10, Some(8)));
        above.replay(&restated(12, 5, 3));
        assert_eq!(above.get("g", "t", 0).unwrap().offset, 8);
        // Without a later commit the restated value is the offset.
        let mut only = Offsets::default();
        only.replay(&restated(12, 5, 3));
        assert_eq!(only.get("g", "t", 0).unwrap().offset, 5);
        assert_eq!(only.get("g", "t", 0).unwrap().position, 3);
    }
}
