//! The verdict across locations (DESIGN.md §9), on the aggregating instance (`--aggregate`):
//! every location writes its own entry of `status.locations`; this task turns all entries of a
//! check into the check's top level (conditions, incident, `failingLocations`, and `stale`
//! marks on the entries of locations that stopped writing) with the pure
//! [`verdict::aggregate`], and leaves it in its own [`Outbox`] for the verdict's
//! [`super::writer::StatusWriter`] (field manager `voipcheck`).
//!
//! When a check's verdict is computed again, for the checks this replica writes
//! ([`writes`]):
//! - this location's run left a new status ([`Aggregator::own_status`], called by the entry
//!   outbox as the run offers it, so the verdict uses the newest one, not the one written);
//! - the watch brought a change of the object, e.g. another location's entry
//!   ([`Aggregator::changed`]; status changes reach the cache although reconciles only follow
//!   the generation);
//! - an entry may have gone stale: a timer at the earliest time one of the check's fresh
//!   entries would be older than `stale_after` = [`STATUS_REFRESH`] + 3 × interval (a location
//!   rewrites its entry at least every refresh, and runs every interval);
//! - this replica starts writing (leading): every check.
//!
//! Its metrics are the status-level series ([`Metrics::record_aggregate`]), which the alert
//! rules read rather than re-deriving the verdict from each location's series.
//!
//! Like a run, the computation never waits on the API server: its result replaces the
//! check's pending one in the outbox, and the writer writes it only when it changed or at
//! [`STATUS_REFRESH`] ([`super::decide::needs_write`]).

use super::cache::Checks;
use super::decide::{self, STATUS_REFRESH};
use super::shards::Gate;
use super::writer::writes;
use crate::api::{LocationStatus, VoipCheck, VoipCheckStatus};
use crate::check::CheckId;
use crate::metrics::Metrics;
use crate::schedule::{Outbox, StatusUpdate};
use crate::verdict::{self, Across};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Computes the top level of the checks this replica writes.
pub struct Aggregator {
    /// This instance's `--location`: its own entry comes from memory, not the cache.
    location: String,
    checks: Checks,
    gate: Arc<Gate>,
    /// Where the top levels wait for the verdict's writer.
    outbox: Arc<Outbox>,
    metrics: Metrics,
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Default)]
struct State {
    /// This location's newest status of each check, as its run offered it.
    own: HashMap<CheckId, StatusUpdate>,
    /// The top level last computed, for the object with that uid, while the cached object does
    /// not carry its conditions yet: the next transitions are measured against it.
    previous: HashMap<CheckId, (Option<String>, Arc<VoipCheckStatus>)>,
    /// Checks to compute again.
    dirty: BTreeSet<CheckId>,
    /// When a check's next fresh entry goes stale, both ways round.
    deadlines: BTreeSet<(SystemTime, CheckId)>,
    due: HashMap<CheckId, SystemTime>,
    stopping: bool,
}

impl Aggregator {
    pub fn new(
        location: String,
        checks: Checks,
        gate: Arc<Gate>,
        outbox: Arc<Outbox>,
        metrics: Metrics,
    ) -> Self {
        Self {
            location,
            checks,
            gate,
            outbox,
            metrics,
            state: Mutex::default(),
            wake: Notify::new(),
        }
    }

    /// This location's run of a check left `update` (its entry's next status, or
    /// [`decide::no_entry`] once the check no longer runs here).
    pub fn own_status(&self, update: &StatusUpdate) {
        let mut state = self.lock();
        if *update.status == decide::no_entry() {
            state.own.remove(&update.id);
        } else {
            state.own.insert(update.id.clone(), update.clone());
        }
        state.dirty.insert(update.id.clone());
        drop(state);
        self.wake.notify_one();
    }

    /// The watch brought a new version of check `id` (another location's entry, a spec).
    pub fn changed(&self, id: &CheckId) {
        self.lock().dirty.insert(id.clone());
        self.wake.notify_one();
    }

    /// A re-list replaced the caches: every check this task remembers is looked at again
    /// (one deleted meanwhile is forgotten).
    pub fn relisted(&self) {
        let mut state = self.lock();
        let known: Vec<CheckId> = state
            .own
            .keys()
            .chain(state.previous.keys())
            .cloned()
            .collect();
        state.dirty.extend(known);
        drop(state);
        self.wake.notify_one();
    }

    /// Check `id` was deleted: nothing of it is kept, written or exported. Under the state's
    /// lock, which a computation records its metrics under once it saw the check in the cache
    /// (forgotten there before this is called), so no series of it comes back.
    pub fn forget(&self, id: &CheckId) {
        let mut state = self.lock();
        state.own.remove(id);
        state.previous.remove(id);
        state.dirty.remove(id);
        if let Some(at) = state.due.remove(id) {
            state.deadlines.remove(&(at, id.clone()));
        }
        self.metrics.remove_check(id);
        drop(state);
        self.outbox.forget(id);
    }

    /// Computes what is due until [`Aggregator::stop`]; then the last changes, and closes the
    /// outbox, so the verdict's writer ends once it has written them.
    pub async fn run(self: Arc<Self>) {
        let mut shards = self.gate.changes();
        shards.mark_unchanged();
        self.shards_changed();
        loop {
            let (ids, next, stopping) = self.take_due();
            for id in &ids {
                self.aggregate(id);
            }
            if stopping {
                break;
            }
            let sleep = async {
                match next {
                    Some(at) => {
                        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                        tokio::time::sleep_until(Instant::now() + wait).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.wake.notified() => {}
                () = sleep => {}
                changed = shards.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.shards_changed();
                }
            }
        }
        self.outbox.close();
        tracing::debug!("aggregator stopped");
    }

    /// No more runs: compute what is left and end.
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.wake.notify_one();
    }

    /// The shards held changed: what was computed is forgotten (the next writer of a shard
    /// measures transitions against what was written), and every check is computed again
    /// ([`Aggregator::aggregate`] skips those of shards not held).
    fn shards_changed(&self) {
        let mut state = self.lock();
        state.previous.clear();
        state.dirty.extend(self.checks.ids());
    }

    /// The dirty checks and those whose deadline passed; the next deadline; whether stopping.
    fn take_due(&self) -> (Vec<CheckId>, Option<SystemTime>, bool) {
        let mut state = self.lock();
        let now = SystemTime::now();
        let mut ids: BTreeSet<CheckId> = std::mem::take(&mut state.dirty);
        while let Some((at, id)) = state.deadlines.first().cloned() {
            if at > now {
                break;
            }
            state.deadlines.pop_first();
            state.due.remove(&id);
            ids.insert(id);
        }
        let next = state.deadlines.first().map(|(at, _)| *at);
        (ids.into_iter().collect(), next, state.stopping)
    }

    /// Computes check `id`'s top level and offers it to the verdict's writer.
    fn aggregate(&self, id: &CheckId) {
        if !writes(&self.gate, id, self.checks.uid(id).flatten().as_deref()) {
            return;
        }
        let own = self.lock().own.get(id).cloned();
        let Some(check) = self.checks.get(id) else {
            // Not a typed object: it does not deserialize, so no spec to weigh locations by;
            // every location sees the same InvalidSpec, this one's is the top level.
            if !self.checks.contains(id) {
                self.forget(id);
            } else if let Some(own) = own {
                self.outbox.offer(own);
            }
            return;
        };
        let uid = check.metadata.uid.clone();
        let own = own.filter(|o| o.uid == uid);
        let entries = self.entries(&check, own.as_ref());
        if entries.is_empty() {
            // No location has run the check yet: nothing to say (a new check's first run
            // brings its first verdict, not a Pending one before it).
            return;
        }
        let previous = {
            let state = self.lock();
            state
                .previous
                .get(id)
                .filter(|(for_uid, _)| *for_uid == uid)
                .map(|(_, status)| status.clone())
        };
        let stale_after = STATUS_REFRESH + 3 * check.spec.interval.get();
        let now = SystemTime::now();
        let aggregate = verdict::aggregate(&Across {
            spec: &check.spec,
            generation: check.metadata.generation,
            entries: &entries,
            previous: previous.as_deref().or(check.status.as_ref()),
            now,
            stale_after,
        });
        let next_stale = entries
            .iter()
            .filter(|e| !aggregate.stale.contains(&e.name))
            .filter_map(|e| e.last_run.as_ref())
            .map(|run| SystemTime::from(run.time.0) + stale_after + Duration::from_secs(1))
            .filter(|at| *at > now)
            .min();
        let mut state = self.lock();
        if !self.checks.contains(id) {
            return;
        }
        self.metrics.record_aggregate(id, &aggregate);
        if let Some(at) = state.due.remove(id) {
            state.deadlines.remove(&(at, id.clone()));
        }
        if let Some(at) = next_stale {
            state.due.insert(id.clone(), at);
            state.deadlines.insert((at, id.clone()));
        }
        drop(state);
        let status = VoipCheckStatus {
            observed_generation: aggregate.observed_generation,
            conditions: aggregate.conditions,
            incident: aggregate.incident,
            failing_locations: Some(aggregate.failing_locations),
            locations: aggregate
                .stale
                .iter()
                .map(|name| LocationStatus {
                    name: name.clone(),
                    stale: Some(true),
                    ..LocationStatus::default()
                })
                .collect(),
            last_run: None,
        };
        let status = Arc::new(status);
        // The next computation reads only what `same_transitions_basis` compares: once the cached
        // object carries that (written, or unchanged), a copy here is one more status per
        // check for nothing. Not the messages: with their live timings they change every run
        // and are written only at STATUS_REFRESH, so comparing them kept every check's
        // whole top level here (~2 KiB each, 20 MiB at 10,000 checks).
        let cached = check.status.as_ref().map(|s| s.conditions.as_slice());
        let mut state = self.lock();
        if cached.is_some_and(|cached| same_transitions_basis(cached, &status.conditions)) {
            state.previous.remove(id);
        } else {
            (state.previous).insert(id.clone(), (uid.clone(), status.clone()));
        }
        drop(state);
        self.outbox.offer(StatusUpdate {
            id: id.clone(),
            uid,
            generation: check.metadata.generation,
            status,
            transitions: aggregate.transitions,
        });
    }

    /// The check's entries as the verdict reads them: the other locations' as the cache holds
    /// them, this location's as its newest run left it (when it runs the check here).
    fn entries(&self, check: &VoipCheck, own: Option<&StatusUpdate>) -> Vec<LocationStatus> {
        let mut entries: Vec<LocationStatus> = check
            .status
            .as_ref()
            .map(|s| s.locations.clone())
            .unwrap_or_default();
        if let Some(own) = own {
            entries.retain(|e| e.name != self.location);
            entries.push(decide::location_entry(&own.status, &self.location));
        }
        entries
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether the next verdict measures the same transitions from `a` as from `b`: the same
/// conditions with the same status, reason and lastTransitionTime ([`verdict::aggregate`]
/// reads nothing else of the conditions before).
fn same_transitions_basis(a: &[Condition], b: &[Condition]) -> bool {
    fn basis(c: &Condition) -> (&str, &str, &str, &Time) {
        (&c.type_, &c.status, &c.reason, &c.last_transition_time)
    }
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| basis(a) == basis(b))
}

#[cfg(test)]
mod tests;
