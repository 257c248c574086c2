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
use crate::schedule::{CheckEntry, Outbox, Resumable, Scheduler};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The checks as reconciled, and the scheduler while this replica leads.
pub struct Engine {
    /// This instance's `--location`: whose entry of a check's status it continues from.
    location: String,
    dns: Dns,
    metrics: Metrics,
    max_concurrent_probes: usize,
    checks: Checks,
    outbox: Arc<Outbox>,
    state: Mutex<State>,
}

struct State {
    /// The latest entry of every check, kept on standbys too.
    entries: BTreeMap<CheckId, CheckEntry>,
    /// `Some` while leading.
    scheduler: Option<Scheduler>,
    /// What the checks' tasks knew when this replica last stopped leading.
    resumable: HashMap<CheckId, Resumable>,
    /// Set once shut down: no scheduler starts any more.
    shut_down: bool,
}

impl Engine {
    pub fn new(
        location: String,
        dns: Dns,
        metrics: Metrics,
        max_concurrent_probes: usize,
        checks: Checks,
        outbox: Arc<Outbox>,
    ) -> Self {
        Self {
            location,
            dns,
            metrics,
            max_concurrent_probes,
            checks,
            outbox,
            state: Mutex::new(State {
                entries: BTreeMap::new(),
                scheduler: None,
                resumable: HashMap::new(),
                shut_down: false,
            }),
        }
    }

    /// The caches the entries come from.
    pub fn checks(&self) -> &Checks {
        &self.checks
    }

    /// A check is new or changed (or its Secrets are).
    pub fn upsert(&self, entry: CheckEntry) {
        self.lock().insert(entry);
    }

    /// [`Engine::upsert`] for an entry computed from the object with `entry.uid`, only while the
    /// cache still holds that object; `false` when dropped. Tested under the engine's lock,
    /// which a deletion's [`Engine::remove`] takes after the cache forgot the object, so the
    /// entry of a check deleted (or recreated) while it was being reconciled never comes back.
    pub fn upsert_current(&self, entry: CheckEntry) -> bool {
        let mut state = self.lock();
        if self.checks.uid(&entry.id).as_ref() != Some(&entry.uid) {
            return false;
        }
        state.insert(entry);
        true
    }

    /// A check was deleted: stop probing it and remove its metric series.
    pub fn remove(&self, id: &CheckId) {
        let mut state = self.lock();
        if state.entries.remove(id).is_some() {
            tracing::info!(check = %id, "check deleted: probing stopped");
        }
        state.resumable.remove(id);
        if let Some(scheduler) = &state.scheduler {
            scheduler.remove(id);
        }
        self.outbox.forget(id);
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

    /// This replica became the leader: start probing every known check. Each continues from
    /// what this replica knew when it last led, unless the status on the object is newer (another
    /// leader ran the check since): then from that status.
    pub fn lead(&self) {
        let mut state = self.lock();
        if state.scheduler.is_some() || state.shut_down {
            return;
        }
        let scheduler = Scheduler::new(
            self.dns.clone(),
            self.metrics.clone(),
            self.max_concurrent_probes,
            self.outbox.clone(),
        );
        let mut resumable = std::mem::take(&mut state.resumable);
        for entry in state.entries.values() {
            let mut entry = entry.clone();
            if let Some(check) = self.checks.get(&entry.id) {
                entry.previous = decide::own_status(check.status.as_ref(), &self.location);
            }
            match resumable.remove(&entry.id) {
                Some(own) if decide::is_newest(own.status.as_ref(), entry.previous.as_ref()) => {
                    scheduler.resume(entry, own)
                }
                _ => scheduler.upsert(entry),
            }
        }
        tracing::info!(checks = state.entries.len(), "leading: probing started");
        state.scheduler = Some(scheduler);
    }

    /// This replica lost (or gave up) the lease: stop probing; in-flight probes finish or time
    /// out. Their results are still sent to the status writer, which drops them unless leading.
    pub async fn step_down(&self) {
        let scheduler = self.lock().scheduler.take();
        if let Some(scheduler) = scheduler {
            let resumable = scheduler.shutdown().await;
            self.lock().resumable = resumable;
            let ids: Vec<CheckId> = self.lock().entries.keys().cloned().collect();
            for id in &ids {
                self.metrics.remove_check(id);
            }
            tracing::info!("standing by: probing stopped");
        }
    }

    /// Stops probing for good; the statuses of the last runs are in the outbox, which is then
    /// closed, so the status writer ends once it has written them.
    pub async fn shutdown(&self) {
        self.lock().shut_down = true;
        self.step_down().await;
        self.outbox.close();
    }

    /// Locks the state; a panic while it was held left nothing half-written that matters more
    /// than keeping the operator running, so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn insert(&mut self, entry: CheckEntry) {
        if let Some(scheduler) = &self.scheduler {
            scheduler.upsert(entry.clone());
        }
        self.entries.insert(entry.id.clone(), entry);
    }
}
