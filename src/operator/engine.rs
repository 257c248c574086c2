//! The bridge between the controller and the scheduler, and where leadership takes effect.
//!
//! Every replica reconciles (so a standby has every check's entry ready), but only the leader
//! runs a [`Scheduler`]: [`Engine::lead`] starts one and hands it every known entry,
//! [`Engine::step_down`] stops it (in-flight probes finish or time out) and removes the metric
//! series it produced, so a standby never exports stale probe results.

use super::cache::Checks;
use super::decide;
use crate::check::CheckId;
use crate::metrics::Metrics;
use crate::probe::dns::Dns;
use crate::schedule::{CheckEntry, Scheduler, StatusUpdate};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::mpsc;

/// The checks as reconciled, and the scheduler while this replica leads.
pub struct Engine {
    dns: Dns,
    metrics: Metrics,
    max_concurrent_probes: usize,
    checks: Checks,
    state: Mutex<State>,
}

struct State {
    /// The latest entry of every check, kept on standbys too.
    entries: BTreeMap<CheckId, CheckEntry>,
    /// `Some` while leading.
    scheduler: Option<Scheduler>,
    /// Handed to each new scheduler; `None` once shut down, which closes the status writer's
    /// channel when the last scheduler is gone.
    updates: Option<mpsc::Sender<StatusUpdate>>,
}

impl Engine {
    pub fn new(
        dns: Dns,
        metrics: Metrics,
        max_concurrent_probes: usize,
        checks: Checks,
        updates: mpsc::Sender<StatusUpdate>,
    ) -> Self {
        Self {
            dns,
            metrics,
            max_concurrent_probes,
            checks,
            state: Mutex::new(State {
                entries: BTreeMap::new(),
                scheduler: None,
                updates: Some(updates),
            }),
        }
    }

    /// A check is new or changed (or its Secrets are).
    pub fn upsert(&self, entry: CheckEntry) {
        let mut state = self.lock();
        if let Some(scheduler) = &state.scheduler {
            scheduler.upsert(entry.clone());
        }
        state.entries.insert(entry.id.clone(), entry);
    }

    /// A check was deleted: stop probing it and remove its metric series.
    pub fn remove(&self, id: &CheckId) {
        let mut state = self.lock();
        if state.entries.remove(id).is_some() {
            tracing::info!(check = %id, "check deleted: probing stopped");
        }
        if let Some(scheduler) = &state.scheduler {
            scheduler.remove(id);
        }
    }

    /// Removes the checks of `scope` that the cache no longer holds (deleted while the watch was
    /// down: a re-list brings no Delete event).
    pub fn prune(&self, scope: Option<&str>) {
        let gone = decide::vanished(self.lock().entries.keys(), scope, |id| {
            self.checks.contains(id)
        });
        for id in gone {
            self.remove(&id);
        }
    }

    /// This replica became the leader: start probing every known check. The status each entry
    /// starts from is the one now on the object (the former leader may have written since).
    pub fn lead(&self) {
        let mut state = self.lock();
        if state.scheduler.is_some() {
            return;
        }
        let Some(updates) = state.updates.clone() else {
            return; // shutting down
        };
        let scheduler = Scheduler::new(
            self.dns.clone(),
            self.metrics.clone(),
            self.max_concurrent_probes,
            updates,
        );
        for entry in state.entries.values() {
            let mut entry = entry.clone();
            if let Some(check) = self.checks.get(&entry.id) {
                entry.previous = check.status.clone();
            }
            scheduler.upsert(entry);
        }
        tracing::info!(checks = state.entries.len(), "leading: probing started");
        state.scheduler = Some(scheduler);
    }

    /// This replica lost (or gave up) the lease: stop probing; in-flight probes finish or time
    /// out. Their results are still sent to the status writer, which drops them unless leading.
    pub async fn step_down(&self) {
        let scheduler = self.lock().scheduler.take();
        if let Some(scheduler) = scheduler {
            scheduler.shutdown().await;
            let ids: Vec<CheckId> = self.lock().entries.keys().cloned().collect();
            for id in &ids {
                self.metrics.remove_check(id);
            }
            tracing::info!("standing by: probing stopped");
        }
    }

    /// Stops probing for good and lets the status writer's channel close once drained.
    pub async fn shutdown(&self) {
        self.lock().updates = None;
        self.step_down().await;
    }

    /// Locks the state; a panic while it was held left nothing half-written that matters more
    /// than keeping the operator running, so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
