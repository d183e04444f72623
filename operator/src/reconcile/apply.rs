//! Server-side apply of the desired objects, one field manager, forced: the operator owns
//! exactly the fields it sets, and an apply that changes nothing is a no-op on the server.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::info;

use super::{events, Context, Error};
use crate::crd::{ChronikCluster, FIELD_MANAGER};
use crate::resources;

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

/// Applies one object and records an Event when that created or changed it.
pub(super) async fn apply_object<K>(
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
    events::publish(
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
pub(super) async fn apply_external_services(
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
