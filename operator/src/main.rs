//! `chronik-operator`: reconciles ChronikCluster resources into running Chronik brokers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::{extract::State, routing::get, Router};
use chronik_operator::leader::LeaseLock;
use chronik_operator::{metrics, reconcile, ChronikCluster};
use clap::Parser;
use kube::api::{Api, ListParams};
use kube::Client;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "chronik-operator",
    version,
    about = "Kubernetes operator for Chronik clusters"
)]
struct Args {
    /// Address of the HTTP endpoint serving /metrics and /healthz.
    #[arg(
        long,
        env = "CHRONIK_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: SocketAddr,

    /// Watch ChronikClusters in this namespace only (default: all namespaces).
    #[arg(long, env = "CHRONIK_OPERATOR_NAMESPACE")]
    namespace: Option<String>,

    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long, env = "CHRONIK_OPERATOR_LOG", default_value = "info")]
    log: String,

    /// Log format: `text` or `json`.
    #[arg(long, env = "CHRONIK_OPERATOR_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,

    /// This operator instance's name in Events and in the leader Lease (e.g. the pod name).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,

    /// Elect a leader through a Lease, so that only one of several replicas reconciles.
    #[arg(long, env = "CHRONIK_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,

    /// Namespace of the leader Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,

    /// The operator's own image: broker pods of clusters with rack awareness run it as an
    /// init container (`rack-init`) that reads their node's rack label.
    #[arg(long, env = "CHRONIK_OPERATOR_IMAGE", default_value = chronik_operator::rack::DEFAULT_IMAGE)]
    image: String,

    #[command(subcommand)]
    command: Option<Command>,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "CHRONIK_OPERATOR_LEASE_NAME",
        default_value = "chronik-operator"
    )]
    lease_name: String,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Writes the rack of the node this pod runs on (its `--topology-key` label) to
    /// `--out`: the broker pods' init container when rack awareness is on.
    RackInit {
        /// The node (the downward API's `spec.nodeName`).
        #[arg(long, env = "NODE_NAME")]
        node: String,
        /// The node label whose value is the rack.
        #[arg(long)]
        topology_key: String,
        /// The file to write.
        #[arg(long, default_value = chronik_operator::rack::RACK_FILE)]
        out: std::path::PathBuf,
    },
}

/// How long a Lease holds without renewal; it is renewed every third of that.
const LEASE_DURATION: Duration = Duration::from_secs(15);

/// Waits until this replica holds the Lease, then keeps renewing it in the background. A
/// replica that cannot renew in time exits at once: another may already be reconciling.
async fn lead(lock: LeaseLock) -> anyhow::Result<()> {
    let mut waiting_logged = false;
    loop {
        match lock.try_acquire_or_renew().await {
            Ok(true) => break,
            Ok(false) if !waiting_logged => {
                tracing::info!(
                    identity = lock.identity(),
                    "another replica leads; standing by"
                );
                waiting_logged = true;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election: cannot read the Lease"),
        }
        tokio::time::sleep(LEASE_DURATION / 5).await;
    }
    tracing::info!(identity = lock.identity(), "leading");
    tokio::spawn(async move {
        let mut last_renewal = std::time::Instant::now();
        loop {
            tokio::time::sleep(LEASE_DURATION / 3).await;
            match lock.try_acquire_or_renew().await {
                Ok(true) => last_renewal = std::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("lost the leader Lease to another replica; exiting");
                    std::process::exit(1);
                }
                Err(e) if last_renewal.elapsed() >= LEASE_DURATION * 2 / 3 => {
                    tracing::error!(error = %e, "cannot renew the leader Lease in time; exiting");
                    std::process::exit(1);
                }
                Err(e) => tracing::warn!(error = %e, "renewing the leader Lease failed; retrying"),
            }
        }
    });
    Ok(())
}

async fn serve_metrics(addr: SocketAddr, registry: prometheus::Registry) -> anyhow::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(r): State<prometheus::Registry>| async move { metrics::render(&r) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(registry);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics address {addr}"))?;
    tracing::info!(%addr, "metrics endpoint listening");
    axum::serve(listener, app).await?;
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    let clusters: Api<ChronikCluster> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    clusters
        .list(&ListParams::default().limit(1))
        .await
        .context("cannot list ChronikClusters; is the CRD installed? (kubectl apply -f crds/chronikcluster.yaml)")?;

    let registry = prometheus::Registry::new();
    let metrics = metrics::Metrics::new(&registry)?;
    let ctx = Arc::new(
        reconcile::Context::new(client.clone(), metrics, args.instance.clone())
            .with_operator_image(args.image.clone()),
    );
    let server = tokio::spawn(serve_metrics(args.metrics_addr, registry));
    let lock = args.leader_election.then(|| {
        let identity = args.instance.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "chronik-operator".into());
            format!("{host}-{}", std::process::id())
        });
        LeaseLock::new(
            client.clone(),
            &args.lease_namespace,
            &args.lease_name,
            &identity,
            LEASE_DURATION,
        )
    });
    if let Some(lock) = lock.clone() {
        lead(lock).await?;
    }
    tracing::info!(namespace = ?args.namespace, "controller starting");
    tokio::spawn(reconcile::rack::sweep_forever(ctx.clone()));
    let result = tokio::select! {
        _ = reconcile::run(ctx, args.namespace.as_deref(), true) => {
            tracing::info!("controller stopped");
            Ok(())
        }
        res = server => res?,
    };
    if let Some(lock) = lock {
        if let Err(e) = lock.release().await {
            tracing::warn!(error = %e, "releasing the leader Lease failed");
        }
    }
    result
}

fn main() {
    let args = Args::parse();
    let filter = EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info"));
    if args.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match &args.command {
        Some(Command::RackInit {
            node,
            topology_key,
            out,
        }) => runtime.block_on(chronik_operator::rack::init(node, topology_key, out)),
        None => runtime.block_on(run(args)),
    };
    if let Err(e) = result {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}
