//! Rolling upgrades: when the pod template changes (image, settings, resources...), the
//! brokers restart one at a time, highest ordinal first, each only when the cluster can
//! afford it:
//! 1. every pod is Ready (a pod that cannot start — crash loop, image pull failure —
//!    stops the roll: Degraded, with the pod's own reason);
//! 2. post-restart gate: every broker already upgraded is back in sync everywhere;
//! 3. pre-restart gate: restarting the next broker loses no partition's quorum;
//! 4. its leaderships are drained to other voters; then its pod is deleted and the
//!    StatefulSet controller (update strategy `OnDelete`) recreates it from the new template.
//!
//! The plan is a pure function of the pods ([`plan`]); nothing is remembered between
//! reconciles but what the pods show, so an operator restart resumes where it stopped.

use k8s_openapi::api::core::v1::Pod;

use crate::resources::{pod_template_hash, POD_INDEX_LABEL};

/// Container states that will not resolve by waiting.
const STUCK_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every broker runs the current template.
    Done,
    /// Wait: a broker pod is missing or not Ready yet (e.g. the one just restarted).
    Wait { reason: String },
    /// A broker cannot start: the roll stops here.
    Stalled { id: i32, reason: String },
    /// A broker cannot start on an *older* template (a bad image since corrected): its pod
    /// is replaced at once, without the gates, since its broker serves nothing.
    Replace { id: i32, reason: String },
    /// All brokers are Ready: once the gates pass, restart `next`. `upgraded` already run
    /// the new template.
    Restart { next: i32, upgraded: Vec<i32> },
}

pub fn ordinal(pod: &Pod) -> Option<i32> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(POD_INDEX_LABEL))
        .and_then(|v| v.parse().ok())
        .or_else(|| pod.metadata.name.as_ref()?.rsplit('-').next()?.parse().ok())
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Why a pod cannot start, if one of its containers is stuck.
fn stuck(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|c| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        STUCK_REASONS
            .contains(&reason)
            .then(|| match &waiting.message {
                Some(m) => format!("{reason}: {m}"),
                None => reason.to_string(),
            })
    })
}

/// The next step of the roll towards `desired_hash` for a StatefulSet of `replicas` pods.
pub fn plan(pods: &[Pod], replicas: i32, desired_hash: &str) -> Step {
    let mut pods: Vec<(i32, &Pod)> = pods.iter().filter_map(|p| Some((ordinal(p)?, p))).collect();
    pods.sort_by_key(|(id, _)| *id);
    let current = |p: &Pod| pod_template_hash(&p.metadata) == Some(desired_hash);
    let outdated: Vec<i32> = pods
        .iter()
        .filter(|(_, p)| !current(p))
        .map(|(id, _)| *id)
        .collect();
    if outdated.is_empty() {
        // (Pods still being created run the current template: nothing to roll.)
        return Step::Done;
    }
    if let Some((id, p, reason)) = pods.iter().find_map(|(id, p)| Some((*id, p, stuck(p)?))) {
        return if current(p) {
            Step::Stalled { id, reason }
        } else {
            Step::Replace { id, reason }
        };
    }
    if let Some((id, _)) = pods.iter().find(|(_, p)| !ready(p)) {
        return Step::Wait {
            reason: format!("broker {id} is not Ready yet"),
        };
    }
    if (pods.len() as i32) < replicas {
        return Step::Wait {
            reason: format!("{} of {replicas} broker pods exist", pods.len()),
        };
    }
    match outdated.last() {
        None => Step::Done,
        Some(next) => Step::Restart {
            next: *next,
            upgraded: pods
                .iter()
                .filter(|(_, p)| current(p))
                .map(|(id, _)| *id)
                .collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(id: i32, hash: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": format!("c-{id}"),
                "labels": {POD_INDEX_LABEL: id.to_string()},
                "annotations": {crate::resources::TEMPLATE_HASH_ANNOTATION: hash},
            },
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .unwrap()
    }

    #[test]
    fn restarts_the_highest_outdated_ordinal_first() {
        let pods = vec![
            pod(1, "old", true),
            pod(2, "old", true),
            pod(3, "old", true),
        ];
        assert_eq!(
            plan(&pods, 3, "new"),
            Step::Restart {
                next: 3,
                upgraded: vec![]
            }
        );
        let pods = vec![
            pod(1, "old", true),
            pod(2, "old", true),
            pod(3, "new", true),
        ];
        assert_eq!(
            plan(&pods, 3, "new"),
            Step::Restart {
                next: 2,
                upgraded: vec![3]
            }
        );
        let pods = vec![
            pod(1, "new", true),
            pod(2, "new", true),
            pod(3, "new", true),
        ];
        assert_eq!(plan(&pods, 3, "new"), Step::Done);
    }

    #[test]
    fn waits_for_missing_or_unready_pods() {
        let pods = vec![pod(1, "old", true), pod(2, "old", true)];
        assert!(matches!(plan(&pods, 3, "new"), Step::Wait { .. }));
        assert_eq!(
            plan(&[], 3, "new"),
            Step::Done,
            "a new cluster has nothing to roll"
        );
        let pods = vec![
            pod(1, "old", true),
            pod(2, "old", true),
            pod(3, "new", false),
        ];
        assert_eq!(
            plan(&pods, 3, "new"),
            Step::Wait {
                reason: "broker 3 is not Ready yet".into()
            }
        );
    }

    /// Broker `index`'s pod on template `hash`, its container waiting with `reason`.
    fn stuck_pod(index: i32, hash: &str, reason: &str, message: &str) -> Pod {
        let mut p = pod(index, hash, false);
        p.status.as_mut().unwrap().container_statuses = Some(vec![serde_json::from_value(json!({
            "name": "broker", "image": "chronik:2", "imageID": "", "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": reason, "message": message}},
        }))
        .unwrap()]);
        p
    }

    #[test]
    fn a_crash_looping_pod_stalls_the_roll() {
        let p3 = stuck_pod(3, "new", "CrashLoopBackOff", "back-off 40s");
        let pods = vec![pod(1, "old", true), pod(2, "old", true), p3];
        assert_eq!(
            plan(&pods, 3, "new"),
            Step::Stalled {
                id: 3,
                reason: "CrashLoopBackOff: back-off 40s".into()
            }
        );
    }

    #[test]
    fn a_pod_stuck_on_an_older_template_is_replaced() {
        let p3 = stuck_pod(3, "bad", "ImagePullBackOff", "not found");
        let pods = vec![pod(1, "good", true), pod(2, "good", true), p3];
        assert_eq!(
            plan(&pods, 3, "good"),
            Step::Replace {
                id: 3,
                reason: "ImagePullBackOff: not found".into()
            }
        );
    }
}
