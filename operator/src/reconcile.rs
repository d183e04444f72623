//! The controller: reconcile one `ChronikCluster` towards its desired objects and report
//! what it sees in the status subresource: pods and StatefulSet from the API server,
//! partitions, leaders and ISR from the brokers' admin API.
//!
//! Every object is written with server-side apply under one field manager
//! ([`FIELD_MANAGER`]), forced, so the operator owns exactly the fields it sets. An apply
//! that changes nothing is a no-op on the server (no new resourceVersion), and the status is
//! only written when it differs from what is stored (condition transition times are kept),
//! so a second reconcile of an unchanged cluster writes nothing.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::admin::{self, Endpoints};
use crate::crd::{
    BrokerStatus, ChronikCluster, ChronikClusterStatus, OperationOutcome, Phase, FIELD_MANAGER,
};
use crate::listeners;
use crate::metrics::Metrics;
use crate::resources::{self, SpecError, CONTAINER_NAME, POD_INDEX_LABEL};
use crate::scaling;
use crate::upgrade::{self, Step};
use chronik_api::admin::v1::restart_check_request::Phase as Gate;

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const DEGRADED: &str = "Degraded";
pub const UPGRADING: &str = "Upgrading";
pub const REBALANCING: &str = "Rebalancing";

/// Requeue interval of a healthy cluster: how often partition health is polled from the
/// brokers (watches trigger everything else).
pub const STEADY_REQUEUE: Duration = Duration::from_secs(30);
/// Requeue interval while brokers are not all Ready.
pub const PROGRESS_REQUEUE: Duration = Duration::from_secs(30);
/// Requeue interval while a rolling upgrade is in progress.
pub const UPGRADE_REQUEUE: Duration = Duration::from_secs(5);
/// Retry interval after a failed reconcile.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("ChronikCluster has no namespace")]
    MissingNamespace,
    #[error(transparent)]
    Spec(#[from] SpecError),
}

impl Error {
    /// Short label for the failures metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "kube",
            Error::MissingNamespace => "missing_namespace",
            Error::Spec(_) => "spec",
        }
    }
}

/// Shared state of the reconcilers.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Where each broker's admin API answers (pod DNS names by default).
    pub endpoints: Endpoints,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics, instance: Option<String>) -> Context {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            endpoints: admin::pod_endpoints(),
        }
    }

    /// Reaches the brokers' admin API elsewhere than through pod DNS names (tests, or an
    /// operator running outside the cluster).
    pub fn with_endpoints(mut self, endpoints: Endpoints) -> Context {
        self.endpoints = endpoints;
        self
    }
}

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

/// What an apply did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
}

/// Server-side applies `obj` and tells whether that created or changed it.
pub async fn apply<K>(api: &Api<K>, obj: &K) -> Result<(K, Outcome), kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let before = api
        .get_opt(&name)
        .await?
        .and_then(|o| o.meta().resource_version.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let after = api.patch(&name, &params, &Patch::Apply(obj)).await?;
    let outcome = match before {
        None => Outcome::Created,
        Some(rv) if after.meta().resource_version.as_deref() != Some(rv.as_str()) => {
            Outcome::Updated
        }
        Some(_) => Outcome::Unchanged,
    };
    Ok((after, outcome))
}

fn now() -> Time {
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

/// Writes `status` through the status subresource unless it is what is stored already.
async fn write_status(
    api: &Api<ChronikCluster>,
    cluster: &ChronikCluster,
    status: ChronikClusterStatus,
    ctx: &Context,
) -> Result<bool, Error> {
    if cluster.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let patch = serde_json::json!({
        "apiVersion": "chronik.io/v1alpha1",
        "kind": "ChronikCluster",
        "status": status,
    });
    api.patch_status(
        &cluster.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics
        .writes
        .with_label_values(&["ChronikCluster", "status"])
        .inc();
    Ok(true)
}

/// Records an Event on the cluster, `related` to the object acted on, if any (the recorder
/// folds repeats of one reason, action and related object into a series).
async fn publish(
    ctx: &Context,
    cluster: &ChronikCluster,
    type_: EventType,
    reason: &str,
    note: String,
    related: Option<ObjectReference>,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: related,
    };
    // Events are best effort: a failure to record one must not fail the reconcile.
    if let Err(e) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        warn!(error = %e, reason, "publishing event failed");
    }
}

/// Applies one object and records an Event when that created or changed it.
async fn apply_object<K>(
    ctx: &Context,
    cluster: &ChronikCluster,
    ns: &str,
    obj: &K,
) -> Result<(K, Outcome), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let (applied, outcome) = apply(&api, obj).await?;
    let kind = K::kind(&());
    let name = applied.name_any();
    let (reason, action) = match outcome {
        Outcome::Unchanged => return Ok((applied, outcome)),
        Outcome::Created => ("Created", "created"),
        Outcome::Updated => ("Updated", "updated"),
    };
    info!(%kind, %name, action, "applied");
    ctx.metrics.writes.with_label_values(&[&kind, action]).inc();
    let related = Some(applied.object_ref(&()));
    publish(
        ctx,
        cluster,
        EventType::Normal,
        reason,
        format!("{reason} {kind} {name}"),
        related,
    )
    .await;
    Ok((applied, outcome))
}

/// Applies the external listener's per-broker Services for brokers `1..=brokers` (those
/// of brokers still being decommissioned included) and deletes the others: those of
/// brokers gone, or all of them when the listener was turned off.
async fn apply_external_services(
    ctx: &Context,
    cluster: &ChronikCluster,
    ns: &str,
    brokers: i32,
) -> Result<(), Error> {
    let wanted = resources::external_services(cluster, brokers)?;
    for service in &wanted {
        apply_object(ctx, cluster, ns, service).await?;
    }
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!(
        "{},{}",
        resources::selector_string(cluster),
        resources::EXTERNAL_BROKER_LABEL
    );
    for existing in api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
    {
        let name = existing.name_any();
        if !wanted.iter().any(|w| w.name_any() == name) {
            info!(%name, "deleting the external Service of a broker that is gone");
            api.delete(&name, &Default::default()).await?;
        }
    }
    Ok(())
}

/// Where the rolling upgrade stands after this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roll {
    pub upgrading: bool,
    pub stalled: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Roll {
    fn idle() -> Roll {
        Roll {
            upgrading: false,
            stalled: false,
            reason: "UpToDate",
            message: "every broker runs the current pod template".into(),
        }
    }

    fn waiting(reason: &'static str, message: String) -> Roll {
        Roll {
            upgrading: true,
            stalled: false,
            reason,
            message,
        }
    }
}

/// Asks broker `node` at `uri` one RestartCheck; `None` when the gate is open, else what
/// the roll waits for (`closed` describes how many partitions block it).
async fn gate(
    uri: &str,
    node: i32,
    phase: Gate,
    reason: &'static str,
    closed: impl Fn(u32) -> String,
) -> Option<Roll> {
    match admin::restart_check(uri, node, phase).await {
        Ok(r) if r.safe => None,
        Ok(r) => Some(Roll::waiting(
            reason,
            format!(
                "{}: {}",
                closed(r.blocking_partitions),
                r.reasons.join("; ")
            ),
        )),
        Err(e) => Some(Roll::waiting("GateUnavailable", e)),
    }
}

/// Takes the next step of the rolling upgrade, if one is due (see [`upgrade`]).
async fn roll(
    ctx: &Context,
    cluster: &ChronikCluster,
    ns: &str,
    pods: &[Pod],
    desired_hash: &str,
) -> Result<Roll, Error> {
    let (next, upgraded) = match upgrade::plan(pods, cluster.spec.replicas, desired_hash) {
        Step::Done => return Ok(Roll::idle()),
        Step::Wait { reason } => return Ok(Roll::waiting("WaitingForBroker", reason)),
        Step::Stalled { id, reason } => {
            return Ok(Roll {
                upgrading: true,
                stalled: true,
                reason: "Stalled",
                message: format!("broker {id} cannot start: {reason}"),
            })
        }
        Step::Restart { next, upgraded } => (next, upgraded),
    };
    let endpoint = |id: i32| (ctx.endpoints)(cluster, id);
    // Post-restart gate of the brokers already upgraded: back in sync everywhere.
    for id in upgraded {
        let closed = |n| format!("broker {id} is not back in sync yet ({n} partitions)");
        if let Some(wait) = gate(&endpoint(id), id, Gate::Post, "WaitingForCatchUp", closed).await {
            return Ok(wait);
        }
    }
    // Pre-restart gate: a single broker cannot keep anything available while it restarts.
    if cluster.spec.replicas > 1 {
        let closed =
            |n| format!("restarting broker {next} now would cost {n} partitions their quorum");
        if let Some(wait) = gate(
            &endpoint(next),
            next,
            Gate::Pre,
            "WaitingForSafeRestart",
            closed,
        )
        .await
        {
            return Ok(wait);
        }
    }
    let drained = match admin::drain_leadership(&endpoint(next), next).await {
        Ok(d) => format!(
            "{} leaderships handed over, {} left",
            d.transferred, d.remaining
        ),
        Err(e) => return Ok(Roll::waiting("GateUnavailable", e)),
    };
    let pod = format!("{}-{next}", cluster.name_any());
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    pods.delete(&pod, &Default::default()).await?;
    ctx.metrics
        .writes
        .with_label_values(&["Pod", "deleted"])
        .inc();
    let message = format!("restarting broker {next} (pod {pod}) on the new template: {drained}");
    info!(%ns, cluster = %cluster.name_any(), "{message}");
    publish(
        ctx,
        cluster,
        EventType::Normal,
        "RestartingBroker",
        message.clone(),
        None,
    )
    .await;
    Ok(Roll::waiting("RestartingBroker", message))
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

fn write_needed_for_refusal(cluster: &ChronikCluster, reason: &str) -> bool {
    !cluster.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == DEGRADED && c.message == reason)
    })
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
}

/// Reconciles one cluster. Called by the controller, and directly by the integration tests.
pub async fn reconcile(cluster: Arc<ChronikCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started();
    let ns = cluster.namespace().ok_or(Error::MissingNamespace)?;
    let name = cluster.name_any();
    if cluster.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the objects.
        return Ok(Action::await_change());
    }
    let clusters: Api<ChronikCluster> = Api::namespaced(ctx.client.clone(), &ns);

    let mut desired = match resources::desired(&cluster) {
        Ok(d) => d,
        Err(e @ SpecError::MissingMetadata(_)) => return Err(e.into()),
        Err(e) => {
            warn!(%ns, %name, error = %e, "spec cannot be applied");
            let status = invalid_spec_status(&cluster, &e, &now());
            if write_status(&clusters, &cluster, status, &ctx).await? {
                publish(
                    &ctx,
                    &cluster,
                    EventType::Warning,
                    "InvalidSpec",
                    e.to_string(),
                    None,
                )
                .await;
            }
            return Ok(Action::await_change());
        }
    };

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = resources::selector_string(&cluster);
    let pods = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let ready_ids: Vec<i32> = broker_statuses(&pods)
        .iter()
        .filter(|b| b.ready)
        .map(|b| b.id)
        .collect();
    let answer = if ready_ids.is_empty() {
        None
    } else {
        Some(admin::first_cluster_status(&ctx.endpoints, &cluster, &ready_ids).await)
    };

    // Brokers leaving in a scale-down stay in the StatefulSet until they hold nothing.
    let current = Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&desired.stateful_set.name_any())
        .await?
        .and_then(|s| s.spec?.replicas);
    let cs = answer.as_ref().and_then(|a| a.as_ref().ok());
    let scale = scaling::plan(&ctx, &cluster, current, cs, &ready_ids).await;
    if let Some(spec) = desired.stateful_set.spec.as_mut() {
        spec.replicas = Some(scale.replicas);
    }

    apply_object(&ctx, &cluster, &ns, &desired.config_map).await?;
    apply_object(&ctx, &cluster, &ns, &desired.headless_service).await?;
    apply_object(&ctx, &cluster, &ns, &desired.client_service).await?;
    apply_object(&ctx, &cluster, &ns, &desired.pdb).await?;
    let (sts, _) = apply_object(&ctx, &cluster, &ns, &desired.stateful_set).await?;
    apply_external_services(&ctx, &cluster, &ns, scale.replicas).await?;

    let now = now();
    let mut status = observed_status(&cluster, sts.status.as_ref(), &pods, &now);
    status.listeners = listeners::statuses(&cluster, &pods);
    apply_admin_answer(&cluster, &mut status, answer, &now);
    let was_moving = cluster
        .status
        .as_ref()
        .and_then(|s| s.last_rebalance.as_ref())
        .is_some_and(|l| l.result == "InProgress");
    apply_scale(&cluster, &mut status, &scale, &now);
    if scale.started {
        publish(
            &ctx,
            &cluster,
            EventType::Normal,
            "RebalanceStarted",
            scale.message.clone(),
            None,
        )
        .await;
    } else if scale.moving && !was_moving {
        publish(
            &ctx,
            &cluster,
            EventType::Normal,
            scale.reason,
            scale.message.clone(),
            None,
        )
        .await;
    } else if !scale.moving && was_moving {
        publish(
            &ctx,
            &cluster,
            EventType::Normal,
            "RebalanceComplete",
            "every partition has its target replicas".into(),
            None,
        )
        .await;
    }
    if let Some(reason) = &scale.refused {
        if write_needed_for_refusal(&cluster, reason) {
            publish(
                &ctx,
                &cluster,
                EventType::Warning,
                "ScaleDownRefused",
                reason.clone(),
                None,
            )
            .await;
        }
    }
    let desired_hash = desired
        .stateful_set
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(resources::pod_template_hash)
        .unwrap_or_default()
        .to_string();
    let roll = roll(&ctx, &cluster, &ns, &pods, &desired_hash).await?;
    let last_upgrade = cluster
        .status
        .as_ref()
        .and_then(|s| s.last_upgrade.as_ref())
        .map(|l| l.result.as_str());
    let was_stalled = last_upgrade == Some("Failed");
    let was_upgrading = last_upgrade == Some("InProgress");
    apply_roll(&cluster, &mut status, &roll, &now);
    if roll.stalled && !was_stalled {
        publish(
            &ctx,
            &cluster,
            EventType::Warning,
            "UpgradeStalled",
            roll.message.clone(),
            None,
        )
        .await;
    } else if !roll.upgrading && (was_upgrading || was_stalled) {
        publish(
            &ctx,
            &cluster,
            EventType::Normal,
            "UpgradeComplete",
            roll.message.clone(),
            None,
        )
        .await;
    }
    let was_ready = cluster
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
        .is_some_and(|c| c.status == "True");
    let running = status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True");
    let ready_message = status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    if write_status(&clusters, &cluster, status, &ctx).await? {
        debug!(%ns, %name, "status updated");
        if running && !was_ready {
            publish(
                &ctx,
                &cluster,
                EventType::Normal,
                "ClusterReady",
                ready_message,
                None,
            )
            .await;
        } else if !running && was_ready {
            publish(
                &ctx,
                &cluster,
                EventType::Warning,
                "ClusterNotReady",
                ready_message,
                None,
            )
            .await;
        }
    }
    Ok(Action::requeue(if roll.upgrading || scale.moving {
        UPGRADE_REQUEUE
    } else if running {
        STEADY_REQUEUE
    } else {
        PROGRESS_REQUEUE
    }))
}

pub fn error_policy(cluster: Arc<ChronikCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(ns = ?cluster.namespace(), name = %cluster.name_any(), error = %error, "reconcile failed");
    ctx.metrics
        .failures
        .with_label_values(&[error.metric_label()])
        .inc();
    Action::requeue(ERROR_REQUEUE)
}

/// Runs the controller until SIGTERM/SIGINT (when `handle_signals`) or forever. Watches
/// ChronikClusters (in `namespace`, or all) and the objects they own.
pub async fn run(ctx: Arc<Context>, namespace: Option<&str>, handle_signals: bool) {
    let client = ctx.client.clone();
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let owned = watcher::Config::default()
        .labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"))
        .any_semantic();
    let mut controller = Controller::new(
        api::<ChronikCluster>(&client, namespace),
        watcher::Config::default().any_semantic(),
    )
    .owns(api::<StatefulSet>(&client, namespace), owned.clone())
    .owns(api::<Service>(&client, namespace), owned.clone())
    .owns(api::<ConfigMap>(&client, namespace), owned.clone())
    .owns(api::<PodDisruptionBudget>(&client, namespace), owned);
    if handle_signals {
        controller = controller.shutdown_on_signal();
    }
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(name = %obj.name, ns = ?obj.namespace, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile error"),
            }
        })
        .await;
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
}
