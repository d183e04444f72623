//! The controller: reconcile one `ChronikCluster` towards its desired objects and report
//! what it sees in the status subresource: pods and StatefulSet from the API server,
//! partitions, leaders and ISR from the brokers' admin API.
//!
//! Every object is written with server-side apply under one field manager
//! ([`FIELD_MANAGER`]), forced, so the operator owns exactly the fields it sets. An apply
//! that changes nothing is a no-op on the server (no new resourceVersion), and the status is
//! only written when it differs from what is stored (condition transition times are kept),
//! so a second reconcile of an unchanged cluster writes nothing.
//!
//! The pieces: [`status`] derives the status from observations (pure), [`apply`] writes
//! desired objects, [`roll`] steps a rolling upgrade through the brokers' restart gates,
//! [`events`] records what changed.

mod apply;
mod events;
pub mod rack;
mod roll;
mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, warn};

use crate::admin::{self, Endpoints};
use crate::crd::{ChronikCluster, ChronikClusterStatus, FIELD_MANAGER};
use crate::listeners;
use crate::metrics::Metrics;
use crate::resources::{self, SpecError};
use crate::scaling;

pub use apply::{apply, Outcome};
pub use roll::Roll;
use status::now;
pub use status::{
    apply_admin_answer, apply_roll, apply_scale, broker_statuses, condition, invalid_spec_status,
    observed_status, set_condition, DEGRADED, READY, REBALANCING, RECONCILING, UPGRADING,
};

/// Requeue interval of a healthy cluster: how often partition health is polled from the
/// brokers (watches trigger everything else).
pub const STEADY_REQUEUE: Duration = Duration::from_secs(30);
/// Requeue interval while brokers are not all Ready.
pub const PROGRESS_REQUEUE: Duration = Duration::from_secs(30);
/// Requeue interval while a rolling upgrade is in progress.
pub const UPGRADE_REQUEUE: Duration = Duration::from_secs(5);
/// Retry interval after a failed reconcile.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(15);
/// How long a burst of changes (pods of a roll or a scale turning Ready, going away) is
/// gathered into one reconcile.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

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
    /// The operator's image: the rack init container of clusters with rack awareness.
    pub operator_image: String,
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
            operator_image: crate::rack::DEFAULT_IMAGE.into(),
        }
    }

    /// Reaches the brokers' admin API elsewhere than through pod DNS names (tests, or an
    /// operator running outside the cluster).
    pub fn with_endpoints(mut self, endpoints: Endpoints) -> Context {
        self.endpoints = endpoints;
        self
    }

    pub fn with_operator_image(mut self, image: String) -> Context {
        self.operator_image = image;
        self
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

    let mut desired = match resources::desired(&cluster, &ctx.operator_image) {
        Ok(d) => d,
        Err(e @ SpecError::MissingMetadata(_)) => return Err(e.into()),
        Err(e) => {
            warn!(%ns, %name, error = %e, "spec cannot be applied");
            let status = invalid_spec_status(&cluster, &e, &now());
            if write_status(&clusters, &cluster, status, &ctx).await? {
                events::publish(
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

    apply::apply_object(&ctx, &cluster, &ns, &desired.config_map).await?;
    apply::apply_object(&ctx, &cluster, &ns, &desired.headless_service).await?;
    apply::apply_object(&ctx, &cluster, &ns, &desired.client_service).await?;
    apply::apply_object(&ctx, &cluster, &ns, &desired.pdb).await?;
    rack::reconcile(&ctx, &cluster, &ns, desired.rack.as_ref()).await?;
    let (sts, _) = apply::apply_object(&ctx, &cluster, &ns, &desired.stateful_set).await?;
    apply::apply_external_services(&ctx, &cluster, &ns, scale.replicas).await?;

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
    events::announce_scale(&ctx, &cluster, &scale, was_moving).await;
    let desired_hash = desired
        .stateful_set
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(resources::pod_template_hash)
        .unwrap_or_default()
        .to_string();
    let roll = roll::roll(&ctx, &cluster, &ns, &pods, &desired_hash).await?;
    let last_upgrade = cluster
        .status
        .as_ref()
        .and_then(|s| s.last_upgrade.as_ref())
        .map(|l| l.result.as_str());
    let was_stalled = last_upgrade == Some("Failed");
    let was_upgrading = last_upgrade == Some("InProgress");
    apply_roll(&cluster, &mut status, &roll, &now);
    events::announce_roll(&ctx, &cluster, &roll, was_upgrading, was_stalled).await;
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
        events::announce_readiness(&ctx, &cluster, was_ready, running, ready_message).await;
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

/// The cluster a broker pod belongs to (its `app.kubernetes.io/instance` label).
fn cluster_of_pod(pod: Pod) -> Option<ObjectRef<ChronikCluster>> {
    let name = pod.labels().get("app.kubernetes.io/instance")?.clone();
    let ns = pod.namespace()?;
    Some(ObjectRef::new(&name).within(&ns))
}

/// Runs the controller until SIGTERM/SIGINT (when `handle_signals`) or forever. Watches
/// ChronikClusters (in `namespace`, or all), the objects they own and their broker pods:
/// the status lists brokers by pod, so a pod that goes away (a scale-down, a deletion)
/// must be seen when it goes, not at the next periodic poll.
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
    .owns(
        api::<PodDisruptionBudget>(&client, namespace),
        owned.clone(),
    )
    .watches(api::<Pod>(&client, namespace), owned, cluster_of_pod)
    .with_config(controller::Config::default().debounce(DEBOUNCE));
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
