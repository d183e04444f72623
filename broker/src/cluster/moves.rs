//! Partitions on their way to the voters a Rebalance or Decommission gave them, and which
//! of them have stopped moving. A move makes progress as its group's membership steps
//! towards the target and its new replicas join the in-sync set; one whose voters,
//! in-sync set and leader have not changed for `move_stall_timeout_ms` is *stalled*, and
//! says why as far as this broker can tell (a target broker not heard from, no leader),
//! so that RebalanceStatus, DecommissionStatus, the log and the operator's conditions
//! name what holds a rebalance up instead of waiting in silence.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::cluster::leadership::LIVENESS_WINDOW;

/// A partition still moving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moving {
    pub group: u64,
    /// `topic-partition`.
    pub name: String,
    /// Its voters now.
    pub voters: Vec<u64>,
    /// Why it is stalled, if it is: `name: no progress for over N s: reason`.
    pub stalled: Option<String>,
}

/// What each moving partition looked like when last seen changing.
#[derive(Default)]
pub struct MoveWatch {
    seen: Mutex<HashMap<u64, Seen>>,
}

struct Seen {
    state: (Vec<u64>, Vec<u64>, Option<u64>),
    since: Instant,
    warned: bool,
}

impl MoveWatch {
    /// The partitions whose voters are not their target yet, or not all in sync.
    pub fn pending(&self, b: &Broker) -> Vec<Moving> {
        let stall_after = Duration::from_millis(b.settings.move_stall_timeout_ms);
        let targets = b.catalog.targets();
        let mut seen = self.seen.lock().unwrap();
        let mut out = Vec::new();
        for p in b.catalog.topics().iter().flat_map(|t| t.partitions.iter()) {
            let Some(target) = targets.get(&p.group) else {
                continue;
            };
            let (mut voters, mut isr) = p.replicas();
            let mut sorted_target = target.clone();
            voters.sort_unstable();
            isr.sort_unstable();
            sorted_target.sort_unstable();
            if voters == sorted_target && isr.len() >= voters.len() {
                continue;
            }
            let name = format!("{}-{}", p.topic, p.partition);
            let state = (voters.clone(), isr, p.leader());
            let entry = seen.entry(p.group).or_insert_with(|| Seen {
                state: state.clone(),
                since: Instant::now(),
                warned: false,
            });
            if entry.state != state {
                *entry = Seen {
                    state,
                    since: Instant::now(),
                    warned: false,
                };
            }
            // (Worded the same on every call while nothing changes, so that whoever shows
            // it, the operator's status, writes it once.)
            let stalled = (entry.since.elapsed() >= stall_after).then(|| {
                format!(
                    "{name}: no progress for over {} s: {}",
                    stall_after.as_secs(),
                    why(b, &entry.state, target)
                )
            });
            if let Some(reason) = &stalled {
                if !entry.warned {
                    tracing::warn!(partition = %name, "move stalled: {reason}");
                    entry.warned = true;
                }
            }
            out.push(Moving {
                group: p.group,
                name,
                voters,
                stalled,
            });
        }
        seen.retain(|g, _| out.iter().any(|m| m.group == *g));
        out
    }
}

/// Why a partition with `state` (voters, in sync, leader) does not reach `target`.
fn why(b: &Broker, state: &(Vec<u64>, Vec<u64>, Option<u64>), target: &[u64]) -> String {
    let (voters, isr, leader) = state;
    let me = b.node_id as u64;
    let silent: BTreeSet<u64> = target
        .iter()
        .chain(voters)
        .copied()
        .filter(|id| *id != me && !b.catalog.peer_alive(*id, LIVENESS_WINDOW))
        .collect();
    let silent: Vec<String> = silent
        .iter()
        .map(|id| format!("broker {id} is not heard from"))
        .collect();
    if !silent.is_empty() {
        return silent.join(", ");
    }
    let Some(leader) = leader else {
        return "the partition has no leader".into();
    };
    let joining: Vec<u64> = target
        .iter()
        .copied()
        .filter(|id| !isr.contains(id))
        .collect();
    if joining.is_empty() {
        format!("leader {leader} has not changed the voters {voters:?} towards {target:?}")
    } else {
        format!(
            "replicas on {joining:?} are not caught up with leader {leader} \
             (see their logs: a snapshot that cannot be sent or installed, a full disk)"
        )
    }
}
