//! `chronik-operator`: reconciles ChronikCluster resources into running Chronik brokers.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::{extract::State, routing::get, Router};
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

    /// This operator instance's name in Events (e.g. the pod name).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
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
    let ctx = Arc::new(reconcile::Context::new(
        client,
        metrics,
        args.instance.clone(),
    ));
    let server = tokio::spawn(serve_metrics(args.metrics_addr, registry));
    tracing::info!(namespace = ?args.namespace, "controller starting");
    tokio::select! {
        _ = reconcile::run(ctx, args.namespace.as_deref(), true) => {
            tracing::info!("controller stopped");
            Ok(())
        }
        res = server => res?,
    }
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
    if let Err(e) = runtime.block_on(run(args)) {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}
