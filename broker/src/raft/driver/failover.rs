//! Failover without waiting out an election timeout. A follower that stops hearing from
//! its leader waits a randomized 1-2 s before it campaigns, and with check_quorum the
//! other followers refuse to vote until they too have not heard from the leader for 1 s.
//! But a broker whose process is gone refuses connections at once, and the cluster layer
//! sees that within one leadership report (~300 ms). So when a peer refuses connections,
//! in each group it leads one surviving voter (the lowest id) starts an election at once,
//! as the target of a leadership transfer would: raft-rs's TimeoutNow, whose vote requests
//! pass the other voters' leader lease. Raft's safety is untouched (a vote still needs a
//! log at least as up to date; a leader that was in fact alive is merely deposed), and if
//! the chosen voter cannot win, the usual election timeouts follow.

use raft::eraftpb::{Message, MessageType};

use super::Driver;

impl Driver {
    /// `peer` refuses connections: start elections in the groups it leads that this node
    /// is to take over.
    pub(super) fn peer_down(&mut self, peer: u64) {
        let me = self.cfg.node_id;
        let mut started = 0;
        for (gid, g) in self.groups.iter_mut() {
            let raft = &g.node.raft;
            if raft.leader_id != peer || raft.state != raft::StateRole::Follower {
                continue;
            }
            let voters = raft.prs().conf().voters().ids();
            let successor = voters.iter().filter(|id| *id != peer).min();
            if successor != Some(me) {
                continue;
            }
            let timeout_now = Message {
                msg_type: MessageType::MsgTimeoutNow as i32,
                from: peer,
                to: me,
                term: raft.term,
                ..Default::default()
            };
            match g.node.step(timeout_now) {
                Ok(()) => started += 1,
                Err(e) => tracing::debug!(group = gid, error = %e, "could not start an election"),
            }
        }
        if started > 0 {
            tracing::info!(
                peer,
                groups = started,
                "the leader's broker refuses connections: elections started at once"
            );
        }
    }
}
