//! Events on the ChronikCluster for what changed in a reconcile (`kubectl describe`,
//! `kubectl get events`). Best effort: failing to record one never fails the reconcile.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};
use kube::Resource;
use tracing::warn;

use super::{Context, Roll, DEGRADED};
use crate::crd::ChronikCluster;
use crate::scaling::Scale;

/// Records an Event on the cluster, `related` to the object acted on, if any (the recorder
/// folds repeats of one reason, action and related object into a series).
pub(super) async fn publish(
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

/// An Event about the cluster itself.
async fn tell(
    ctx: &Context,
    cluster: &ChronikCluster,
    type_: EventType,
    reason: &str,
    note: String,
) {
    publish(ctx, cluster, type_, reason, note, None).await;
}

/// Rebalance started, progressing, complete; a scale-down refused (once per reason).
pub(super) async fn announce_scale(
    ctx: &Context,
    cluster: &ChronikCluster,
    scale: &Scale,
    was_moving: bool,
) {
    if scale.started {
        tell(
            ctx,
            cluster,
            EventType::Normal,
            "RebalanceStarted",
            scale.message.clone(),
        )
        .await;
    } else if scale.moving && !was_moving {
        tell(
            ctx,
            cluster,
            EventType::Normal,
            scale.reason,
            scale.message.clone(),
        )
        .await;
    } else if !scale.moving && was_moving {
        let done = "every partition has its target replicas".to_string();
        tell(ctx, cluster, EventType::Normal, "RebalanceComplete", done).await;
    }
    if let Some(message) = super::status::stall_message(scale) {
        if refusal_is_new(cluster, &message) {
            tell(ctx, cluster, EventType::Warning, "MoveStalled", message).await;
        }
    }
    if let Some(reason) = &scale.refused {
        if refusal_is_new(cluster, reason) {
            tell(
                ctx,
                cluster,
                EventType::Warning,
                "ScaleDownRefused",
                reason.clone(),
            )
            .await;
        }
    }
}

/// A refusal the stored status does not show yet (its Degraded message differs).
fn refusal_is_new(cluster: &ChronikCluster, reason: &str) -> bool {
    !cluster.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == DEGRADED && c.message == reason)
    })
}

/// An upgrade that stalled, or that completed (after running or stalling).
pub(super) async fn announce_roll(
    ctx: &Context,
    cluster: &ChronikCluster,
    roll: &Roll,
    was_upgrading: bool,
    was_stalled: bool,
) {
    if roll.stalled && !was_stalled {
        tell(
            ctx,
            cluster,
            EventType::Warning,
            "UpgradeStalled",
            roll.message.clone(),
        )
        .await;
    } else if !roll.upgrading && (was_upgrading || was_stalled) {
        tell(
            ctx,
            cluster,
            EventType::Normal,
            "UpgradeComplete",
            roll.message.clone(),
        )
        .await;
    }
}

/// The Ready condition turning true or false.
pub(super) async fn announce_readiness(
    ctx: &Context,
    cluster: &ChronikCluster,
    was_ready: bool,
    ready: bool,
    message: String,
) {
    if ready && !was_ready {
        tell(ctx, cluster, EventType::Normal, "ClusterReady", message).await;
    } else if !ready && was_ready {
        tell(ctx, cluster, EventType::Warning, "ClusterNotReady", message).await;
    }
}
