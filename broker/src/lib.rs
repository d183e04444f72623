//! Chronik broker library: everything `chronik-broker` runs, exposed for tests and fuzzing.
//!
//! Layout, from the wire inwards:
//! - [`server`], [`connection`]: TCP listener and per-connection framing/pipelining.
//! - [`protocol`]: one module per Kafka API behind a thin dispatch.
//! - [`group`]: the consumer group coordinator.
//! - [`raft`]: the driver loop running every Raft group with group commit.
//! - [`log`], [`metadata`]: the state machines Raft applies to (partitions, cluster metadata).
//! - [`storage`]: RocksDB layout and `raft::Storage`.

pub mod admin;
pub mod app;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod group;
pub mod log;
pub mod metadata;
pub mod metrics;
pub mod protocol;
pub mod raft;
pub mod server;
pub mod shutdown;
pub mod storage;

static VERSION: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The version this build reports (`--version`, the admin API, `chronik_build_info`): the
/// crate version unless the binary set another with [`set_version`].
pub fn version() -> &'static str {
    VERSION.get().copied().unwrap_or(env!("CARGO_PKG_VERSION"))
}

/// Set once by `main` from `CHRONIK_BUILD_VERSION` at build time: only the small binary
/// crate is rebuilt when it changes (an image built for an upgrade test), not this one.
pub fn set_version(v: &'static str) {
    let _ = VERSION.set(v);
}
