//! A check's NAT binding measurement, on its own cadence beside the check's runs.
//!
//! The measurement idles for the phones' keep-alive interval (60 s by default) before it asks;
//! inside a run it would hold the run (and a run permit) that long, so the check's SIP and web
//! probes would run every 60–100 s instead of every 30 s and every run would look ~30 s late.
//! Here it runs in a task of its own, one measurement at a time, starting every
//! `max(interval, its bound)`, and never takes a run permit (it holds one idle socket). Each
//! run picks up the latest result; a result counts for the verdict once, in the first run that
//! sees it ([`Latest::take`]), while every run's metrics show it.

use super::{CheckEntry, Shared, slots};
use crate::check::run::probe_bound;
use crate::check::{PlannedProbe, ProbeRun};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::{self, Instant};

/// The measurement task of one check; dropping it stops the task.
pub(super) struct NatMeasurement {
    latest: Arc<Mutex<Latest>>,
    task: JoinHandle<()>,
}

/// The newest result, and whether a run has judged it yet.
#[derive(Default)]
struct Latest {
    run: Option<ProbeRun>,
    fresh: bool,
}

impl NatMeasurement {
    /// Starts measuring for the entry's plan, if it asks for a NAT binding measurement.
    pub fn start(shared: &Arc<Shared>, entry: &Arc<CheckEntry>) -> Option<Self> {
        let plan = entry.plan.as_ref().ok()?;
        let config = plan.nat_binding.clone()?;
        let bound = probe_bound(&PlannedProbe::Stun(config), plan.timeout);
        let cadence = plan.interval.max(bound);
        // The first measurement on the check's own slot, so 10,000 checks do not all start
        // theirs at once.
        let first = Instant::now() + slots::offset(&entry.id, plan.interval);
        let latest = Arc::new(Mutex::new(Latest::default()));
        let task = tokio::spawn(measure(
            Arc::clone(shared),
            Arc::clone(entry),
            Arc::clone(&latest),
            first,
            cadence,
        ));
        Some(NatMeasurement { latest, task })
    }

    /// The newest result, and whether it is new since the last call.
    pub fn take(&self) -> (Option<ProbeRun>, bool) {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = std::mem::take(&mut latest.fresh);
        (latest.run.clone(), fresh)
    }
}

impl Drop for NatMeasurement {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn measure(
    shared: Arc<Shared>,
    entry: Arc<CheckEntry>,
    latest: Arc<Mutex<Latest>>,
    first: Instant,
    cadence: Duration,
) {
    let Ok(plan) = &entry.plan else {
        return;
    };
    time::sleep_until(first).await;
    loop {
        let started = Instant::now();
        if let Some(run) = shared.runner.measure_nat_binding(plan).await {
            *latest.lock().unwrap_or_else(PoisonError::into_inner) = Latest {
                run: Some(run),
                fresh: true,
            };
        }
        time::sleep_until(started + cadence).await;
    }
}
