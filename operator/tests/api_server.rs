//! Integration tests against a real kube-apiserver and etcd.
//!
//! The harness builds (or finds cached) the pinned Kubernetes binaries with
//! `tools/k8s/build.sh`, starts a control plane in a temporary directory with
//! `tools/k8s/control-plane.sh start`, installs `crds/chronikcluster.yaml` with kubectl, and
//! stops everything when the test process exits. If any of that fails, every test fails
//! with the reason: nothing is skipped.
//!
//! There is no kubelet, scheduler or controller-manager: StatefulSets never get pods and
//! nothing garbage-collects. Where a test needs a StatefulSet with ready pods it writes the
//! StatefulSet's status itself, as the StatefulSet controller would. Full pod lifecycles
//! (brokers really starting, probes, restarts) belong to the e2e work.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chronik_operator::crd::{ChronikCluster, ChronikClusterSpec, Phase, FIELD_MANAGER};
use chronik_operator::metrics::Metrics;
use chronik_operator::reconcile::{self, Context};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, CustomResourceExt, Resource, ResourceExt};
use serde_json::json;

// ---------------------------------------------------------------------------------------
// The control plane, shared by all tests of this binary.

/// A running etcd + kube-apiserver. Dropping it stops both and deletes the directory.
struct ControlPlane {
    repo: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl ControlPlane {
    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("directory").path()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let script = self.repo.join("tools/k8s/control-plane.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("stop")
            .arg(self.dir())
            .status();
        drop(self.dir.take());
    }
}

/// What the tests need of the control plane.
#[derive(Clone)]
struct Shared {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
}

static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
static GUARD: Mutex<Option<ControlPlane>> = Mutex::new(None);

extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
}

/// Runs when the test binary exits (libtest exits through `std::process::exit`, which runs
/// C `atexit` handlers; statics are never dropped).
extern "C" fn stop_control_plane() {
    if let Ok(mut guard) = GUARD.lock() {
        drop(guard.take());
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn start_control_plane() -> Result<Shared, String> {
    let started = Instant::now();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let bin = run(
        Command::new("bash").arg(repo.join("tools/k8s/build.sh")),
        "tools/k8s/build.sh (builds kube-apiserver, etcd, kubectl; needs Go)",
    )?;
    let bin = PathBuf::from(bin.trim());
    let dir = tempfile::Builder::new()
        .prefix("chronik-kcp-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    // From here on the guard stops whatever was started, on every error path too.
    let plane = ControlPlane {
        repo: repo.clone(),
        dir: Some(dir),
    };
    run(
        Command::new("bash")
            .arg(repo.join("tools/k8s/control-plane.sh"))
            .arg("start")
            .arg(plane.dir())
            .env("CHRONIK_K8S_BIN", &bin),
        "tools/k8s/control-plane.sh start",
    )?;
    let shared = Shared {
        kubeconfig: plane.dir().join("kubeconfig"),
        kubectl: bin.join("kubectl"),
    };
    // Install the CRD the way a user does, and wait until it is served.
    let crd = repo.join("crds/chronikcluster.yaml");
    kubectl(
        &shared,
        &["apply", "--server-side", "-f", crd.to_str().unwrap()],
    )?;
    // (`kubectl wait` fails outright if it looks before the CRD has any status, and so
    // does this jsonpath: until then an error only means "not yet".)
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let established = kubectl(
            &shared,
            &[
                "get",
                "crd/chronikclusters.chronik.io",
                "-o",
                r#"jsonpath={.status.conditions[?(@.type=="Established")].status}"#,
            ],
        )
        .unwrap_or_else(|e| e);
        if established.trim() == "True" {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "CRD not Established after 60s (status {established:?})"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    *GUARD.lock().unwrap() = Some(plane);
    // SAFETY: registering a plain `extern "C" fn` with the C library.
    unsafe {
        atexit(stop_control_plane);
    }
    eprintln!(
        "control plane up and CRD established in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(shared)
}

fn shared() -> Shared {
    match SHARED.get_or_init(start_control_plane) {
        Ok(s) => s.clone(),
        Err(reason) => panic!("the Kubernetes test control plane is not available: {reason}"),
    }
}

fn kubectl(shared: &Shared, args: &[&str]) -> Result<String, String> {
    run(
        Command::new(&shared.kubectl)
            .args(args)
            .env("KUBECONFIG", &shared.kubeconfig),
        &format!("kubectl {}", args.join(" ")),
    )
}

async fn client() -> Client {
    let shared = shared();
    let kubeconfig = Kubeconfig::read_from(&shared.kubeconfig).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("client config");
    Client::try_from(config).expect("client")
}

/// A fresh namespace per test (nothing deletes namespaces here: no controller-manager).
async fn namespace(client: &Client, name: &str) -> String {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name.to_string()
}

fn context(client: &Client) -> Arc<Context> {
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    Arc::new(Context::new(client.clone(), metrics, Some("test".into())))
}

fn cluster_spec(value: serde_json::Value) -> ChronikClusterSpec {
    serde_json::from_value(value).expect("spec")
}

async fn create_cluster(
    client: &Client,
    ns: &str,
    name: &str,
    spec: serde_json::Value,
) -> ChronikCluster {
    let api: Api<ChronikCluster> = Api::namespaced(client.clone(), ns);
    api.create(
        &PostParams::default(),
        &ChronikCluster::new(name, cluster_spec(spec)),
    )
    .await
    .expect("create ChronikCluster")
}

async fn get_cluster(client: &Client, ns: &str, name: &str) -> ChronikCluster {
    Api::<ChronikCluster>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("get ChronikCluster")
}

/// Reconciles the cluster as stored now (as the controller would with a fresh watch event).
async fn reconcile_now(client: &Client, ctx: &Arc<Context>, ns: &str, name: &str) {
    let cluster = get_cluster(client, ns, name).await;
    reconcile::reconcile(Arc::new(cluster), ctx.clone())
        .await
        .expect("reconcile");
}

fn names<K: Resource>(items: &[K]) -> BTreeSet<String> {
    items
        .iter()
        .map(|o| o.meta().name.clone().unwrap())
        .collect()
}

/// resourceVersion of every object of cluster `name`, and of the cluster itself.
async fn resource_versions(client: &Client, ns: &str, name: &str) -> Vec<(String, String)> {
    async fn rv<K>(client: &Client, ns: &str, name: &str) -> (String, String)
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let obj = Api::<K>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .unwrap();
        (
            format!("{}/{name}", K::kind(&())),
            obj.resource_version().unwrap(),
        )
    }
    vec![
        rv::<ChronikCluster>(client, ns, name).await,
        rv::<ConfigMap>(client, ns, &format!("{name}-config")).await,
        rv::<Service>(client, ns, &format!("{name}-headless")).await,
        rv::<Service>(client, ns, name).await,
        rv::<StatefulSet>(client, ns, name).await,
        rv::<PodDisruptionBudget>(client, ns, name).await,
    ]
}

/// The operator's events in `ns`. The API server writes its own there too (its ClusterIP
/// repair loop reports `ClusterIPNotAllocated` for a Service it sees mid-allocation), so
/// only those the operator reported count.
async fn events(client: &Client, ns: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some(FIELD_MANAGER))
        .collect()
}

fn condition(cluster: &ChronikCluster, type_: &str) -> (String, String, String) {
    let c = cluster
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("condition {type_} missing: {:?}", cluster.status));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// Splits kubectl's table output into cells at the header's column starts (cells may be
/// empty, so splitting on whitespace would shift them).
fn parse_table(out: &str) -> Vec<Vec<String>> {
    let mut lines = out.lines();
    let header = lines.next().expect("header line");
    let mut starts = vec![0];
    let bytes = header.as_bytes();
    for i in 1..bytes.len() {
        if bytes[i - 1] == b' ' && bytes[i] != b' ' {
            starts.push(i);
        }
    }
    std::iter::once(header)
        .chain(lines)
        .map(|line| {
            (0..starts.len())
                .map(|c| {
                    let from = starts[c].min(line.len());
                    let to = starts
                        .get(c + 1)
                        .copied()
                        .unwrap_or(line.len())
                        .min(line.len());
                    line[from..to].trim().to_string()
                })
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn crd_is_established_with_names_and_subresources() {
    let client = client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get("chronikclusters.chronik.io").await.unwrap();
    let conditions = crd.status.unwrap().conditions.unwrap();
    for type_ in ["Established", "NamesAccepted"] {
        let c = conditions.iter().find(|c| c.type_ == type_).unwrap();
        assert_eq!(c.status, "True", "{type_}: {c:?}");
    }
    assert_eq!(crd.spec.names.short_names, Some(vec!["ck".to_string()]));
    assert_eq!(crd.spec.scope, "Namespaced");
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    let sub = version.subresources.as_ref().unwrap();
    assert!(sub.status.is_some());
    let scale = sub.scale.as_ref().unwrap();
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    // The served schema is the generated one.
    assert_eq!(
        version.schema,
        ChronikCluster::crd().spec.versions[0].schema,
        "stored schema differs from the generated CRD"
    );
}

#[tokio::test]
async fn bad_specs_are_rejected_with_readable_messages() {
    let client = client().await;
    let ns = namespace(&client, "validation").await;
    // Untyped, so that specs the Rust types cannot even express reach the API server.
    let resource = ApiResource::erase::<ChronikCluster>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "zero-replicas",
            json!({"replicas": 0, "image": "chronik:1"}),
            "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1",
        ),
        (
            "rf-above-replicas",
            json!({"replicas": 3, "image": "chronik:1", "config": {"default_replication_factor": 5}}),
            "config.default_replication_factor must not exceed replicas",
        ),
        (
            "bad-quantity",
            json!({"replicas": 1, "image": "chronik:1", "storage": {"size": "ten gigs"}}),
            "storage.size must be a positive quantity such as 10Gi or 500Mi",
        ),
        (
            "zero-quantity",
            json!({"replicas": 1, "image": "chronik:1", "storage": {"size": "0"}}),
            "storage.size must be a positive quantity such as 10Gi or 500Mi",
        ),
        (
            "empty-image",
            json!({"replicas": 1, "image": ""}),
            "spec.image in body should be at least 1 chars long",
        ),
        (
            "malformed-image",
            json!({"replicas": 1, "image": "Chronik Broker:latest!"}),
            "image must be a container image reference",
        ),
        (
            "setting-out-of-range",
            json!({"replicas": 1, "image": "chronik:1", "config": {"default_partitions": 0}}),
            "spec.config.default_partitions in body should be greater than or equal to 1",
        ),
        (
            "setting-of-wrong-type",
            json!({"replicas": 1, "image": "chronik:1", "config": {"auto_create_topics": "yes"}}),
            "spec.config.auto_create_topics in body must be of type boolean",
        ),
        (
            "missing-image",
            json!({"replicas": 1}),
            "spec.image: Required value",
        ),
    ];
    for (name, spec, expected) in cases {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "chronik.io/v1alpha1",
            "kind": "ChronikCluster",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .unwrap();
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => panic!("{name}: accepted, expected a rejection containing {expected:?}"),
            Err(kube::Error::Api(status)) => {
                eprintln!("{name}: HTTP {}: {}", status.code, status.message);
                assert_eq!(status.code, 422, "{name}: {status:?}");
                assert!(
                    status.message.contains(expected),
                    "{name}: message {:?} does not contain {expected:?}",
                    status.message
                );
            }
            Err(e) => panic!("{name}: unexpected error {e}"),
        }
    }

    // An unknown settings key (a typo): kubectl's default strict field validation refuses it.
    let shared = shared();
    let manifest = std::env::temp_dir().join(format!("chronik-typo-{}.yaml", std::process::id()));
    std::fs::write(
        &manifest,
        "apiVersion: chronik.io/v1alpha1\nkind: ChronikCluster\nmetadata: {name: typo}\n\
         spec: {replicas: 1, image: \"chronik:1\", config: {retention_mss: 1000}}\n",
    )
    .unwrap();
    let err = kubectl(
        &shared,
        &["apply", "-n", &ns, "-f", manifest.to_str().unwrap()],
    )
    .unwrap_err();
    std::fs::remove_file(&manifest).ok();
    eprintln!("typo: {err}");
    assert!(
        err.contains(r#"unknown field "spec.config.retention_mss""#),
        "{err}"
    );

    // Sound specs pass, including the edge cases of the same rules.
    let digest = "a".repeat(64);
    let full_reference =
        format!("registry.example.com:5000/team/chronik-broker:0.1.0@sha256:{digest}");
    let typed: Api<ChronikCluster> = Api::namespaced(client.clone(), &ns);
    for (name, spec) in [
        (
            "rf-equal-replicas",
            json!({"replicas": 3, "image": "chronik:1", "config": {"default_replication_factor": 3, "auto_create_topics": false}}),
        ),
        (
            "full-reference",
            json!({"replicas": 1, "image": full_reference, "storage": {"size": "1.5Ti"}}),
        ),
        ("library-image", json!({"replicas": 1, "image": "chronik"})),
    ] {
        typed
            .create(
                &PostParams::default(),
                &ChronikCluster::new(name, cluster_spec(spec)),
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: rejected: {e}"));
    }
    // Defaults are applied by the API server.
    let stored = typed.get("library-image").await.unwrap();
    assert_eq!(stored.spec.storage.size, "10Gi");
    assert!(stored.spec.rebalance.on_scale_up);
    assert_eq!(
        stored.spec.storage.retention.when_deleted.as_str(),
        "Retain"
    );

    // The rules hold for updates too, through the main resource and through /scale.
    let err = typed
        .patch_scale(
            "rf-equal-replicas",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect_err("scaling below the replication factor must be rejected");
    eprintln!("scale below replication factor: {err}");
    assert!(
        err.to_string()
            .contains("config.default_replication_factor must not exceed replicas"),
        "{err}"
    );
    let err = typed
        .patch(
            "library-image",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": ""}})),
        )
        .await
        .expect_err("emptying the image must be rejected");
    assert!(
        err.to_string()
            .contains("spec.image in body should be at least 1 chars long"),
        "{err}"
    );
}

#[tokio::test]
async fn reconcile_creates_exactly_the_objects_and_then_writes_nothing() {
    let client = client().await;
    let ns = namespace(&client, "reconcile").await;
    let ctx = context(&client);
    let created = create_cluster(
        &client,
        &ns,
        "events",
        json!({"replicas": 3, "image": "chronik:1", "config": {"default_partitions": 3}}),
    )
    .await;
    reconcile_now(&client, &ctx, &ns, "events").await;

    // Exactly the expected objects, all owned by the cluster.
    let list = ListParams::default();
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .list(&list)
        .await
        .unwrap()
        .items;
    let cms: Vec<_> = cms
        .into_iter()
        .filter(|c| c.name_any() != "kube-root-ca.crt")
        .collect();
    let svcs = Api::<Service>::namespaced(client.clone(), &ns)
        .list(&list)
        .await
        .unwrap()
        .items;
    let stss = Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .list(&list)
        .await
        .unwrap()
        .items;
    let pdbs = Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
        .list(&list)
        .await
        .unwrap()
        .items;
    assert_eq!(names(&cms), BTreeSet::from(["events-config".to_string()]));
    assert_eq!(
        names(&svcs),
        BTreeSet::from(["events".to_string(), "events-headless".to_string()])
    );
    assert_eq!(names(&stss), BTreeSet::from(["events".to_string()]));
    assert_eq!(names(&pdbs), BTreeSet::from(["events".to_string()]));
    let uid = created.uid().unwrap();
    let metas = cms
        .iter()
        .map(|o| &o.metadata)
        .chain(svcs.iter().map(|o| &o.metadata))
        .chain(stss.iter().map(|o| &o.metadata))
        .chain(pdbs.iter().map(|o| &o.metadata));
    for meta in metas {
        let owners = meta.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1, "{:?}", meta.name);
        assert_eq!(owners[0].uid, uid);
        assert_eq!(owners[0].kind, "ChronikCluster");
        assert_eq!(owners[0].controller, Some(true));
        let managers: Vec<_> = meta
            .managed_fields
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.manager.clone().unwrap(), m.operation.clone().unwrap()))
            .collect();
        assert_eq!(
            managers,
            vec![("chronik-operator".to_string(), "Apply".to_string())]
        );
    }
    assert_eq!(
        cms[0].data.as_ref().unwrap()["broker.toml"],
        format!("# Written by chronik-operator from ChronikCluster {ns}/events spec.config.\ndefault_partitions = 3\n")
    );
    let headless = svcs
        .iter()
        .find(|s| s.name_any() == "events-headless")
        .unwrap();
    assert_eq!(
        headless.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("None")
    );
    let sts = stss[0].spec.as_ref().unwrap();
    assert_eq!(sts.replicas, Some(3));
    assert_eq!(sts.ordinals.as_ref().unwrap().start, Some(1));

    // Status: written through the status subresource.
    let cluster = get_cluster(&client, &ns, "events").await;
    let status = cluster.status.clone().unwrap();
    assert_eq!(status.observed_generation, cluster.metadata.generation);
    assert_eq!(status.phase, Some(Phase::Pending));
    assert_eq!(status.ready_replicas, 0);
    assert_eq!(
        condition(&cluster, "Ready"),
        (
            "False".into(),
            "BrokersNotReady".into(),
            "0/3 brokers ready".into()
        )
    );
    assert_eq!(condition(&cluster, "Reconciling").0, "True");
    assert_eq!(condition(&cluster, "Degraded").0, "False");
    let reasons: BTreeSet<_> = events(&client, &ns)
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert_eq!(reasons, BTreeSet::from(["Created".to_string()]));
    let created_events = events(&client, &ns).await.len();
    assert_eq!(created_events, 5, "one Created event per object");

    // Second and third reconcile of the unchanged cluster: no write at all.
    let before = resource_versions(&client, &ns, "events").await;
    let writes_before = ctx
        .metrics
        .writes
        .with_label_values(&["ChronikCluster", "status"])
        .get();
    for _ in 0..2 {
        reconcile_now(&client, &ctx, &ns, "events").await;
    }
    assert_eq!(resource_versions(&client, &ns, "events").await, before);
    assert_eq!(events(&client, &ns).await.len(), created_events);
    assert_eq!(
        ctx.metrics
            .writes
            .with_label_values(&["ChronikCluster", "status"])
            .get(),
        writes_before
    );

    // The StatefulSet controller (absent here) reports three ready pods: the cluster is
    // Running, once; then steady again.
    let stss_api = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    stss_api
        .patch_status(
            "events",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 3, "readyReplicas": 3, "availableReplicas": 3, "currentReplicas": 3, "updatedReplicas": 3}})),
        )
        .await
        .unwrap();
    reconcile_now(&client, &ctx, &ns, "events").await;
    let cluster = get_cluster(&client, &ns, "events").await;
    let status = cluster.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!((status.replicas, status.ready_replicas), (3, 3));
    assert_eq!(
        condition(&cluster, "Ready"),
        (
            "True".into(),
            "AllBrokersReady".into(),
            "3/3 brokers ready".into()
        )
    );
    assert_eq!(condition(&cluster, "Reconciling").0, "False");
    assert!(events(&client, &ns)
        .await
        .iter()
        .any(|e| e.reason.as_deref() == Some("ClusterReady")));
    let before = resource_versions(&client, &ns, "events").await;
    let event_count = events(&client, &ns).await.len();
    reconcile_now(&client, &ctx, &ns, "events").await;
    assert_eq!(resource_versions(&client, &ns, "events").await, before);
    assert_eq!(events(&client, &ns).await.len(), event_count);
}

#[tokio::test]
async fn spec_changes_update_the_objects() {
    let client = client().await;
    let ns = namespace(&client, "changes").await;
    let ctx = context(&client);
    let api: Api<ChronikCluster> = Api::namespaced(client.clone(), &ns);
    create_cluster(
        &client,
        &ns,
        "logs",
        json!({"replicas": 1, "image": "chronik:1"}),
    )
    .await;
    reconcile_now(&client, &ctx, &ns, "logs").await;
    let template_hash = |sts: &StatefulSet| {
        sts.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["chronik.io/config-hash"]
            .clone()
    };
    let stss = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    let hash_before = template_hash(&stss.get("logs").await.unwrap());

    // A settings change: new ConfigMap content and a new pod-template hash.
    api.patch(
        "logs",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"config": {"retention_ms": 3600000}, "image": "chronik:2"}})),
    )
    .await
    .unwrap();
    reconcile_now(&client, &ctx, &ns, "logs").await;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("logs-config")
        .await
        .unwrap();
    assert!(cm.data.unwrap()["broker.toml"].ends_with("retention_ms = 3600000\n"));
    let sts = stss.get("logs").await.unwrap();
    assert_ne!(template_hash(&sts), hash_before);
    assert_eq!(
        sts.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .as_deref(),
        Some("chronik:2")
    );
    let updated: BTreeSet<_> = events(&client, &ns)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Updated"))
        .filter_map(|e| e.note)
        .collect();
    assert_eq!(
        updated,
        BTreeSet::from([
            "Updated ConfigMap logs-config".to_string(),
            "Updated StatefulSet logs".to_string()
        ])
    );
    let cluster = get_cluster(&client, &ns, "logs").await;
    assert_eq!(
        cluster.status.as_ref().unwrap().target_image.as_deref(),
        Some("chronik:2")
    );
    assert_eq!(
        cluster.status.as_ref().unwrap().observed_generation,
        cluster.metadata.generation
    );

    let before = resource_versions(&client, &ns, "logs").await;
    reconcile_now(&client, &ctx, &ns, "logs").await;
    assert_eq!(resource_versions(&client, &ns, "logs").await, before);
}

#[tokio::test]
async fn scale_subresource_drives_statefulset_replicas() {
    let client = client().await;
    let ns = namespace(&client, "scale").await;
    let ctx = context(&client);
    let api: Api<ChronikCluster> = Api::namespaced(client.clone(), &ns);
    create_cluster(
        &client,
        &ns,
        "orders",
        json!({"replicas": 3, "image": "chronik:1"}),
    )
    .await;
    reconcile_now(&client, &ctx, &ns, "orders").await;

    let scale = api.get_scale("orders").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    let scale_status = scale.status.unwrap();
    assert_eq!(scale_status.replicas, 0);
    assert_eq!(
        scale_status.selector.as_deref(),
        Some("app.kubernetes.io/instance=orders,app.kubernetes.io/name=chronik")
    );

    // `kubectl scale` patches /scale.
    api.patch_scale(
        "orders",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .unwrap();
    assert_eq!(api.get("orders").await.unwrap().spec.replicas, 5);
    reconcile_now(&client, &ctx, &ns, "orders").await;
    let sts = Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .get("orders")
        .await
        .unwrap();
    assert_eq!(sts.spec.unwrap().replicas, Some(5));
    let status = get_cluster(&client, &ns, "orders").await.status.unwrap();
    assert_eq!(status.conditions[0].message, "0/5 brokers ready");

    // The schema applies through /scale too.
    let err = api
        .patch_scale(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .expect_err("scaling to 0 must be rejected");
    eprintln!("scale to 0: {err}");
    assert_eq!(api.get("orders").await.unwrap().spec.replicas, 5);

    let shared = shared();
    let out = kubectl(&shared, &["scale", "-n", &ns, "ck/orders", "--replicas=4"]).unwrap();
    assert!(out.contains("scaled"), "{out}");
    assert_eq!(api.get("orders").await.unwrap().spec.replicas, 4);
}

#[tokio::test]
async fn kubectl_get_ck_shows_the_printer_columns() {
    let client = client().await;
    let ns = namespace(&client, "printing").await;
    let ctx = context(&client);
    create_cluster(
        &client,
        &ns,
        "payments",
        json!({"replicas": 3, "image": "chronik:0.1.0"}),
    )
    .await;
    reconcile_now(&client, &ctx, &ns, "payments").await;

    let shared = shared();
    let out = kubectl(&shared, &["get", "ck", "-n", &ns]).unwrap();
    eprintln!("kubectl get ck:\n{out}");
    let table = parse_table(&out);
    let header: Vec<_> = table[0].iter().map(String::as_str).collect();
    assert_eq!(
        header,
        ["NAME", "REPLICAS", "READY", "URP", "PHASE", "IMAGE", "AGE"]
    );
    let row: Vec<_> = table[1].iter().map(String::as_str).collect();
    // READY is 0 (no kubelet runs pods); URP stays empty until the admin API reports it.
    assert_eq!(
        row[..6],
        ["payments", "3", "0", "", "Pending", "chronik:0.1.0"],
        "{out}"
    );

    let wide = kubectl(
        &shared,
        &["get", "chronikclusters", "-n", &ns, "-o", "wide"],
    )
    .unwrap();
    let header = &parse_table(&wide)[0];
    assert_eq!(header[4], "LEADERLESS", "{wide}");

    let describe = kubectl(&shared, &["describe", "ck", "-n", &ns, "payments"]).unwrap();
    for needle in [
        "Conditions:",
        "Brokers Not Ready",
        "Events:",
        "Created StatefulSet payments",
    ] {
        assert!(
            describe.contains(needle) || describe.contains(&needle.replace(' ', "")),
            "{needle:?} not in:\n{describe}"
        );
    }
}

#[tokio::test]
async fn controller_reconciles_on_watch_events() {
    let client = client().await;
    let ns = namespace(&client, "controller").await;
    let ctx = context(&client);
    let ns_for_task = ns.clone();
    let task = tokio::spawn(async move { reconcile::run(ctx, Some(&ns_for_task), false).await });

    create_cluster(
        &client,
        &ns,
        "clicks",
        json!({"replicas": 2, "image": "chronik:1"}),
    )
    .await;
    let stss = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    let wait_for_sts = |what: &'static str| {
        let stss = stss.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(sts) = stss.get_opt("clicks").await.unwrap() {
                    if sts.metadata.deletion_timestamp.is_none() {
                        return sts;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "controller did not (re)create the StatefulSet: {what}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let first = wait_for_sts("on create").await;

    // Drift: the StatefulSet is deleted behind the operator's back; the owned-object watch
    // brings it back.
    stss.delete("clicks", &DeleteParams::default())
        .await
        .unwrap();
    let second = wait_for_sts("after deletion").await;
    assert_ne!(first.uid(), second.uid());

    // A spec change is picked up from the ChronikCluster watch.
    Api::<ChronikCluster>::namespaced(client.clone(), &ns)
        .patch(
            "clicks",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stss.get("clicks").await.unwrap().spec.unwrap().replicas != Some(3) {
        assert!(
            Instant::now() < deadline,
            "StatefulSet replicas did not follow the spec"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Broker pods are watched: the status lists a pod as it comes and drops it as it
    // goes, long before the 30 s poll (a scale-down's leavers vanish from the status as
    // their pods do).
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    let pod = serde_json::from_value(json!({
        "metadata": {"name": "clicks-1", "labels": {
            "app.kubernetes.io/name": "chronik",
            "app.kubernetes.io/instance": "clicks",
            "app.kubernetes.io/managed-by": "chronik-operator",
            "apps.kubernetes.io/pod-index": "1",
        }},
        "spec": {"containers": [{"name": "broker", "image": "chronik:1"}]},
    }))
    .unwrap();
    let listed = |want: Vec<i32>| {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let status = get_cluster(&client, &ns, "clicks").await.status.unwrap();
                let ids: Vec<i32> = status.brokers.iter().map(|b| b.id).collect();
                if ids == want {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "status brokers {ids:?}, want {want:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // Quiet first: each status write is itself a watch event that reconciles once more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    pods.create(&PostParams::default(), &pod).await.unwrap();
    listed(vec![1]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    pods.delete(
        "clicks-1",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    listed(vec![]).await;

    task.abort();
    let cluster = get_cluster(&client, &ns, "clicks").await;
    assert_eq!(
        cluster.status.unwrap().observed_generation,
        cluster.metadata.generation
    );
}

// ---------------------------------------------------------------------------------------
// Real brokers: the admin API side of the operator.

/// Three chronik-broker processes on 127.0.0.1 replicating to each other (node ids 1..3),
/// and a fourth that can join them later. Killed when dropped.
struct Brokers {
    procs: Vec<std::process::Child>,
    commands: Vec<Vec<std::ffi::OsString>>,
    kafka: Vec<String>,
    admin: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Brokers {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn broker_binary() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { repo.join(t) })
        .unwrap_or_else(|| repo.join("target"));
    let bin = target.join("release/chronik-broker");
    assert!(
        bin.exists(),
        "{} not found: `make build` builds it before the tests",
        bin.display()
    );
    bin
}

/// A free port not handed out before by this test binary (the brokers' ports are all
/// picked before any of them binds, so the OS alone could repeat one).
fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if HANDED_OUT.lock().unwrap().insert(port) {
            return port;
        }
    }
}

async fn start_brokers() -> Brokers {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        "default_partitions = 3\ndefault_replication_factor = 3\n",
    )
    .unwrap();
    let kafka: Vec<String> = (0..4)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let admin: Vec<String> = (0..4)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut commands = Vec::new();
    for i in 0..4 {
        let peers: Vec<String> = (0..3)
            .filter(|j| *j != i)
            .map(|j| format!("{}@{}", j + 1, admin[j]))
            .collect();
        let data = dir.path().join(format!("data{}", i + 1));
        let metrics = format!("127.0.0.1:{}", free_port());
        let args: Vec<std::ffi::OsString> = vec![
            "--node-id".into(),
            (i + 1).to_string().into(),
            "--data-dir".into(),
            data.into(),
            "--kafka-addr".into(),
            kafka[i].clone().into(),
            "--cluster-addr".into(),
            admin[i].clone().into(),
            "--metrics-addr".into(),
            metrics.into(),
            "--config".into(),
            config.clone().into(),
            "--peers".into(),
            peers.join(",").into(),
        ];
        commands.push(args);
    }
    let mut brokers = Brokers {
        procs: Vec::new(),
        commands,
        kafka,
        admin,
        _dir: dir,
    };
    for i in 0..3 {
        let child = brokers.spawn(i);
        brokers.procs.push(child);
    }
    brokers.wait_all_ready().await;
    brokers
}

impl Brokers {
    fn spawn(&self, i: usize) -> std::process::Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self._dir.path().join(format!("broker{}.log", i + 1)))
            .unwrap();
        Command::new(broker_binary())
            .args(&self.commands[i])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start chronik-broker")
    }

    /// Stops broker `id` (1-based) with SIGKILL.
    fn kill(&mut self, id: i32) {
        let p = &mut self.procs[(id - 1) as usize];
        p.kill().unwrap();
        p.wait().unwrap();
    }

    /// Starts broker `id` again on its data directory and waits until all are ready.
    async fn restart(&mut self, id: i32) {
        let child = self.spawn((id - 1) as usize);
        self.procs[(id - 1) as usize] = child;
        self.wait_all_ready().await;
    }

    /// Starts the fourth broker, which joins the other three.
    async fn add_fourth(&mut self) {
        let child = self.spawn(3);
        self.procs.push(child);
        self.wait_all_ready().await;
    }

    /// Until every running broker answers ClusterStatus listing all of them as ready.
    async fn wait_all_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let running = self.procs.len();
        for uri in self.admin_uris().into_iter().take(running) {
            loop {
                if let Ok(s) = chronik_operator::admin::cluster_status(&uri).await {
                    if s.brokers.len() == running && s.brokers.iter().all(|b| b.ready) {
                        break;
                    }
                }
                assert!(Instant::now() < deadline, "brokers not ready in 30s");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// Broker `id` as any live broker's admin API reports it (`None`: not registered).
    async fn reported(&self, id: i32) -> Option<chronik_api::admin::v1::BrokerStatus> {
        for uri in self.admin_uris() {
            if let Ok(s) = chronik_operator::admin::cluster_status(&uri).await {
                return s.brokers.into_iter().find(|b| b.node_id == id);
            }
        }
        panic!("no broker answers ClusterStatus")
    }

    async fn replica_count(&self, id: i32) -> u32 {
        self.reported(id).await.map_or(0, |b| b.replica_count)
    }

    async fn leader_count(&self, id: i32) -> u32 {
        self.reported(id).await.map_or(0, |b| b.leader_count)
    }

    fn admin_uris(&self) -> Vec<String> {
        self.admin.iter().map(|a| format!("http://{a}")).collect()
    }

    /// The operator context's endpoints: node id `i` is the broker listening on admin[i-1].
    fn endpoints(&self) -> chronik_operator::admin::Endpoints {
        let uris = self.admin_uris();
        Arc::new(move |_, id| uris[(id - 1) as usize].clone())
    }

    /// Produces with kcat (a real Kafka client), which auto-creates the topic.
    fn produce(&self, topic: &str, lines: usize) {
        use std::io::Write;
        let mut kcat = Command::new("kcat")
            .args([
                "-b",
                &self.kafka[..self.procs.len()].join(","),
                "-t",
                topic,
                "-P",
                "-X",
                "acks=all",
            ])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("kcat (installed by make deps)");
        let mut stdin = kcat.stdin.take().unwrap();
        for i in 0..lines {
            writeln!(stdin, "record {i}").unwrap();
        }
        drop(stdin);
        assert!(kcat.wait().unwrap().success(), "kcat failed");
    }
}

/// An operator context whose admin-API endpoints are the local brokers.
fn broker_context(client: &Client, brokers: &Brokers) -> Arc<Context> {
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    Arc::new(
        Context::new(client.clone(), metrics, Some("test".into()))
            .with_endpoints(brokers.endpoints()),
    )
}

/// Broker pods as the StatefulSet controller and kubelet would leave them: created, with
/// the pod-index label, and Ready.
async fn ready_pods(client: &Client, ns: &str, cluster: &str, ids: &[i32], image: &str) {
    use k8s_openapi::api::core::v1::Pod;
    // Pods carry the template hash of the StatefulSet as it is now.
    let sts = Api::<StatefulSet>::namespaced(client.clone(), ns)
        .get(cluster)
        .await
        .unwrap();
    let hash = chronik_operator::resources::pod_template_hash(
        sts.spec.unwrap().template.metadata.as_ref().unwrap(),
    )
    .unwrap()
    .to_string();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for id in ids {
        let name = format!("{cluster}-{id}");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "app.kubernetes.io/name": "chronik",
                "app.kubernetes.io/instance": cluster,
                "apps.kubernetes.io/pod-index": id.to_string(),
            }, "annotations": {"chronik.io/template-hash": hash}},
            "spec": {"containers": [{"name": "broker", "image": image}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        pods.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})),
        )
        .await
        .unwrap();
    }
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    sts.patch_status(
        cluster,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"replicas": ids.len(), "readyReplicas": ids.len()}})),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn status_reports_leaders_isr_and_health_from_real_brokers() {
    let client = client().await;
    let ns = namespace(&client, "brokers-status").await;
    let mut brokers = start_brokers().await;
    brokers.produce("payments", 30);

    let ctx = broker_context(&client, &brokers);
    create_cluster(
        &client,
        &ns,
        "pay",
        json!({"replicas": 3, "image": "chronik:1"}),
    )
    .await;
    reconcile_now(&client, &ctx, &ns, "pay").await;
    ready_pods(&client, &ns, "pay", &[1, 2, 3], "chronik:1").await;
    // (Followers of the just-created topic join the ISR within moments.)
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        reconcile_now(&client, &ctx, &ns, "pay").await;
        let status = get_cluster(&client, &ns, "pay").await.status.unwrap();
        let healthy = status
            .partitions
            .as_ref()
            .is_some_and(|p| p.under_replicated == 0);
        if healthy || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let summary = status.partitions.clone().expect("partition summary");
    assert_eq!(
        (summary.total, summary.under_replicated, summary.offline),
        (3, 0, 0)
    );
    assert_eq!(status.partition_details.len(), 3);
    for p in &status.partition_details {
        assert_eq!(p.topic, "payments");
        assert_eq!(p.replicas.len(), 3);
        assert_eq!(p.isr.len(), 3, "{p:?}");
        assert!(p.leader.is_some());
    }
    let leaders: i32 = status.brokers.iter().map(|b| b.leaders.unwrap()).sum();
    assert_eq!(leaders, 3);
    assert!(status.brokers.iter().all(|b| b.replicas == Some(3)));
    let cluster = get_cluster(&client, &ns, "pay").await;
    assert_eq!(condition(&cluster, "Degraded").0, "False");
    // An unchanged cluster still writes nothing, with the brokers polled.
    let before = get_cluster(&client, &ns, "pay").await;
    let versions = resource_versions(&client, &ns, "pay").await;
    reconcile_now(&client, &ctx, &ns, "pay").await;
    let after = get_cluster(&client, &ns, "pay").await;
    assert_eq!(
        resource_versions(&client, &ns, "pay").await,
        versions,
        "status changed on a steady cluster: {:#?} -> {:#?}",
        before.status,
        after.status
    );

    // `kubectl describe ck` shows leaders and ISR.
    let out = kubectl(&shared(), &["describe", "-n", &ns, "ck/pay"]).unwrap();
    for needle in ["Partition Details", "Isr", "Leaders", "Under Replicated"] {
        assert!(out.contains(needle), "describe lacks {needle}:\n{out}");
    }

    // A broker dies: its partitions lose an in-sync replica, and the cluster is Degraded.
    brokers.kill(3);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        reconcile_now(&client, &ctx, &ns, "pay").await;
        let cluster = get_cluster(&client, &ns, "pay").await;
        let (status_, reason, message) = condition(&cluster, "Degraded");
        // (The partition the dead broker led counts once a new leader has taken over.)
        if status_ == "True" && reason == "UnderReplicated" && message.starts_with("3 of 3") {
            let details = &cluster.status.unwrap().partition_details;
            assert!(details.iter().all(|p| !p.isr.contains(&3)), "{details:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no UnderReplicated after a broker died: {status_} {reason} {message}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn pod_names(pods: &[k8s_openapi::api::core::v1::Pod]) -> BTreeSet<String> {
    names(pods)
}

async fn list_pods(client: &Client, ns: &str) -> Vec<k8s_openapi::api::core::v1::Pod> {
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

/// Reconciles until `done(cluster)` holds, for at most `secs` seconds.
async fn reconcile_until(
    client: &Client,
    ctx: &Arc<Context>,
    ns: &str,
    name: &str,
    secs: u64,
    what: &str,
    done: impl Fn(&ChronikCluster) -> bool,
) -> ChronikCluster {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        reconcile_now(client, ctx, ns, name).await;
        let cluster = get_cluster(client, ns, name).await;
        if done(&cluster) {
            return cluster;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {secs}s; status: {:#?}",
            cluster.status
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn upgrading(cluster: &ChronikCluster) -> (String, String) {
    let (status, reason, _) = condition(cluster, "Upgrading");
    (status, reason)
}

#[tokio::test]
async fn rolling_upgrade_restarts_one_broker_at_a_time_behind_the_gates() {
    use k8s_openapi::api::core::v1::Pod;
    let client = client().await;
    let ns = namespace(&client, "rolling").await;
    let mut brokers = start_brokers().await;
    brokers.produce("orders", 30);
    let ctx = broker_context(&client, &brokers);
    let api: Api<ChronikCluster> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    create_cluster(
        &client,
        &ns,
        "ord",
        json!({"replicas": 3, "image": "chronik:1"}),
    )
    .await;
    reconcile_now(&client, &ctx, &ns, "ord").await;
    ready_pods(&client, &ns, "ord", &[1, 2, 3], "chronik:1").await;
    let c = reconcile_until(&client, &ctx, &ns, "ord", 15, "healthy", |c| {
        condition(c, "Degraded").0 == "False"
    })
    .await;
    assert_eq!(upgrading(&c), ("False".into(), "UpToDate".into()));

    // Broker 1 is down: restarting broker 3 would leave two partitions' groups with one
    // in-sync voter of three. The pre-restart gate holds the roll; nothing is deleted.
    brokers.kill(1);
    reconcile_until(
        &client,
        &ctx,
        &ns,
        "ord",
        20,
        "broker 1 to leave the ISRs",
        |c| {
            condition(c, "Degraded")
                .2
                .starts_with("3 of 3 partitions are under-replicated")
        },
    )
    .await;
    api.patch(
        "ord",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "chronik:2"}})),
    )
    .await
    .unwrap();
    let c = reconcile_until(
        &client,
        &ctx,
        &ns,
        "ord",
        20,
        "the pre-restart gate to hold",
        |c| upgrading(c).1 == "WaitingForSafeRestart",
    )
    .await;
    assert_eq!(c.status.as_ref().unwrap().phase, Some(Phase::Upgrading));
    assert_eq!(
        list_pods(&client, &ns).await.len(),
        3,
        "a pod was deleted behind a closed gate"
    );

    // Broker 1 is back: broker 3 is drained and its pod deleted — and only that pod.
    brokers.restart(1).await;
    reconcile_until(&client, &ctx, &ns, "ord", 30, "broker 3's restart", |c| {
        upgrading(c).1 == "RestartingBroker"
    })
    .await;
    assert_eq!(
        pod_names(&list_pods(&client, &ns).await),
        BTreeSet::from(["ord-1".to_string(), "ord-2".to_string()])
    );
    assert_eq!(brokers.leader_count(3).await, 0, "broker 3 was not drained");
    let restarts: Vec<String> = events(&client, &ns)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("RestartingBroker"))
        .filter_map(|e| e.note)
        .collect();
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert!(
        restarts[0].starts_with("restarting broker 3 (pod ord-3)"),
        "{restarts:?}"
    );

    // Waiting for the new pod: nothing else moves.
    reconcile_now(&client, &ctx, &ns, "ord").await;
    assert_eq!(list_pods(&client, &ns).await.len(), 2);

    // The StatefulSet controller recreates ord-3 from the new template; its broker
    // restarts. Once it is back in sync, broker 2 is next.
    brokers.kill(3);
    brokers.restart(3).await;
    ready_pods(&client, &ns, "ord", &[3], "chronik:2").await;
    reconcile_until(&client, &ctx, &ns, "ord", 30, "broker 2's restart", |_| {
        true
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while pod_names(&list_pods(&client, &ns).await).contains("ord-2") {
        assert!(Instant::now() < deadline, "ord-2 never restarted");
        reconcile_now(&client, &ctx, &ns, "ord").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(pod_names(&list_pods(&client, &ns).await).contains("ord-1"));

    // The new ord-2 crash-loops: the roll stops with Degraded and the pod's reason, and
    // ord-1 is left alone.
    ready_pods(&client, &ns, "ord", &[2], "chronik:2").await;
    pods.patch_status(
        "ord-2",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "broker", "image": "chronik:2", "imageID": "",
                "ready": false, "restartCount": 5,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s restarting failed container"}}}],
        }})),
    )
    .await
    .unwrap();
    let c = reconcile_until(&client, &ctx, &ns, "ord", 10, "the stall to show", |c| {
        condition(c, "Degraded").1 == "UpgradeStalled"
    })
    .await;
    let (_, _, message) = condition(&c, "Degraded");
    assert!(
        message.contains("broker 2 cannot start: CrashLoopBackOff"),
        "{message}"
    );
    assert_eq!(
        c.status
            .as_ref()
            .unwrap()
            .last_upgrade
            .as_ref()
            .unwrap()
            .result,
        "Failed"
    );
    assert!(pod_names(&list_pods(&client, &ns).await).contains("ord-1"));
    assert!(events(&client, &ns)
        .await
        .iter()
        .any(|e| e.reason.as_deref() == Some("UpgradeStalled")));

    // Fixed (ord-2 starts): broker 1 goes last, then the upgrade is complete.
    pods.patch_status(
        "ord-2",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "broker", "image": "chronik:2", "imageID": "",
                "ready": true, "restartCount": 5, "state": {"running": {}}}],
        }})),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while pod_names(&list_pods(&client, &ns).await).contains("ord-1") {
        assert!(Instant::now() < deadline, "ord-1 never restarted");
        reconcile_now(&client, &ctx, &ns, "ord").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ready_pods(&client, &ns, "ord", &[1], "chronik:2").await;
    let c = reconcile_until(
        &client,
        &ctx,
        &ns,
        "ord",
        20,
        "the upgrade to complete",
        |c| upgrading(c).0 == "False",
    )
    .await;
    let status = c.status.unwrap();
    assert_eq!(status.last_upgrade.as_ref().unwrap().result, "Succeeded");
    assert_eq!(status.current_image.as_deref(), Some("chronik:2"));
    assert!(events(&client, &ns)
        .await
        .iter()
        .any(|e| e.reason.as_deref() == Some("UpgradeComplete")));
}

// ---------------------------------------------------------------------------------------
// Leader election and RBAC.

/// A client authenticated as the admin but acting as `user` (impersonation).
async fn client_as(user: &str) -> Client {
    let shared = shared();
    let kubeconfig = Kubeconfig::read_from(&shared.kubeconfig).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("client config");
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).expect("client")
}

#[tokio::test]
async fn only_one_replica_holds_the_lease_until_it_expires() {
    use chronik_operator::leader::LeaseLock;
    let client = client().await;
    let ns = namespace(&client, "lease").await;
    let a = LeaseLock::new(client.clone(), &ns, "op", "a", Duration::from_secs(2));
    let b = LeaseLock::new(client.clone(), &ns, "op", "b", Duration::from_secs(2));
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "a takes the free Lease"
    );
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "b must wait while a holds it"
    );
    assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");
    // a stops renewing (it died): once the Lease expired, b takes over and a is out.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "b takes the expired Lease"
    );
    assert!(!a.try_acquire_or_renew().await.unwrap(), "a lost it");
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), &ns)
        .get("op")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("b"));
    assert_eq!(lease.lease_transitions, Some(1));
    // A released Lease is free at once.
    b.release().await.unwrap();
    assert!(a.try_acquire_or_renew().await.unwrap());
}

#[tokio::test]
async fn the_chart_rbac_is_enough_and_no_more() {
    use chronik_operator::rack;
    use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    let client = client().await;
    let ns = namespace(&client, "rbac").await;
    // The chart's RBAC template, rendered for this namespace as Helm would.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let template =
        std::fs::read_to_string(repo.join("charts/chronik/templates/rbac.yaml")).unwrap();
    let rendered = template.replace("{{ .Release.Namespace }}", &ns);
    assert!(
        !rendered.contains("{{"),
        "unrendered template left: {rendered}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), rendered).unwrap();
    kubectl(&shared(), &["apply", "-f", file.path().to_str().unwrap()]).unwrap();

    let operator = client_as(&format!("system:serviceaccount:{ns}:chronik-operator")).await;
    let ctx = context(&operator);
    create_cluster(
        &client,
        &ns,
        "secure",
        json!({"replicas": 3, "image": "chronik:1"}),
    )
    .await;
    let cluster = get_cluster(&client, &ns, "secure").await;
    reconcile::reconcile(Arc::new(cluster), ctx.clone())
        .await
        .expect("reconcile as the operator's ServiceAccount");
    let sts = Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .get("secure")
        .await
        .unwrap();
    assert_eq!(sts.spec.unwrap().replicas, Some(3));
    // Rolling upgrades delete pods; leader election writes a Lease.
    ready_pods(&client, &ns, "secure", &[1], "chronik:1").await;
    Api::<Pod>::namespaced(operator.clone(), &ns)
        .delete("secure-1", &Default::default())
        .await
        .expect("delete a broker pod as the operator");
    let lock = chronik_operator::leader::LeaseLock::new(
        operator.clone(),
        &ns,
        "chronik-operator",
        "pod-a",
        Duration::from_secs(15),
    );
    assert!(lock.try_acquire_or_renew().await.unwrap());

    // Rack awareness: a ServiceAccount for the brokers, bound to the chart's node-reading
    // ClusterRole, and a finalizer that deletes that binding with the cluster.
    create_cluster(
        &client,
        &ns,
        "racked",
        json!({"replicas": 3, "image": "chronik:1",
               "rackAwareness": {"topologyKey": "topology.kubernetes.io/zone"}}),
    )
    .await;
    let cluster = get_cluster(&client, &ns, "racked").await;
    reconcile::reconcile(Arc::new(cluster), ctx.clone())
        .await
        .expect("reconcile with rack awareness as the operator's ServiceAccount");
    let racked = get_cluster(&client, &ns, "racked").await;
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let binding = bindings.get(&rack::binding_name(&racked)).await.unwrap();
    assert_eq!(binding.role_ref.name, rack::CLUSTER_ROLE);
    let owner = &binding.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ClusterRole", rack::CLUSTER_ROLE)
    );
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (subject.name.as_str(), subject.namespace.as_deref()),
        ("racked-broker", Some(ns.as_str()))
    );
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .get("racked-broker")
        .await
        .expect("the brokers' ServiceAccount");
    let pod = Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .get("racked")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("racked-broker"));
    assert_eq!(pod.init_containers.unwrap()[0].name, "rack-init");
    // What the brokers may do with it: read nodes, and nothing else.
    let broker = client_as(&format!("system:serviceaccount:{ns}:racked-broker")).await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(broker.clone());
    if let Err(kube::Error::Api(e)) = nodes.get("no-such-node").await {
        assert_eq!(e.code, 404, "reading a node must be allowed: {e:?}");
    }
    let err = Api::<Pod>::namespaced(broker, &ns)
        .list(&ListParams::default())
        .await
        .expect_err("broker pods must not list pods");
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 403),
        "{err}"
    );
    // The sweep keeps the binding of a cluster that still asks for racks, and deletes it
    // once the cluster is gone.
    let binding_after_sweep = || async {
        chronik_operator::reconcile::rack::sweep(&ctx)
            .await
            .expect("sweep as the operator's ServiceAccount");
        bindings
            .get_opt(&rack::binding_name(&racked))
            .await
            .unwrap()
    };
    assert!(binding_after_sweep().await.is_some());
    Api::<ChronikCluster>::namespaced(client.clone(), &ns)
        .delete("racked", &Default::default())
        .await
        .unwrap();
    assert!(binding_after_sweep().await.is_none());

    // Least privilege: no Secrets, no Leases elsewhere, no deleting StatefulSets.
    let err = Api::<Secret>::namespaced(operator.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect_err("the operator must not read Secrets");
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 403),
        "{err}"
    );
    let elsewhere = chronik_operator::leader::LeaseLock::new(
        operator.clone(),
        "default",
        "chronik-operator",
        "pod-a",
        Duration::from_secs(15),
    );
    assert!(elsewhere.try_acquire_or_renew().await.is_err());
    let err = Api::<StatefulSet>::namespaced(operator.clone(), &ns)
        .delete("secure", &Default::default())
        .await
        .expect_err("the operator never deletes StatefulSets");
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 403),
        "{err}"
    );
}

#[tokio::test]
async fn scale_up_rebalances_and_scale_down_decommissions_first() {
    let client = client().await;
    let ns = namespace(&client, "scaling").await;
    let mut brokers = start_brokers().await;
    brokers.produce("events", 30);
    let ctx = broker_context(&client, &brokers);
    let api: Api<ChronikCluster> = Api::namespaced(client.clone(), &ns);
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let sts_replicas = || async {
        sts_api
            .get("ev")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas
            .unwrap()
    };
    create_cluster(
        &client,
        &ns,
        "ev",
        json!({"replicas": 3, "image": "chronik:1"}),
    )
    .await;
    reconcile_now(&client, &ctx, &ns, "ev").await;
    ready_pods(&client, &ns, "ev", &[1, 2, 3], "chronik:1").await;
    reconcile_until(&client, &ctx, &ns, "ev", 15, "healthy", |c| {
        condition(c, "Degraded").0 == "False"
    })
    .await;

    // Scale up: the new broker joins, and a rebalance moves replicas onto it.
    api.patch(
        "ev",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    reconcile_now(&client, &ctx, &ns, "ev").await;
    assert_eq!(sts_replicas().await, 4);
    brokers.add_fourth().await;
    ready_pods(&client, &ns, "ev", &[4], "chronik:1").await;
    let c = reconcile_until(
        &client,
        &ctx,
        &ns,
        "ev",
        60,
        "the rebalance to finish",
        |c| {
            let s = c.status.as_ref().unwrap();
            s.last_rebalance
                .as_ref()
                .is_some_and(|l| l.result == "Succeeded")
                && condition(c, "Degraded").0 == "False"
        },
    )
    .await;
    assert_eq!(condition(&c, "Rebalancing").0, "False");
    let status = c.status.unwrap();
    let fourth = status.brokers.iter().find(|b| b.id == 4).unwrap();
    assert!(fourth.replicas.unwrap() >= 2, "{:?}", status.brokers);
    let reasons: Vec<String> = events(&client, &ns)
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for r in ["RebalanceStarted", "RebalanceComplete"] {
        assert!(reasons.iter().any(|x| x == r), "no {r} event: {reasons:?}");
    }

    // Scale down: broker 4 is decommissioned before the StatefulSet shrinks.
    api.patch(
        "ev",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    reconcile_now(&client, &ctx, &ns, "ev").await;
    let c = get_cluster(&client, &ns, "ev").await;
    if condition(&c, "Rebalancing").0 == "True" {
        assert_eq!(condition(&c, "Rebalancing").1, "Decommissioning");
        assert_eq!(sts_replicas().await, 4, "shrunk before broker 4 was empty");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while sts_replicas().await != 3 {
        assert!(Instant::now() < deadline, "the StatefulSet never shrank");
        reconcile_now(&client, &ctx, &ns, "ev").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        brokers.replica_count(4).await,
        0,
        "broker 4 still holds replicas"
    );

    // Below the replication factor in use: refused, nothing shrinks.
    api.patch(
        "ev",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    let c = reconcile_until(&client, &ctx, &ns, "ev", 10, "the refusal", |c| {
        condition(c, "Degraded").1 == "ScaleDownRefused"
    })
    .await;
    assert!(condition(&c, "Degraded").2.contains("replication factor 3"));
    assert_eq!(sts_replicas().await, 3);
}
