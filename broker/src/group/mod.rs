//! The consumer group coordinator (classic protocol): membership, generations, rebalances
//! with join and sync barriers, session and rebalance timeouts, and static membership.
//!
//! Membership is soft state, as in Kafka it is rebuilt when members rejoin; committed
//! offsets are the durable part and go through Raft (see `protocol::offset_commit`).

mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::config::Settings;
use crate::protocol::errors;
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

#[derive(Clone)]
pub struct Coordinator {
    groups: Arc<Mutex<HashMap<String, Group>>>,
    initial_delay: Duration,
    min_session: Duration,
    max_session: Duration,
}

impl Coordinator {
    pub fn new(settings: &Settings) -> Self {
        let c = Coordinator {
            groups: Arc::default(),
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
        let mut groups = self.groups.lock().unwrap();
        for g in groups.values_mut() {
            g.on_timer();
        }
        groups.retain(|_, g| !g.is_removable());
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
            let mut groups = self.groups.lock().unwrap();
            let group = groups
                .entry(req.group_id.clone())
                .or_insert_with(|| Group::new(&req.group_id, self.initial_delay));
            match group.join(req) {
                Ok(rx) => rx,
                Err(result) => return *result,
            }
        };
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(result)) => result,
            _ => JoinResult::error(errors::REBALANCE_IN_PROGRESS, &member_id),
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
            let mut groups = self.groups.lock().unwrap();
            let Some(group) = groups.get_mut(group_id) else {
                return (errors::UNKNOWN_MEMBER_ID, Bytes::new(), None);
            };
            match group.sync(member_id, generation, assignments) {
                Ok(rx) => rx,
                Err(e) => return e,
            }
        };
        match tokio::time::timeout(Duration::from_secs(300), rx).await {
            Ok(Ok(r)) => r,
            _ => (errors::REBALANCE_IN_PROGRESS, Bytes::new(), None),
        }
    }

    pub fn heartbeat(&self, group_id: &str, member_id: &str, generation: i32) -> i16 {
        let mut groups = self.groups.lock().unwrap();
        match groups.get_mut(group_id) {
            Some(g) => g.heartbeat(member_id, generation),
            None => errors::UNKNOWN_MEMBER_ID,
        }
    }

    /// Removes members (by member id, or by instance id for static members).
    pub fn leave(&self, group_id: &str, members: &[(String, Option<String>)]) -> (i16, Vec<i16>) {
        let mut groups = self.groups.lock().unwrap();
        let Some(g) = groups.get_mut(group_id) else {
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
    /// committer does not use group management; a group unknown here takes such commits).
    pub fn validate_commit(&self, group_id: &str, member_id: &str, generation: i32) -> i16 {
        let groups = self.groups.lock().unwrap();
        match groups.get(group_id) {
            Some(g) => g.validate_commit(member_id, generation),
            None if generation < 0 => errors::NONE,
            None => errors::ILLEGAL_GENERATION,
        }
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupSummary> {
        self.groups
            .lock()
            .unwrap()
            .get(group_id)
            .map(Group::summary)
    }

    pub fn list(&self) -> Vec<GroupSummary> {
        self.groups
            .lock()
            .unwrap()
            .values()
            .map(Group::summary)
            .collect()
    }
}
