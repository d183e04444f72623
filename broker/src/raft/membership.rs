//! Membership changes a partition leader makes on its own: moving a group's voters
//! towards the target the metadata log set (rebalance, decommission), learner first, and
//! the small rules around elections of new groups and compaction.

use std::collections::HashMap;
use std::time::Instant;

use raft::eraftpb::{ConfChange, ConfChangeType};
use raft::RawNode;

use super::group::Group;
use super::view::keeps_up;
use crate::storage::GroupStorage;

/// One membership change of a group whose voters differ from its target, proposed by its
/// leader (one at a time: raft-rs refuses a second while one is pending). Added replicas
/// join as learners and become voters once caught up, so the group never counts on a
/// voter that cannot vote yet; a leader that is itself moved away first hands leadership
/// to a target voter.
pub(super) fn step_towards_target(gid: u64, g: &mut Group, target: &[u64], me: u64) {
    let raft = &g.node.raft;
    if raft.state != raft::StateRole::Leader || raft.has_pending_conf() {
        return;
    }
    let cs = raft.prs().conf().to_conf_state();
    let committed = raft.raft_log.committed;
    let caught_up = |id: &u64| raft.prs().get(*id).is_some_and(|p| p.matched >= committed);
    let change = if let Some(add) = target
        .iter()
        .find(|id| !cs.voters.contains(id) && !cs.learners.contains(id))
    {
        Some((ConfChangeType::AddLearnerNode, *add))
    } else if let Some(promote) = cs
        .learners
        .iter()
        .find(|id| target.contains(id) && caught_up(id))
    {
        Some((ConfChangeType::AddNode, *promote))
    } else if cs.learners.iter().any(|id| target.contains(id)) {
        None // a new replica is still catching up
    } else if let Some(remove) = cs
        .voters
        .iter()
        .chain(cs.learners.iter())
        .find(|id| !target.contains(id))
    {
        if *remove == me {
            let to = target
                .iter()
                .filter(|id| caught_up(id))
                .max_by_key(|id| raft.prs().get(**id).map_or(0, |p| p.matched));
            if let Some(to) = to {
                g.hand_over(*to);
            }
            None
        } else {
            Some((ConfChangeType::RemoveNode, *remove))
        }
    } else {
        None
    };
    if let Some((change_type, node_id)) = change {
        let cc = ConfChange {
            change_type: change_type as i32,
            node_id,
            ..Default::default()
        };
        match g.node.propose_conf_change(vec![], cc) {
            Ok(()) => tracing::info!(group = gid, ?change_type, node_id, "moving replicas"),
            Err(e) => tracing::debug!(group = gid, error = %e, "membership change not proposed"),
        }
    }
}

/// Whether this node's replica was moved away: not in the target, and the group's leader
/// reports voters without it.
pub(super) fn replica_removed(g: &Group, target: &[u64], me: u64) -> bool {
    if target.contains(&me) || g.node.raft.state == raft::StateRole::Leader {
        return false;
    }
    let Some(p) = &g.partition else {
        return false;
    };
    let reported = p.shared.reported_voters();
    !reported.is_empty() && !reported.contains(&me) && reported.iter().all(|v| target.contains(v))
}

pub(super) fn retry_preferred_campaign(g: &mut Group) {
    if g.preferred_ticks == 0 {
        return;
    }
    g.preferred_ticks -= 1;
    if g.node.raft.leader_id != 0 {
        g.preferred_ticks = 0;
    } else if g.preferred_ticks.is_multiple_of(3) {
        let _ = g.node.campaign();
    }
}

/// Whether every in-sync voter has the entries up to `index` (always true on a follower,
/// which does not know its peers' progress and only compacts what it has applied itself).
/// A voter out of sync (down, cut off) is not waited for, or its absence would fill the
/// disk: it catches up from a snapshot when it returns.
pub(super) fn followers_have(
    node: &RawNode<GroupStorage>,
    caught_up: &HashMap<u64, Instant>,
    index: u64,
) -> bool {
    let raft = &node.raft;
    if raft.state != raft::StateRole::Leader {
        return true;
    }
    raft.prs().conf().voters().ids().iter().all(|id| {
        raft.prs().get(id).is_some_and(|p| p.matched >= index) || !keeps_up(caught_up, id)
    })
}
