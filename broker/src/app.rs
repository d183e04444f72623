//! Wiring: start-up order is settings, storage, the gRPC endpoint for peers and the admin
//! API (which answers peers' Join calls from the start), the decision to bootstrap or join
//! a cluster (brokers without cluster state only), the Raft driver (which replays the
//! log), the metrics/health endpoint, the Kafka listener, and finally registration in the
//! metadata log (after which the broker is ready). Shutdown first hands leadership to other
//! voters, then runs in reverse.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::broker::{self, Broker};
use crate::cluster::{self, leadership, registration, transport::GrpcTransport, Peers};
use crate::config::{Args, Settings};
use crate::metadata::{BrokerRecord, Endpoint};
use crate::protocol::Listener;
use crate::{group, metadata, metrics, raft, server, shutdown, storage};

/// How long a stopping broker waits for its leaderships to move to other voters.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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
    let advertised_cluster = args
        .advertised_cluster_addr
        .clone()
        .unwrap_or_else(|| args.cluster_addr.to_string());
    broker::split_host_port(&advertised_cluster)?;
    let external = external_endpoint(&args, node_id)?;
    let rack = args.rack()?;
    let cluster_id = broker::cluster_id(&args.data_dir)?;
    let db = storage::open(&args.data_dir)?;
    let disk = storage::DiskSpace::new(args.data_dir.clone(), settings.storage_min_free_bytes);
    disk.watch()?;
    let catalog = Arc::new(metadata::Catalog::default());
    let peers = Arc::new(Peers::new(args.node_id, &args.peers, catalog.clone()));
    let had_cluster_state =
        storage::GroupStorage::load(db.clone(), metadata::METADATA_GROUP)?.is_some();
    let starting = cluster::Starting::new(had_cluster_state);
    let (trigger, shutdown) = shutdown::channel();
    let grpc_task = tokio::spawn(cluster::serve(
        args.cluster_addr,
        starting.clone(),
        shutdown.clone(),
    )?);
    let discovery = match &args.peer_srv {
        Some(name) => {
            let resolver = cluster::discovery::resolver(args.dns_server)?;
            tokio::select! {
                _ = cluster::discovery::first_discovery(&resolver, name, &peers) => {}
                _ = wait_for_signal() => return Ok(()),
            }
            tokio::spawn(cluster::discovery::refresh_loop(
                resolver,
                name.clone(),
                peers.clone(),
                shutdown.clone(),
            ));
            true
        }
        None => false,
    };
    let alone = args.peers.is_empty() && peers.ids().is_empty();
    let (voters, learners) = if had_cluster_state || (alone && !discovery) {
        // (Ignored when the metadata group exists: its members are on disk.)
        (vec![args.node_id], vec![])
    } else {
        tokio::select! {
            members = cluster::join::bootstrap_or_join(args.node_id, &advertised_cluster, &peers) => members,
            _ = wait_for_signal() => {
                tracing::info!("shutdown requested before the broker joined a cluster");
                return Ok(());
            }
        }
    };
    let driver_config = raft::DriverConfig {
        node_id: args.node_id,
        voters,
        learners,
        tick: Duration::from_millis(settings.raft_tick_ms),
        retention_check: Duration::from_millis(settings.retention_check_interval_ms),
        retention_ms: settings.retention_ms,
        retention_bytes: settings.retention_bytes,
        disk: disk.clone(),
        metadata_voters: settings.metadata_voters,
        metadata_snapshot_entries: settings.metadata_snapshot_entries,
    };
    let driver_cell = Arc::new(OnceLock::new());
    let snapshots = cluster::snapshot::SnapshotSender::new(
        args.node_id,
        peers.clone(),
        db.clone(),
        driver_cell.clone(),
    );
    let transport = Box::new(GrpcTransport::new(args.node_id, peers.clone(), snapshots));
    let (raft, driver_thread) =
        raft::Driver::start(driver_config, db.clone(), catalog.clone(), transport)?;
    let _ = driver_cell.set(raft.clone());
    let broker = Arc::new(Broker {
        node_id,
        host,
        port,
        external: external.clone(),
        rack,
        proposed_cluster_id: cluster_id,
        groups: group::Coordinator::new(&settings),
        settings,
        db,
        catalog: catalog.clone(),
        raft: raft.clone(),
        peers,
        disk,
    });
    starting.set(broker.clone());
    let registration = BrokerRecord {
        id: args.node_id,
        host: broker.host.clone(),
        port: broker.port,
        cluster_addr: advertised_cluster,
        external,
        rack: broker.rack.clone(),
    };

    let kafka_listener = bind(args.kafka_addr).await?;
    let external_listener = match args.external_kafka_addr {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let health = metrics::Health {
        catalog,
        node_id: args.node_id,
        pulse: raft.pulse(),
    };
    let mut metrics_task =
        tokio::spawn(metrics::serve(args.metrics_addr, health, shutdown.clone()));
    let mut server_task = tokio::spawn({
        let (broker, shutdown) = (broker.clone(), shutdown.clone());
        async move {
            let internal = server::serve(
                kafka_listener,
                Listener::Internal,
                broker.clone(),
                shutdown.clone(),
            );
            let external = async {
                if let Some(l) = external_listener {
                    server::serve(l, Listener::External, broker, shutdown).await;
                }
            };
            tokio::join!(internal, external);
        }
    });
    let mut driver_task = tokio::task::spawn_blocking(move || driver_thread.join());
    tokio::spawn(leadership::report_loop(broker.clone(), shutdown.clone()));
    tokio::spawn(group::ownership::run(broker.clone(), shutdown.clone()));
    tokio::spawn(registration::register(
        broker.clone(),
        registration,
        shutdown.clone(),
    ));
    tracing::info!(
        node_id,
        kafka = %args.kafka_addr,
        advertised = %advertised,
        external = ?broker.external,
        rack = ?broker.rack,
        data_dir = %args.data_dir.display(),
        "chronik-broker started"
    );

    // A broker without any one of these cannot serve: it ends with an error (and a
    // non-zero exit code) so that its supervisor restarts it, instead of living on.
    let mut grpc_task = grpc_task;
    tokio::select! {
        _ = wait_for_signal() => {
            tracing::info!("shutdown requested");
            broker.peers.announce_stopping();
        }
        r = &mut metrics_task => return Err(stopped("the metrics and health endpoint", r)),
        r = &mut grpc_task => return Err(stopped("the cluster gRPC server", r)),
        r = &mut server_task => return Err(stopped("the Kafka listener", r.map(Ok))),
        _ = &mut driver_task => anyhow::bail!("the Raft driver stopped unexpectedly"),
    }
    drain_leadership(&broker).await;
    trigger.fire();
    // In-flight requests get a bounded grace period; their entries are already durable
    // or will be answered with an error, never acknowledged and then lost.
    let _ = tokio::time::timeout(Duration::from_secs(10), server_task).await;
    raft.shutdown();
    let _ = driver_task.await;
    tracing::info!("chronik-broker stopped");
    Ok(())
}

async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding Kafka address {addr}: {e}"))
}

/// The external listener's advertised address: `--advertised-external-kafka-addr` (or the
/// bind address), its port raised by the node id when brokers share one template.
fn external_endpoint(args: &Args, node_id: i32) -> anyhow::Result<Option<Endpoint>> {
    let Some(bind) = args.external_kafka_addr else {
        if args.advertised_external_kafka_addr.is_some() {
            anyhow::bail!("--advertised-external-kafka-addr needs --external-kafka-addr");
        }
        return Ok(None);
    };
    let advertised = args
        .advertised_external_kafka_addr
        .clone()
        .unwrap_or_else(|| bind.to_string());
    let (host, mut port) = broker::split_host_port(&advertised)?;
    if args.external_port_plus_node_id {
        port = port
            .checked_add(node_id)
            .filter(|p| *p <= u16::MAX as i32)
            .ok_or_else(|| {
                anyhow::anyhow!("external port {port} + node id {node_id} is not a port")
            })?;
    }
    Ok(Some(Endpoint { host, port }))
}

/// The error a broker stops with when one of its servers ended before shutdown.
fn stopped(what: &str, r: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match r {
        Ok(Ok(())) => anyhow::anyhow!("{what} stopped unexpectedly"),
        Ok(Err(e)) => e.context(format!("{what} failed")),
        Err(e) => anyhow::anyhow!("{what} failed: {e}"),
    }
}

/// Hands every leadership this broker holds to another voter before it stops, so that
/// clients move on at once instead of waiting out an election timeout.
pub async fn drain_leadership(broker: &Broker) {
    let me = broker.node_id as u64;
    let led = |b: &Broker| {
        b.catalog
            .topics()
            .iter()
            .map(|t| t.partitions.iter().filter(|p| p.is_led_by(me)).count())
            .sum::<usize>()
            + usize::from(b.catalog.metadata_leader() == Some(me))
    };
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    loop {
        // The last brokers of a cluster to stop end at once instead of handing leadership
        // to the dead, or to each other, until the drain times out.
        let down: Vec<u64> = broker
            .peers
            .ids()
            .into_iter()
            .filter(|p| !broker.catalog.peer_can_take_over(*p))
            .collect();
        let started = broker.raft.transfer_leadership(down).await;
        let remaining = led(broker);
        if started == 0 || remaining == 0 || tokio::time::Instant::now() >= deadline {
            tracing::info!(remaining, "leadership drained");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn endpoint(extra: &[&str], node_id: i32) -> anyhow::Result<Option<Endpoint>> {
        let args = Args::try_parse_from(["chronik-broker"].iter().chain(extra))?;
        external_endpoint(&args, node_id)
    }

    #[test]
    fn external_endpoint_defaults_to_the_bind_address_and_is_off_without_one() {
        assert_eq!(endpoint(&[], 1).unwrap(), None);
        let e = endpoint(&["--external-kafka-addr", "0.0.0.0:9094"], 1).unwrap();
        assert_eq!(e.map(|e| (e.host, e.port)), Some(("0.0.0.0".into(), 9094)));
    }

    #[test]
    fn each_broker_of_a_shared_template_advertises_its_own_node_port() {
        let args = [
            "--external-kafka-addr",
            "0.0.0.0:9094",
            "--advertised-external-kafka-addr",
            "192.0.2.7:31090",
            "--external-port-plus-node-id",
            "true",
        ];
        let e = endpoint(&args, 2).unwrap().unwrap();
        assert_eq!((e.host.as_str(), e.port), ("192.0.2.7", 31092));
        assert!(
            endpoint(&args, 40_000).is_err(),
            "a port above 65535 is refused"
        );
    }

    #[test]
    fn an_advertised_external_address_needs_an_external_listener() {
        let err = endpoint(&["--advertised-external-kafka-addr", "h:1"], 1).unwrap_err();
        assert!(
            err.to_string().contains("needs --external-kafka-addr"),
            "{err}"
        );
    }
}
