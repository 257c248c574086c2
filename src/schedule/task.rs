//! One check's life: wait for the next slot, run the probes (holding a global permit per probe),
//! decide the verdict, publish the status; and react when the check's entry changes.
//!
//! The task owns the check's verdict [`History`] and last status, so they survive a changed
//! spec and exist only once: a check never runs twice at the same time because only this loop
//! runs it, and it awaits each run before looking at the clock again.

use super::nat::NatMeasurement;
use super::{CheckEntry, Resumable, Shared, StatusUpdate, slots};
use crate::api::VoipCheckStatus;
use crate::check::{Plan, PlanError, RunReport};
use crate::status;
use crate::verdict::{self, History, Verdict};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio::time::{self, Instant, MissedTickBehavior};

/// How a replaced entry differs from the one the task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Nothing to do (e.g. the operator re-reconciled an unchanged object).
    Same,
    /// Same spec and generation, new plan: a Secret changed. The next run uses it; the timer
    /// stays.
    Plan,
    /// A new spec or generation, or the check turned runnable or not: start over on the new
    /// interval's grid (and publish a plan error once).
    Restart,
}

impl Change {
    /// Plans cannot be compared (they hold compiled regexes and TLS configurations), so two
    /// runnable plans of the same spec count as a [`Change::Plan`]; swapping them is harmless.
    pub(super) fn between(old: &CheckEntry, new: &CheckEntry) -> Change {
        if old.generation != new.generation || old.spec != new.spec {
            return Change::Restart;
        }
        match (&old.plan, &new.plan) {
            (Ok(_), Ok(_)) => Change::Plan,
            (Err(old), Err(new)) if old == new => Change::Same,
            _ => Change::Restart,
        }
    }
}

/// How the scheduler reaches a check's task: the newest entry and the check's lifecycle,
/// with one wake-up for both. One small allocation per check: two watch channels (an entry
/// channel and a stop channel) and a flag took ~700 bytes a check.
pub(super) struct Control {
    /// The newest entry; the task compares it with the one it last looked at.
    entry: Mutex<Arc<CheckEntry>>,
    lifecycle: Mutex<Lifecycle>,
    /// Woken on each change of either. `notify_one` keeps a permit while the task is not
    /// waiting, so a change between the task's look and its wait is not missed.
    wake: Notify,
}

#[derive(Clone, Copy)]
struct Lifecycle {
    /// Cleared by [`Scheduler::remove`](super::Scheduler::remove); the task starts runs,
    /// records metrics and sends updates only while it is set (the last two under its lock),
    /// so no series or status reappears after a removal.
    registered: bool,
    /// Set to stop the check as a shutdown does: it waits for no further slot, and a run in
    /// flight still ends and sends its status.
    stopping: bool,
}

impl Control {
    pub(super) fn new(entry: Arc<CheckEntry>) -> Self {
        Self {
            entry: Mutex::new(entry),
            lifecycle: Mutex::new(Lifecycle {
                registered: true,
                stopping: false,
            }),
            wake: Notify::new(),
        }
    }

    /// Replaces the entry the task runs.
    pub(super) fn send(&self, entry: Arc<CheckEntry>) {
        *self.entry.lock().unwrap_or_else(PoisonError::into_inner) = entry;
        self.wake.notify_one();
    }

    /// The check was removed: its task ends, and nothing of it is recorded or sent any more.
    pub(super) fn unregister(&self) {
        self.lifecycle().registered = false;
        self.wake.notify_one();
    }

    /// The check stops as at a shutdown.
    pub(super) fn stop(&self) {
        self.lifecycle().stopping = true;
        self.wake.notify_one();
    }

    fn newest(&self) -> Arc<CheckEntry> {
        Arc::clone(&self.entry.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether the task is to end: stopping, or removed.
    fn ending(&self) -> bool {
        let lifecycle = *self.lifecycle();
        lifecycle.stopping || !lifecycle.registered
    }

    /// Resolves once the task is to end.
    async fn ended(&self) {
        while !self.ending() {
            self.wake.notified().await;
        }
    }

    fn lifecycle(&self) -> MutexGuard<'_, Lifecycle> {
        self.lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a phase of the task ended.
enum Next {
    /// Continue with `check.entry`, which has changed.
    Restart,
    /// Shutdown or removal.
    Stop,
}

/// The task's state.
struct Check {
    shared: Arc<Shared>,
    control: Arc<Control>,
    /// Shared with the scheduler's control: a check's entry (and plan) is held once.
    entry: Arc<CheckEntry>,
    /// The newest entry the task has looked at (it keeps running `entry` when the two do not
    /// differ in a way that matters: [`Change::Same`]).
    seen: Arc<CheckEntry>,
    history: History,
    previous: Option<Arc<VoipCheckStatus>>,
}

/// The task of one check; ends on shutdown, returning what it knew, or after its removal.
///
/// It starts from `resumed`: this replica's own last state of the check, or else the status
/// on the object ([`Resumable::written`]).
pub(super) async fn drive(
    shared: Arc<Shared>,
    control: Arc<Control>,
    resumed: Resumable,
) -> Resumable {
    let entry = control.newest();
    let Resumable {
        history,
        status: previous,
    } = resumed;
    let mut check = Check {
        shared,
        control,
        previous,
        seen: Arc::clone(&entry),
        entry,
        history,
    };
    loop {
        let next = match &check.entry.plan {
            Ok(plan) => {
                let interval = plan.interval;
                check.on_timer(interval).await
            }
            Err(error) => {
                let error = error.clone();
                Box::pin(check.not_runnable(&error)).await
            }
        };
        if let Next::Stop = next {
            return Resumable {
                history: check.history,
                status: check.previous,
            };
        }
    }
}

impl Check {
    /// Runs the entry's plan on the slots of `interval` until the entry changes in a way that
    /// needs a restart; first within a quarter interval if the check missed a slot since its
    /// last run ([`slots::catch_up`]).
    async fn on_timer(&mut self, interval: Duration) -> Next {
        // interval_at panics on zero; a validated spec has at least 5 s.
        let interval = interval.max(Duration::from_millis(1));
        self.shared.metrics.set_interval(&self.entry.id, interval);
        // Measures beside the runs for as long as this entry runs on this timer.
        let nat = NatMeasurement::start(&self.shared, &self.entry);
        let clock = self.shared.clock;
        let offset = slots::offset(&self.entry.id, interval);
        let now = Instant::now();
        let last_run = (self.previous.as_ref())
            .and_then(|status| status.last_run.as_ref())
            .map(|run| SystemTime::from(run.time.0));
        let mut catching_up =
            last_run.and_then(|ran| slots::catch_up(&clock, now, ran, offset, interval));
        let first = catching_up.unwrap_or_else(|| slots::first_due(&clock, now, offset, interval));
        let mut ticks = time::interval_at(first, interval);
        // A run that outlasts the interval delays the next one, which then starts at once (its
        // lag is measured); slots missed meanwhile are skipped, so there is no burst to catch up
        // and the check stays on its grid.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let control = Arc::clone(&self.control);
        loop {
            if control.ending() {
                return Next::Stop;
            }
            if let Some(new) = self.news() {
                match Change::between(&self.entry, &new) {
                    Change::Same => {}
                    // The next run reads the new plan from the entry.
                    Change::Plan => self.entry = new,
                    Change::Restart => {
                        self.entry = new;
                        return Next::Restart;
                    }
                }
            }
            tokio::select! {
                biased;
                // Looked at above.
                () = control.wake.notified() => {}
                due = ticks.tick() => {
                    let entry = Arc::clone(&self.entry);
                    // A plan error arrives as a Change::Restart above; should one slip through,
                    // the restart publishes it.
                    let Ok(plan) = &entry.plan else {
                        return Next::Restart;
                    };
                    // Boxed: a run's state is large and lives for milliseconds, while 10,000
                    // idle checks would each carry its size in their task.
                    if !Box::pin(self.run(due, plan, nat.as_ref())).await {
                        return Next::Stop;
                    }
                    if let Some(caught_up) = catching_up.take() {
                        ticks.reset_at(slots::after_catch_up(&clock, caught_up, offset, interval));
                    }
                }
            }
        }
    }

    /// Publishes `Ready=False` for `error` once, then waits for a changed entry.
    async fn not_runnable(&mut self, error: &PlanError) -> Next {
        let verdict = verdict::not_runnable(error);
        if !self.publish(None, &verdict, SystemTime::now()) {
            return Next::Stop;
        }
        let control = Arc::clone(&self.control);
        loop {
            if control.ending() {
                return Next::Stop;
            }
            if let Some(new) = self.news()
                && Change::between(&self.entry, &new) != Change::Same
            {
                self.entry = new;
                return Next::Restart;
            }
            control.wake.notified().await;
        }
    }

    /// The entry the scheduler sent since the task last looked, if it sent one.
    fn news(&mut self) -> Option<Arc<CheckEntry>> {
        let newest = self.control.newest();
        if Arc::ptr_eq(&newest, &self.seen) {
            return None;
        }
        self.seen = Arc::clone(&newest);
        Some(newest)
    }

    /// One run that was due at `due`. `false` when the task should stop.
    async fn run(&mut self, due: Instant, plan: &Plan, nat: Option<&NatMeasurement>) -> bool {
        let control = Arc::clone(&self.control);
        let permit = tokio::select! {
            biased;
            () = control.ended() => return false,
            permit = self.shared.permits.acquire_many(plan.sockets().min(self.shared.max_permits)) => match permit {
                Ok(permit) => permit,
                Err(_closed) => return false,
            },
        };
        // Removed while waiting for permits: nothing to probe any more.
        if !control.lifecycle().registered {
            return false;
        }
        let lag = Instant::now().saturating_duration_since(due);
        self.shared.metrics.observe_schedule_lag(lag);
        let mut judged = self.shared.runner.run(plan).await;
        drop(permit);
        // The NAT binding measured beside the runs: every run shows the latest result, the
        // verdict judges each result once.
        let mut shown = None;
        if let Some((Some(measured), fresh)) = nat.map(NatMeasurement::take) {
            let merged = judged.clone().with_nat_binding(&measured);
            match fresh {
                true => judged = merged,
                false => shown = Some(merged),
            }
        }
        let now = SystemTime::now();
        let (history, verdict) = verdict::evaluate(&plan.policy, &self.history, &judged, now);
        self.history = history;
        self.publish(Some(shown.as_ref().unwrap_or(&judged)), &verdict, now)
    }

    /// Records metrics and hands over the status after `verdict`; `false` when the check was
    /// removed.
    fn publish(&mut self, report: Option<&RunReport>, verdict: &Verdict, now: SystemTime) -> bool {
        let entry = &self.entry;
        let (status, transitions) = status::next_status(
            self.previous.as_deref(),
            entry.spec.as_deref(),
            verdict,
            report,
            entry.generation,
            now,
        );
        // Record and hand over under the registration lock, so nothing of this check appears
        // after `remove` returned. Neither waits: the outbox keeps the newest status per check.
        let lifecycle = self.control.lifecycle();
        if !lifecycle.registered {
            return false;
        }
        let metrics = &self.shared.metrics;
        match report {
            Some(report) => metrics.record_run(&entry.id, report),
            // A check that cannot run has no probe results: drop the last ones it had.
            None => metrics.remove_check(&entry.id),
        }
        metrics.record_verdict(&entry.id, verdict);
        metrics.record_incident(&entry.id, status.incident.as_ref());
        let status = Arc::new(status);
        self.shared.outbox.offer(StatusUpdate {
            id: entry.id.clone(),
            uid: entry.uid.clone(),
            generation: entry.generation,
            status: status.clone(),
            transitions,
        });
        drop(lifecycle);
        self.previous = Some(status);
        true
    }
}
