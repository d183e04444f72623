//! The metadata group keeps itself whole. Its leader grows the voters to a target count
//! from caught-up learners (brokers that joined later), takes live brokers that lost their
//! membership back in as learners, and moves the vote of a broker being decommissioned to
//! another broker before taking it away, so that the metadata quorum outlives the brokers
//! the cluster started with. A leaving broker stays a learner: until its replicas have
//! moved it leads partitions, and their leaders learn the targets they move towards from
//! the metadata log. One membership change at a time, as raft-rs requires; the staying
//! voters never fall below a majority of the target.

use std::collections::BTreeSet;

use raft::eraftpb::{ConfChange, ConfChangeType};

use super::group::Group;

/// What the metadata leader knows of the brokers when it decides.
pub(super) struct Brokers<'a> {
    pub me: u64,
    /// Registered brokers.
    pub registered: Vec<u64>,
    pub leaving: &'a BTreeSet<u64>,
    pub alive: &'a dyn Fn(u64) -> bool,
    /// Configured voter count; 0 picks 5 once five brokers stay, else 3.
    pub configured: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// A live broker outside the group (removed while it was away) comes back as a learner.
    AddLearner(u64),
    /// A caught-up learner votes.
    Promote(u64),
    /// A leaving voter becomes a learner.
    Demote(u64),
    /// The leader itself is leaving: another voter takes over first, then demotes it.
    HandOver(u64),
}

impl Brokers<'_> {
    fn staying(&self, id: u64) -> bool {
        !self.leaving.contains(&id) && (id == self.me || (self.alive)(id))
    }

    /// How many voters the group should have.
    pub fn target(&self) -> usize {
        let staying = self.registered.iter().filter(|b| self.staying(**b)).count();
        match self.configured {
            0 if staying >= 5 => 5,
            0 => 3,
            n => n,
        }
    }
}

/// The membership change the metadata group needs next, if any. `caught_up` says whether a
/// member has every committed entry.
pub(super) fn next_change(
    voters: &[u64],
    learners: &[u64],
    caught_up: impl Fn(u64) -> bool,
    b: &Brokers,
) -> Option<Change> {
    let member = |n: &u64| voters.contains(n) || learners.contains(n);
    if let Some(&n) = b.registered.iter().find(|n| !member(n) && b.staying(**n)) {
        return Some(Change::AddLearner(n));
    }
    let target = b.target();
    let staying = voters.iter().filter(|v| !b.leaving.contains(v)).count();
    if staying < target {
        let ready = learners
            .iter()
            .filter(|l| b.staying(**l) && caught_up(**l))
            .min();
        if let Some(&l) = ready {
            return Some(Change::Promote(l));
        }
    }
    let leaving = voters.iter().find(|v| b.leaving.contains(v))?;
    if staying < target / 2 + 1 {
        return None; // not without a replacement: the quorum would be too thin
    }
    if *leaving != b.me {
        return Some(Change::Demote(*leaving));
    }
    voters
        .iter()
        .filter(|v| **v != b.me && b.staying(**v) && caught_up(**v))
        .min()
        .map(|v| Change::HandOver(*v))
}

/// Makes the next change of the metadata group `g`, if its leader is this node and no
/// change is in progress.
pub(super) fn step(g: &mut Group, b: &Brokers) {
    let raft = &g.node.raft;
    if raft.state != raft::StateRole::Leader || raft.has_pending_conf() {
        return;
    }
    let cs = raft.prs().conf().to_conf_state();
    let committed = raft.raft_log.committed;
    let caught_up = |id: u64| raft.prs().get(id).is_some_and(|p| p.matched >= committed);
    let Some(change) = next_change(&cs.voters, &cs.learners, caught_up, b) else {
        return;
    };
    let (change_type, node) = match change {
        Change::AddLearner(n) => (ConfChangeType::AddLearnerNode, n),
        Change::Promote(n) => (ConfChangeType::AddNode, n),
        Change::Demote(n) => (ConfChangeType::AddLearnerNode, n),
        Change::HandOver(to) => {
            tracing::info!(
                to,
                "leaving the metadata group: handing its leadership over first"
            );
            g.hand_over(to);
            return;
        }
    };
    let cc = ConfChange {
        change_type: change_type as i32,
        node_id: node,
        ..Default::default()
    };
    match g.node.propose_conf_change(vec![], cc) {
        Ok(()) => tracing::info!(?change, "changing the metadata quorum"),
        Err(e) => tracing::debug!(?change, error = %e, "metadata membership change not proposed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(
        voters: &[u64],
        learners: &[u64],
        registered: &[u64],
        leaving: &[u64],
        down: &[u64],
    ) -> Option<Change> {
        let leaving: BTreeSet<u64> = leaving.iter().copied().collect();
        let alive = |id: u64| !down.contains(&id);
        let b = Brokers {
            me: 1,
            registered: registered.to_vec(),
            leaving: &leaving,
            alive: &alive,
            configured: 0,
        };
        next_change(voters, learners, |_| true, &b)
    }

    #[test]
    fn learners_are_promoted_up_to_three_then_five_voters() {
        use Change::*;
        assert_eq!(decide(&[1], &[], &[1], &[], &[]), None);
        assert_eq!(
            decide(&[1, 2], &[3, 4], &[1, 2, 3, 4], &[], &[]),
            Some(Promote(3))
        );
        assert_eq!(decide(&[1, 2, 3], &[4], &[1, 2, 3, 4], &[], &[]), None);
        assert_eq!(
            decide(&[1, 2, 3], &[4, 5], &[1, 2, 3, 4, 5], &[], &[]),
            Some(Promote(4))
        );
        // A learner that is down is not promoted, and does not count towards five.
        assert_eq!(
            decide(&[1, 2, 3], &[4, 5], &[1, 2, 3, 4, 5], &[], &[4]),
            None
        );
    }

    #[test]
    fn a_leaving_voter_hands_its_vote_over_before_it_goes() {
        use Change::*;
        // Three voters, a learner, broker 2 leaving: the learner votes first, then 2 stops.
        assert_eq!(
            decide(&[1, 2, 3], &[4], &[1, 2, 3, 4], &[2], &[]),
            Some(Promote(4))
        );
        assert_eq!(
            decide(&[1, 2, 3, 4], &[], &[1, 2, 3, 4], &[2], &[]),
            Some(Demote(2))
        );
        // The leader itself leaving hands leadership over; the next leader removes it.
        assert_eq!(
            decide(&[1, 3, 4], &[], &[1, 3, 4], &[1], &[]),
            Some(HandOver(3))
        );
        // Five voters, two leaving (a scale-down from 5 to 3): both go, no promotion.
        assert_eq!(
            decide(&[1, 2, 3, 4, 5], &[], &[1, 2, 3, 4, 5], &[4, 5], &[]),
            Some(Demote(4))
        );
        // With nobody to take the vote, a voter leaves only if a majority stays.
        assert_eq!(
            decide(&[1, 2, 3], &[], &[1, 2, 3], &[3], &[]),
            Some(Demote(3))
        );
        assert_eq!(decide(&[1, 2], &[], &[1, 2], &[2], &[]), None);
    }

    #[test]
    fn a_live_broker_outside_the_group_comes_back_as_a_learner() {
        use Change::*;
        assert_eq!(
            decide(&[1, 2, 3], &[], &[1, 2, 3, 4], &[], &[]),
            Some(AddLearner(4))
        );
        assert_eq!(decide(&[1, 2, 3], &[], &[1, 2, 3, 4], &[4], &[]), None);
        assert_eq!(decide(&[1, 2, 3], &[], &[1, 2, 3, 4], &[], &[4]), None);
    }
}
