//! Command-line flags (each with a `CHRONIK_*` environment twin) and the TOML settings file.
//! Defaults make a bare `chronik-broker` a working single node on 127.0.0.1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "chronik-broker",
    version = crate::version(),
    about = "Kafka-compatible broker whose partitions are Raft groups stored in RocksDB"
)]
pub struct Args {
    /// This broker's node id (the Raft replica id of every group it hosts).
    #[arg(long, env = "CHRONIK_NODE_ID", default_value_t = 1)]
    pub node_id: u64,

    /// Directory for the RocksDB store and the cluster id.
    #[arg(long, env = "CHRONIK_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Address the Kafka listener binds.
    #[arg(long, env = "CHRONIK_KAFKA_ADDR", default_value = "127.0.0.1:9092")]
    pub kafka_addr: SocketAddr,

    /// host:port that clients are told to connect to (defaults to --kafka-addr).
    #[arg(long, env = "CHRONIK_ADVERTISED_KAFKA_ADDR")]
    pub advertised_kafka_addr: Option<String>,

    /// Address a second Kafka listener binds, for clients outside the network the
    /// advertised address belongs to (a Kubernetes NodePort); off when unset. Metadata
    /// and FindCoordinator answers on it name every broker's external address.
    #[arg(long, env = "CHRONIK_EXTERNAL_KAFKA_ADDR")]
    pub external_kafka_addr: Option<SocketAddr>,

    /// host:port that clients of the external listener are told to connect to (defaults
    /// to --external-kafka-addr).
    #[arg(long, env = "CHRONIK_ADVERTISED_EXTERNAL_KAFKA_ADDR")]
    pub advertised_external_kafka_addr: Option<String>,

    /// Add the node id to the advertised external port: brokers sharing one pod template
    /// each get their own node port (base + node id).
    #[arg(long, env = "CHRONIK_EXTERNAL_PORT_PLUS_NODE_ID", default_value_t = false, action = clap::ArgAction::Set)]
    pub external_port_plus_node_id: bool,

    /// Address for inter-broker gRPC: the admin API (and the Raft transport once brokers
    /// replicate to each other).
    #[arg(long, env = "CHRONIK_CLUSTER_ADDR", default_value = "127.0.0.1:9093")]
    pub cluster_addr: SocketAddr,

    /// host:port that peers are told to use for --cluster-addr (defaults to it).
    #[arg(long, env = "CHRONIK_ADVERTISED_CLUSTER_ADDR")]
    pub advertised_cluster_addr: Option<String>,

    /// The other brokers of the cluster as `ID@HOST:PORT` (their cluster addresses),
    /// comma-separated. A broker without cluster state asks them first: if none has any,
    /// they bootstrap a new cluster together (all of them voters of the metadata group, so
    /// every broker of a new cluster must be given the same set); otherwise it joins the
    /// running one. Empty: a single-node cluster.
    #[arg(long, env = "CHRONIK_PEERS", value_delimiter = ',', value_parser = parse_peer)]
    pub peers: Vec<Peer>,

    /// DNS SRV name listing the brokers (a headless Service's named port, e.g.
    /// `_cluster._tcp.chronik-headless.kafka.svc`): targets named `<name>-<node id>`, ports
    /// their cluster ports. Resolved at start-up and every 10 s; adds to `--peers`.
    #[arg(long, env = "CHRONIK_PEER_SRV")]
    pub peer_srv: Option<String>,

    /// DNS server (IP:PORT) for `--peer-srv`, instead of the system's resolv.conf.
    #[arg(long, env = "CHRONIK_DNS_SERVER")]
    pub dns_server: Option<SocketAddr>,

    /// The rack (zone, failure domain) this broker runs in. Replicas of a partition are
    /// spread over racks first, Metadata reports it, and a consumer that names its rack
    /// (`client.rack`) is served by an in-sync replica there (follower fetching).
    #[arg(long, env = "CHRONIK_RACK", value_parser = parse_rack)]
    pub rack: Option<String>,

    /// A file holding the rack (written before start, e.g. by the operator's init
    /// container from the Kubernetes node's zone label); used when `--rack` is not given.
    /// An empty or missing file means no rack.
    #[arg(long, env = "CHRONIK_RACK_FILE")]
    pub rack_file: Option<PathBuf>,

    /// Address of the HTTP endpoint serving /metrics, /healthz and /readyz.
    #[arg(long, env = "CHRONIK_METRICS_ADDR", default_value = "127.0.0.1:9644")]
    pub metrics_addr: SocketAddr,

    /// TOML file with broker settings (see docs/configuration.md).
    #[arg(long, env = "CHRONIK_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long, env = "CHRONIK_LOG", default_value = "info,raft=warn")]
    pub log: String,
}

/// Another broker: its node id and the host:port of its cluster (gRPC) endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: u64,
    pub addr: String,
}

fn parse_peer(s: &str) -> Result<Peer, String> {
    let (id, addr) = s
        .trim()
        .split_once('@')
        .ok_or_else(|| format!("peer {s:?} is not ID@HOST:PORT"))?;
    let id: u64 = id
        .parse()
        .ok()
        .filter(|id| *id >= 1)
        .ok_or_else(|| format!("peer {s:?}: the id must be a number >= 1"))?;
    crate::broker::split_host_port(addr).map_err(|e| format!("peer {s:?}: {e}"))?;
    Ok(Peer {
        id,
        addr: addr.to_string(),
    })
}

fn parse_rack(s: &str) -> Result<String, String> {
    let rack = s.trim();
    if rack.is_empty() || rack.len() > 255 || rack.chars().any(|c| c.is_control()) {
        return Err(format!("rack {s:?} must be 1 to 255 printable characters"));
    }
    Ok(rack.to_string())
}

impl Args {
    /// `--rack`, else the contents of `--rack-file` (trimmed; empty or missing: none).
    pub fn rack(&self) -> anyhow::Result<Option<String>> {
        if let Some(rack) = &self.rack {
            return Ok(Some(rack.clone()));
        }
        let Some(path) = &self.rack_file else {
            return Ok(None);
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => anyhow::bail!("cannot read the rack file {}: {e}", path.display()),
        };
        if text.trim().is_empty() {
            return Ok(None);
        }
        parse_rack(&text)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// Broker settings from the `--config` file; every key is optional.
#[derive(Deserialize, Debug, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Partitions of an auto-created topic or a CreateTopics request with -1.
    pub default_partitions: i32,
    /// Replication factor used when a request asks for the default (-1).
    pub default_replication_factor: i16,
    /// Create unknown topics when a client's Metadata request allows it.
    pub auto_create_topics: bool,
    /// Default `retention.ms` of topics; -1 keeps data forever.
    pub retention_ms: i64,
    /// Default `retention.bytes` per partition; -1 means no size limit.
    pub retention_bytes: i64,
    /// How often retention is enforced.
    pub retention_check_interval_ms: u64,
    /// A partition moving to its target voters (Rebalance, Decommission) that has not
    /// changed for this long is reported stalled, with why.
    pub move_stall_timeout_ms: u64,
    /// Upper bound on partitions in one CreateTopics request for one topic.
    pub max_partitions_per_topic: i32,
    /// Largest request frame accepted; larger frames close the connection.
    pub max_request_bytes: usize,
    /// How long JoinGroup waits for more members of a new group before the first rebalance.
    pub group_initial_rebalance_delay_ms: u64,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// Raft tick interval; elections take 10 ticks.
    pub raft_tick_ms: u64,
    /// Below this much free space on the data directory's filesystem, new records are
    /// refused with KAFKA_STORAGE_ERROR until space returns (RocksDB keeps the margin
    /// for flushes and compactions of what was accepted).
    pub storage_min_free_bytes: u64,
    /// Voters of the metadata group (the controller quorum); 0 picks 3, or 5 once at
    /// least five brokers stay. Brokers beyond it receive the metadata log as learners.
    pub metadata_voters: usize,
    /// Applied entries the metadata log gathers before it is compacted behind a snapshot
    /// of the catalog (a broker that needs older entries, a new one, gets the snapshot);
    /// 0 never compacts.
    pub metadata_snapshot_entries: u64,
    /// Partitions of the internal `__consumer_offsets` topic, made when the first group
    /// needs it: consumer groups hash to them, and each partition's leader coordinates
    /// its groups. Fixed once the topic exists.
    pub offsets_topic_partitions: i32,
    /// Replicas of each `__consumer_offsets` partition, capped by the number of metadata
    /// group members (one on a single broker).
    pub offsets_topic_replication_factor: i16,
    /// Records a `__consumer_offsets` partition gathers above its log start before its
    /// coordinator checkpoints it: restates the live offsets and groups and moves the log
    /// start past the old records, so the log and a new coordinator's load stay bounded
    /// by the live state. 0 never checkpoints.
    pub offsets_checkpoint_records: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_partitions: 1,
            default_replication_factor: 1,
            auto_create_topics: true,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            retention_check_interval_ms: 30_000,
            move_stall_timeout_ms: 120_000,
            max_partitions_per_topic: 10_000,
            max_request_bytes: 100 << 20,
            group_initial_rebalance_delay_ms: 0,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            raft_tick_ms: 100,
            storage_min_free_bytes: 1 << 30,
            metadata_voters: 0,
            metadata_snapshot_entries: 1000,
            offsets_topic_partitions: 16,
            offsets_topic_replication_factor: 3,
            offsets_checkpoint_records: 10_000,
        }
    }
}

impl Settings {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Settings::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading config {}: {e}", path.display()))?;
        let settings: Settings =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.default_partitions >= 1
                && self.default_partitions <= self.max_partitions_per_topic,
            "default_partitions must be between 1 and max_partitions_per_topic"
        );
        anyhow::ensure!(self.raft_tick_ms > 0, "raft_tick_ms must be positive");
        anyhow::ensure!(
            (1..=1000).contains(&self.offsets_topic_partitions),
            "offsets_topic_partitions must be between 1 and 1000"
        );
        anyhow::ensure!(
            self.offsets_topic_replication_factor >= 1,
            "offsets_topic_replication_factor must be at least 1"
        );
        anyhow::ensure!(
            self.max_request_bytes >= 1024,
            "max_request_bytes must be at least 1024"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_peer_lists_and_rejects_bad_entries() {
        let args = Args::try_parse_from([
            "chronik-broker",
            "--peers",
            "2@10.0.0.2:9093,3@chronik-3.chronik:9093",
        ])
        .unwrap();
        assert_eq!(args.peers.len(), 2);
        assert_eq!(args.peers[1].id, 3);
        assert_eq!(args.peers[1].addr, "chronik-3.chronik:9093");
        for bad in ["2", "0@h:1", "x@h:1", "2@nohost"] {
            assert!(
                Args::try_parse_from(["chronik-broker", "--peers", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_partial_toml_and_rejects_unknown_keys() {
        let s: Settings = toml::from_str("default_partitions = 3\nretention_ms = -1\n").unwrap();
        assert_eq!(s.default_partitions, 3);
        assert_eq!(s.retention_ms, -1);
        assert!(s.auto_create_topics);
        assert!(toml::from_str::<Settings>("no_such_key = 1").is_err());
    }
}
