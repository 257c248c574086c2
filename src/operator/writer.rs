//! The one status writer (the linkerd policy-controller's shape): runs leave each check's newest
//! status in the [`Outbox`]; this task applies it to the API — only while this replica holds
//! the check's shard ([`Gate`]) — and publishes one Event per condition transition.
//!
//! Probing never waits for it (DESIGN.md §9). A slow, throttled or unreachable API server only
//! makes statuses wait in the outbox, where a newer status of a check replaces the older one;
//! `status_pending_checks` shows how many wait and `api_write_failures_total` why.
//!
//! - A status whose conditions did not change is written again only after
//!   [`decide::STATUS_REFRESH`], so the API server sees a write per condition change, not per run.
//! - Every request has its own deadline ([`WRITE_TIMEOUT`]), shorter than the part of the Lease
//!   that is left after its renew deadline, so no write of this replica lands after another one
//!   may have taken over; and no new write starts once this replica stops holding the shard.
//! - A write that failed for a passing reason (timeout, 429, 5xx, no connection) is retried with
//!   a per-check backoff, unless a newer status replaces it first; a conflict (the object was
//!   recreated: the uid precondition in the apply body failed) or a missing object drops it.
//! - A transition's Event is published after its status was written, retried the same way (also
//!   on 409, a name collision of a new Event), and at most [`crate::schedule::MAX_TRANSITIONS`]
//!   wait per check; what is given up is counted in `events_dropped_total`.
//! - A status of a shard another replica holds is dropped: that one computes its own. One of a
//!   shard held but not renewed in time waits, as it may be written once renewed.
//!
//! Two writers run, one per part of `status` ([`Part`]): each location's own entry of
//! `status.locations` under its own field manager, and, on the aggregating instance, the
//! verdict across locations (the top level) under [`FIELD_MANAGER`]. Server-side apply keeps
//! the parts apart: neither removes what the other (or another location) wrote.

use super::aggregate::Aggregator;
use super::cache::Checks;
use super::decide::{self, FIELD_MANAGER, StatusDigest};
use super::failure::{self, ApiFailure};
use super::shards::{self, Gate, Write};
use crate::api::GuardedCheck;
use crate::check::CheckId;
use crate::metrics::{Metrics, WriteKind};
use crate::schedule::{Outbox, StatusUpdate};
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The deadline of each request. The Lease lasts 15 s and its holder gives up leading when a
/// renewal has not succeeded for 10 s: a write started before that ends before the Lease can
/// expire.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Writes in flight at once (different checks; one check's writes never overlap).
const CONCURRENT_WRITES: usize = 16;
/// The first retry of a failed write; doubled per consecutive failure of the check.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Which part of `status` a writer applies, and whose transitions become Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// `location`'s entry of `status.locations` ([`decide::entry_patch`]), under its own field
    /// manager. `events`: whether its transitions are published (with the location named), as
    /// on an instance that does not aggregate; the aggregating one publishes the top level's.
    Entry { location: String, events: bool },
    /// The verdict across locations ([`decide::status_patch`] of the top level), with its
    /// transitions' Events.
    Verdict,
}

/// Whether this replica writes the status of check `id` (of the object with `uid`) now: while
/// it holds the check's shard, renewed in time. The status writers and the aggregator ask the
/// same.
pub fn writes(gate: &Gate, id: &CheckId, uid: Option<&str>) -> bool {
    gate.write(shards::shard_of(uid, id)) == Write::Now
}

/// An instance's status writing: the outbox its runs leave their statuses in, the writer of
/// its location's entries, and on the aggregating instance the [`Aggregator`] with the writer
/// of the verdict across locations.
pub struct Writers {
    /// Where the scheduler leaves this location's statuses (tapped by the aggregator).
    pub outbox: Arc<Outbox>,
    pub aggregator: Option<Arc<Aggregator>>,
    /// Each writer's task and its outbox.
    tasks: Vec<(JoinHandle<()>, Arc<Outbox>)>,
}

/// What an instance's status writers share: the API, the replica's name in its Events
/// (`reporter`), the caches (whether a check still exists, and its uid), whether it writes
/// ([`writes`]), and the metrics.
#[derive(Clone)]
pub struct Writing {
    pub client: Client,
    pub reporter: Reporter,
    pub checks: Checks,
    pub gate: Arc<Gate>,
    pub metrics: Metrics,
}

impl Writers {
    /// Starts the writers of `location` (and the aggregator, when `aggregate`).
    pub fn start(location: &str, aggregate: bool, writing: Writing) -> Self {
        let writer = |part: Part| StatusWriter::new(part, writing.clone());
        let mut tasks = Vec::new();
        let aggregator = aggregate.then(|| {
            let verdicts = Arc::new(Outbox::new());
            let aggregator = Arc::new(Aggregator::new(
                location.to_owned(),
                writing.checks.clone(),
                writing.gate.clone(),
                verdicts.clone(),
                writing.metrics.clone(),
            ));
            tokio::spawn(aggregator.clone().run());
            let task = tokio::spawn(writer(Part::Verdict).run(verdicts.clone()));
            tasks.push((task, verdicts));
            aggregator
        });
        let outbox = Arc::new(match &aggregator {
            Some(aggregator) => {
                let aggregator = aggregator.clone();
                Outbox::tapped(Box::new(move |update| aggregator.own_status(update)))
            }
            None => Outbox::new(),
        });
        let entries = writer(Part::Entry {
            location: location.to_owned(),
            events: !aggregate,
        });
        tasks.insert(
            0,
            (tokio::spawn(entries.run(outbox.clone())), outbox.clone()),
        );
        Self {
            outbox,
            aggregator,
            tasks,
        }
    }

    /// After the last runs: closes the outbox, lets the aggregator weigh what they left, and
    /// waits up to `within` for everything to be written (a hung API server: then gives up).
    pub async fn drain(self, within: Duration) {
        self.outbox.close();
        if let Some(aggregator) = &self.aggregator {
            aggregator.stop();
        }
        let mut tasks = self.tasks;
        let written = futures::future::join_all(tasks.iter_mut().map(|(task, _)| task));
        if tokio::time::timeout(within, written).await.is_err() {
            for (task, outbox) in tasks {
                task.abort();
                tracing::warn!(
                    checks = outbox.len(),
                    after = ?within,
                    "statuses not written before the end; the next holders write them afresh"
                );
            }
        }
    }
}

/// Applies statuses and publishes Events.
pub struct StatusWriter {
    part: Part,
    client: Client,
    /// Events are published through a new [`Recorder`] each: kube's keeps every Event it
    /// published for six minutes, to turn a repeat into a series (a PATCH of the first Event,
    /// keeping its note), and scans them all on each publish. A check's first run publishes one
    /// Event per condition, so at 3,000 checks that cache alone held ~70 MiB and made
    /// publishing quadratic; and a repeated change (a flap) must show its own note, not the
    /// first one's count.
    reporter: Reporter,
    checks: Checks,
    gate: Arc<Gate>,
    metrics: Metrics,
    state: Mutex<Written>,
}

/// What the writer remembers per check.
#[derive(Default)]
struct Written {
    /// The last status written and when, for [`decide::needs_write`].
    statuses: HashMap<CheckId, (StatusDigest, std::time::Instant)>,
    /// Consecutive failed writes, for the backoff.
    failures: HashMap<CheckId, u32>,
    /// Transitions the outbox had given up when last looked at.
    dropped_seen: u64,
}

/// What became of one request.
enum Sent {
    Done,
    Failed(ApiFailure),
}

impl StatusWriter {
    /// A writer of `part`.
    pub fn new(part: Part, writing: Writing) -> Self {
        let Writing {
            client,
            reporter,
            checks,
            gate,
            metrics,
        } = writing;
        Self {
            part,
            reporter,
            client,
            checks,
            gate,
            metrics,
            state: Mutex::default(),
        }
    }

    /// Writes what the outbox holds for the shards held, until the outbox is closed and
    /// drained (at shutdown the statuses of the last runs are still written).
    pub async fn run(self, outbox: Arc<Outbox>) {
        while let Some(batch) = outbox.take().await {
            self.write_all(batch, &outbox).await;
            self.count_dropped(&outbox);
        }
        tracing::debug!("status writer stopped");
    }

    /// Writes a batch (one status per check), several checks at a time, each only while its
    /// shard is held.
    async fn write_all(&self, batch: Vec<StatusUpdate>, outbox: &Outbox) {
        let shards: Vec<usize> = batch.iter().map(shard_of).collect();
        let _writing = self.gate.writing(shards);
        self.report_pending(outbox.len() + batch.len());
        futures::stream::iter(batch)
            .for_each_concurrent(CONCURRENT_WRITES, |update| async move {
                match self.gate.write(shard_of(&update)) {
                    Write::Now => self.write(update, outbox).await,
                    Write::Later => outbox.retry(update, Instant::now() + RETRY_MIN),
                    Write::Never => self.forget(&update.id),
                }
            })
            .await;
        self.report_pending(outbox.len());
    }

    async fn write(&self, mut update: StatusUpdate, outbox: &Outbox) {
        let id = update.id.clone();
        // The cached object says whether the status still has an object to go to: a check that
        // is gone was deleted, one with another uid was deleted and recreated since the run.
        let cached_uid = self.checks.uid(&id);
        match cached_uid {
            None => {
                tracing::debug!(check = %id, "check deleted: status dropped");
                self.forget(&id);
                return;
            }
            Some(uid) if update.uid.is_some() && uid != update.uid => {
                tracing::debug!(check = %id, "check recreated: the old object's status dropped");
                self.forget(&id);
                return;
            }
            Some(_) => {}
        }
        let digest = StatusDigest::of(&update.status);
        // What was written before the shard was last taken may have been overwritten since.
        let taken = self.gate.held_since(shard_of(&update));
        let last = self
            .lock()
            .statuses
            .get(&id)
            .filter(|(_, at)| taken.is_none_or(|taken| *at >= taken))
            .cloned();
        if decide::needs_write(last.as_ref(), &digest, std::time::Instant::now()) {
            match self.apply(&update).await {
                Sent::Done => {
                    let mut state = self.lock();
                    state
                        .statuses
                        .insert(id.clone(), (digest, std::time::Instant::now()));
                    state.failures.remove(&id);
                }
                Sent::Failed(failure) => {
                    self.metrics
                        .record_write_failure(WriteKind::Status, failure.category());
                    if failure.is_transient() {
                        let retry_at = self.retry_time(&id);
                        tracing::warn!(
                            check = %id,
                            error = failure.category(),
                            retry_in = ?retry_at - Instant::now(),
                            "status write failed"
                        );
                        outbox.retry(update, retry_at);
                    } else {
                        tracing::warn!(
                            check = %id,
                            error = failure.category(),
                            "status write refused; dropped"
                        );
                        self.forget(&id);
                    }
                    return;
                }
            }
        }
        let located = match &self.part {
            Part::Entry { events: false, .. } => {
                self.lock().failures.remove(&id);
                return;
            }
            Part::Entry { location, .. } => Some(location.as_str()),
            Part::Verdict => None,
        };
        let reference = decide::event_reference(&id, update.uid.as_deref());
        let transitions = std::mem::take(&mut update.transitions);
        for (index, transition) in transitions.iter().enumerate() {
            let event = decide::transition_event(transition, located);
            let sent = match tokio::time::timeout(
                WRITE_TIMEOUT,
                Recorder::new(self.client.clone(), self.reporter.clone())
                    .publish(&event, &reference),
            )
            .await
            {
                Ok(Ok(())) => Sent::Done,
                Ok(Err(error)) => Sent::Failed(ApiFailure::of(&error)),
                Err(_elapsed) => Sent::Failed(ApiFailure::Timeout),
            };
            let failure = match sent {
                Sent::Done => {
                    let (status, reason) = transition.to;
                    tracing::info!(
                        check = %id,
                        condition = %transition.type_,
                        %status,
                        %reason,
                        message = %transition.message,
                        "condition changed"
                    );
                    continue;
                }
                Sent::Failed(failure) => failure,
            };
            self.metrics
                .record_write_failure(WriteKind::Event, failure.category());
            // A 409 on an Event is a name collision of a new one: another try picks a new name.
            if failure.is_transient() || failure == ApiFailure::Conflict {
                let retry_at = self.retry_time(&id);
                tracing::warn!(check = %id, error = failure.category(), "event not published; retrying");
                update.transitions = transitions[index..].to_vec();
                outbox.retry(update, retry_at);
                return;
            }
            tracing::warn!(check = %id, error = failure.category(), "event refused; dropped");
            self.metrics.add_events_dropped(1);
        }
        self.lock().failures.remove(&id);
    }

    /// The server-side apply of `update`'s status as this writer's part, with the uid of the
    /// object it was computed for as a precondition.
    async fn apply(&self, update: &StatusUpdate) -> Sent {
        let id = &update.id;
        // The answer is the whole object, which may not deserialize (its status says why).
        let api: Api<GuardedCheck> = Api::namespaced(self.client.clone(), &id.namespace);
        let uid = update.uid.as_deref();
        let (params, body) = match &self.part {
            Part::Entry { location, .. } => (
                PatchParams::apply(&decide::location_manager(location)),
                decide::entry_patch(&update.status, location, uid),
            ),
            Part::Verdict => (
                PatchParams::apply(FIELD_MANAGER),
                decide::status_patch(&update.status, uid),
            ),
        };
        // Force: each part has one writer at a time (the holder of the check), and a field it
        // sends is its own (a conflict would be a former holder's leftover).
        let params = params.force();
        let patch = Patch::Apply(body);
        match tokio::time::timeout(WRITE_TIMEOUT, api.patch_status(&id.name, &params, &patch)).await
        {
            Ok(Ok(_)) => Sent::Done,
            Ok(Err(error)) => Sent::Failed(ApiFailure::of(&error)),
            Err(_elapsed) => Sent::Failed(ApiFailure::Timeout),
        }
    }

    /// `status_pending_checks`: the checks whose entry waits. The verdicts' writer does not
    /// report its own queue (the gauge is one number; the entries are where runs wait).
    fn report_pending(&self, pending: usize) {
        if matches!(self.part, Part::Entry { .. }) {
            self.metrics.set_status_pending(pending);
        }
    }

    /// When check `id` may be tried again after one more failure.
    fn retry_time(&self, id: &CheckId) -> Instant {
        let mut state = self.lock();
        let attempt = state.failures.entry(id.clone()).or_default();
        *attempt = attempt.saturating_add(1);
        Instant::now() + failure::backoff(*attempt, RETRY_MIN, RETRY_MAX)
    }

    fn forget(&self, id: &CheckId) {
        let mut state = self.lock();
        state.statuses.remove(id);
        state.failures.remove(id);
    }

    /// Adds the transitions the outbox gave up since the last look to `events_dropped_total`.
    fn count_dropped(&self, outbox: &Outbox) {
        let dropped = outbox.dropped_transitions();
        let mut state = self.lock();
        self.metrics
            .add_events_dropped(dropped.saturating_sub(state.dropped_seen));
        state.dropped_seen = dropped;
    }

    fn lock(&self) -> MutexGuard<'_, Written> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The shard of `update`'s check.
fn shard_of(update: &StatusUpdate) -> usize {
    shards::shard_of(update.uid.as_deref(), &update.id)
}
