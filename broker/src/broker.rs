//! State shared by every connection: identity, settings, the catalog, the Raft handle
//! and the group coordinator.

use std::sync::Arc;

use crate::config::Settings;
use crate::group::Coordinator;
use crate::metadata::Catalog;
use crate::raft::RaftHandle;
use crate::storage::Db;

pub struct Broker {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub cluster_id: String,
    pub settings: Settings,
    pub db: Db,
    pub catalog: Arc<Catalog>,
    pub raft: RaftHandle,
    pub groups: Coordinator,
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

/// The cluster id is made once and kept in the data directory.
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
