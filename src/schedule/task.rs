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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
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

/// Resolves once shutdown has begun (or the scheduler is gone).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which stops the task just the same.
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// The next entry the scheduler sends; `None` once it dropped its sender (the check was
/// removed), which stops the task.
async fn next_entry(entries: &mut watch::Receiver<Arc<CheckEntry>>) -> Option<Arc<CheckEntry>> {
    entries.changed().await.ok()?;
    Some(Arc::clone(&entries.borrow_and_update()))
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
    registered: Arc<Mutex<bool>>,
    /// Shared with the scheduler's channel: a check's entry (and plan) is held once.
    entry: Arc<CheckEntry>,
    history: History,
    previous: Option<Arc<VoipCheckStatus>>,
}

/// The task of one check; ends on shutdown, returning what it knew, or after its removal.
///
/// It starts from `resumed`: this replica's own last state of the check, or else the status
/// on the object ([`Resumable::written`]).
pub(super) async fn drive(
    shared: Arc<Shared>,
    mut entries: watch::Receiver<Arc<CheckEntry>>,
    registered: Arc<Mutex<bool>>,
    mut stopping: watch::Receiver<bool>,
    resumed: Resumable,
) -> Resumable {
    let entry = Arc::clone(&entries.borrow_and_update());
    let Resumable {
        history,
        status: previous,
    } = resumed;
    let mut check = Check {
        shared,
        registered,
        previous,
        entry,
        history,
    };
    loop {
        let next = match &check.entry.plan {
            Ok(plan) => {
                let interval = plan.interval;
                check.on_timer(interval, &mut entries, &mut stopping).await
            }
            Err(error) => {
                let error = error.clone();
                Box::pin(check.not_runnable(&error, &mut entries, &mut stopping)).await
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
    async fn on_timer(
        &mut self,
        interval: Duration,
        entries: &mut watch::Receiver<Arc<CheckEntry>>,
        stopping: &mut watch::Receiver<bool>,
    ) -> Next {
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
        loop {
            tokio::select! {
                biased;
                _ = stopped(stopping) => return Next::Stop,
                new = next_entry(entries) => {
                    let Some(new) = new else { return Next::Stop };
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
                due = ticks.tick() => {
                    let entry = Arc::clone(&self.entry);
                    // A plan error arrives as a Change::Restart above; should one slip through,
                    // the restart publishes it.
                    let Ok(plan) = &entry.plan else {
                        return Next::Restart;
                    };
                    // Boxed: a run's state is large and lives for milliseconds, while 10,000
                    // idle checks would each carry its size in their task.
                    if !Box::pin(self.run(due, plan, nat.as_ref(), stopping)).await {
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
    async fn not_runnable(
        &mut self,
        error: &PlanError,
        entries: &mut watch::Receiver<Arc<CheckEntry>>,
        stopping: &mut watch::Receiver<bool>,
    ) -> Next {
        let verdict = verdict::not_runnable(error);
        if !self.publish(None, &verdict, SystemTime::now()) {
            return Next::Stop;
        }
        loop {
            tokio::select! {
                biased;
                _ = stopped(stopping) => return Next::Stop,
                new = next_entry(entries) => {
                    let Some(new) = new else { return Next::Stop };
                    if Change::between(&self.entry, &new) != Change::Same {
                        self.entry = new;
                        return Next::Restart;
                    }
                }
            }
        }
    }

    /// One run that was due at `due`. `false` when the task should stop.
    async fn run(
        &mut self,
        due: Instant,
        plan: &Plan,
        nat: Option<&NatMeasurement>,
        stopping: &mut watch::Receiver<bool>,
    ) -> bool {
        let permit = tokio::select! {
            biased;
            _ = stopped(stopping) => return false,
            permit = self.shared.permits.acquire_many(plan.sockets().min(self.shared.max_permits)) => match permit {
                Ok(permit) => permit,
                Err(_closed) => return false,
            },
        };
        // Removed while waiting for permits: nothing to probe any more.
        if !*self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
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
        let registered = self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !*registered {
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
        drop(registered);
        self.previous = Some(status);
        true
    }
}
