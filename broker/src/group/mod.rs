//! The consumer group coordinator (classic protocol): membership, generations, rebalances
//! with join and sync barriers, session and rebalance timeouts, and static membership.
//!
//! Groups are spread over the cluster as in Kafka: each hashes to a partition of the
//! internal `__consumer_offsets` topic (see [`records`]), and the leader of that partition
//! coordinates it. Committed offsets are records in that partition, so they replicate
//! with it; a broker that becomes its leader reads them back before it serves the groups
//! ([`ownership`]), answering COORDINATOR_LOAD_IN_PROGRESS meanwhile and NOT_COORDINATOR
//! for groups of partitions it does not lead. Membership is soft state: after a
//! coordinator moves, members rejoin it.

mod checkpoint;
mod offsets;
pub mod ownership;
pub mod records;
mod state;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::config::Settings;
use crate::protocol::errors;
pub use offsets::{Committed, Offsets};
use records::GroupValue;

/// What a coordinator partition's log holds, read by its new leader.
#[derive(Default)]
pub struct Loaded {
    pub offsets: Offsets,
    /// Groups with members, as last recorded.
    pub groups: HashMap<String, GroupValue>,
}
use state::Group;
pub use state::{GroupSummary, JoinResult, MemberSummary};

/// How often session expiry and rebalance deadlines are checked.
const TIMER: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    /// The member's address as Kafka shows it (`/10.0.0.7`).
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+ first hands out a member id and asks the client to come back with it.
    pub require_known_member_id: bool,
}

/// Whether this broker serves the groups of a coordinator partition it leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Reading the partition's log (leader epoch).
    Loading(i32),
    /// Serving its groups (leader epoch).
    Loaded(i32),
}

#[derive(Default)]
struct State {
    /// Partitions of the offsets topic; 0 until it exists.
    partitions: usize,
    owned: HashMap<i32, Ownership>,
    groups: HashMap<String, Group>,
    offsets: Offsets,
}

impl State {
    /// The coordinator partition of `group`, if this broker serves it now.
    fn serving(&self, group: &str) -> Result<i32, i16> {
        if self.partitions == 0 {
            return Err(errors::COORDINATOR_NOT_AVAILABLE);
        }
        let p = records::partition_for(group, self.partitions);
        match self.owned.get(&p) {
            Some(Ownership::Loaded(_)) => Ok(p),
            Some(Ownership::Loading(_)) => Err(errors::COORDINATOR_LOAD_IN_PROGRESS),
            None => Err(errors::NOT_COORDINATOR),
        }
    }
}

#[derive(Clone)]
pub struct Coordinator {
    state: Arc<Mutex<State>>,
    /// Whether this broker is making the offsets topic (see
    /// `protocol::create_topics::ensure_offsets_topic`).
    pub creating_topic: Arc<AtomicBool>,
    initial_delay: Duration,
    min_session: Duration,
    max_session: Duration,
}

impl Coordinator {
    pub fn new(settings: &Settings) -> Self {
        let c = Coordinator {
            state: Arc::default(),
            creating_topic: Arc::default(),
            initial_delay: Duration::from_millis(settings.group_initial_rebalance_delay_ms),
            min_session: Duration::from_millis(settings.group_min_session_timeout_ms.max(0) as u64),
            max_session: Duration::from_millis(settings.group_max_session_timeout_ms.max(0) as u64),
        };
        let timer = c.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(TIMER);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                timer.on_timer();
            }
        });
        c
    }

    fn on_timer(&self) {
        let mut state = self.state.lock().unwrap();
        for g in state.groups.values_mut() {
            g.on_timer();
        }
        state.groups.retain(|_, g| !g.is_removable());
    }

    pub async fn join(&self, req: JoinRequest) -> JoinResult {
        if req.group_id.is_empty() {
            return JoinResult::error(errors::INVALID_GROUP_ID, &req.member_id);
        }
        if req.session_timeout < self.min_session || req.session_timeout > self.max_session {
            return JoinResult::error(errors::INVALID_SESSION_TIMEOUT, &req.member_id);
        }
        if req.protocols.is_empty() || req.protocol_type.is_empty() {
            return JoinResult::error(errors::INCONSISTENT_GROUP_PROTOCOL, &req.member_id);
        }
        let wait = req.rebalance_timeout.max(req.session_timeout) + Duration::from_secs(5);
        let member_id = req.member_id.clone();
        let rx: oneshot::Receiver<JoinResult> = {
            let mut state = self.state.lock().unwrap();
            if let Err(code) = state.serving(&req.group_id) {
                return JoinResult::error(code, &member_id);
            }
            let group = state
                .groups
                .entry(req.group_id.clone())
                .or_insert_with(|| Group::new(&req.group_id, self.initial_delay));
            match group.join(req) {
                Ok(rx) => rx,
                Err(result) => return *result,
            }
        };
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(result)) => result,
            // The group went with its partition's leadership.
            Ok(Err(_)) => JoinResult::error(errors::NOT_COORDINATOR, &member_id),
            Err(_) => JoinResult::error(errors::REBALANCE_IN_PROGRESS, &member_id),
        }
    }

    pub async fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> (i16, Bytes, Option<String>) {
        let rx = {
            let mut state = self.state.lock().unwrap();
            if let Err(code) = state.serving(group_id) {
                return (code, Bytes::new(), None);
            }
            let Some(group) = state.groups.get_mut(group_id) else {
                return (errors::UNKNOWN_MEMBER_ID, Bytes::new(), None);
            };
            match group.sync(member_id, generation, assignments) {
                Ok(rx) => rx,
                Err(e) => return e,
            }
        };
        match tokio::time::timeout(Duration::from_secs(300), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => (errors::NOT_COORDINATOR, Bytes::new(), None),
            Err(_) => (errors::REBALANCE_IN_PROGRESS, Bytes::new(), None),
        }
    }

    pub fn heartbeat(&self, group_id: &str, member_id: &str, generation: i32) -> i16 {
        let mut state = self.state.lock().unwrap();
        if let Err(code) = state.serving(group_id) {
            return code;
        }
        match state.groups.get_mut(group_id) {
            Some(g) => g.heartbeat(member_id, generation),
            None => errors::UNKNOWN_MEMBER_ID,
        }
    }

    /// Removes members (by member id, or by instance id for static members).
    pub fn leave(&self, group_id: &str, members: &[(String, Option<String>)]) -> (i16, Vec<i16>) {
        let mut state = self.state.lock().unwrap();
        if let Err(code) = state.serving(group_id) {
            return (code, vec![code; members.len()]);
        }
        let Some(g) = state.groups.get_mut(group_id) else {
            return (
                errors::UNKNOWN_MEMBER_ID,
                vec![errors::UNKNOWN_MEMBER_ID; members.len()],
            );
        };
        let codes: Vec<i16> = members
            .iter()
            .map(|(id, instance)| g.leave(id, instance.as_deref()))
            .collect();
        let top = if codes.iter().all(|c| *c == errors::NONE) {
            errors::NONE
        } else {
            codes[0]
        };
        (top, codes)
    }

    /// Checks an offset commit against the group's membership (generation -1 means the
    /// committer does not use group management; a group unknown here takes such commits)
    /// and answers the coordinator partition to write it to.
    pub fn validate_commit(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<i32, i16> {
        let state = self.state.lock().unwrap();
        let partition = state.serving(group_id)?;
        let code = match state.groups.get(group_id) {
            Some(g) => g.validate_commit(member_id, generation),
            None if generation < 0 => errors::NONE,
            None => errors::ILLEGAL_GENERATION,
        };
        match code {
            errors::NONE => Ok(partition),
            code => Err(code),
        }
    }

    /// Records offsets once their commit record is applied at `position..`.
    pub fn offsets_committed(&self, group_id: &str, offsets: Vec<(String, i32, Committed)>) {
        let mut state = self.state.lock().unwrap();
        // Only while the partition is still served here: a reload has read them anyway.
        if state.serving(group_id).is_err() {
            return;
        }
        for (topic, partition, c) in offsets {
            state.offsets.record(group_id, &topic, partition, c);
        }
    }

    /// The committed offset of one partition for `group_id`.
    pub fn committed(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<Committed>, i16> {
        let state = self.state.lock().unwrap();
        state.serving(group_id)?;
        Ok(state.offsets.get(group_id, topic, partition).cloned())
    }

    /// Every committed offset of `group_id`, as (topic, partition, offset).
    pub fn group_offsets(&self, group_id: &str) -> Result<Vec<(String, i32, Committed)>, i16> {
        let state = self.state.lock().unwrap();
        state.serving(group_id)?;
        Ok(state.offsets.of_group(group_id))
    }

    /// The group as DescribeGroups shows it: `Ok(None)` when it has no members (the
    /// caller tells Empty, with offsets, from Dead).
    pub fn describe(&self, group_id: &str) -> Result<(Option<GroupSummary>, bool), i16> {
        let state = self.state.lock().unwrap();
        state.serving(group_id)?;
        Ok((
            state.groups.get(group_id).map(Group::summary),
            state.offsets.has_group(group_id),
        ))
    }

    /// Every group this broker coordinates: with members, or known by offsets only
    /// (reported as Empty consumer groups, as Kafka does).
    pub fn list(&self) -> Vec<GroupSummary> {
        let state = self.state.lock().unwrap();
        let mut out: HashMap<String, GroupSummary> = state
            .offsets
            .groups()
            .filter(|g| state.serving(g).is_ok())
            .map(|g| {
                let empty = GroupSummary {
                    group_id: g.clone(),
                    state: "Empty",
                    protocol_type: "consumer".into(),
                    protocol: String::new(),
                    members: vec![],
                };
                (g.clone(), empty)
            })
            .collect();
        for (id, g) in &state.groups {
            if state.serving(id).is_ok() {
                out.insert(id.clone(), g.summary());
            }
        }
        let mut out: Vec<GroupSummary> = out.into_values().collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    /// The offsets topic's partition count, once it exists.
    pub fn set_partitions(&self, partitions: usize) {
        self.state.lock().unwrap().partitions = partitions;
    }

    /// The offsets topic's partition count (0 before it exists).
    pub fn partitions(&self) -> usize {
        self.state.lock().unwrap().partitions
    }

    pub fn ownership(&self, partition: i32) -> Option<Ownership> {
        self.state.lock().unwrap().owned.get(&partition).copied()
    }

    /// Starts serving `partition` (as leader at `epoch`): its groups are refused with
    /// COORDINATOR_LOAD_IN_PROGRESS until [`Coordinator::finish_load`].
    pub fn begin_load(&self, partition: i32, epoch: i32) {
        self.unload(partition);
        let mut state = self.state.lock().unwrap();
        state.owned.insert(partition, Ownership::Loading(epoch));
    }

    /// Serves the groups of `partition` with the offsets and memberships read from its
    /// log, unless leadership moved on while they were read.
    pub fn finish_load(&self, partition: i32, epoch: i32, loaded: Loaded) -> bool {
        let mut state = self.state.lock().unwrap();
        if state.owned.get(&partition) != Some(&Ownership::Loading(epoch)) {
            return false;
        }
        state.offsets.absorb(loaded.offsets);
        for (id, value) in loaded.groups {
            let group = Group::restore(&id, self.initial_delay, value);
            state.groups.insert(id, group);
        }
        state.owned.insert(partition, Ownership::Loaded(epoch));
        true
    }

    /// Stops serving `partition`: its groups' waiting members are told NOT_COORDINATOR
    /// (they find the new coordinator and rejoin there).
    pub fn unload(&self, partition: i32) {
        let mut state = self.state.lock().unwrap();
        if state.owned.remove(&partition).is_none() {
            return;
        }
        let n = state.partitions;
        let mine = |g: &str| records::partition_for(g, n) == partition;
        let leaving: Vec<String> = state.groups.keys().filter(|g| mine(g)).cloned().collect();
        for id in leaving {
            if let Some(g) = state.groups.remove(&id) {
                g.abandon();
            }
        }
        state.offsets.forget(mine);
    }

    /// Group changes to record in the coordinator partitions, as (partition, group,
    /// change number, membership or None for an emptied group).
    pub fn records_due(&self) -> Vec<(i32, String, u64, Option<GroupValue>)> {
        let mut state = self.state.lock().unwrap();
        let n = state.partitions;
        let loaded: std::collections::HashSet<i32> = state
            .owned
            .iter()
            .filter(|(_, o)| matches!(o, Ownership::Loaded(_)))
            .map(|(p, _)| *p)
            .collect();
        let mut due = Vec::new();
        for (id, g) in state.groups.iter_mut() {
            let p = records::partition_for(id, n);
            if !loaded.contains(&p) {
                continue;
            }
            if let Some((change, value)) = g.take_record() {
                due.push((p, id.clone(), change, value));
            }
        }
        due
    }

    /// The write of a group's change number `change` ended (`ok`: committed).
    pub fn group_recorded(&self, group_id: &str, change: u64, ok: bool) {
        if let Some(g) = self.state.lock().unwrap().groups.get_mut(group_id) {
            g.recorded(change, ok);
        }
    }
}
