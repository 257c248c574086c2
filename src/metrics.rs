//! Prometheus metrics (DESIGN.md §5) and the HTTP endpoint serving `/metrics`, `/healthz` and
//! `/readyz`. Labels are `namespace`, `name`, `probe` and `location`, never a credential, URL
//! userinfo or an unbounded value.

use crate::check::{CheckId, RunReport};
use crate::verdict::Verdict;
use std::net::SocketAddr;
use std::time::Duration;

/// The registry and every metric family. Cloning shares them.
#[derive(Clone)]
pub struct Metrics {
    // SKELETON
}

/// How a reconcile ended, for `reconcile_total` / `reconcile_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileResult {
    Ok,
    /// The error's category (a bounded label value, e.g. `kube_api`, `invalid_spec`).
    Error(&'static str),
}

impl Metrics {
    /// `location` labels every series, so several operator instances can be told apart.
    pub fn new(location: &str) -> Self {
        let _ = location;
        todo!("SKELETON")
    }

    /// Probe results of one run.
    pub fn record_run(&self, id: &CheckId, report: &RunReport) {
        let _ = (id, report);
        todo!("SKELETON")
    }

    /// `condition{type,status,reason}` and `hotline_reportable` after a verdict.
    pub fn record_verdict(&self, id: &CheckId, verdict: &Verdict) {
        let _ = (id, verdict);
        todo!("SKELETON")
    }

    /// Removes every series of a deleted check.
    pub fn remove_check(&self, id: &CheckId) {
        let _ = id;
        todo!("SKELETON")
    }

    /// Lag between a run's due time and its start.
    pub fn observe_schedule_lag(&self, lag: Duration) {
        let _ = lag;
        todo!("SKELETON")
    }

    /// Number of checks scheduled.
    pub fn set_checks(&self, count: usize) {
        let _ = count;
        todo!("SKELETON")
    }

    pub fn record_reconcile(&self, result: ReconcileResult) {
        let _ = result;
        todo!("SKELETON")
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        todo!("SKELETON")
    }
}

/// Readiness as `/readyz` reports it (e.g. the operator's caches have synced).
#[derive(Clone, Default)]
pub struct Health {
    // SKELETON
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        let _ = ready;
        todo!("SKELETON")
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    health: Health,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let _ = (addr, metrics, health, shutdown);
    todo!("SKELETON")
}
