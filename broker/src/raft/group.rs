//! One Raft group as the driver holds it, and the bookkeeping that keeps raft-rs's view of
//! what is persisted equal to what the log writer has actually written.
//!
//! raft-rs counts a Ready as persisted when told so, and `RawNode::advance` tells it that
//! *every* Ready collected so far is persisted. With an asynchronous log writer that is
//! only true when none of the group's earlier Readies is still queued in the writer: were
//! `advance` called then, raft-rs would treat entries that are not on disk as durable (a
//! leader would count its own unwritten entries towards the commit quorum and acknowledge
//! them; a follower would apply them and release them from the entry cache while RocksDB
//! does not have them yet, and raft-rs panics when it later asks for their term). So a
//! Ready is finished in place only when nothing of its group is in flight; otherwise it
//! follows the asynchronous path and its messages wait for the writes before it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use prost011::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, Message};
use raft::RawNode;
use rocksdb::WriteBatch;

use super::fence::{Fences, Sequenced};
use super::{Applied, ProposeError, Reply};
use crate::log::{AppendOutcome, PartitionMachine};
use crate::metadata::{MetadataMachine, Outcome};
use crate::storage::GroupStorage;

pub(super) struct Proposal {
    pub term: u64,
    pub reply: Reply,
    pub since: Instant,
    /// The batch's producer sequence, if idempotent: fenced should it fail unwritten.
    pub sequenced: Option<Sequenced>,
}

pub(super) struct Group {
    pub node: RawNode<GroupStorage>,
    /// `None` for the metadata group, whose machine lives in the driver.
    pub partition: Option<PartitionMachine>,
    pub proposals: BTreeMap<u64, Proposal>,
    pub applied: u64,
    /// Ticks left during which this node, the preferred leader of a new group, campaigns
    /// again while no leader is known (its first vote requests may reach peers that have
    /// not created the group yet).
    pub preferred_ticks: u8,
    /// When each voter last had every committed entry (leader only): the basis of ISR.
    pub caught_up: HashMap<u64, Instant>,
    /// Producers whose batches wait for one this node refused (see `fence`).
    pub fences: Fences,
    /// Numbers of this group's Readies handed to the log writer and not yet reported
    /// written, oldest first.
    in_flight: VecDeque<u64>,
    /// The number of the last Ready taken from raft-rs.
    last_ready: u64,
    /// A snapshot being installed: (number of its Ready, its index). Until the log writer
    /// has ingested it the state machine is the old one, and nothing is applied.
    pub restoring: Option<(u64, u64)>,
}

/// What the driver must do with a Ready that has nothing to persist.
pub(super) enum Finish {
    /// Nothing of the group is in flight: `advance` is truthful, finish it now.
    InPlace,
    /// Earlier writes are still queued: its messages leave once the write with this
    /// number is on disk.
    AfterWrite(u64),
}

impl Group {
    pub fn new(
        node: RawNode<GroupStorage>,
        partition: Option<PartitionMachine>,
        applied: u64,
        preferred_ticks: u8,
    ) -> Self {
        Group {
            node,
            partition,
            proposals: BTreeMap::new(),
            applied,
            preferred_ticks,
            caught_up: HashMap::new(),
            fences: Fences::default(),
            in_flight: VecDeque::new(),
            last_ready: 0,
            restoring: None,
        }
    }

    /// Answers every proposal still waiting with NOT_LEADER, as Kafka completes a deposed
    /// leader's pending produce requests: a leader that stepped down (cut off from its
    /// quorum, or a new term elsewhere) cannot commit them, and a client left waiting for
    /// its request timeout would keep sending to it instead of finding the new leader.
    /// An entry that a new leader commits after all is acknowledged to the retry (the
    /// idempotent producer's sequence makes it a duplicate, answered with its offset).
    /// Starts handing leadership to voter `to` (raft-rs sends it TimeoutNow once it has
    /// every entry). Proposals are refused from now on, naming `to` as the leader to be.
    pub fn hand_over(&mut self, to: u64) {
        self.node.transfer_leader(to);
        if let Some(p) = &self.partition {
            let term = self.node.raft.term as i32;
            let to = self.node.raft.lead_transferee.map(|to| (to, term + 1));
            p.shared.set_transferee(to);
        }
    }

    pub fn fail_proposals(&mut self, round: &mut Round) {
        let now = Instant::now();
        for (_, p) in std::mem::take(&mut self.proposals) {
            if let Some(b) = p.sequenced {
                self.fences.refused(b, now);
            }
            round
                .replies
                .push((p.reply, Err(ProposeError::NotLeader), p.since));
        }
    }

    /// Answers a proposal this node did not write with `error`, fencing its producer: the
    /// producer's later batches, already on their way, must not be written before the
    /// refused one is retried.
    pub fn refuse(&mut self, sequenced: Option<Sequenced>, reply: Reply, error: ProposeError) {
        if let Some(b) = sequenced {
            self.fences.refused(b, Instant::now());
        }
        let _ = reply.send(Err(error));
    }

    /// Records that Ready `number` was taken from raft-rs.
    pub fn took_ready(&mut self, number: u64) {
        self.last_ready = number;
    }

    /// Records that Ready `number` goes to the log writer.
    pub fn writing(&mut self, number: u64) {
        self.in_flight.push_back(number);
    }

    /// How a Ready without anything to persist may be finished.
    pub fn finish_without_write(&self) -> Finish {
        match self.in_flight.back() {
            None => Finish::InPlace,
            Some(&last) => Finish::AfterWrite(last),
        }
    }

    /// The writer stored Ready `number` (and so every earlier one): tells raft-rs, which
    /// then also counts the write-free Readies taken since as persisted once no write of
    /// the group is left in flight.
    pub fn written(&mut self, number: u64) {
        while self.in_flight.front().is_some_and(|n| *n <= number) {
            self.in_flight.pop_front();
        }
        let persisted = if self.in_flight.is_empty() {
            self.last_ready.max(number)
        } else {
            number
        };
        self.node.on_persist_ready(persisted);
    }
}

/// What one round of Ready handling must do once its writes are on disk.
#[derive(Default)]
pub(super) struct Round {
    pub replies: Vec<(Reply, Result<Applied, ProposeError>, Instant)>,
    pub published: std::collections::HashSet<u64>,
    pub effects: Vec<Outcome>,
    /// Snapshots to install ahead of this round's writes.
    pub ingest: Vec<crate::log::snapshot::Received>,
    /// Entries for log files, written ahead of the batch holding their pointers.
    pub files: Vec<crate::storage::FileWrite>,
    /// Groups whose log files a restored snapshot left without a pointer.
    pub collect_files: Vec<crate::storage::log_files::Collect>,
}

pub(super) fn queue_messages(
    outbox: &mut HashMap<u64, Vec<(u64, Message)>>,
    gid: u64,
    messages: Vec<Message>,
) {
    for m in messages {
        outbox.entry(m.to).or_default().push((gid, m));
    }
}

/// Applies a committed membership change to the group and stores its new voters.
fn apply_conf_change(gid: u64, g: &mut Group, e: &Entry, wb: &mut WriteBatch) {
    let result = if e.entry_type == EntryType::EntryConfChange as i32 {
        ConfChange::decode(e.data.as_slice())
            .map_err(|e| e.to_string())
            .and_then(|cc| g.node.apply_conf_change(&cc).map_err(|e| e.to_string()))
    } else {
        ConfChangeV2::decode(e.data.as_slice())
            .map_err(|e| e.to_string())
            .and_then(|cc| g.node.apply_conf_change(&cc).map_err(|e| e.to_string()))
    };
    match result {
        Ok(cs) => {
            tracing::info!(group = gid, voters = ?cs.voters, learners = ?cs.learners, "membership changed");
            g.node.mut_store().stage_conf_state(cs, wb);
        }
        Err(err) => {
            tracing::error!(group = gid, index = e.index, error = %err, "bad membership change")
        }
    }
}

/// Applies committed entries of one group and resolves the proposals waiting on them.
pub(super) fn apply_entries(
    meta: &mut MetadataMachine,
    gid: u64,
    g: &mut Group,
    entries: Vec<Entry>,
    wb: &mut WriteBatch,
    round: &mut Round,
) {
    for e in entries {
        g.applied = e.index;
        let outcome = if e.entry_type != EntryType::EntryNormal as i32 {
            apply_conf_change(gid, g, &e, wb);
            // Membership is stored with the index it was applied at, so that a snapshot
            // read from disk has the two agree.
            match g.partition.as_mut() {
                Some(p) => p.mark_applied(e.index, wb),
                None => meta.mark_applied(e.index, wb),
            }
            None
        } else if let Some(p) = g.partition.as_mut() {
            let out = p.apply(e.index, e.term, &e.data, wb);
            if let Some(AppendOutcome::Appended { .. } | AppendOutcome::Duplicate { .. }) = out {
                if let Some(b) = Sequenced::of(&e.data) {
                    g.fences.committed(b);
                }
            }
            if let Some(AppendOutcome::Appended { .. } | AppendOutcome::LogStartMoved { .. }) = out
            {
                round.published.insert(gid);
            }
            out.map(Applied::Partition)
        } else {
            let out = meta.apply(e.index, &e.data, wb);
            if let Some(o) = &out {
                if matches!(
                    o,
                    Outcome::TopicCreated(..)
                        | Outcome::TopicDeleted(..)
                        | Outcome::OffsetsCommitted(..)
                        | Outcome::BrokerRegistered(..)
                        | Outcome::ClusterId(..)
                        | Outcome::TargetsSet(..)
                        | Outcome::LeavingSet(..)
                ) {
                    round.effects.push(o.clone());
                }
            }
            out.map(Applied::Metadata)
        };
        if g.partition.is_some() && outcome.is_none() {
            round.published.insert(gid);
        }
        // Proposals at or below this index are decided now.
        while let Some(entry) = g.proposals.first_entry() {
            if *entry.key() > e.index {
                break;
            }
            let (index, p) = entry.remove_entry();
            let result = match (&outcome, index == e.index && p.term == e.term) {
                (Some(o), true) => Ok(o.clone()),
                (_, false) => {
                    // Overwritten by another leader's entry: it was never committed.
                    if let Some(b) = p.sequenced {
                        g.fences.refused(b, Instant::now());
                    }
                    Err(ProposeError::NotLeader)
                }
                (None, true) => Err(ProposeError::NotLeader),
            };
            round.replies.push((p.reply, result, p.since));
        }
    }
}
