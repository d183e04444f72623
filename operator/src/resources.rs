//! The objects a `ChronikCluster` consists of, as pure functions of the resource: no I/O, so
//! that every field the operator applies is covered by unit tests.
//!
//! | object | name |
//! |---|---|
//! | ConfigMap with `broker.toml` | `<name>-config` |
//! | headless Service (peer DNS, SRV records `_kafka._tcp` and `_cluster._tcp`) | `<name>-headless` |
//! | client Service (Kafka bootstrap, metrics) | `<name>` |
//! | StatefulSet of brokers `<name>-1` .. `<name>-<replicas>` | `<name>` |
//! | PodDisruptionBudget, maxUnavailable 1 | `<name>` |
//! | NodePort Service per broker (external listener only) | `<name>-<id>-external` |

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetOrdinals, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar,
    EnvVarSource, HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecurityContext, Service,
    ServiceAccount, ServicePort, ServiceSpec, SleepAction, TopologySpreadConstraint, Volume,
    VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::ChronikCluster;

pub const KAFKA_PORT: i32 = 9092;
pub const CLUSTER_PORT: i32 = 9093;
pub const METRICS_PORT: i32 = 9644;
/// The external listener's container port (its node port differs per broker).
pub const EXTERNAL_PORT: i32 = 9094;
/// Label on the per-broker external Services: the broker id they expose.
pub const EXTERNAL_BROKER_LABEL: &str = "chronik.io/external-broker";
/// The label the StatefulSet controller puts on each pod: its name.
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The user and group the images run as (the distroless `nonroot` user).
pub const BROKER_UID: i64 = 65532;
pub const DATA_DIR: &str = "/var/lib/chronik";
pub const CONFIG_DIR: &str = "/etc/chronik";
pub const CONFIG_KEY: &str = "broker.toml";
pub const CONTAINER_NAME: &str = "broker";
pub const DATA_VOLUME: &str = "data";
pub const CONFIG_VOLUME: &str = "config";
/// Long enough for a broker to hand away leadership and flush before SIGKILL.
pub const TERMINATION_GRACE_SECONDS: i64 = 120;
/// Sleep before SIGTERM so that clients and peers see the pod leave its Services first.
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;
/// Pod annotation holding a hash of `broker.toml`: a settings change changes the pod
/// template (rolled out by the upgrade logic; the StatefulSet itself uses `OnDelete`).
pub const CONFIG_HASH_ANNOTATION: &str = "chronik.io/config-hash";
/// Pod annotation holding a hash of the whole pod template (less the peer list, which
/// only matters to brokers that start for the first time): a pod whose value differs from
/// the StatefulSet's is due for the rolling upgrade.
pub const TEMPLATE_HASH_ANNOTATION: &str = "chronik.io/template-hash";
/// Label the StatefulSet controller puts on each pod (Kubernetes >= 1.28): its ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// First StatefulSet ordinal. Raft ids must be non-zero, so the ordinal is the node id and
/// pods are `<name>-1` .. `<name>-<replicas>` (`spec.ordinals.start`, GA in 1.31).
pub const FIRST_ORDINAL: i32 = 1;

/// A spec that the API server accepted but the operator cannot turn into brokers: stored
/// before a validation rule existed, or reached through a path that the CRD's rules do not
/// cover.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "spec.config.default_replication_factor ({rf}) must not exceed spec.replicas ({replicas})"
    )]
    ReplicationFactorAboveReplicas { rf: i64, replicas: i32 },
    #[error("spec.replicas must be at least 1, got {0}")]
    Replicas(i32),
    #[error("spec.image must not be empty")]
    EmptyImage,
    #[error("{0} has no name or uid yet")]
    MissingMetadata(&'static str),
}

/// Names of the objects of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub cluster: String,
    pub namespace: String,
    pub config_map: String,
    pub headless_service: String,
    pub client_service: String,
    pub stateful_set: String,
    pub pdb: String,
}

impl Names {
    pub fn of(cluster: &ChronikCluster) -> Names {
        let name = cluster.name_any();
        Names {
            namespace: cluster.namespace().unwrap_or_else(|| "default".into()),
            config_map: format!("{name}-config"),
            headless_service: format!("{name}-headless"),
            client_service: name.clone(),
            stateful_set: name.clone(),
            pdb: name.clone(),
            cluster: name,
        }
    }
}

/// Labels that select a cluster's broker pods (immutable in the StatefulSet selector).
pub fn selector_labels(cluster: &ChronikCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "chronik".to_string()),
        ("app.kubernetes.io/instance".to_string(), cluster.name_any()),
    ])
}

/// The selector as a string, for `status.selector` (scale subresource).
pub fn selector_string(cluster: &ChronikCluster) -> String {
    selector_labels(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Labels on every object of a cluster.
pub fn common_labels(cluster: &ChronikCluster) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster);
    labels.insert("app.kubernetes.io/component".into(), "broker".into());
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        crate::crd::FIELD_MANAGER.into(),
    );
    labels
}

fn owner_ref(cluster: &ChronikCluster) -> Result<OwnerReference, SpecError> {
    cluster
        .controller_owner_ref(&())
        .ok_or(SpecError::MissingMetadata("ChronikCluster"))
}

pub(crate) fn meta(cluster: &ChronikCluster, name: &str) -> Result<ObjectMeta, SpecError> {
    Ok(ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(Names::of(cluster).namespace),
        labels: Some(common_labels(cluster)),
        owner_references: Some(vec![owner_ref(cluster)?]),
        ..ObjectMeta::default()
    })
}

/// Checks again what the CRD's rules check, in case the stored object predates them.
pub fn validate(cluster: &ChronikCluster) -> Result<(), SpecError> {
    let spec = &cluster.spec;
    if spec.replicas < 1 {
        return Err(SpecError::Replicas(spec.replicas));
    }
    if spec.image.trim().is_empty() {
        return Err(SpecError::EmptyImage);
    }
    broker_toml(cluster).map(|_| ())
}

/// The broker's TOML settings file from `spec.config` (keys in alphabetical order).
pub fn broker_toml(cluster: &ChronikCluster) -> Result<String, SpecError> {
    let spec = &cluster.spec;
    if let Some(rf) = spec.config.default_replication_factor {
        if rf > i64::from(spec.replicas) {
            return Err(SpecError::ReplicationFactorAboveReplicas {
                rf,
                replicas: spec.replicas,
            });
        }
    }
    let body = toml::to_string(&spec.config).expect("flat scalar settings serialize to TOML");
    Ok(format!(
        "# Written by chronik-operator from ChronikCluster {}/{} spec.config.\n{body}",
        Names::of(cluster).namespace,
        cluster.name_any()
    ))
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust releases and platforms.
pub fn stable_hash(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

pub fn config_map(cluster: &ChronikCluster) -> Result<ConfigMap, SpecError> {
    let names = Names::of(cluster);
    Ok(ConfigMap {
        metadata: meta(cluster, &names.config_map)?,
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_string(),
            broker_toml(cluster)?,
        )])),
        ..ConfigMap::default()
    })
}

fn tcp_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// Headless Service: stable pod DNS names (`<pod>.<name>-headless.<ns>.svc`) and SRV records
/// for the named ports, published for not-ready pods too so that peers find each other
/// while they start.
pub fn headless_service(cluster: &ChronikCluster) -> Result<Service, SpecError> {
    let names = Names::of(cluster);
    Ok(Service {
        metadata: meta(cluster, &names.headless_service)?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(cluster)),
            ports: Some(vec![
                tcp_port("kafka", KAFKA_PORT),
                tcp_port("cluster", CLUSTER_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// Client Service: Kafka bootstrap address `<name>.<ns>.svc:9092` (clients then connect to
/// the advertised per-pod names) and the brokers' metrics.
pub fn client_service(cluster: &ChronikCluster) -> Result<Service, SpecError> {
    let names = Names::of(cluster);
    Ok(Service {
        metadata: meta(cluster, &names.client_service)?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(cluster)),
            ports: Some(vec![
                tcp_port("kafka", KAFKA_PORT),
                tcp_port("metrics", METRICS_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

pub fn pod_disruption_budget(cluster: &ChronikCluster) -> Result<PodDisruptionBudget, SpecError> {
    let names = Names::of(cluster);
    Ok(PodDisruptionBudget {
        metadata: meta(cluster, &names.pdb)?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cluster)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn env_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The broker container's environment: the broker's `CHRONIK_*` flags (README, "Running
/// the broker"). No shell is needed in the image: the node id is the pod ordinal, read from
/// the pod-index label through the downward API, and the advertised addresses use the
/// kubelet's `$(VAR)` expansion of earlier variables.
pub fn broker_env(cluster: &ChronikCluster) -> Vec<EnvVar> {
    let headless = Names::of(cluster).headless_service;
    let pod_dns = format!("$(POD_NAME).{headless}.$(POD_NAMESPACE).svc");
    let mut vars = vec![
        env_field("POD_NAME", "metadata.name"),
        env_field("POD_NAMESPACE", "metadata.namespace"),
        env_field(
            "CHRONIK_NODE_ID",
            &format!("metadata.labels['{POD_INDEX_LABEL}']"),
        ),
        env("CHRONIK_DATA_DIR", DATA_DIR),
        env("CHRONIK_KAFKA_ADDR", format!("0.0.0.0:{KAFKA_PORT}")),
        env(
            "CHRONIK_ADVERTISED_KAFKA_ADDR",
            format!("{pod_dns}:{KAFKA_PORT}"),
        ),
        env("CHRONIK_CLUSTER_ADDR", format!("0.0.0.0:{CLUSTER_PORT}")),
        env(
            "CHRONIK_ADVERTISED_CLUSTER_ADDR",
            format!("{pod_dns}:{CLUSTER_PORT}"),
        ),
        env("CHRONIK_METRICS_ADDR", format!("0.0.0.0:{METRICS_PORT}")),
        env("CHRONIK_CONFIG", format!("{CONFIG_DIR}/{CONFIG_KEY}")),
        env("CHRONIK_PEERS", peers(cluster)),
        env(
            "CHRONIK_PEER_SRV",
            format!("_cluster._tcp.{headless}.$(POD_NAMESPACE).svc"),
        ),
    ];
    if let Some(external) = &cluster.spec.listeners.external {
        let host = external
            .advertised_host
            .clone()
            .unwrap_or_else(|| "$(HOST_IP)".into());
        vars.extend([
            env_field("HOST_IP", "status.hostIP"),
            env(
                "CHRONIK_EXTERNAL_KAFKA_ADDR",
                format!("0.0.0.0:{EXTERNAL_PORT}"),
            ),
            env(
                "CHRONIK_ADVERTISED_EXTERNAL_KAFKA_ADDR",
                format!("{host}:{}", external.node_port_base),
            ),
            env("CHRONIK_EXTERNAL_PORT_PLUS_NODE_ID", "true"),
        ]);
    }
    vars
}

/// The NodePort Service of each of brokers `1..=brokers` (none without an external
/// listener): node port `nodePortBase + id` to that broker's pod only, since a client
/// must reach the very broker that leads its partition.
pub fn external_services(
    cluster: &ChronikCluster,
    brokers: i32,
) -> Result<Vec<Service>, SpecError> {
    let Some(external) = &cluster.spec.listeners.external else {
        return Ok(vec![]);
    };
    let name = cluster.name_any();
    (1..=brokers)
        .map(|id| {
            let mut metadata = meta(cluster, &format!("{name}-{id}-external"))?;
            metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(EXTERNAL_BROKER_LABEL.into(), id.to_string());
            Ok(Service {
                metadata,
                spec: Some(ServiceSpec {
                    type_: Some("NodePort".into()),
                    selector: Some(BTreeMap::from([(
                        POD_NAME_LABEL.to_string(),
                        format!("{name}-{id}"),
                    )])),
                    ports: Some(vec![ServicePort {
                        node_port: Some(external.node_port_base + id),
                        ..tcp_port("external", EXTERNAL_PORT)
                    }]),
                    // Ready or not: a broker that is starting must be reachable by the
                    // clients its metadata already names.
                    publish_not_ready_addresses: Some(true),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            })
        })
        .collect()
}

/// Every broker of the cluster as `ID@pod-dns:port`: the voters of the metadata group when
/// the cluster is first created (each broker skips itself), and the peers' addresses
/// until they register.
pub fn peers(cluster: &ChronikCluster) -> String {
    let names = Names::of(cluster);
    (1..=cluster.spec.replicas)
        .map(|id| {
            format!(
                "{id}@{}-{id}.{}.$(POD_NAMESPACE).svc:{CLUSTER_PORT}",
                names.cluster, names.headless_service
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn broker_ports(cluster: &ChronikCluster) -> Vec<ContainerPort> {
    let mut ports = vec![
        container_port("kafka", KAFKA_PORT),
        container_port("cluster", CLUSTER_PORT),
        container_port("metrics", METRICS_PORT),
    ];
    if cluster.spec.listeners.external.is_some() {
        ports.push(container_port("external", EXTERNAL_PORT));
    }
    ports
}

/// What the `restricted` Pod Security Standard asks of a container (the brokers write
/// only to their volumes).
pub(crate) fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// Default placement: prefer brokers of one cluster on different nodes.
fn default_affinity(cluster: &ChronikCluster) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".into(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(cluster)),
                            ..LabelSelector::default()
                        }),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// The brokers' StatefulSet; `operator_image` runs the rack init step when rack
/// awareness is on.
pub fn stateful_set(
    cluster: &ChronikCluster,
    operator_image: &str,
) -> Result<StatefulSet, SpecError> {
    let names = Names::of(cluster);
    let spec = &cluster.spec;
    let toml = broker_toml(cluster)?;
    let overrides = spec.pod_template.clone().unwrap_or_default();

    let mut pod_labels = overrides.labels.clone();
    pod_labels.extend(common_labels(cluster));
    let mut pod_annotations = overrides.annotations.clone();
    pod_annotations.insert(CONFIG_HASH_ANNOTATION.into(), stable_hash(toml.as_bytes()));

    let container = Container {
        name: CONTAINER_NAME.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["chronik-broker".into()]),
        env: Some(broker_env(cluster)),
        ports: Some(broker_ports(cluster)),
        security_context: Some(restricted_container()),
        resources: spec.resources.clone(),
        // Opening RocksDB and replaying the Raft logs can take a while on a big volume.
        startup_probe: Some(http_probe("/healthz", 5, 60)),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SLEEP_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: DATA_VOLUME.into(),
                mount_path: DATA_DIR.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: CONFIG_VOLUME.into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };

    let topology_spread_constraints = spec.rack_awareness.as_ref().map(|rack| {
        vec![TopologySpreadConstraint {
            topology_key: rack.topology_key.clone(),
            max_skew: 1,
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cluster)),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        }]
    });

    let mut pod_spec = PodSpec {
        containers: vec![container],
        // The images' non-root user; the volume is made its group's.
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(BROKER_UID),
            run_as_group: Some(BROKER_UID),
            fs_group: Some(BROKER_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        affinity: Some(
            overrides
                .affinity
                .clone()
                .unwrap_or_else(|| default_affinity(cluster)),
        ),
        node_selector: (!overrides.node_selector.is_empty())
            .then(|| overrides.node_selector.clone()),
        tolerations: (!overrides.tolerations.is_empty()).then(|| overrides.tolerations.clone()),
        priority_class_name: overrides.priority_class_name.clone(),
        topology_spread_constraints,
        volumes: Some(vec![Volume {
            name: CONFIG_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.config_map.clone(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    };
    crate::rack::add_to_pod(cluster, operator_image, &mut pod_spec);

    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(selector_labels(cluster)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(spec.storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };

    Ok(StatefulSet {
        metadata: meta(cluster, &names.stateful_set)?,
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(names.headless_service.clone()),
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            ordinals: Some(StatefulSetOrdinals {
                start: Some(FIRST_ORDINAL),
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(spec.storage.retention.when_deleted.as_str().into()),
                    when_scaled: Some(spec.storage.retention.when_scaled.as_str().into()),
                },
            ),
            selector: LabelSelector {
                match_labels: Some(selector_labels(cluster)),
                ..LabelSelector::default()
            },
            template: with_template_hash(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            }),
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

/// Stamps [`TEMPLATE_HASH_ANNOTATION`] on a pod template.
fn with_template_hash(mut template: PodTemplateSpec) -> PodTemplateSpec {
    let mut hashed = template.clone();
    for c in hashed.spec.iter_mut().flat_map(|s| s.containers.iter_mut()) {
        c.env
            .iter_mut()
            .flatten()
            .filter(|e| e.name == "CHRONIK_PEERS")
            .for_each(|e| e.value = None);
    }
    let hash = stable_hash(&serde_json::to_vec(&hashed).expect("templates serialize"));
    template
        .metadata
        .get_or_insert_with(ObjectMeta::default)
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(TEMPLATE_HASH_ANNOTATION.into(), hash);
    template
}

/// The template hash a pod was created from, if it carries one.
pub fn pod_template_hash(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(TEMPLATE_HASH_ANNOTATION)
        .map(String::as_str)
}

/// Every object of a cluster, in the order they are applied.
#[derive(Debug, Clone)]
pub struct Desired {
    pub config_map: ConfigMap,
    pub headless_service: Service,
    pub client_service: Service,
    pub pdb: PodDisruptionBudget,
    pub stateful_set: StatefulSet,
    /// One per broker of the spec (the reconciler adds those of brokers still leaving).
    pub external_services: Vec<Service>,
    /// With rack awareness: the brokers' ServiceAccount and its node-reading binding.
    pub rack: Option<(ServiceAccount, ClusterRoleBinding)>,
}

pub fn desired(cluster: &ChronikCluster, operator_image: &str) -> Result<Desired, SpecError> {
    validate(cluster)?;
    let rack = match &cluster.spec.rack_awareness {
        Some(_) => Some((
            crate::rack::service_account(cluster)?,
            crate::rack::binding(cluster),
        )),
        None => None,
    };
    Ok(Desired {
        rack,
        config_map: config_map(cluster)?,
        headless_service: headless_service(cluster)?,
        client_service: client_service(cluster)?,
        pdb: pod_disruption_budget(cluster)?,
        stateful_set: stateful_set(cluster, operator_image)?,
        external_services: external_services(cluster, cluster.spec.replicas)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        BrokerConfig, ChronikClusterSpec, PodTemplateOverrides, PvcRetention, RackAwareness,
        RebalanceSpec, RetentionPolicy, StorageSpec,
    };
    use k8s_openapi::api::core::v1::Toleration;
    use serde_json::json;

    const OPERATOR_IMAGE: &str = "chronik-operator:test";

    fn spec() -> ChronikClusterSpec {
        ChronikClusterSpec {
            replicas: 3,
            image: "ghcr.io/acme/chronik:0.1.0".into(),
            resources: None,
            storage: StorageSpec::default(),
            config: BrokerConfig::default(),
            rack_awareness: None,
            pod_template: None,
            rebalance: RebalanceSpec::default(),
            listeners: Default::default(),
        }
    }

    fn cluster(spec: ChronikClusterSpec) -> ChronikCluster {
        let mut c = ChronikCluster::new("events", spec);
        c.metadata.namespace = Some("prod".into());
        c.metadata.uid = Some("0c0ffee0-0000-4000-8000-000000000001".into());
        c
    }

    fn config(pairs: serde_json::Value) -> BrokerConfig {
        serde_json::from_value(pairs).unwrap()
    }

    fn owned_by_cluster(meta: &ObjectMeta) {
        let refs = meta.owner_references.as_ref().expect("owner references");
        assert_eq!(refs.len(), 1);
        let r = &refs[0];
        assert_eq!(r.api_version, "chronik.io/v1alpha1");
        assert_eq!(r.kind, "ChronikCluster");
        assert_eq!(r.name, "events");
        assert_eq!(r.uid, "0c0ffee0-0000-4000-8000-000000000001");
        assert_eq!(r.controller, Some(true));
        assert_eq!(meta.namespace.as_deref(), Some("prod"));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/instance"], "events");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "chronik-operator");
    }

    #[test]
    fn every_object_is_owned_and_named() {
        let d = desired(&cluster(spec()), OPERATOR_IMAGE).unwrap();
        assert_eq!(d.config_map.metadata.name.as_deref(), Some("events-config"));
        assert_eq!(
            d.headless_service.metadata.name.as_deref(),
            Some("events-headless")
        );
        assert_eq!(d.client_service.metadata.name.as_deref(), Some("events"));
        assert_eq!(d.stateful_set.metadata.name.as_deref(), Some("events"));
        assert_eq!(d.pdb.metadata.name.as_deref(), Some("events"));
        for m in [
            &d.config_map.metadata,
            &d.headless_service.metadata,
            &d.client_service.metadata,
            &d.stateful_set.metadata,
            &d.pdb.metadata,
        ] {
            owned_by_cluster(m);
        }
    }

    #[test]
    fn cluster_without_uid_is_an_error() {
        let mut c = cluster(spec());
        c.metadata.uid = None;
        assert_eq!(
            desired(&c, OPERATOR_IMAGE).unwrap_err(),
            SpecError::MissingMetadata("ChronikCluster")
        );
    }

    #[test]
    fn broker_toml_is_sorted_typed_and_parses_back() {
        let mut s = spec();
        s.config = config(json!({
            "retention_ms": 86400000,
            "default_partitions": 3,
            "auto_create_topics": false,
            "default_replication_factor": 3,
            "retention_bytes": -1
        }));
        let toml_text = broker_toml(&cluster(s)).unwrap();
        assert_eq!(
            toml_text,
            "# Written by chronik-operator from ChronikCluster prod/events spec.config.\n\
             auto_create_topics = false\n\
             default_partitions = 3\n\
             default_replication_factor = 3\n\
             retention_bytes = -1\n\
             retention_ms = 86400000\n"
        );
        let parsed: toml::Table = toml::from_str(&toml_text).unwrap();
        assert_eq!(parsed["retention_ms"].as_integer(), Some(86_400_000));
        assert_eq!(parsed["auto_create_topics"].as_bool(), Some(false));

        let cm = config_map(&cluster(spec())).unwrap();
        assert_eq!(
            cm.data.unwrap()[CONFIG_KEY],
            "# Written by chronik-operator from ChronikCluster prod/events spec.config.\n"
        );
    }

    /// The CRD's settings keys are exactly the keys of the broker's settings file, as
    /// docs/configuration.md lists them.
    #[test]
    fn config_keys_are_the_brokers_settings() {
        let doc = include_str!("../../docs/configuration.md");
        let table = doc.split("## Topic configs").next().unwrap();
        let documented: std::collections::BTreeSet<String> = table
            .lines()
            .filter_map(|l| {
                l.strip_prefix("| `")?
                    .split_once('`')
                    .map(|(k, _)| k.to_string())
            })
            .collect();
        let all: BrokerConfig = serde_json::from_value(json!({
            "auto_create_topics": true, "default_partitions": 1, "default_replication_factor": 1,
            "group_initial_rebalance_delay_ms": 0, "group_max_session_timeout_ms": 1,
            "group_min_session_timeout_ms": 1, "max_partitions_per_topic": 1,
            "max_request_bytes": 1024, "metadata_voters": 3, "metadata_snapshot_entries": 1000,
            "move_stall_timeout_ms": 1000,
            "raft_tick_ms": 1,
            "offsets_topic_partitions": 16, "offsets_topic_replication_factor": 3,
            "offsets_checkpoint_records": 10000,
            "retention_bytes": 1, "retention_check_interval_ms": 1, "retention_ms": 1,
            "storage_min_free_bytes": 1
        }))
        .unwrap();
        let keys: std::collections::BTreeSet<String> = serde_json::to_value(&all)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys.len(), 19, "a key above is not a BrokerConfig field");
        assert_eq!(
            keys, documented,
            "BrokerConfig and docs/configuration.md disagree"
        );
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        let mut s = spec();
        s.config = config(json!({"default_replication_factor": 5}));
        assert_eq!(
            validate(&cluster(s)).unwrap_err().to_string(),
            "spec.config.default_replication_factor (5) must not exceed spec.replicas (3)"
        );
        let mut s = spec();
        s.replicas = 0;
        assert_eq!(validate(&cluster(s)).unwrap_err(), SpecError::Replicas(0));
        let mut s = spec();
        s.image = " ".into();
        assert_eq!(validate(&cluster(s)).unwrap_err(), SpecError::EmptyImage);
    }

    #[test]
    fn services_expose_named_ports() {
        let c = cluster(spec());
        let h = headless_service(&c).unwrap().spec.unwrap();
        assert_eq!(h.cluster_ip.as_deref(), Some("None"));
        assert_eq!(h.publish_not_ready_addresses, Some(true));
        assert_eq!(h.selector, Some(selector_labels(&c)));
        let ports: Vec<_> = h
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port, p.target_port.unwrap()))
            .collect();
        assert_eq!(
            ports,
            vec![
                ("kafka".into(), 9092, IntOrString::String("kafka".into())),
                (
                    "cluster".into(),
                    9093,
                    IntOrString::String("cluster".into())
                ),
            ]
        );
        let s = client_service(&c).unwrap().spec.unwrap();
        assert_eq!(s.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(s.cluster_ip, None);
        let names: Vec<_> = s
            .ports
            .unwrap()
            .into_iter()
            .map(|p| p.name.unwrap())
            .collect();
        assert_eq!(names, vec!["kafka", "metrics"]);
    }

    #[test]
    fn pdb_allows_one_broker_down() {
        let c = cluster(spec());
        let pdb = pod_disruption_budget(&c).unwrap().spec.unwrap();
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(pdb.min_available, None);
        assert_eq!(
            pdb.selector.unwrap().match_labels,
            Some(selector_labels(&c))
        );
    }

    #[test]
    fn stateful_set_runs_brokers_per_the_cli_contract() {
        let mut s = spec();
        s.storage = StorageSpec {
            size: "50Gi".into(),
            storage_class_name: Some("fast".into()),
            retention: PvcRetention {
                when_deleted: RetentionPolicy::Delete,
                when_scaled: RetentionPolicy::Retain,
            },
        };
        let c = cluster(s);
        let sts = stateful_set(&c, OPERATOR_IMAGE).unwrap().spec.unwrap();
        assert_eq!(sts.replicas, Some(3));
        assert_eq!(sts.service_name.as_deref(), Some("events-headless"));
        assert_eq!(sts.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(
            sts.update_strategy.unwrap().type_.as_deref(),
            Some("OnDelete")
        );
        assert_eq!(sts.ordinals.unwrap().start, Some(1));
        let retention = sts.persistent_volume_claim_retention_policy.unwrap();
        assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
        assert_eq!(sts.selector.match_labels, Some(selector_labels(&c)));

        let claims = sts.volume_claim_templates.unwrap();
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        let claim = claims[0].spec.as_ref().unwrap();
        assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"],
            Quantity("50Gi".into())
        );

        let template = sts.template;
        let labels = template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        for (k, v) in selector_labels(&c) {
            assert_eq!(labels[&k], v);
        }
        let pod = template.spec.unwrap();
        assert_eq!(pod.termination_grace_period_seconds, Some(120));
        assert_eq!(pod.containers.len(), 1);
        let ctr = &pod.containers[0];
        assert_eq!(ctr.image.as_deref(), Some("ghcr.io/acme/chronik:0.1.0"));
        assert_eq!(ctr.command, Some(vec!["chronik-broker".to_string()]));

        let env: BTreeMap<_, _> = ctr
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| {
                let v = e.value.clone().unwrap_or_else(|| {
                    e.value_from
                        .as_ref()
                        .unwrap()
                        .field_ref
                        .as_ref()
                        .unwrap()
                        .field_path
                        .clone()
                });
                (e.name.as_str(), v)
            })
            .collect();
        assert_eq!(
            env["CHRONIK_NODE_ID"],
            "metadata.labels['apps.kubernetes.io/pod-index']"
        );
        assert_eq!(env["CHRONIK_DATA_DIR"], "/var/lib/chronik");
        assert_eq!(env["CHRONIK_KAFKA_ADDR"], "0.0.0.0:9092");
        assert_eq!(
            env["CHRONIK_ADVERTISED_KAFKA_ADDR"],
            "$(POD_NAME).events-headless.$(POD_NAMESPACE).svc:9092"
        );
        assert_eq!(
            env["CHRONIK_ADVERTISED_CLUSTER_ADDR"],
            "$(POD_NAME).events-headless.$(POD_NAMESPACE).svc:9093"
        );
        assert_eq!(env["CHRONIK_METRICS_ADDR"], "0.0.0.0:9644");
        assert_eq!(env["CHRONIK_CONFIG"], "/etc/chronik/broker.toml");
        assert_eq!(
            env["CHRONIK_PEERS"],
            "1@events-1.events-headless.$(POD_NAMESPACE).svc:9093,\
             2@events-2.events-headless.$(POD_NAMESPACE).svc:9093,\
             3@events-3.events-headless.$(POD_NAMESPACE).svc:9093"
        );
        assert_eq!(
            env["CHRONIK_PEER_SRV"],
            "_cluster._tcp.events-headless.$(POD_NAMESPACE).svc"
        );
        // $(VAR) references only work for variables defined earlier in the list.
        let order: Vec<_> = ctr
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        let pos = |n: &str| order.iter().position(|x| *x == n).unwrap();
        assert!(pos("POD_NAME") < pos("CHRONIK_ADVERTISED_KAFKA_ADDR"));
        assert!(pos("POD_NAMESPACE") < pos("CHRONIK_ADVERTISED_KAFKA_ADDR"));

        let readiness = ctr
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(readiness.path.as_deref(), Some("/readyz"));
        assert_eq!(readiness.port, IntOrString::String("metrics".into()));
        let liveness = ctr
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(liveness.path.as_deref(), Some("/healthz"));
        let pre_stop = ctr.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        assert_eq!(pre_stop.sleep.as_ref().unwrap().seconds, 5);
        let ports: Vec<_> = ctr
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            vec![
                ("kafka".into(), 9092),
                ("cluster".into(), 9093),
                ("metrics".into(), 9644)
            ]
        );
        let mounts: Vec<_> = ctr
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert_eq!(
            mounts,
            vec![("data", "/var/lib/chronik"), ("config", "/etc/chronik")]
        );
        let volumes = pod.volumes.unwrap();
        assert_eq!(
            volumes[0].config_map.as_ref().unwrap().name,
            "events-config"
        );
        // Default placement: spread over nodes.
        assert!(pod.affinity.unwrap().pod_anti_affinity.is_some());
        assert_eq!(pod.topology_spread_constraints, None);
    }

    #[test]
    fn template_hash_follows_image_and_config_but_not_the_peer_list() {
        let hash = |c: &ChronikCluster| {
            let sts = stateful_set(c, OPERATOR_IMAGE).unwrap();
            pod_template_hash(sts.spec.unwrap().template.metadata.as_ref().unwrap())
                .unwrap()
                .to_string()
        };
        let base = hash(&cluster(spec()));
        assert_eq!(base, hash(&cluster(spec())));
        let mut s = spec();
        s.image = "ghcr.io/acme/chronik:0.2.0".into();
        assert_ne!(base, hash(&cluster(s)));
        let mut s = spec();
        s.replicas = 5;
        assert_eq!(
            base,
            hash(&cluster(s)),
            "scaling must not roll every broker"
        );
    }

    #[test]
    fn config_change_changes_the_pod_template_hash() {
        let hash = |cfg: serde_json::Value| {
            let mut s = spec();
            s.config = config(cfg);
            let sts = stateful_set(&cluster(s), OPERATOR_IMAGE).unwrap();
            sts.spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[CONFIG_HASH_ANNOTATION]
                .clone()
        };
        let a = hash(json!({"retention_ms": 1000}));
        assert_eq!(a, hash(json!({"retention_ms": 1000})));
        assert_ne!(a, hash(json!({"retention_ms": 2000})));
        assert_eq!(stable_hash(b""), "cbf29ce484222325");
        assert_eq!(stable_hash(b"a"), "af63dc4c8601ec8c");
    }

    #[test]
    fn pod_template_overrides_and_rack_awareness() {
        let mut s = spec();
        s.rack_awareness = Some(RackAwareness {
            topology_key: "topology.kubernetes.io/zone".into(),
        });
        s.pod_template = Some(PodTemplateOverrides {
            labels: BTreeMap::from([
                ("team".to_string(), "data".to_string()),
                // cannot take over a selector label
                (
                    "app.kubernetes.io/instance".to_string(),
                    "other".to_string(),
                ),
            ]),
            annotations: BTreeMap::from([("prometheus.io/scrape".into(), "true".into())]),
            node_selector: BTreeMap::from([("disk".into(), "ssd".into())]),
            tolerations: vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Equal".into()),
                value: Some("kafka".into()),
                effect: Some("NoSchedule".into()),
                ..Toleration::default()
            }],
            affinity: Some(Affinity::default()),
            priority_class_name: Some("high".into()),
        });
        let sts = stateful_set(&cluster(s), OPERATOR_IMAGE)
            .unwrap()
            .spec
            .unwrap();
        let meta = sts.template.metadata.unwrap();
        let labels = meta.labels.unwrap();
        assert_eq!(labels["team"], "data");
        assert_eq!(labels["app.kubernetes.io/instance"], "events");
        let annotations = meta.annotations.unwrap();
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert!(annotations.contains_key(CONFIG_HASH_ANNOTATION));
        let pod = sts.template.spec.unwrap();
        assert_eq!(pod.node_selector.unwrap()["disk"], "ssd");
        assert_eq!(
            pod.tolerations.unwrap()[0].key.as_deref(),
            Some("dedicated")
        );
        assert_eq!(pod.affinity, Some(Affinity::default()));
        assert_eq!(pod.priority_class_name.as_deref(), Some("high"));
        let tsc = pod.topology_spread_constraints.unwrap();
        assert_eq!(tsc[0].topology_key, "topology.kubernetes.io/zone");
        assert_eq!(tsc[0].max_skew, 1);
    }
}
