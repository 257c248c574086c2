//! Runs every check on its interval: a stable per-check jitter spreads the checks, one run of a
//! check at a time, a global bound on concurrent probes, and a status update per run sent to the
//! one status writer (the operator's, or `voipcheck run`'s printer).
//!
//! Each check is one task ([`task`]) that owns the check's verdict history and last status; the
//! [`Scheduler`] only starts, updates and stops those tasks. Timing is `tokio::time`, so the
//! tests run on a paused clock.
//!
//! A run leaves its status in the [`Outbox`] and goes on: the consumer (a status patch, a printed
//! line) may be slow or stuck, as an API server under load is, and probing never waits for it.
//! The outbox keeps the newest status per check, so nothing queues without bound.

mod nat;
mod outbox;
mod slots;
mod task;

pub use outbox::{MAX_TRANSITIONS, Outbox};

use crate::api::{VoipCheckSpec, VoipCheckStatus};
use crate::check::{self, CheckId, Plan, PlanError, ProbeRun, RunReport};
use crate::metrics::Metrics;
use crate::probe::dns::Dns;
use crate::status::Transition;
use crate::verdict::History;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

/// The open-file limit of this process, raised to its hard limit first (as Go's runtime does:
/// the soft limit is often 1,024 in containers, far below what probing needs).
pub fn open_files_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    // Linux refuses more than fs.nr_open (1,048,576 by default) even as the hard limit allows.
    const NR_OPEN: u64 = 1 << 20;
    let limit = getrlimit(Resource::Nofile);
    let (current, maximum) = (limit.current, limit.maximum);
    let wanted = maximum.unwrap_or(NR_OPEN).min(NR_OPEN);
    match current {
        Some(current) if current < wanted => {
            let raised = rustix::process::Rlimit {
                current: Some(wanted),
                maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => wanted,
                Err(_) => current,
            }
        }
        Some(current) => current,
        None => NR_OPEN,
    }
}

/// File descriptors kept for everything but probes (the API clients, the metrics endpoint,
/// the resolver, logs).
const RESERVED_FDS: u64 = 256;
/// Above this many probes at once, CPU, not sockets, is what runs out.
const MAX_PROBE_BUDGET: u64 = 65_536;

/// How many probes may be in flight at once with a limit of `fd_limit` open files: the limit
/// less what the process needs besides, at most [`MAX_PROBE_BUDGET`], at least 16.
pub fn probe_budget(fd_limit: u64) -> usize {
    fd_limit
        .saturating_sub(RESERVED_FDS)
        .clamp(16, MAX_PROBE_BUDGET) as usize
}

/// A check as the scheduler receives it: new, changed, or unable to run.
#[derive(Debug, Clone)]
pub struct CheckEntry {
    pub id: CheckId,
    /// The object's `metadata.uid`: its status is written for this object only, not for one
    /// recreated under the same name.
    pub uid: Option<String>,
    pub generation: Option<i64>,
    /// `None` for an object that does not deserialize: its plan is `Err(InvalidSpec)`.
    pub spec: Option<Arc<VoipCheckSpec>>,
    /// `Err` publishes `Ready=False` (CredentialsMissing, InvalidSpec, ...) once and probes nothing.
    pub plan: Result<Plan, PlanError>,
    /// The status already on the object, so conditions keep their lastTransitionTime across
    /// operator restarts. A new task starts from it ([`Resumable::written`]); the entry the
    /// task then runs is kept without it (it would be one more copy of every status), and
    /// boxed, so that the entry kept is not a status larger either.
    pub previous: Option<Box<VoipCheckStatus>>,
}

/// The status after a run (or after a plan error), for the status writer.
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    pub id: CheckId,
    /// The uid of the object the status was computed for.
    pub uid: Option<String>,
    pub generation: Option<i64>,
    /// Shared with the check's task (its last status) and the aggregator (this location's
    /// newest entry): one copy of each check's status, not one per holder.
    pub status: Arc<VoipCheckStatus>,
    pub transitions: Vec<Transition>,
}

/// What a check's task knew when its scheduler stopped, so that this replica's next scheduler
/// continues the check with its whole history (the `SipErrorRate` window too), not only with
/// what the written status gives back.
#[derive(Debug, Clone)]
pub struct Resumable {
    pub history: History,
    /// The last status the task computed (written or still waiting).
    pub status: Option<Arc<VoipCheckStatus>>,
}

impl Resumable {
    /// What a check's task starts from without a state of its own: the status written on the
    /// object (a False condition stays False, an incident keeps its `since`:
    /// [`History::resume`]).
    pub fn written(plan: &Result<Plan, PlanError>, status: Option<VoipCheckStatus>) -> Self {
        let history = match (plan, &status) {
            (Ok(plan), Some(status)) => History::resume(&plan.policy, status),
            _ => History::default(),
        };
        Resumable {
            history,
            status: status.map(Arc::new),
        }
    }
}

/// The running schedule. Dropping it stops all checks.
pub struct Scheduler {
    shared: Arc<Shared>,
    checks: Mutex<HashMap<CheckId, CheckHandle>>,
}

/// What every check task uses.
struct Shared {
    runner: Box<dyn Runner>,
    metrics: Metrics,
    permits: Semaphore,
    /// The permits in all: a run never asks for more.
    max_permits: u32,
    outbox: Arc<Outbox>,
    /// The wall clock the slots are laid on (see [`slots`]).
    clock: slots::Clock,
}

/// One check's task and how to reach it.
struct CheckHandle {
    entries: watch::Sender<Arc<CheckEntry>>,
    /// Cleared by [`Scheduler::remove`]; the task starts runs, records metrics and sends updates
    /// only while it is set (the last two under its lock), so no series or status reappears
    /// after a removal.
    registered: Arc<Mutex<bool>>,
    /// Set to stop the check as a shutdown does ([`Scheduler::stop`]): it waits for no further
    /// slot, and a run in flight still ends and sends its status.
    stopping: watch::Sender<bool>,
    task: JoinHandle<Resumable>,
}

/// Runs a plan's probes once. The scheduler's one seam: [`check::run`] in production, a clock-
/// driven double in the timing tests.
trait Runner: Send + Sync + 'static {
    fn run<'a>(&'a self, plan: &'a Plan) -> Pin<Box<dyn Future<Output = RunReport> + Send + 'a>>;

    /// The plan's NAT binding measurement ([`check::measure_nat_binding`]).
    fn measure_nat_binding<'a>(
        &'a self,
        plan: &'a Plan,
    ) -> Pin<Box<dyn Future<Output = Option<ProbeRun>> + Send + 'a>>;
}

/// The real probes.
struct Probes {
    dns: Dns,
}

impl Runner for Probes {
    fn run<'a>(&'a self, plan: &'a Plan) -> Pin<Box<dyn Future<Output = RunReport> + Send + 'a>> {
        Box::pin(check::run(&self.dns, plan))
    }

    fn measure_nat_binding<'a>(
        &'a self,
        plan: &'a Plan,
    ) -> Pin<Box<dyn Future<Output = Option<ProbeRun>> + Send + 'a>> {
        Box::pin(check::measure_nat_binding(&self.dns, plan))
    }
}

impl Scheduler {
    /// `max_concurrent` bounds the probes in flight across all checks: what costs is a socket
    /// (and its file descriptor) per probe, so a run takes one permit per probe it starts
    /// ([`Plan::sockets`]) for as long as it runs. The bound must cover the probes that wait
    /// for their timeout: 10,000 checks whose peers all stop answering, 3 probes each with a
    /// 10 s timeout every 30 s, hold 10,000 permits; [`probe_budget`] sizes it from the file
    /// descriptor limit. A run waiting for permits is late, and its wait shows as schedule lag.
    pub fn new(dns: Dns, metrics: Metrics, max_concurrent: usize, outbox: Arc<Outbox>) -> Self {
        Self::with_runner(
            Box::new(Probes { dns }),
            slots::Clock::system(),
            metrics,
            max_concurrent,
            outbox,
        )
    }

    fn with_runner(
        runner: Box<dyn Runner>,
        clock: slots::Clock,
        metrics: Metrics,
        max_concurrent: usize,
        outbox: Arc<Outbox>,
    ) -> Self {
        let max_permits =
            u32::try_from(max_concurrent.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        Scheduler {
            shared: Arc::new(Shared {
                runner,
                metrics,
                permits: Semaphore::new(max_permits as usize),
                max_permits,
                outbox,
                clock,
            }),
            checks: Mutex::new(HashMap::new()),
        }
    }

    /// Adds a check or replaces its entry; an unchanged entry keeps its timer and history.
    ///
    /// What changes on a replaced entry (decided by the check's task, see [`task::Change`]):
    /// the same spec and generation with a new plan (a Secret changed) takes effect at the next
    /// run on the same timer; a new spec or generation, or a plan that turns runnable or not,
    /// restarts the timer. The verdict history and the last status are kept either way, so a
    /// condition's lastTransitionTime survives an edit.
    pub fn upsert(&self, entry: CheckEntry) {
        self.start(entry, None);
    }

    /// Adds a check that continues from `resumed` (see [`Resumable`]).
    pub fn resume(&self, entry: CheckEntry, resumed: Resumable) {
        self.start(entry, Some(resumed));
    }

    fn start(&self, mut entry: CheckEntry, resumed: Option<Resumable>) {
        let written = entry.previous.take().map(|status| *status);
        let mut checks = self.lock_checks();
        match checks.get(&entry.id) {
            Some(handle) if !handle.task.is_finished() => {
                handle.entries.send_replace(Arc::new(entry));
            }
            _ => {
                let resumed = resumed.unwrap_or_else(|| Resumable::written(&entry.plan, written));
                let id = entry.id.clone();
                let (entries, receiver) = watch::channel(Arc::new(entry));
                let registered = Arc::new(Mutex::new(true));
                let (stopping, stop) = watch::channel(false);
                let task = tokio::spawn(task::drive(
                    Arc::clone(&self.shared),
                    receiver,
                    Arc::clone(&registered),
                    stop,
                    resumed,
                ));
                checks.insert(
                    id,
                    CheckHandle {
                        entries,
                        registered,
                        stopping,
                        task,
                    },
                );
            }
        }
        self.shared.metrics.set_checks(checks.len());
    }

    /// Stops probing a check and removes its metric series. A run in flight is not cut short:
    /// it ends by itself (bounded by the check's timeout), so a REGISTER in it is followed by
    /// its un-REGISTER, and its results go nowhere.
    pub fn remove(&self, id: &CheckId) {
        let mut checks = self.lock_checks();
        // Dropping the handle closes the task's entry channel: an idle task ends at once, a
        // running one after its run.
        if let Some(handle) = checks.remove(id) {
            *handle
                .registered
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = false;
        }
        self.shared.metrics.remove_check(id);
        self.shared.metrics.set_checks(checks.len());
    }

    /// Stops scheduling new runs and waits for the runs in flight (each bounded by its timeout);
    /// returns what each check's task knew.
    pub async fn shutdown(&self) -> HashMap<CheckId, Resumable> {
        let handles: Vec<(CheckId, CheckHandle)> = self
            .checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        finish(handles).await
    }

    /// Stops the checks `ids` as [`Scheduler::shutdown`] stops all: no new run starts, a run
    /// in flight ends and sends its status; then their metric series are removed. Returns what
    /// each check's task knew. The others go on.
    pub async fn stop(&self, ids: &[CheckId]) -> HashMap<CheckId, Resumable> {
        let handles: Vec<(CheckId, CheckHandle)> = {
            let mut checks = self.lock_checks();
            let handles = ids
                .iter()
                .filter_map(|id| Some((id.clone(), checks.remove(id)?)))
                .collect();
            self.shared.metrics.set_checks(checks.len());
            handles
        };
        let resumable = finish(handles).await;
        for id in ids {
            // Unless it was scheduled again meanwhile.
            if !self.lock_checks().contains_key(id) {
                self.shared.metrics.remove_check(id);
            }
        }
        resumable
    }

    fn lock_checks(&self) -> std::sync::MutexGuard<'_, HashMap<CheckId, CheckHandle>> {
        self.checks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Tells the tasks of `handles` to stop and waits for them.
async fn finish(handles: Vec<(CheckId, CheckHandle)>) -> HashMap<CheckId, Resumable> {
    for (_, handle) in &handles {
        handle.stopping.send_replace(true);
    }
    let mut resumable = HashMap::with_capacity(handles.len());
    for (id, handle) in handles {
        // A task ends by itself once stopping is set; a panic in one has been reported by
        // the runtime already and must not stop the others from finishing.
        if let Ok(state) = handle.task.await {
            resumable.insert(id, state);
        }
    }
    resumable
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let checks = self
            .checks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for handle in checks.values() {
            handle.task.abort();
        }
    }
}

#[cfg(test)]
mod tests;
