//! The bridge between the controller and the scheduler, and where holding a shard takes effect.
//!
//! A replica builds entries (reads Secrets, compiles plans) only for the checks of the shards
//! it holds ([`super::shards`]), and its caches hold only those checks. Its [`Scheduler`] runs
//! them: [`Engine::take`] has each controller watch the shard (the first list reconciles its
//! checks, whose entries then reach the scheduler, each continuing from what this replica
//! knew when it last held the shard, or from the status written since), [`Engine::release`]
//! stops them (in-flight probes finish or time out) and removes their metric series, so no
//! replica exports stale probe results of a shard it gave up, and [`Engine::drop_shard`] ends
//! the shard's watch once its last statuses are written.
//!
//! Why not entries for every check, ready for a take: at 30,000 checks over 3 replicas each
//! replica would hold 20,000 plans it does not run, and read the Secrets of every check at
//! start (each replica all of them), for a take that costs one reconcile per check.

use super::cache::Checks;
use super::decide;
use super::shards::{self, SHARDS};
use crate::check::CheckId;
use crate::metrics::Metrics;
use crate::probe::dns::Dns;
use crate::schedule::{CheckEntry, Outbox, Resumable, Scheduler};
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// The checks as reconciled, and the scheduler of the shards held.
pub struct Engine {
    dns: Dns,
    metrics: Metrics,
    max_concurrent_probes: usize,
    checks: Checks,
    outbox: Arc<Outbox>,
    state: Mutex<State>,
}

struct State {
    /// The checks handed to the scheduler (of the shards held), with their shard.
    running: BTreeMap<CheckId, usize>,
    /// Started when the first shard is taken; runs the checks of the shards held.
    scheduler: Option<Arc<Scheduler>>,
    held: BTreeSet<usize>,
    /// What the checks' tasks knew when this replica last gave their shard up, with the shard.
    resumable: HashMap<CheckId, (usize, Resumable)>,
    /// The shards whose checks the caches hold: from the take until the shard is not held at
    /// all any more (also not for the last writes).
    watched: BTreeSet<usize>,
    /// The controllers' and labellers' watches, told each change of `watched`
    /// ([`Engine::shard_changes`]).
    watchers: Vec<UnboundedSender<ShardChange>>,
    /// Set once shut down: no scheduler starts any more.
    shut_down: bool,
}

impl Engine {
    pub fn new(
        dns: Dns,
        metrics: Metrics,
        max_concurrent_probes: usize,
        checks: Checks,
        outbox: Arc<Outbox>,
    ) -> Self {
        Self {
            dns,
            metrics,
            max_concurrent_probes,
            checks,
            outbox,
            state: Mutex::new(State {
                running: BTreeMap::new(),
                scheduler: None,
                held: BTreeSet::new(),
                resumable: HashMap::new(),
                watched: BTreeSet::new(),
                watchers: Vec::new(),
                shut_down: false,
            }),
        }
    }

    /// The caches the entries come from.
    pub fn checks(&self) -> &Checks {
        &self.checks
    }

    /// The shards to watch: those watched already, then each one taken and each one dropped
    /// from now on.
    pub fn shard_changes(&self) -> UnboundedReceiver<ShardChange> {
        let (sender, receiver) = unbounded();
        let mut state = self.lock();
        for shard in &state.watched {
            // Cannot fail: the receiver is still here.
            let _ = sender.unbounded_send(ShardChange::Taken(*shard));
        }
        state.watchers.push(sender);
        receiver
    }

    /// Whether this replica holds the shard of the object with `uid` and `id`: only then does
    /// reconciling it build an entry.
    pub fn runs_shard_of(&self, uid: Option<&str>, id: &CheckId) -> bool {
        self.lock().held.contains(&shards::shard_of(uid, id))
    }

    /// A check is new or changed (or its Secrets are); dropped unless its shard is held.
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
        if state.running.remove(id).is_some() {
            tracing::info!(check = %id, "check deleted: probing stopped");
        }
        state.resumable.remove(id);
        if let Some(scheduler) = &state.scheduler {
            scheduler.remove(id);
        }
        self.outbox.forget(id);
    }

    /// Removes the checks of `shard` in `scope` that the cache no longer holds (deleted while
    /// the watch was down: a re-list brings no Delete event).
    pub fn prune(&self, scope: Option<&str>, shard: usize) {
        let gone = {
            let state = self.lock();
            let known = (state.running.iter())
                .chain(state.resumable.iter().map(|(id, (of, _))| (id, of)))
                .filter(|(_, of)| **of == shard)
                .map(|(id, _)| id);
            decide::vanished(known, scope, |id| self.checks.contains(id))
        };
        for id in gone {
            self.remove(&id);
        }
    }

    /// This replica took `shard`: the controllers watch it and reconcile its checks once
    /// listed, whose entries then start their tasks ([`State::insert`]).
    pub fn take(&self, shard: usize) {
        let shard = shard % SHARDS;
        let mut state = self.lock();
        if state.shut_down || !state.held.insert(shard) {
            return;
        }
        state.scheduler.get_or_insert_with(|| {
            Arc::new(Scheduler::new(
                self.dns.clone(),
                self.metrics.clone(),
                self.max_concurrent_probes,
                self.outbox.clone(),
            ))
        });
        if state.watched.insert(shard) {
            state.tell(ShardChange::Taken(shard));
        }
        tracing::info!(shard, "shard taken: its checks are reconciled and probed");
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
            let ids: Vec<CheckId> = state
                .running
                .extract_if(.., |_, of| *of == shard)
                .map(|(id, _)| id)
                .collect();
            (state.scheduler.clone(), ids)
        };
        if let Some(scheduler) = scheduler {
            let resumable = scheduler.stop(&ids).await;
            (self.lock().resumable).extend(resumable.into_iter().map(|(id, r)| (id, (shard, r))));
        }
        tracing::info!(shard, checks = ids.len(), "shard given up: probing stopped");
        ids
    }

    /// `shard` is not held any more, not even for its last writes: the caches forget its
    /// checks (what their tasks knew stays for the next take).
    pub fn drop_shard(&self, shard: usize) {
        let mut state = self.lock();
        if state.watched.remove(&shard) {
            state.tell(ShardChange::Dropped(shard));
        }
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

/// A change of the shards whose checks the caches hold ([`Engine::shard_changes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardChange {
    Taken(usize),
    Dropped(usize),
}

impl State {
    fn tell(&mut self, change: ShardChange) {
        self.watchers
            .retain(|watcher| watcher.unbounded_send(change).is_ok());
    }

    /// Hands `entry` to the scheduler if its shard is held (else its take reconciles it again).
    /// A check new to the scheduler continues from what this replica knew when it last held the
    /// shard, unless the status on the object is newer (another replica ran the check since).
    fn insert(&mut self, entry: CheckEntry) {
        let shard = shards::shard_of(entry.uid.as_deref(), &entry.id);
        let Some(scheduler) = self.scheduler.clone() else {
            return;
        };
        if !self.held.contains(&shard) {
            if self.running.remove(&entry.id).is_some() {
                // Recreated with a uid of another shard, not held.
                scheduler.remove(&entry.id);
            }
            return;
        }
        if self.running.insert(entry.id.clone(), shard).is_some() {
            scheduler.upsert(entry);
            return;
        }
        match self.resumable.remove(&entry.id).map(|(_, own)| own) {
            Some(own) if decide::is_newest(own.status.as_deref(), entry.previous.as_deref()) => {
                scheduler.resume(entry, own)
            }
            _ => scheduler.upsert(entry),
        }
    }
}
