//! The bridge between the controller and the scheduler, and where holding a shard takes effect.
//!
//! Every replica reconciles every check (so the entries of a shard it takes are ready), but
//! its [`Scheduler`] runs only the checks of the shards it holds ([`super::shards`]):
//! [`Engine::take`] hands it a shard's entries, [`Engine::release`] stops them (in-flight
//! probes finish or time out) and removes their metric series, so no replica exports stale
//! probe results of a shard it gave up.

use super::cache::Checks;
use super::decide;
use super::shards::{self, SHARDS};
use crate::check::CheckId;
use crate::metrics::Metrics;
use crate::probe::dns::Dns;
use crate::schedule::{CheckEntry, Outbox, Resumable, Scheduler};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// The checks as reconciled, and the scheduler of the shards held.
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
    /// The latest entry of every check, of the shards held or not.
    entries: BTreeMap<CheckId, CheckEntry>,
    /// Started when the first shard is taken; runs the checks of the shards held.
    scheduler: Option<Arc<Scheduler>>,
    held: BTreeSet<usize>,
    /// What the checks' tasks knew when this replica last gave their shard up.
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
                held: BTreeSet::new(),
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

    /// This replica took `shard`: start probing its checks. Each continues from what this
    /// replica knew when it last held the shard, unless the status on the object is newer
    /// (another replica ran the check since): then from that status.
    pub fn take(&self, shard: usize) {
        let mut state = self.lock();
        if state.shut_down || !state.held.insert(shard % SHARDS) {
            return;
        }
        let scheduler = state
            .scheduler
            .get_or_insert_with(|| {
                Arc::new(Scheduler::new(
                    self.dns.clone(),
                    self.metrics.clone(),
                    self.max_concurrent_probes,
                    self.outbox.clone(),
                ))
            })
            .clone();
        let ids = state.checks_of(shard);
        for id in &ids {
            let mut entry = state.entries[id].clone();
            if let Some(check) = self.checks.get(id) {
                entry.previous = decide::own_status(check.status.as_ref(), &self.location);
            }
            match state.resumable.remove(id) {
                Some(own) if decide::is_newest(own.status.as_ref(), entry.previous.as_ref()) => {
                    scheduler.resume(entry, own)
                }
                _ => scheduler.upsert(entry),
            }
        }
        tracing::info!(shard, checks = ids.len(), "shard taken: probing started");
    }

    /// This replica gives `shard` up (or lost it): stop probing its checks; runs in flight
    /// finish or time out, their statuses go to the status writer (which writes them while the
    /// shard is held), and what the tasks knew is kept for the next take. Returns the checks
    /// stopped.
    pub async fn release(&self, shard: usize) -> Vec<CheckId> {
        let (scheduler, ids) = {
            let mut state = self.lock();
            if !state.held.remove(&shard) {
                return Vec::new();
            }
            let ids = state.checks_of(shard);
            (state.scheduler.clone(), ids)
        };
        if let Some(scheduler) = scheduler {
            let resumable = scheduler.stop(&ids).await;
            self.lock().resumable.extend(resumable);
        }
        tracing::info!(shard, checks = ids.len(), "shard given up: probing stopped");
        ids
    }

    /// Whether a status of any of `ids` still waits in the outbox.
    pub fn pending(&self, ids: &[CheckId]) -> bool {
        ids.iter().any(|id| self.outbox.holds(id))
    }

    /// Whether [`Engine::shutdown`] was called: no shard is to be taken any more.
    pub fn is_shut_down(&self) -> bool {
        self.lock().shut_down
    }

    /// Stops probing for good; the statuses of the last runs are in the outbox, which is then
    /// closed, so the status writer ends once it has written them.
    pub async fn shutdown(&self) {
        let scheduler = {
            let mut state = self.lock();
            state.shut_down = true;
            state.held.clear();
            state.scheduler.take()
        };
        if let Some(scheduler) = scheduler {
            scheduler.shutdown().await;
            tracing::info!("probing stopped");
        }
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

/// The shard of `entry`'s check.
fn shard_of(entry: &CheckEntry) -> usize {
    shards::shard_of(entry.uid.as_deref(), &entry.id)
}

impl State {
    /// The known checks of `shard`.
    fn checks_of(&self, shard: usize) -> Vec<CheckId> {
        self.entries
            .values()
            .filter(|entry| shard_of(entry) == shard)
            .map(|entry| entry.id.clone())
            .collect()
    }

    fn insert(&mut self, entry: CheckEntry) {
        let held = |entry: &CheckEntry| self.held.contains(&shard_of(entry));
        if let Some(scheduler) = &self.scheduler {
            if held(&entry) {
                scheduler.upsert(entry.clone());
            } else if self.entries.get(&entry.id).is_some_and(held) {
                // Recreated with a uid of another shard, not held.
                scheduler.remove(&entry.id);
            }
        }
        self.entries.insert(entry.id.clone(), entry);
    }
}
