//! Runs every check on its interval: a stable per-check jitter spreads the checks, one run of a
//! check at a time, a global bound on concurrent probes, and a status update per run sent to the
//! one status writer (the operator's, or `voipcheck run`'s printer).

use crate::api::{VoipCheckSpec, VoipCheckStatus};
use crate::check::{CheckId, Plan, PlanError};
use crate::metrics::Metrics;
use crate::probe::dns::Dns;
use crate::status::Transition;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A check as the scheduler receives it: new, changed, or unable to run.
#[derive(Debug, Clone)]
pub struct CheckEntry {
    pub id: CheckId,
    pub generation: Option<i64>,
    pub spec: Arc<VoipCheckSpec>,
    /// `Err` publishes `Ready=False` (CredentialsMissing, InvalidSpec, ...) once and probes nothing.
    pub plan: Result<Plan, PlanError>,
    /// The status already on the object, so conditions keep their lastTransitionTime across
    /// operator restarts.
    pub previous: Option<VoipCheckStatus>,
}

/// The status after a run (or after a plan error), for the status writer.
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    pub id: CheckId,
    pub generation: Option<i64>,
    pub status: VoipCheckStatus,
    pub transitions: Vec<Transition>,
}

/// The running schedule. Dropping it stops all checks.
pub struct Scheduler {
    // SKELETON
}

impl Scheduler {
    /// `max_concurrent` bounds the probes in flight across all checks.
    pub fn new(
        dns: Dns,
        metrics: Metrics,
        max_concurrent: usize,
        updates: mpsc::Sender<StatusUpdate>,
    ) -> Self {
        let _ = (dns, metrics, max_concurrent, updates);
        todo!("SKELETON")
    }

    /// Adds a check or replaces its entry; an unchanged entry keeps its timer and history.
    pub fn upsert(&self, entry: CheckEntry) {
        let _ = entry;
        todo!("SKELETON")
    }

    /// Stops probing a check and removes its metric series.
    pub fn remove(&self, id: &CheckId) {
        let _ = id;
        todo!("SKELETON")
    }

    /// Stops scheduling new runs and waits for the runs in flight (each bounded by its timeout).
    pub async fn shutdown(self) {
        todo!("SKELETON")
    }
}
