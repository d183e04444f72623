//! Rack awareness: each broker learns its rack from the label of the node its pod runs on
//! (`spec.rackAwareness.topologyKey`, e.g. `topology.kubernetes.io/zone`), as Strimzi's
//! rack init step does. A node's labels are not in the downward API, so an init container
//! (`chronik-operator rack-init`, from the operator's image) reads the node through the
//! API server and writes the value to a file on an `emptyDir` that the broker reads at
//! start (`CHRONIK_RACK_FILE`). Reading nodes needs a cluster-wide permission: the brokers
//! run as their own ServiceAccount, bound to the `chronik-broker-rack` ClusterRole (which
//! the chart installs) by a ClusterRoleBinding the operator makes per cluster and deletes
//! once the cluster is gone (see `reconcile/rack.rs`).

use std::path::Path;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::Client;

/// The operator's image when nothing says otherwise (`CHRONIK_OPERATOR_IMAGE`).
pub const DEFAULT_IMAGE: &str = concat!("chronik-operator:", env!("CARGO_PKG_VERSION"));
/// The ClusterRole (installed by the chart) that lets broker pods read nodes.
pub const CLUSTER_ROLE: &str = "chronik-broker-rack";
/// Marks the operator's ClusterRoleBindings (swept once their cluster is gone).
pub const BINDING_LABEL: &str = "chronik.io/rack-binding";
/// The namespace of a binding's cluster (its name is the `app.kubernetes.io/instance`).
pub const CLUSTER_NAMESPACE_LABEL: &str = "chronik.io/cluster-namespace";
/// Where the init container writes the rack and the broker reads it.
pub const RACK_DIR: &str = "/var/run/chronik-rack";
pub const RACK_FILE: &str = "/var/run/chronik-rack/rack";

/// The value of `key` among `node`'s labels, if it has it.
pub async fn node_label(client: Client, node: &str, key: &str) -> anyhow::Result<Option<String>> {
    let nodes: Api<Node> = Api::all(client);
    let node = nodes.get(node).await.with_context(|| {
        format!("reading node {node} (does the pod's ServiceAccount may get nodes?)")
    })?;
    Ok(node.metadata.labels.unwrap_or_default().remove(key))
}

/// `rack-init`: writes the node's `key` label to `out` (an empty file when the node has no
/// such label: the broker then runs without a rack, and says so in its log).
pub async fn init(node: &str, key: &str, out: &Path) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    let rack = node_label(client, node, key).await?;
    match &rack {
        Some(rack) => tracing::info!(node, key, rack, "rack found"),
        None => tracing::warn!(
            node,
            key,
            "the node has no such label: the broker runs without a rack"
        ),
    }
    std::fs::write(out, rack.unwrap_or_default())
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

// ---- desired objects (pure) ----------------------------------------------------------

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec,
    ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::crd::ChronikCluster;
use crate::resources::{self, SpecError};

const VOLUME: &str = "rack";

/// The ServiceAccount broker pods run as when rack awareness is on.
pub fn service_account_name(cluster: &ChronikCluster) -> String {
    format!("{}-broker", cluster.name_any())
}

/// The cluster's ClusterRoleBinding (cluster-scoped: named after namespace and cluster).
pub fn binding_name(cluster: &ChronikCluster) -> String {
    format!(
        "chronik-rack-{}-{}",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    )
}

pub fn service_account(cluster: &ChronikCluster) -> Result<ServiceAccount, SpecError> {
    Ok(ServiceAccount {
        metadata: resources::meta(cluster, &service_account_name(cluster))?,
        ..ServiceAccount::default()
    })
}

/// Lets the brokers' ServiceAccount read nodes. Labelled with the cluster it serves; no
/// owner reference to it (see the module's doc).
pub fn binding(cluster: &ChronikCluster) -> ClusterRoleBinding {
    let mut labels = resources::common_labels(cluster);
    labels.insert(
        CLUSTER_NAMESPACE_LABEL.into(),
        cluster.namespace().unwrap_or_default(),
    );
    labels.insert(BINDING_LABEL.into(), "true".into());
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(binding_name(cluster)),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: CLUSTER_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: service_account_name(cluster),
            namespace: cluster.namespace(),
            ..Subject::default()
        }]),
    }
}

/// Adds the rack init container (the operator's `image`), its volume, the broker's
/// `CHRONIK_RACK_FILE` and the ServiceAccount to a broker pod, when rack awareness is on.
pub fn add_to_pod(cluster: &ChronikCluster, image: &str, pod: &mut PodSpec) {
    let Some(rack) = &cluster.spec.rack_awareness else {
        return;
    };
    let mount = VolumeMount {
        name: VOLUME.into(),
        mount_path: RACK_DIR.into(),
        ..VolumeMount::default()
    };
    pod.service_account_name = Some(service_account_name(cluster));
    pod.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    pod.init_containers = Some(vec![Container {
        name: "rack-init".into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["chronik-operator".into()]),
        args: Some(vec![
            "rack-init".into(),
            "--topology-key".into(),
            rack.topology_key.clone(),
            "--out".into(),
            RACK_FILE.into(),
        ]),
        env: Some(vec![EnvVar {
            name: "NODE_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "spec.nodeName".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        volume_mounts: Some(vec![mount.clone()]),
        security_context: Some(resources::restricted_container()),
        ..Container::default()
    }]);
    for broker in &mut pod.containers {
        broker.env.get_or_insert_with(Vec::new).push(EnvVar {
            name: "CHRONIK_RACK_FILE".into(),
            value: Some(RACK_FILE.into()),
            ..EnvVar::default()
        });
        broker
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                read_only: Some(true),
                ..mount.clone()
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::RackAwareness;

    fn cluster(rack: bool) -> ChronikCluster {
        let mut c: ChronikCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "chronik.io/v1alpha1", "kind": "ChronikCluster",
            "metadata": {"name": "events", "namespace": "kafka", "uid": "u-1"},
            "spec": {"replicas": 3, "image": "chronik-broker:1"}
        }))
        .unwrap();
        if rack {
            c.spec.rack_awareness = Some(RackAwareness {
                topology_key: "topology.kubernetes.io/zone".into(),
            });
        }
        c
    }

    #[test]
    fn brokers_with_racks_read_them_from_the_init_container() {
        let c = cluster(true);
        let sts = resources::stateful_set(&c, "chronik-operator:9").unwrap();
        let pod = sts.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("events-broker"));
        let init = &pod.init_containers.unwrap()[0];
        assert_eq!(init.image.as_deref(), Some("chronik-operator:9"));
        assert_eq!(
            init.args.as_ref().unwrap()[..3],
            ["rack-init", "--topology-key", "topology.kubernetes.io/zone"]
        );
        let broker = &pod.containers[0];
        assert!(broker
            .env
            .as_ref()
            .unwrap()
            .iter()
            .any(|e| e.name == "CHRONIK_RACK_FILE" && e.value.as_deref() == Some(RACK_FILE)));
        assert!(broker
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.mount_path == RACK_DIR && m.read_only == Some(true)));
        let b = binding(&c);
        assert_eq!(
            b.metadata.name.as_deref(),
            Some("chronik-rack-kafka-events")
        );
        assert_eq!(b.role_ref.name, CLUSTER_ROLE);
        assert!(b.metadata.owner_references.is_none());
    }

    #[test]
    fn brokers_without_racks_keep_the_default_account_and_no_init_container() {
        let sts = resources::stateful_set(&cluster(false), "chronik-operator:9").unwrap();
        let pod = sts.spec.unwrap().template.spec.unwrap();
        assert!(pod.service_account_name.is_none());
        assert!(pod.init_containers.is_none());
        assert!(resources::desired(&cluster(false), "x")
            .unwrap()
            .rack
            .is_none());
    }
}
