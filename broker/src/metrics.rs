//! Prometheus metrics and the HTTP endpoint that serves them with the health probes.
//!
//! Counters are incremented where the work happens; gauges that describe state (partition
//! count, log size, leaders) are computed from the catalog at scrape time so they cannot drift.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus::{
    register_histogram, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, register_int_gauge_vec, Encoder, Histogram, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, TextEncoder,
};

use crate::cluster::leadership::LIVENESS_WINDOW;
use crate::metadata::Catalog;
use crate::raft::Pulse;
use crate::shutdown::Shutdown;

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "chronik_requests_total",
        "Kafka requests handled, by API",
        &["api"]
    )
    .unwrap()
});
pub static REQUEST_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "chronik_request_errors_total",
        "Kafka requests rejected before a handler ran (bad frame, unsupported version)",
        &["reason"]
    )
    .unwrap()
});
pub static REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "chronik_request_duration_seconds",
        "Time from a request's arrival to its response, by API",
        &["api"],
        LATENCY_BUCKETS.to_vec()
    )
    .unwrap()
});
pub static BYTES_IN: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "chronik_bytes_in_total",
        "Request bytes received from clients"
    )
    .unwrap()
});
pub static BYTES_OUT: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("chronik_bytes_out_total", "Response bytes sent to clients").unwrap()
});
pub static PRODUCED_RECORDS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "chronik_produced_records_total",
        "Records appended by Produce (after commit, duplicates excluded)"
    )
    .unwrap()
});
pub static PRODUCED_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "chronik_produced_bytes_total",
        "Record batch bytes appended"
    )
    .unwrap()
});
pub static FOLLOWER_FETCHED_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "chronik_follower_fetched_bytes_total",
        "Record batch bytes served to consumers by this broker as a follower (KIP-392)"
    )
    .unwrap()
});
pub static FETCH_REDIRECTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "chronik_fetch_preferred_replica_total",
        "Partitions of consumer fetches answered with a preferred read replica in the consumer's rack"
    )
    .unwrap()
});
pub static FETCHED_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "chronik_fetched_bytes_total",
        "Record batch bytes served by Fetch"
    )
    .unwrap()
});
pub static RAFT_COMMIT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "chronik_raft_commit_latency_seconds",
        "Time from proposing an entry to its commit and apply",
        LATENCY_BUCKETS.to_vec()
    )
    .unwrap()
});
pub static RAFT_SYNC_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "chronik_raft_sync_seconds",
        "Duration of one group-commit fsync of Raft state",
        LATENCY_BUCKETS.to_vec()
    )
    .unwrap()
});
pub static RAFT_SYNC_GROUPS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "chronik_raft_sync_groups",
        "Raft groups persisted by one group-commit fsync",
        vec![1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0]
    )
    .unwrap()
});
pub static RAFT_MESSAGES_SENT: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "chronik_raft_messages_sent_total",
        "Raft messages delivered to peers"
    )
    .unwrap()
});
pub static RAFT_SEND_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "chronik_raft_send_failures_total",
        "Calls carrying Raft messages to a peer that failed (the messages are resent by Raft)"
    )
    .unwrap()
});
pub static RAFT_SNAPSHOTS_SENT: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "chronik_raft_snapshots_sent_total",
        "Raft snapshots (partitions, the metadata catalog) delivered to a replica that needed compacted entries"
    )
    .unwrap()
});
pub static RAFT_SNAPSHOT_SEND_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "chronik_raft_snapshot_send_failures_total",
        "Raft snapshots that did not arrive (Raft sends another)"
    )
    .unwrap()
});
pub static RAFT_SNAPSHOT_BYTES_SENT: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "chronik_raft_snapshot_bytes_sent_total",
        "Bytes sent in Raft snapshots (record batches; a metadata snapshot's catalog)"
    )
    .unwrap()
});
pub static RAFT_SNAPSHOT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "chronik_raft_snapshot_send_seconds",
        "Time to stream a Raft snapshot to a replica",
        vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0]
    )
    .unwrap()
});
pub static RAFT_SNAPSHOTS_RECEIVED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "chronik_raft_snapshots_received_total",
        "Raft snapshots received whole and taken by Raft"
    )
    .unwrap()
});
pub static RAFT_SNAPSHOT_BYTES_RECEIVED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "chronik_raft_snapshot_bytes_received_total",
        "Bytes received in Raft snapshots"
    )
    .unwrap()
});
pub static RAFT_SNAPSHOTS_INSTALLED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "chronik_raft_snapshots_installed_total",
        "Raft snapshots installed (ingested into the store)"
    )
    .unwrap()
});
pub static METADATA_LOG_COMPACTIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "chronik_metadata_log_compactions_total",
        "Compactions of the metadata log behind a snapshot of the catalog"
    )
    .unwrap()
});
pub static OFFSETS_CHECKPOINTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "chronik_offsets_checkpoints_total",
        "Checkpoints of __consumer_offsets partitions: live state restated, log start moved"
    )
    .unwrap()
});
pub static METADATA_SNAPSHOTS_RESTORED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "chronik_metadata_snapshots_restored_total",
        "Catalogs taken on from a metadata snapshot (this broker was behind the compaction point)"
    )
    .unwrap()
});
static UNDER_REPLICATED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "chronik_under_replicated_partitions",
        "Partitions led by this broker with fewer in-sync voters than voters"
    )
    .unwrap()
});
static PARTITIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("chronik_partitions", "Partitions hosted by this broker").unwrap()
});
static LEADERS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("chronik_raft_leader_count", "Partitions this broker leads").unwrap()
});
static LOG_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "chronik_log_size_bytes",
        "Record batch bytes retained in partition logs"
    )
    .unwrap()
});

static BUILD_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "chronik_build_info",
        "Always 1; the version label is the broker's build",
        &["version"]
    )
    .unwrap()
});

fn render(catalog: &Catalog, node_id: u64) -> String {
    BUILD_INFO.with_label_values(&[crate::version()]).set(1);
    // Exported at zero before the first snapshot, so that dashboards see them at all.
    LazyLock::force(&RAFT_SNAPSHOTS_SENT);
    LazyLock::force(&RAFT_SNAPSHOT_SEND_FAILURES);
    LazyLock::force(&RAFT_SNAPSHOT_BYTES_SENT);
    LazyLock::force(&RAFT_SNAPSHOT_SECONDS);
    LazyLock::force(&RAFT_SNAPSHOTS_RECEIVED);
    LazyLock::force(&RAFT_SNAPSHOT_BYTES_RECEIVED);
    LazyLock::force(&RAFT_SNAPSHOTS_INSTALLED);
    LazyLock::force(&METADATA_LOG_COMPACTIONS);
    LazyLock::force(&METADATA_SNAPSHOTS_RESTORED);
    LazyLock::force(&OFFSETS_CHECKPOINTS);
    let topics = catalog.topics();
    let partitions = topics.iter().flat_map(|t| t.partitions.iter());
    let (mut count, mut led, mut bytes, mut urp) = (0i64, 0i64, 0i64, 0i64);
    for p in partitions {
        let (voters, in_sync) = p.replicas();
        if !voters.contains(&node_id) {
            continue; // hosted elsewhere
        }
        count += 1;
        if p.is_led_by(node_id) {
            led += 1;
            urp += i64::from(in_sync.len() < voters.len());
        }
        bytes += p.log_bytes() as i64;
    }
    PARTITIONS.set(count);
    LEADERS.set(led);
    UNDER_REPLICATED.set(urp);
    LOG_BYTES.set(bytes);
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&prometheus::gather(), &mut out)
        .expect("text encoding");
    String::from_utf8(out).expect("utf-8 metrics")
}

/// What the probes look at: the Raft driver's pulse and the broker's view of the cluster.
#[derive(Clone)]
pub struct Health {
    pub catalog: Arc<Catalog>,
    pub node_id: u64,
    pub pulse: Arc<Pulse>,
}

/// A driver whose loop has not gone round for this long is stuck (it goes round at least
/// once a Raft tick): the broker is not alive, and a liveness probe restarts it.
const DRIVER_STALLED: Duration = Duration::from_secs(5);

/// Ready needs a driver that went round this recently.
const DRIVER_SLOW: Duration = Duration::from_secs(2);

async fn metrics(State(h): State<Health>) -> String {
    render(&h.catalog, h.node_id)
}

async fn healthz(State(h): State<Health>) -> (StatusCode, String) {
    let age = h.pulse.age();
    if age > DRIVER_STALLED {
        let msg = format!("raft driver stalled: last round {} ms ago", age.as_millis());
        return (StatusCode::SERVICE_UNAVAILABLE, msg);
    }
    (
        StatusCode::OK,
        format!("ok: raft driver round {} ms ago", age.as_millis()),
    )
}

async fn readyz(State(h): State<Health>) -> (StatusCode, String) {
    match not_ready(&h) {
        None => (StatusCode::OK, "ready".into()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// Why the broker cannot serve now, if it cannot.
fn not_ready(h: &Health) -> Option<String> {
    if !h.catalog.is_ready() {
        return Some("starting".into());
    }
    let age = h.pulse.age();
    if age > DRIVER_SLOW {
        return Some(format!(
            "raft driver stalled: last round {} ms ago",
            age.as_millis()
        ));
    }
    match h.catalog.metadata_leader() {
        None => Some("no metadata leader known".into()),
        Some(l) if l != h.node_id && !h.catalog.peer_alive(l, LIVENESS_WINDOW) => Some(format!(
            "no contact with the metadata leader (broker {l}) for {} s",
            LIVENESS_WINDOW.as_secs()
        )),
        Some(_) => None,
    }
}

/// Binds exactly the configured address (never a wildcard of our choosing).
pub async fn serve(addr: SocketAddr, health: Health, shutdown: Shutdown) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding metrics address {addr}: {e}"))?;
    tracing::info!(%addr, "metrics and health endpoints listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.wait())
        .await?;
    Ok(())
}
