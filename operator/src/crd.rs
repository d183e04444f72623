//! The `ChronikCluster` custom resource (`chronik.io/v1alpha1`).
//!
//! Validation that the API server enforces lives here, next to the fields: OpenAPI bounds
//! (`minimum`, `minLength`, ...) and CEL rules (`x-kubernetes-validations`) with messages that
//! say what is wrong. `crds/chronikcluster.yaml` is generated from these types by the `crdgen`
//! binary, and a unit test fails when the checked-in file is stale.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Field manager used for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "chronik-operator";

/// Image reference grammar (distribution/reference, simplified): optional registry host with
/// port, lowercase path components, optional tag, optional digest. RE2 syntax for CEL.
pub const IMAGE_PATTERN: &str = concat!(
    "^(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:[.](?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*",
    "(?::[0-9]+)?/)?",
    "[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*",
    "(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*",
    "(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?",
    "(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
);

/// A Chronik cluster: a StatefulSet of `chronik-broker` pods with their Services, settings
/// ConfigMap and PodDisruptionBudget.
// One `printcolumn(...)` per column repeats `type_ = ...`, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "chronik.io",
    version = "v1alpha1",
    kind = "ChronikCluster",
    doc = "A Chronik cluster: Kafka-compatible brokers run by chronik-operator (see docs/operator.md).",
    plural = "chronikclusters",
    singular = "chronikcluster",
    shortname = "ck",
    category = "chronik",
    namespaced,
    status = "ChronikClusterStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired brokers"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Ready brokers"
    ),
    printcolumn(
        name = "URP",
        type_ = "integer",
        json_path = ".status.partitions.underReplicated",
        description = "Under-replicated partitions"
    ),
    printcolumn(
        name = "Leaderless",
        type_ = "integer",
        json_path = ".status.partitions.leaderless",
        priority = 1,
        description = "Partitions without a leader"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.config) || !has(self.config.default_replication_factor) || self.config.default_replication_factor <= self.replicas",
        "message": "config.default_replication_factor must not exceed replicas",
        "reason": "FieldValueInvalid",
        "fieldPath": ".config"
    },
    {
        "rule": "!has(self.listeners) || !has(self.listeners.external) || self.listeners.external.nodePortBase + self.replicas <= 32767",
        "message": "listeners.external.nodePortBase + replicas must be a node port (at most 32767)",
        "reason": "FieldValueInvalid",
        "fieldPath": ".listeners.external.nodePortBase"
    }
]))]
pub struct ChronikClusterSpec {
    /// Number of brokers. Pods are named `<name>-1` .. `<name>-<replicas>`; the ordinal is
    /// the broker's node id.
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,

    /// Container image with the `chronik-broker` binary, e.g. `ghcr.io/acme/chronik:0.1.0`.
    #[schemars(length(min = 1, max = 512), extend("x-kubernetes-validations" = [
        {
            "rule": format!("self.matches('{IMAGE_PATTERN}')"),
            "message": "image must be a container image reference such as registry.example.com/chronik/broker:0.1.0 (lowercase repository, optional :tag and @sha256:digest)"
        }
    ]))]
    pub image: String,

    /// Compute resources of the broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Persistent volume of each broker (mounted at /var/lib/chronik).
    #[serde(default)]
    pub storage: StorageSpec,

    /// Broker settings, written to the broker's TOML settings file (see
    /// docs/configuration.md).
    #[serde(default, skip_serializing_if = "BrokerConfig::is_empty")]
    pub config: BrokerConfig,

    /// Spread brokers across failure domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack_awareness: Option<RackAwareness>,

    /// Additions to the broker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateOverrides>,

    /// Partition rebalancing behaviour.
    #[serde(default)]
    pub rebalance: RebalanceSpec,

    /// Kafka listeners: the internal one (pod DNS names, always on) and an optional
    /// external one for clients outside the Kubernetes cluster.
    #[serde(default, skip_serializing_if = "Listeners::is_empty")]
    pub listeners: Listeners,
}

/// The cluster's Kafka listeners besides the internal one.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Listeners {
    /// Clients outside the cluster: every broker gets a Service of its own and advertises
    /// an address such clients reach (as Strimzi's and Redpanda's external listeners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalListener>,
}

impl Listeners {
    pub fn is_empty(&self) -> bool {
        self.external.is_none()
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalListener {
    /// How the brokers are exposed: `NodePort` (a Service per broker on node port
    /// `nodePortBase` + broker id; each broker advertises its node's address and that port).
    #[serde(rename = "type")]
    pub type_: ExternalListenerType,
    /// Broker N listens on node port nodePortBase + N (default 31090: brokers 1, 2, 3 on
    /// 31091, 31092, 31093). The range must fit the cluster's node-port range.
    #[serde(default = "default_node_port_base")]
    #[schemars(range(min = 30000, max = 32766))]
    pub node_port_base: i32,
    /// Host advertised instead of each broker's node address (a DNS name resolving to
    /// the nodes, or an address in front of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub advertised_host: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ExternalListenerType {
    NodePort,
}

fn default_node_port_base() -> i32 {
    31090
}

/// Persistent storage of each broker.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each broker's volume, a Kubernetes quantity such as `10Gi`.
    #[serde(default = "default_storage_size")]
    #[schemars(length(min = 1, max = 64), extend("x-kubernetes-validations" = [
        {
            "rule": "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))",
            "message": "storage.size must be a positive quantity such as 10Gi or 500Mi"
        }
    ]))]
    pub size: String,

    /// StorageClass of the volumes; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,

    /// What happens to the volumes when the cluster is deleted or scaled down.
    #[serde(default)]
    pub retention: PvcRetention,
}

fn default_storage_size() -> String {
    "10Gi".to_string()
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            storage_class_name: None,
            retention: PvcRetention::default(),
        }
    }
}

/// The StatefulSet's PersistentVolumeClaim retention policy.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetention {
    /// Volumes of a deleted cluster: `Retain` (default) or `Delete`.
    #[serde(default)]
    pub when_deleted: RetentionPolicy,
    /// Volumes of brokers removed by a scale-down: `Retain` (default) or `Delete`.
    #[serde(default)]
    pub when_scaled: RetentionPolicy,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RetentionPolicy {
    #[default]
    Retain,
    Delete,
}

impl RetentionPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionPolicy::Retain => "Retain",
            RetentionPolicy::Delete => "Delete",
        }
    }
}

/// Rack awareness: brokers are spread evenly over the values of a node label.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RackAwareness {
    /// Node label whose values are the racks, e.g. `topology.kubernetes.io/zone`.
    #[schemars(length(min = 1, max = 316))]
    pub topology_key: String,
}

/// Additions to the broker pod template. Labels and annotations are merged with the
/// operator's own (which win on conflicts).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverrides {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Replaces the default (a preferred anti-affinity between brokers on one node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Partition rebalancing.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSpec {
    /// Move partitions onto new brokers after a scale-up (not implemented yet: recorded only).
    #[serde(default = "default_true")]
    pub on_scale_up: bool,
}

fn default_true() -> bool {
    true
}

impl Default for RebalanceSpec {
    fn default() -> Self {
        RebalanceSpec { on_scale_up: true }
    }
}

/// Broker settings: the keys of the broker's TOML settings file (broker/src/config.rs,
/// docs/configuration.md), flat and with the same names. Every key is optional; the broker's
/// default applies to a key left out. The API server checks types and bounds; `kubectl`
/// (strict field validation, its default) rejects unknown keys, which the broker would
/// refuse at start-up.
///
/// A typed object rather than a free-form map: CEL rules cannot see the values of a map of
/// untyped values, and the replication-factor rule above needs them.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct BrokerConfig {
    /// Create unknown topics when a client's Metadata request allows it (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics and of CreateTopics with -1 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2147483647))]
    pub default_partitions: Option<i64>,
    /// Replication factor for CreateTopics with -1 (default 1); at most `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32767))]
    pub default_replication_factor: Option<i64>,
    /// Wait for more members before a new group's first rebalance (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub group_initial_rebalance_delay_ms: Option<i64>,
    /// Consumers asking for a longer session timeout get INVALID_SESSION_TIMEOUT (default 1800000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub group_max_session_timeout_ms: Option<i64>,
    /// Consumers asking for a shorter session timeout get INVALID_SESSION_TIMEOUT (default 6000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub group_min_session_timeout_ms: Option<i64>,
    /// Larger partition counts get INVALID_PARTITIONS (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2147483647))]
    pub max_partitions_per_topic: Option<i64>,
    /// Larger request frames close the connection (default 104857600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub max_request_bytes: Option<i64>,
    /// Voters of the metadata group (the controller quorum); 0 keeps 3, or 5 once at least
    /// five live brokers stay (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 15))]
    pub metadata_voters: Option<i64>,
    /// Applied entries the metadata log gathers before it is compacted behind a snapshot
    /// of the catalog; a broker that needs older entries receives the snapshot; 0 never
    /// compacts (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub metadata_snapshot_entries: Option<i64>,
    /// A moving partition unchanged this long is reported stalled (the `Degraded`
    /// condition, reason `MoveStalled`) (default 120000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1000))]
    pub move_stall_timeout_ms: Option<i64>,
    /// Partitions of the internal `__consumer_offsets` topic (consumer groups hash to
    /// them; each partition's leader coordinates its groups); fixed once the topic
    /// exists (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub offsets_topic_partitions: Option<i64>,
    /// Replicas of each `__consumer_offsets` partition, capped by the metadata group's
    /// size (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 7))]
    pub offsets_topic_replication_factor: Option<i64>,
    /// Records a `__consumer_offsets` partition gathers above its log start before its
    /// coordinator restates the live offsets and groups and moves the log start past the
    /// old records; 0 never does (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub offsets_checkpoint_records: Option<i64>,
    /// Raft tick; an election takes 10 ticks (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub raft_tick_ms: Option<i64>,
    /// Default `retention.bytes` per partition; -1 is unlimited (default -1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub retention_bytes: Option<i64>,
    /// How often retention runs (default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub retention_check_interval_ms: Option<i64>,
    /// Default `retention.ms`; -1 keeps data forever (default 604800000, 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub retention_ms: Option<i64>,
    /// Below this much free space on a broker's data volume it refuses new records with
    /// KAFKA_STORAGE_ERROR until space returns (default 1073741824, 1 GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub storage_min_free_bytes: Option<i64>,
}

impl BrokerConfig {
    pub fn is_empty(&self) -> bool {
        *self == BrokerConfig::default()
    }
}

/// Observed state, written by the operator through the status subresource.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChronikClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Ready, Reconciling, Upgrading, Rebalancing, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Broker pods that exist (from the StatefulSet); the scale subresource's status replicas.
    #[serde(default)]
    pub replicas: i32,

    /// Broker pods that are Ready (from the StatefulSet).
    #[serde(default)]
    pub ready_replicas: i32,

    /// Label selector of the broker pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// Image that every existing broker pod runs; unset while they differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_image: Option<String>,

    /// Image of the spec, that the brokers are moving to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_image: Option<String>,

    /// One entry per broker pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<BrokerStatus>,

    /// Partition health summary (from the brokers' admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<PartitionSummary>,

    /// Up to 50 partitions, leaderless and under-replicated ones first (from the admin API).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub partition_details: Vec<PartitionDetail>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rebalance: Option<OperationOutcome>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_upgrade: Option<OperationOutcome>,

    /// Where clients connect, one entry per listener (`internal`, `external`), e.g.
    /// `kubectl get ck NAME -o jsonpath='{.status.listeners[?(@.name=="external")].bootstrapServers}'`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    /// `internal` or `external`.
    pub name: String,
    /// Comma-separated host:port list to bootstrap from.
    pub bootstrap_servers: String,
}

/// Coarse state of the cluster, for `kubectl get ck`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Objects applied, no broker Ready yet.
    Pending,
    /// Some brokers are not Ready.
    Reconciling,
    /// Every broker is Ready.
    Running,
    /// A rolling upgrade is restarting brokers one at a time.
    Upgrading,
    /// The spec cannot be applied (see the Degraded condition).
    Failed,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    /// Node id (the pod ordinal).
    pub id: i32,
    pub pod: String,
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Partitions this broker leads (from the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaders: Option<i32>,
    /// Partition replicas on this broker (from the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Its part in the metadata quorum: `voter`, or `learner` (it receives the metadata
    /// log without voting); from the admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionSummary {
    pub total: i32,
    pub under_replicated: i32,
    pub offline: i32,
    pub leaderless: i32,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionDetail {
    pub topic: String,
    pub partition: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<i32>,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// Outcome of the last rebalance or rolling upgrade.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationOutcome {
    /// `Succeeded`, `Failed` or `InProgress`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// The CRD as YAML, exactly as `crds/chronikcluster.yaml` holds it.
pub fn crd_yaml() -> String {
    let crd = ChronikCluster::crd();
    let body = serde_yaml::to_string(&crd).expect("CRD serializes to YAML");
    format!(
        "# Generated by `cargo run --release --bin crdgen > crds/chronikcluster.yaml`; do not edit.\n{body}"
    )
}
