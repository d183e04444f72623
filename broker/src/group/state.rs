//! One consumer group's state machine, as in Kafka's classic GroupCoordinator:
//! Empty -> PreparingRebalance -> CompletingRebalance -> Stable, and back on changes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::records::{GroupValue, MemberValue};
use super::JoinRequest;
use crate::protocol::errors;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::PreparingRebalance => "PreparingRebalance",
            Phase::CompletingRebalance => "CompletingRebalance",
            Phase::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error_code: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// The leader need not compute an assignment (a static leader rejoining a stable group).
    pub skip_assignment: bool,
}

impl JoinResult {
    pub fn error(code: i16, member_id: &str) -> Self {
        JoinResult {
            error_code: code,
            generation: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

pub type SyncResult = (i16, Bytes, Option<String>);

#[derive(Debug, Clone)]
pub struct MemberSummary {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct GroupSummary {
    pub group_id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberSummary>,
}

struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
}

impl Member {
    /// The member's metadata (its subscription) for `protocol`.
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    }
}

pub struct Group {
    id: String,
    phase: Phase,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED and not yet used.
    pending_members: HashSet<String>,
    joins: HashMap<String, oneshot::Sender<JoinResult>>,
    syncs: HashMap<String, oneshot::Sender<SyncResult>>,
    rebalance_deadline: Instant,
    initial_delay: Duration,
    /// Counts changes worth recording in the coordinator partition (a new stable
    /// generation, a static member's new id, the group emptied); `recorded` is the last
    /// count written there and `recording` the one being written.
    changes: u64,
    recorded: u64,
    recording: Option<u64>,
}

impl Group {
    pub fn new(id: &str, initial_delay: Duration) -> Self {
        Group {
            id: id.to_string(),
            phase: Phase::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending_members: HashSet::new(),
            joins: HashMap::new(),
            syncs: HashMap::new(),
            rebalance_deadline: Instant::now(),
            initial_delay,
            changes: 0,
            recorded: 0,
            recording: None,
        }
    }

    /// The group as its coordinator partition recorded it: stable at its generation, with
    /// its members' sessions starting now (as Kafka's coordinator does after a load).
    pub fn restore(id: &str, initial_delay: Duration, v: GroupValue) -> Self {
        let mut g = Group::new(id, initial_delay);
        let now = Instant::now();
        g.generation = v.generation;
        g.protocol_type = Some(v.protocol_type);
        g.leader = Some(v.leader);
        for m in v.members {
            let member = Member {
                instance_id: m.instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout: Duration::from_millis(m.session_timeout_ms),
                rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms),
                protocols: vec![(v.protocol.clone(), m.subscription)],
                assignment: m.assignment,
                last_seen: now,
            };
            g.members.insert(m.member_id, member);
        }
        g.protocol = Some(v.protocol);
        g.phase = if g.members.is_empty() {
            Phase::Empty
        } else {
            Phase::Stable
        };
        g
    }

    fn changed(&mut self) {
        self.changes += 1;
    }

    /// What to record for the group, if it changed since last recorded and is at rest
    /// (stable, or empty: `Some(None)` then, which deletes the record); with the change
    /// count to hand back to [`Group::recorded`].
    pub fn take_record(&mut self) -> Option<(u64, Option<GroupValue>)> {
        if self.changes == self.recorded || self.recording == Some(self.changes) {
            return None;
        }
        let value = match self.phase {
            Phase::Empty => None,
            Phase::Stable => Some(self.value()),
            _ => return None,
        };
        self.recording = Some(self.changes);
        Some((self.changes, value))
    }

    /// The write of change `n` ended (`ok`: it is in the log).
    pub fn recorded(&mut self, n: u64, ok: bool) {
        if self.recording == Some(n) {
            self.recording = None;
        }
        if ok {
            self.recorded = self.recorded.max(n);
        }
    }

    fn value(&self) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            leader: self.leader.clone().unwrap_or_default(),
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberValue {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as u64,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            protocol,
        }
    }

    /// This broker no longer coordinates the group: members waiting at a barrier are told
    /// so, and find the new coordinator.
    pub fn abandon(mut self) {
        for (id, tx) in self.joins.drain() {
            let _ = tx.send(JoinResult::error(errors::NOT_COORDINATOR, &id));
        }
        for (_, tx) in self.syncs.drain() {
            let _ = tx.send((errors::NOT_COORDINATOR, Bytes::new(), None));
        }
    }

    /// Gone from memory once empty and recorded as such (an unrecorded empty group would
    /// come back with its old members at the next coordinator).
    pub fn is_removable(&self) -> bool {
        self.phase == Phase::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
            && self.changes == self.recorded
    }

    /// Either a receiver for the result at the end of the join barrier, or an immediate
    /// answer (an error, or a static member's rejoin that needs no rebalance).
    pub fn join(
        &mut self,
        req: JoinRequest,
    ) -> Result<oneshot::Receiver<JoinResult>, Box<JoinResult>> {
        if let Some(t) = &self.protocol_type {
            if !self.members.is_empty() && *t != req.protocol_type {
                return Err(Box::new(JoinResult::error(
                    errors::INCONSISTENT_GROUP_PROTOCOL,
                    &req.member_id,
                )));
            }
        }
        if !self.members.is_empty() && !self.shares_a_protocol(&req.protocols) {
            return Err(Box::new(JoinResult::error(
                errors::INCONSISTENT_GROUP_PROTOCOL,
                &req.member_id,
            )));
        }
        let mut member_id = req.member_id.clone();
        if member_id.is_empty() {
            if let Some(instance) = &req.instance_id {
                if let Some(result) = self.rejoin_static(instance, &req) {
                    return result;
                }
            }
            member_id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
            if req.require_known_member_id && req.instance_id.is_none() {
                self.pending_members.insert(member_id.clone());
                return Err(Box::new(JoinResult::error(
                    errors::MEMBER_ID_REQUIRED,
                    &member_id,
                )));
            }
        } else if !self.members.contains_key(&member_id) && !self.pending_members.remove(&member_id)
        {
            return Err(Box::new(JoinResult::error(
                errors::UNKNOWN_MEMBER_ID,
                &member_id,
            )));
        }
        if let Some(instance) = &req.instance_id {
            // A newer incarnation of a static member fences the old one.
            let old: Vec<String> = self
                .members
                .iter()
                .filter(|(id, m)| m.instance_id.as_ref() == Some(instance) && **id != member_id)
                .map(|(id, _)| id.clone())
                .collect();
            for id in old {
                self.remove_member(&id, errors::FENCED_INSTANCE_ID);
            }
        }
        self.protocol_type = Some(req.protocol_type.clone());
        let member = self
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                instance_id: req.instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: vec![],
                assignment: Bytes::new(),
                last_seen: Instant::now(),
            });
        member.protocols = req.protocols;
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.last_seen = Instant::now();
        let (tx, rx) = oneshot::channel();
        if let Some(previous) = self.joins.insert(member_id.clone(), tx) {
            let _ = previous.send(JoinResult::error(errors::UNKNOWN_MEMBER_ID, &member_id));
        }
        if self.phase != Phase::PreparingRebalance {
            self.prepare_rebalance();
        }
        self.maybe_complete_join(false);
        Ok(rx)
    }

    /// A static member coming back with a new process: swap its member id in without a
    /// rebalance when the group is stable (KIP-345). A returning leader gets the member
    /// list with `skip_assignment`, and SyncGroup hands everyone their current assignment.
    fn rejoin_static(
        &mut self,
        instance: &str,
        req: &JoinRequest,
    ) -> Option<Result<oneshot::Receiver<JoinResult>, Box<JoinResult>>> {
        let old_id = self
            .members
            .iter()
            .find(|(_, m)| m.instance_id.as_deref() == Some(instance))
            .map(|(id, _)| id.clone())?;
        if self.phase != Phase::Stable {
            return None;
        }
        let protocol = self.protocol.clone().unwrap_or_default();
        if !req.protocols.iter().any(|(name, _)| *name == protocol) {
            return None; // it can no longer run the group's protocol: rebalance
        }
        let mut member = self.members.remove(&old_id)?;
        let new_id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
        member.last_seen = Instant::now();
        member.protocols = req.protocols.clone();
        member.client_host = req.client_host.clone();
        self.members.insert(new_id.clone(), member);
        let is_leader = self.leader.as_ref() == Some(&old_id);
        if is_leader {
            self.leader = Some(new_id.clone());
        }
        self.changed();
        tracing::info!(group = %self.id, instance, member = %new_id, "static member rejoined");
        Some(Err(Box::new(JoinResult {
            error_code: errors::NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: Some(protocol.clone()),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: new_id,
            members: if is_leader {
                self.roster(&protocol)
            } else {
                vec![]
            },
            skip_assignment: is_leader,
        })))
    }

    fn shares_a_protocol(&self, protocols: &[(String, Bytes)]) -> bool {
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    fn prepare_rebalance(&mut self) {
        let was_empty = self.phase == Phase::Empty;
        self.phase = Phase::PreparingRebalance;
        for (id, tx) in self.syncs.drain() {
            let _ = tx.send((errors::REBALANCE_IN_PROGRESS, Bytes::new(), None));
            let _ = id;
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        let wait = if was_empty {
            self.initial_delay.min(timeout)
        } else {
            timeout
        };
        self.rebalance_deadline = Instant::now() + wait;
    }

    /// Completes the join barrier when every member has rejoined, or at the deadline
    /// (dropping the members that did not).
    fn maybe_complete_join(&mut self, deadline_passed: bool) {
        if self.phase != Phase::PreparingRebalance {
            return;
        }
        let all_joined = self.members.keys().all(|id| self.joins.contains_key(id));
        let waiting_initial = self.generation == 0 && Instant::now() < self.rebalance_deadline;
        if !(deadline_passed || (all_joined && !waiting_initial)) {
            return;
        }
        let missing: Vec<String> = self
            .members
            .keys()
            .filter(|id| !self.joins.contains_key(*id))
            .cloned()
            .collect();
        for id in missing {
            self.members.remove(&id);
        }
        self.generation += 1;
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            self.leader = None;
            self.protocol = None;
            self.changed();
            return;
        }
        self.phase = Phase::CompletingRebalance;
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.members[&leader]
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .find(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            });
        self.protocol = protocol.clone();
        let protocol = protocol.unwrap_or_default();
        let roster = self.roster(&protocol);
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            m.last_seen = Instant::now();
        }
        for (id, tx) in self.joins.drain() {
            let _ = tx.send(JoinResult {
                error_code: errors::NONE,
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol_name: Some(protocol.clone()),
                leader: leader.clone(),
                members: if id == leader { roster.clone() } else { vec![] },
                member_id: id,
                skip_assignment: false,
            });
        }
        tracing::info!(group = %self.id, generation = self.generation, members = self.members.len(), "rebalance completed");
    }

    /// Every member with its metadata for `protocol`, as the leader receives it.
    fn roster(&self, protocol: &str) -> Vec<(String, Option<String>, Bytes)> {
        self.members
            .iter()
            .map(|(id, m)| (id.clone(), m.instance_id.clone(), m.metadata_for(protocol)))
            .collect()
    }

    pub fn sync(
        &mut self,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<oneshot::Receiver<SyncResult>, SyncResult> {
        let err = |code| Err((code, Bytes::new(), None));
        let Some(member) = self.members.get_mut(member_id) else {
            return err(errors::UNKNOWN_MEMBER_ID);
        };
        member.last_seen = Instant::now();
        if generation != self.generation {
            return err(errors::ILLEGAL_GENERATION);
        }
        let (tx, rx) = oneshot::channel();
        match self.phase {
            Phase::Empty | Phase::PreparingRebalance => return err(errors::REBALANCE_IN_PROGRESS),
            Phase::Stable => {
                let _ = tx.send((
                    errors::NONE,
                    member.assignment.clone(),
                    self.protocol.clone(),
                ));
            }
            Phase::CompletingRebalance => {
                self.syncs.insert(member_id.to_string(), tx);
                if self.leader.as_deref() == Some(member_id) {
                    let mut assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for (id, m) in self.members.iter_mut() {
                        m.assignment = assignments.remove(id).unwrap_or_default();
                    }
                    self.phase = Phase::Stable;
                    self.changed();
                    for (id, tx) in self.syncs.drain() {
                        let a = self
                            .members
                            .get(&id)
                            .map(|m| m.assignment.clone())
                            .unwrap_or_default();
                        let _ = tx.send((errors::NONE, a, self.protocol.clone()));
                    }
                }
            }
        }
        Ok(rx)
    }

    pub fn heartbeat(&mut self, member_id: &str, generation: i32) -> i16 {
        let Some(member) = self.members.get_mut(member_id) else {
            return errors::UNKNOWN_MEMBER_ID;
        };
        member.last_seen = Instant::now();
        match self.phase {
            Phase::PreparingRebalance => errors::REBALANCE_IN_PROGRESS,
            _ if generation != self.generation => errors::ILLEGAL_GENERATION,
            _ => errors::NONE,
        }
    }

    pub fn leave(&mut self, member_id: &str, instance_id: Option<&str>) -> i16 {
        let id = match instance_id {
            Some(instance) => self
                .members
                .iter()
                .find(|(_, m)| m.instance_id.as_deref() == Some(instance))
                .map(|(id, _)| id.clone()),
            None => self
                .members
                .contains_key(member_id)
                .then(|| member_id.to_string()),
        };
        match id {
            Some(id) => {
                self.remove_member(&id, errors::UNKNOWN_MEMBER_ID);
                errors::NONE
            }
            None => errors::UNKNOWN_MEMBER_ID,
        }
    }

    /// Kafka's rules for a classic group's offset commit: without a generation (an admin
    /// client, or a consumer that assigns itself partitions) only an empty group takes
    /// commits; a member must name the current generation; and commits are refused only
    /// while the members wait for their new assignments (CompletingRebalance). During
    /// PreparingRebalance they are accepted: that is when consumers commit what they
    /// processed, in their revoke callbacks, before giving partitions up.
    pub fn validate_commit(&self, member_id: &str, generation: i32) -> i16 {
        if generation < 0 && self.phase == Phase::Empty {
            return errors::NONE;
        }
        // (Without a member id, as an admin client commits, no member matches.)
        if !self.members.contains_key(member_id) {
            return errors::UNKNOWN_MEMBER_ID;
        }
        if generation != self.generation {
            return errors::ILLEGAL_GENERATION;
        }
        if self.phase == Phase::CompletingRebalance {
            return errors::REBALANCE_IN_PROGRESS;
        }
        errors::NONE
    }

    fn remove_member(&mut self, id: &str, code: i16) {
        self.members.remove(id);
        if let Some(tx) = self.joins.remove(id) {
            let _ = tx.send(JoinResult::error(code, id));
        }
        if let Some(tx) = self.syncs.remove(id) {
            let _ = tx.send((code, Bytes::new(), None));
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        match self.phase {
            Phase::PreparingRebalance => self.maybe_complete_join(false),
            _ if self.members.is_empty() => {
                self.phase = Phase::Empty;
                self.generation += 1;
                self.protocol = None;
                self.changed();
            }
            _ => self.prepare_rebalance(),
        }
    }

    pub fn on_timer(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(id, m)| {
                !self.joins.contains_key(*id) && now > m.last_seen + m.session_timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "session expired");
            self.remove_member(&id, errors::UNKNOWN_MEMBER_ID);
        }
        if self.phase == Phase::PreparingRebalance {
            self.maybe_complete_join(now >= self.rebalance_deadline);
        }
    }

    pub fn summary(&self) -> GroupSummary {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupSummary {
            group_id: self.id.clone(),
            state: self.phase.name(),
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberSummary {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}
