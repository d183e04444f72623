//! The Raft view request handlers see: each group's leader, term, voters and in-sync
//! voters, published by the driver into the partition's shared state.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use raft::RawNode;

use crate::log::PartitionShared;
use crate::storage::GroupStorage;

/// A voter stays in sync while, this recently, it had every committed entry and the leader
/// had heard from it within an election timeout (Kafka's replica.lag.time.max.ms).
const ISR_LAG: Duration = Duration::from_secs(3);

/// Whether voter `id` is in sync by the leader's marks (see [`publish_raft_view`]).
pub(super) fn keeps_up(caught_up: &HashMap<u64, Instant>, id: u64) -> bool {
    caught_up.get(&id).is_some_and(|t| t.elapsed() < ISR_LAG)
}

/// Shares the group's leader, term, voters and in-sync voters with request handlers and
/// the admin API. Only the leader knows which voters are in sync (followers learn it from
/// the leader's reports): those that had every committed entry within [`ISR_LAG`] and
/// that it heard from recently.
pub(super) fn publish_raft_view(
    node: &RawNode<GroupStorage>,
    caught_up: &mut HashMap<u64, Instant>,
    shared: &PartitionShared,
) {
    let raft = &node.raft;
    let mut voters: Vec<u64> = raft.prs().conf().voters().ids().iter().collect();
    voters.sort_unstable();
    let in_sync: Option<Vec<u64>> = (raft.state == raft::StateRole::Leader).then(|| {
        let committed = raft.raft_log.committed;
        let now = Instant::now();
        voters
            .iter()
            .copied()
            .filter(|id| {
                let Some(p) = raft.prs().get(*id) else {
                    return false;
                };
                if *id == raft.id {
                    return true;
                }
                // (raft-rs clears `recent_active` at every quorum check and sets it again
                // on the next response, so it only refreshes the mark, never clears it.)
                if p.matched >= committed && p.recent_active {
                    caught_up.insert(*id, now);
                }
                caught_up
                    .get(id)
                    .is_some_and(|t| now.duration_since(*t) < ISR_LAG)
            })
            .collect()
    });
    shared.set_raft_view(raft.leader_id, raft.term, &voters, in_sync.as_deref());
    match (raft.state, raft.lead_transferee) {
        // Still leading: the hand-over goes on (or ended without a new leader).
        (raft::StateRole::Leader, None) => shared.set_transferee(None),
        (raft::StateRole::Leader, Some(_)) => {}
        // Stepped down for it: the hint stays until this node knows who leads.
        _ if raft.leader_id == 0 => {}
        _ => shared.set_transferee(None),
    }
}
