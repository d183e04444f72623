//! `chronik-operator`: the `ChronikCluster` custom resource and its controller.
//!
//! - [`crd`]: the resource types, their validation, and the generated CRD YAML;
//! - [`resources`]: the desired ConfigMap, Services, StatefulSet and PodDisruptionBudget,
//!   as pure functions of a cluster;
//! - [`listeners`]: where clients connect (`status.listeners`);
//! - [`reconcile`]: server-side apply of those objects and the status subresource;
//! - [`upgrade`]: the rolling upgrade's plan (which broker restarts next, or why not);
//! - [`scaling`]: rebalance after a scale-up, decommission before a scale-down;
//! - [`admin`]: the brokers' admin API (cluster status, restart gates, leadership drain);
//! - [`rack`]: rack awareness (the brokers' init step and its permissions);
//! - [`leader`]: leader election through a Lease (one active replica);
//! - [`metrics`]: the operator's Prometheus metrics.

pub mod admin;
pub mod crd;
pub mod leader;
pub mod listeners;
pub mod metrics;
pub mod rack;
pub mod reconcile;
pub mod resources;
pub mod scaling;
pub mod upgrade;

pub use crd::{ChronikCluster, ChronikClusterSpec, ChronikClusterStatus};

#[cfg(test)]
mod tests {
    /// `crds/chronikcluster.yaml` and the Helm chart's copy must be exactly what `crdgen`
    /// prints.
    #[test]
    fn checked_in_crd_is_up_to_date() {
        let generated = crate::crd::crd_yaml();
        for path in [
            "crds/chronikcluster.yaml",
            "charts/chronik/crds/chronikcluster.yaml",
        ] {
            let full = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
            let checked_in = std::fs::read_to_string(full).unwrap_or_default();
            assert!(checked_in == generated, "{path} is stale: run `make crds`");
        }
    }
}
