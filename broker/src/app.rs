//! Wiring: start-up order is settings, storage, Raft driver (which replays the log), then
//! the metrics/health endpoint and finally the Kafka listener. Shutdown runs in reverse.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::{self, Broker};
use crate::config::{Args, Settings};
use crate::{admin, group, metadata, metrics, raft, server, shutdown, storage};

pub async fn run(args: Args) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.as_deref())?;
    let advertised = args
        .advertised_kafka_addr
        .clone()
        .unwrap_or_else(|| args.kafka_addr.to_string());
    let (host, port) = broker::split_host_port(&advertised)?;
    let node_id = i32::try_from(args.node_id)
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| anyhow::anyhow!("--node-id must be between 1 and {}", i32::MAX))?;
    let cluster_id = broker::cluster_id(&args.data_dir)?;
    let db = storage::open(&args.data_dir)?;
    let catalog = Arc::new(metadata::Catalog::default());
    let driver_config = raft::DriverConfig {
        node_id: args.node_id,
        tick: Duration::from_millis(settings.raft_tick_ms),
        retention_check: Duration::from_millis(settings.retention_check_interval_ms),
        retention_ms: settings.retention_ms,
        retention_bytes: settings.retention_bytes,
    };
    let (raft, driver_thread) = raft::Driver::start(driver_config, db.clone(), catalog.clone())?;
    let broker = Arc::new(Broker {
        node_id,
        host,
        port,
        cluster_id,
        groups: group::Coordinator::new(&settings),
        settings,
        db,
        catalog: catalog.clone(),
        raft: raft.clone(),
    });

    let (trigger, shutdown) = shutdown::channel();
    let kafka_listener = tokio::net::TcpListener::bind(args.kafka_addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding Kafka address {}: {e}", args.kafka_addr))?;
    let metrics_task = tokio::spawn(metrics::serve(
        args.metrics_addr,
        catalog,
        args.node_id,
        shutdown.clone(),
    ));
    let server_task = tokio::spawn(server::serve(
        kafka_listener,
        broker.clone(),
        shutdown.clone(),
    ));
    let admin_task = tokio::spawn(admin::serve(
        args.cluster_addr,
        broker.clone(),
        shutdown.clone(),
    ));
    tracing::info!(
        node_id,
        kafka = %args.kafka_addr,
        advertised = %advertised,
        data_dir = %args.data_dir.display(),
        "chronik-broker started"
    );

    tokio::select! {
        _ = wait_for_signal() => tracing::info!("shutdown requested"),
        r = metrics_task => r??,
        r = admin_task => r??,
    }
    trigger.fire();
    // In-flight requests get a bounded grace period; their entries are already durable
    // or will be answered with an error, never acknowledged and then lost.
    let _ = tokio::time::timeout(Duration::from_secs(10), server_task).await;
    raft.shutdown();
    let _ = tokio::task::spawn_blocking(move || driver_thread.join()).await;
    tracing::info!("chronik-broker stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
