//! State shared by every connection: identity, settings, the catalog, the Raft handle,
//! the peers and the group coordinator.

use std::sync::Arc;

use crate::cluster::Peers;
use crate::config::Settings;
use crate::group::Coordinator;
use crate::metadata::Catalog;
use crate::raft::RaftHandle;
use crate::storage::Db;

pub struct Broker {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    /// The external listener's advertised address, if it has one.
    pub external: Option<crate::metadata::Endpoint>,
    /// The rack (zone) this broker runs in, if it was given one.
    pub rack: Option<String>,
    /// The id this broker proposes when it finds the cluster unnamed (kept in its data
    /// directory); see [`Broker::cluster_id`].
    pub proposed_cluster_id: String,
    pub settings: Settings,
    pub db: Db,
    pub catalog: Arc<Catalog>,
    pub raft: RaftHandle,
    pub peers: Arc<Peers>,
    pub groups: Coordinator,
    /// Free space on the data directory (snapshots from peers stop when it runs short).
    pub disk: Arc<crate::storage::DiskSpace>,
}

impl Broker {
    /// The cluster's id as the metadata log records it (the same on every broker).
    pub fn cluster_id(&self) -> String {
        self.catalog
            .cluster_id()
            .unwrap_or_else(|| self.proposed_cluster_id.clone())
    }

    /// Every registered broker, this one included even before its registration commits
    /// (a broker always knows itself).
    pub fn registered_brokers(&self) -> Vec<crate::metadata::BrokerRecord> {
        let mut records = self.catalog.brokers();
        if !records.iter().any(|r| r.id == self.node_id as u64) {
            records.push(crate::metadata::BrokerRecord {
                id: self.node_id as u64,
                host: self.host.clone(),
                port: self.port,
                cluster_addr: String::new(),
                external: self.external.clone(),
                rack: self.rack.clone(),
            });
        }
        records
    }

    /// Whether this broker leads the partition and may serve produce and fetch for it.
    pub fn leads(&self, p: &crate::log::PartitionShared) -> bool {
        p.is_led_by(self.node_id as u64)
    }
}

/// Splits an advertised `host:port`.
pub fn split_host_port(addr: &str) -> anyhow::Result<(String, i32)> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("advertised address {addr:?} is not host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow::anyhow!("advertised address {addr:?} has a bad port"))?;
    Ok((host.trim_matches(['[', ']']).to_string(), port as i32))
}

/// The cluster id this broker proposes is made once and kept in the data directory.
pub fn cluster_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("cluster_id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        return Ok(id.trim().to_string());
    }
    std::fs::create_dir_all(data_dir)?;
    let id = uuid::Uuid::new_v4().simple().to_string()[..22].to_string();
    std::fs::write(&path, &id)?;
    Ok(id)
}
