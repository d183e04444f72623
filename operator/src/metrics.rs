//! Operator metrics (Prometheus text format on `/metrics`).

use std::time::Instant;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

/// Reconcile counters and timings. Cheap to clone (the collectors are shared).
#[derive(Clone)]
pub struct Metrics {
    pub reconciliations: IntCounter,
    pub failures: IntCounterVec,
    pub duration: Histogram,
    /// Writes made to the API server, by kind and action (`created`, `updated`, `status`:
    /// status patches sent, which the server may find to be no-ops).
    /// On a steady cluster this stays flat: every apply is a no-op.
    pub writes: IntCounterVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let reconciliations = IntCounter::with_opts(Opts::new(
            "chronik_operator_reconciliations_total",
            "Reconciliations started",
        ))?;
        let failures = IntCounterVec::new(
            Opts::new(
                "chronik_operator_reconcile_failures_total",
                "Reconciliations that failed, by error kind",
            ),
            &["error"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "chronik_operator_reconcile_duration_seconds",
                "Time taken by one reconciliation",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        let writes = IntCounterVec::new(
            Opts::new(
                "chronik_operator_writes_total",
                "Objects created or changed, and status patches sent",
            ),
            &["kind", "action"],
        )?;
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(writes.clone()))?;
        Ok(Metrics {
            reconciliations,
            failures,
            duration,
            writes,
        })
    }

    /// Counts a reconciliation and times it until the guard is dropped.
    pub fn reconcile_started(&self) -> ReconcileTimer {
        self.reconciliations.inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.duration.clone(),
        }
    }
}

pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// The registry in Prometheus' text exposition format.
pub fn render(registry: &Registry) -> String {
    TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        drop(m.reconcile_started());
        m.failures.with_label_values(&["kube"]).inc();
        m.writes
            .with_label_values(&["StatefulSet", "created"])
            .inc();
        let text = render(&registry);
        assert!(
            text.contains("chronik_operator_reconciliations_total 1"),
            "{text}"
        );
        assert!(text.contains("chronik_operator_reconcile_failures_total{error=\"kube\"} 1"));
        assert!(text.contains("chronik_operator_reconcile_duration_seconds_count 1"));
        assert!(text
            .contains("chronik_operator_writes_total{action=\"created\",kind=\"StatefulSet\"} 1"));
        // Registering twice in one registry is an error, not a silent duplicate.
        assert!(Metrics::new(&registry).is_err());
    }
}
