//! One step of a rolling upgrade per reconcile: [`upgrade::plan`] picks the broker, the
//! brokers' RestartCheck gates decide whether it may go now (upgraded brokers back in sync,
//! no partition losing its quorum), its leaderships are drained, then its pod is deleted.

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::info;

use super::{events, Context, Error};
use crate::admin;
use crate::crd::ChronikCluster;
use crate::upgrade::{self, Step};
use chronik_api::admin::v1::restart_check_request::Phase as Gate;

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
pub(super) async fn roll(
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
        Step::Replace { id, reason } => {
            let why = format!("its broker cannot start on the old template ({reason})");
            return restart(ctx, cluster, ns, id, "ReplacingBroker", &why).await;
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
    restart(ctx, cluster, ns, next, "RestartingBroker", &drained).await
}

/// Deletes broker `id`'s pod, for the StatefulSet to recreate it on the current template.
async fn restart(
    ctx: &Context,
    cluster: &ChronikCluster,
    ns: &str,
    id: i32,
    reason: &'static str,
    detail: &str,
) -> Result<Roll, Error> {
    let pod = format!("{}-{id}", cluster.name_any());
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    pods.delete(&pod, &Default::default()).await?;
    ctx.metrics
        .writes
        .with_label_values(&["Pod", "deleted"])
        .inc();
    let message = format!("restarting broker {id} (pod {pod}) on the new template: {detail}");
    info!(%ns, cluster = %cluster.name_any(), "{message}");
    events::publish(
        ctx,
        cluster,
        EventType::Normal,
        reason,
        message.clone(),
        None,
    )
    .await;
    Ok(Roll::waiting(reason, message))
}
