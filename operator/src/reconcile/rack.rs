//! Rack awareness's cluster-scoped object: the brokers' ClusterRoleBinding (see
//! [`crate::rack`]). A cluster-scoped object cannot be owned by a namespaced ChronikCluster,
//! so it is owned by the chart's ClusterRole instead (uninstalling the chart deletes every
//! binding), applied while a cluster's spec asks for racks, and swept every minute once
//! its cluster is gone or no longer asks (one list call, rather than a delete in every
//! reconcile of every cluster without racks). No finalizer:
//! a cluster deleted while the operator is down (a `helm uninstall` deletes both at once)
//! must not hang its namespace's deletion.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::{apply, Context, Error};
use crate::crd::ChronikCluster;
use crate::rack::{BINDING_LABEL, CLUSTER_NAMESPACE_LABEL, CLUSTER_ROLE};

const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Applies the cluster's ServiceAccount and binding while rack awareness is on (`wanted`);
/// [`sweep`] removes the binding once it is off.
pub(super) async fn reconcile(
    ctx: &Context,
    cluster: &ChronikCluster,
    ns: &str,
    wanted: Option<&(ServiceAccount, ClusterRoleBinding)>,
) -> Result<(), Error> {
    let Some((account, binding)) = wanted else {
        return Ok(());
    };
    apply::apply_object(ctx, cluster, ns, account).await?;
    let mut binding = binding.clone();
    binding.metadata.owner_references = role_owner(ctx).await?.map(|o| vec![o]);
    let bindings: Api<ClusterRoleBinding> = Api::all(ctx.client.clone());
    let (_, outcome) = apply::apply(&bindings, &binding).await?;
    if outcome != apply::Outcome::Unchanged {
        info!(name = %binding.name_any(), ?outcome, "rack: ClusterRoleBinding applied");
    }
    Ok(())
}

/// The chart's ClusterRole as the bindings' owner; none when it is not installed (the
/// brokers' init step then fails with a message that says so, and their pods wait).
async fn role_owner(ctx: &Context) -> Result<Option<OwnerReference>, Error> {
    let roles: Api<ClusterRole> = Api::all(ctx.client.clone());
    let Some(role) = roles.get_opt(CLUSTER_ROLE).await? else {
        warn!(
            role = CLUSTER_ROLE,
            "rack: ClusterRole missing (install the chart's RBAC)"
        );
        return Ok(None);
    };
    Ok(role.controller_owner_ref(&()).map(|mut o| {
        o.controller = None;
        o
    }))
}

async fn delete(bindings: &Api<ClusterRoleBinding>, name: &str) -> Result<(), Error> {
    match bindings.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            info!(%name, "rack: ClusterRoleBinding deleted");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the bindings whose ChronikCluster no longer exists or no longer asks for racks.
pub async fn sweep(ctx: &Context) -> Result<(), Error> {
    let bindings: Api<ClusterRoleBinding> = Api::all(ctx.client.clone());
    let listed = bindings
        .list(&ListParams::default().labels(BINDING_LABEL))
        .await?;
    for b in listed.items {
        let labels = b.labels();
        let (Some(ns), Some(name)) = (
            labels.get(CLUSTER_NAMESPACE_LABEL),
            labels.get(INSTANCE_LABEL),
        ) else {
            continue;
        };
        let clusters: Api<ChronikCluster> = Api::namespaced(ctx.client.clone(), ns);
        let cluster = clusters.get_opt(name).await?;
        if cluster.is_none_or(|c| c.spec.rack_awareness.is_none()) {
            info!(cluster = %format!("{ns}/{name}"), "rack: the cluster is gone or has no racks");
            delete(&bindings, &b.name_any()).await?;
        }
    }
    Ok(())
}

/// [`sweep`] every minute, while this operator leads.
pub async fn sweep_forever(ctx: Arc<Context>) {
    loop {
        if let Err(e) = sweep(&ctx).await {
            warn!(error = %e, "rack: sweeping ClusterRoleBindings failed");
        }
        tokio::time::sleep(SWEEP_INTERVAL).await;
    }
}
