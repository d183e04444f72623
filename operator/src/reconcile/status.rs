//! The status the operator reports, derived from what it observed (StatefulSet, pods, the
//! brokers' admin API) and what this reconcile did (scaling, the roll). Pure functions,
//! tested without I/O; condition transition times only move when a condition changes.

use k8s_openapi::api::apps::v1::StatefulSetStatus;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::Roll;
use crate::admin;
use crate::crd::{BrokerStatus, ChronikCluster, ChronikClusterStatus, OperationOutcome, Phase};
use crate::resources::{self, SpecError, CONTAINER_NAME, POD_INDEX_LABEL};
use crate::scaling;

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const DEGRADED: &str = "Degraded";
pub const UPGRADING: &str = "Upgrading";
pub const REBALANCING: &str = "Rebalancing";

/// Replaces the condition of the same type.
pub fn set_condition(conditions: &mut Vec<Condition>, c: Condition) {
    match conditions.iter_mut().find(|old| old.type_ == c.type_) {
        Some(old) => *old = c,
        None => conditions.push(c),
    }
}

/// Sets one condition on `status`, keeping its transition time from the cluster's stored
/// status while its value is unchanged.
fn update_condition(
    cluster: &ChronikCluster,
    status: &mut ChronikClusterStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: String,
    now: &Time,
) {
    let previous = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let c = condition(
        previous,
        type_,
        value,
        reason,
        message,
        cluster.metadata.generation,
        now,
    );
    set_condition(&mut status.conditions, c);
}

/// Folds what the admin API said (or why it could not be asked) into the status and its
/// Degraded condition. Pure, for the unit tests.
pub fn apply_admin_answer(
    cluster: &ChronikCluster,
    status: &mut ChronikClusterStatus,
    answer: Option<Result<chronik_api::admin::v1::ClusterStatusResponse, String>>,
    now: &Time,
) {
    let (degraded, reason, message) = match answer {
        None => (false, "AsExpected", String::new()),
        Some(Err(e)) => (
            true,
            "AdminApiUnreachable",
            format!("no ready broker answered ClusterStatus: {e}"),
        ),
        Some(Ok(cs)) => {
            admin::apply_cluster_status(status, &cs);
            let p = status.partitions.clone().unwrap_or_default();
            if p.offline > 0 || p.leaderless > 0 {
                (
                    true,
                    "PartitionsOffline",
                    format!(
                        "{} partitions have no leader, {} no in-sync replica",
                        p.leaderless, p.offline
                    ),
                )
            } else if p.under_replicated > 0 {
                (
                    true,
                    "UnderReplicated",
                    format!(
                        "{} of {} partitions are under-replicated",
                        p.under_replicated, p.total
                    ),
                )
            } else {
                (false, "AsExpected", String::new())
            }
        }
    };
    update_condition(cluster, status, DEGRADED, degraded, reason, message, now);
}

pub(super) fn now() -> Time {
    // Whole seconds, as Kubernetes itself stores timestamps.
    let ts = Timestamp::now();
    Time(Timestamp::from_second(ts.as_second()).unwrap_or(ts))
}

/// A condition with `lastTransitionTime` kept from `previous` when its status is unchanged.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// One entry per broker pod, by node id.
pub fn broker_statuses(pods: &[Pod]) -> Vec<BrokerStatus> {
    let mut brokers: Vec<BrokerStatus> = pods
        .iter()
        .filter_map(|pod| {
            let name = pod.metadata.name.clone()?;
            let id = pod
                .labels()
                .get(POD_INDEX_LABEL)
                .and_then(|v| v.parse().ok())
                .or_else(|| name.rsplit('-').next()?.parse().ok())?;
            let image = pod.spec.as_ref().and_then(|s| {
                s.containers
                    .iter()
                    .find(|c| c.name == CONTAINER_NAME)
                    .and_then(|c| c.image.clone())
            });
            Some(BrokerStatus {
                id,
                pod: name,
                ready: pod_ready(pod),
                image,
                leaders: None,
                replicas: None,
                metadata: None,
            })
        })
        .collect();
    brokers.sort_by_key(|b| b.id);
    brokers
}

/// The status of a cluster whose objects are applied, from the StatefulSet's status and the
/// broker pods. Pure: `previous` supplies the condition transition times to keep.
pub fn observed_status(
    cluster: &ChronikCluster,
    sts: Option<&StatefulSetStatus>,
    pods: &[Pod],
    now: &Time,
) -> ChronikClusterStatus {
    let previous = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = cluster.metadata.generation;
    let want = cluster.spec.replicas;
    let ready = sts.and_then(|s| s.ready_replicas).unwrap_or(0);
    let replicas = sts.map(|s| s.replicas).unwrap_or(0);
    let brokers = broker_statuses(pods);
    let current_image = match brokers.first().and_then(|b| b.image.clone()) {
        Some(image) if brokers.iter().all(|b| b.image.as_ref() == Some(&image)) => Some(image),
        _ => None,
    };

    let all_ready = ready >= want;
    let phase = if all_ready {
        Phase::Running
    } else if ready == 0 {
        Phase::Pending
    } else {
        Phase::Reconciling
    };
    let conditions = vec![
        if all_ready {
            condition(
                previous,
                READY,
                true,
                "AllBrokersReady",
                format!("{ready}/{want} brokers ready"),
                generation,
                now,
            )
        } else {
            condition(
                previous,
                READY,
                false,
                "BrokersNotReady",
                format!("{ready}/{want} brokers ready"),
                generation,
                now,
            )
        },
        if all_ready {
            condition(
                previous,
                RECONCILING,
                false,
                "Reconciled",
                "objects applied and every broker ready".into(),
                generation,
                now,
            )
        } else {
            condition(
                previous,
                RECONCILING,
                true,
                "WaitingForBrokers",
                format!(
                    "objects applied; waiting for {} of {want} brokers to become ready",
                    want - ready
                ),
                generation,
                now,
            )
        },
        condition(
            previous,
            DEGRADED,
            false,
            "AsExpected",
            String::new(),
            generation,
            now,
        ),
    ];
    ChronikClusterStatus {
        observed_generation: generation,
        phase: Some(phase),
        conditions,
        replicas,
        ready_replicas: ready,
        selector: Some(resources::selector_string(cluster)),
        current_image,
        target_image: Some(cluster.spec.image.clone()),
        brokers,
        // Partition health is filled in from the admin API by the caller; the outcomes of
        // rebalances and upgrades are carried over.
        ..carried_over(cluster)
    }
}

/// The status of a cluster whose spec cannot be applied: nothing is changed, the reason is
/// in the Ready and Degraded conditions.
pub fn invalid_spec_status(
    cluster: &ChronikCluster,
    error: &SpecError,
    now: &Time,
) -> ChronikClusterStatus {
    let old = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    let message = error.to_string();
    ChronikClusterStatus {
        observed_generation: generation,
        phase: Some(Phase::Failed),
        conditions: vec![
            condition(
                &old.conditions,
                READY,
                false,
                "InvalidSpec",
                message.clone(),
                generation,
                now,
            ),
            condition(
                &old.conditions,
                RECONCILING,
                false,
                "InvalidSpec",
                "fix the spec to continue".into(),
                generation,
                now,
            ),
            condition(
                &old.conditions,
                DEGRADED,
                true,
                "InvalidSpec",
                message,
                generation,
                now,
            ),
        ],
        selector: Some(resources::selector_string(cluster)),
        target_image: Some(cluster.spec.image.clone()),
        ..old
    }
}

fn carried_over(cluster: &ChronikCluster) -> ChronikClusterStatus {
    let old = cluster.status.clone().unwrap_or_default();
    ChronikClusterStatus {
        partitions: old.partitions,
        partition_details: old.partition_details,
        last_rebalance: old.last_rebalance,
        last_upgrade: old.last_upgrade,
        ..ChronikClusterStatus::default()
    }
}

/// Folds the roll into the status: the Upgrading condition, Degraded when it stalled, the
/// phase, and the last upgrade's outcome. Pure, for the unit tests.
pub fn apply_roll(
    cluster: &ChronikCluster,
    status: &mut ChronikClusterStatus,
    roll: &Roll,
    now: &Time,
) {
    update_condition(
        cluster,
        status,
        UPGRADING,
        roll.upgrading,
        roll.reason,
        roll.message.clone(),
        now,
    );
    let last = status.last_upgrade.clone();
    let in_progress = last.as_ref().is_some_and(|l| l.result == "InProgress");
    if roll.stalled {
        update_condition(
            cluster,
            status,
            DEGRADED,
            true,
            "UpgradeStalled",
            roll.message.clone(),
            now,
        );
        status.last_upgrade = Some(OperationOutcome {
            result: "Failed".into(),
            message: Some(roll.message.clone()),
            started_at: last.and_then(|l| l.started_at),
            finished_at: None,
        });
    } else if roll.upgrading {
        status.phase = Some(Phase::Upgrading);
        status.last_upgrade = Some(OperationOutcome {
            result: "InProgress".into(),
            message: Some(roll.message.clone()),
            started_at: match last {
                Some(l) if l.result != "Succeeded" => l.started_at,
                _ => Some(now.clone()),
            },
            finished_at: None,
        });
    } else if in_progress || last.as_ref().is_some_and(|l| l.result == "Failed") {
        status.last_upgrade = Some(OperationOutcome {
            result: "Succeeded".into(),
            message: Some("every broker runs the current pod template".into()),
            started_at: last.and_then(|l| l.started_at),
            finished_at: Some(now.clone()),
        });
    }
}

/// Folds scaling into the status: the Rebalancing condition, the last rebalance's
/// outcome, and Degraded when a scale-down is refused. Pure, for the unit tests.
pub fn apply_scale(
    cluster: &ChronikCluster,
    status: &mut ChronikClusterStatus,
    scale: &scaling::Scale,
    now: &Time,
) {
    let message = if scale.moving {
        scale.message.clone()
    } else {
        "every partition has its target replicas".to_string()
    };
    update_condition(
        cluster,
        status,
        REBALANCING,
        scale.moving,
        scale.reason,
        message,
        now,
    );
    let last = status.last_rebalance.clone();
    if scale.moving {
        status.last_rebalance = Some(OperationOutcome {
            result: "InProgress".into(),
            message: Some(scale.message.clone()),
            started_at: match last {
                Some(l) if l.result == "InProgress" => l.started_at,
                _ => Some(now.clone()),
            },
            finished_at: None,
        });
    } else if last.as_ref().is_some_and(|l| l.result == "InProgress") {
        status.last_rebalance = Some(OperationOutcome {
            result: "Succeeded".into(),
            message: Some("every partition has its target replicas".into()),
            started_at: last.and_then(|l| l.started_at),
            finished_at: Some(now.clone()),
        });
    }
    if let Some(reason) = &scale.refused {
        update_condition(
            cluster,
            status,
            DEGRADED,
            true,
            "ScaleDownRefused",
            reason.clone(),
            now,
        );
    }
    if let Some(message) = stall_message(scale) {
        update_condition(cluster, status, DEGRADED, true, "MoveStalled", message, now);
    }
}

/// The Degraded message for moves the brokers report stalled.
pub fn stall_message(scale: &scaling::Scale) -> Option<String> {
    (!scale.stalled.is_empty()).then(|| {
        format!(
            "{} partition move(s) stalled: {}",
            scale.stalled.len(),
            scale.stalled.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ChronikClusterSpec, PartitionSummary};
    use k8s_openapi::api::core::v1::{Container, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn cluster(replicas: i32) -> ChronikCluster {
        let spec: ChronikClusterSpec = serde_json::from_value(serde_json::json!({
            "replicas": replicas,
            "image": "chronik:1",
        }))
        .unwrap();
        let mut c = ChronikCluster::new("events", spec);
        c.metadata.namespace = Some("prod".into());
        c.metadata.generation = Some(4);
        c
    }

    fn sts(replicas: i32, ready: i32) -> StatefulSetStatus {
        StatefulSetStatus {
            replicas,
            ready_replicas: Some(ready),
            ..StatefulSetStatus::default()
        }
    }

    fn pod(index: i32, ready: bool, image: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("events-{index}")),
                labels: Some(BTreeMap::from([(
                    POD_INDEX_LABEL.to_string(),
                    index.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: CONTAINER_NAME.into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    fn t(sec: i64) -> Time {
        Time(Timestamp::from_second(sec).unwrap())
    }

    fn cond<'a>(s: &'a ChronikClusterStatus, type_: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn phases_follow_ready_brokers() {
        let c = cluster(3);
        let s = observed_status(&c, None, &[], &t(100));
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(s.ready_replicas, 0);
        assert_eq!(
            s.selector.as_deref(),
            Some("app.kubernetes.io/instance=events,app.kubernetes.io/name=chronik")
        );
        assert_eq!(s.target_image.as_deref(), Some("chronik:1"));
        assert_eq!(cond(&s, READY).status, "False");
        assert_eq!(cond(&s, READY).message, "0/3 brokers ready");
        assert_eq!(cond(&s, RECONCILING).status, "True");
        assert_eq!(cond(&s, RECONCILING).reason, "WaitingForBrokers");
        assert_eq!(cond(&s, DEGRADED).status, "False");

        let s = observed_status(&c, Some(&sts(3, 1)), &[], &t(100));
        assert_eq!(s.phase, Some(Phase::Reconciling));
        assert_eq!(s.replicas, 3);
        let s = observed_status(&c, Some(&sts(3, 3)), &[], &t(100));
        assert_eq!(s.phase, Some(Phase::Running));
        assert_eq!(cond(&s, READY).status, "True");
        assert_eq!(cond(&s, READY).reason, "AllBrokersReady");
        assert_eq!(cond(&s, RECONCILING).status, "False");
    }

    #[test]
    fn unchanged_observation_gives_an_identical_status() {
        let mut c = cluster(3);
        let first = observed_status(&c, Some(&sts(3, 1)), &[], &t(100));
        c.status = Some(first.clone());
        // Later, same facts: nothing differs, so nothing would be written.
        let again = observed_status(&c, Some(&sts(3, 1)), &[], &t(200));
        assert_eq!(first, again);
        // A transition stamps only the conditions whose status changed.
        let ready = observed_status(&c, Some(&sts(3, 3)), &[], &t(300));
        assert_eq!(cond(&ready, READY).last_transition_time, t(300));
        assert_eq!(cond(&ready, RECONCILING).last_transition_time, t(300));
        assert_eq!(cond(&ready, DEGRADED).last_transition_time, t(100));
    }

    #[test]
    fn brokers_and_current_image_from_pods() {
        let c = cluster(3);
        let pods = [pod(2, false, "chronik:1"), pod(1, true, "chronik:1")];
        let s = observed_status(&c, Some(&sts(2, 1)), &pods, &t(1));
        let brokers: Vec<_> = s
            .brokers
            .iter()
            .map(|b| (b.id, b.pod.as_str(), b.ready))
            .collect();
        assert_eq!(brokers, vec![(1, "events-1", true), (2, "events-2", false)]);
        assert_eq!(s.current_image.as_deref(), Some("chronik:1"));
        let pods = [pod(1, true, "chronik:1"), pod(2, true, "chronik:2")];
        let s = observed_status(&c, Some(&sts(2, 2)), &pods, &t(1));
        assert_eq!(s.current_image, None);
    }

    #[test]
    fn admin_api_fields_are_carried_over() {
        let mut c = cluster(1);
        c.status = Some(ChronikClusterStatus {
            partitions: Some(PartitionSummary {
                total: 10,
                under_replicated: 1,
                offline: 0,
                leaderless: 0,
            }),
            ..ChronikClusterStatus::default()
        });
        let s = observed_status(&c, None, &[], &t(1));
        assert_eq!(s.partitions.unwrap().total, 10);
    }

    #[test]
    fn invalid_spec_is_failed_and_degraded() {
        let c = cluster(3);
        let e = SpecError::ReplicationFactorAboveReplicas { rf: 5, replicas: 3 };
        let s = invalid_spec_status(&c, &e, &t(1));
        assert_eq!(s.phase, Some(Phase::Failed));
        assert_eq!(cond(&s, DEGRADED).status, "True");
        assert_eq!(cond(&s, DEGRADED).reason, "InvalidSpec");
        assert_eq!(
            cond(&s, READY).message,
            "spec.config.default_replication_factor (5) must not exceed spec.replicas (3)"
        );
    }

    #[test]
    fn stalled_moves_make_the_cluster_degraded_and_say_why() {
        let c = cluster(4);
        let mut status = ChronikClusterStatus::default();
        let stalled =
            vec!["events-0: no progress for over 120 s: broker 4 is not heard from".to_string()];
        let scale = scaling::Scale {
            replicas: 4,
            moving: true,
            reason: "MoveStalled",
            message: "1 partitions are moving: events-0".into(),
            refused: None,
            started: false,
            stalled: stalled.clone(),
        };
        apply_scale(&c, &mut status, &scale, &t(100));
        let degraded = status
            .conditions
            .iter()
            .find(|c| c.type_ == DEGRADED)
            .unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "MoveStalled")
        );
        assert!(
            degraded.message.contains("broker 4 is not heard from"),
            "{}",
            degraded.message
        );
        let moving = status
            .conditions
            .iter()
            .find(|c| c.type_ == REBALANCING)
            .unwrap();
        assert_eq!(moving.reason, "MoveStalled");
        // Moving again: no Degraded from the scale.
        let mut status = ChronikClusterStatus::default();
        apply_scale(
            &c,
            &mut status,
            &scaling::Scale {
                stalled: vec![],
                reason: "Rebalancing",
                ..scale
            },
            &t(130),
        );
        assert!(!status.conditions.iter().any(|c| c.type_ == DEGRADED));
    }
}
