//! The scheduler's mechanics on a paused clock: probes are replaced by a runner that only takes
//! time, so slots, overlap, the concurrency bound, lag, changes, removal and shutdown are exact.

use super::task::Change;
use super::*;
use crate::api::{ConditionType, TargetKind};
use crate::verdict::Policy;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

const SECOND: Duration = Duration::from_secs(1);

/// tokio's timer wheel has millisecond resolution: a timer fires at its deadline or up to 1 ms
/// after it, on the paused clock too.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

/// Each start at its due time (within the timer's resolution).
fn assert_starts(starts: &[Instant], due: &[Instant], what: &str) {
    assert_eq!(starts.len(), due.len(), "{what}: {starts:?}, due {due:?}");
    for (start, due) in starts.iter().zip(due) {
        assert!(
            *start >= *due && *start - *due <= TIMER_RESOLUTION,
            "{what}: started at {start:?}, due at {due:?}"
        );
    }
}

/// One run as the runner saw it.
#[derive(Debug, Clone)]
struct RunRecord {
    id: CheckId,
    start: Instant,
    end: Instant,
}

/// A runner whose runs take a set time per check, recording when each ran and how many ran at
/// once.
#[derive(Default)]
struct Recorder {
    runs: Mutex<Vec<RunRecord>>,
    /// NAT binding measurements, as (start, end).
    measurements: Mutex<Vec<(Instant, Instant)>>,
    durations: Mutex<HashMap<CheckId, Duration>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Recorder {
    fn takes(&self, id: &CheckId, duration: Duration) {
        self.durations.lock().unwrap().insert(id.clone(), duration);
    }

    fn runs(&self) -> Vec<RunRecord> {
        self.runs.lock().unwrap().clone()
    }

    fn starts_of(&self, id: &CheckId) -> Vec<Instant> {
        self.runs()
            .into_iter()
            .filter(|run| &run.id == id)
            .map(|run| run.start)
            .collect()
    }
}

struct RecordingRunner(Arc<Recorder>);

impl Runner for RecordingRunner {
    fn run<'a>(&'a self, plan: &'a Plan) -> Pin<Box<dyn Future<Output = RunReport> + Send + 'a>> {
        Box::pin(async move {
            let recorder = &self.0;
            let start = Instant::now();
            let now = recorder.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            recorder.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let duration = recorder
                .durations
                .lock()
                .unwrap()
                .get(&plan.id)
                .copied()
                .unwrap_or_default();
            tokio::time::sleep(duration).await;
            recorder.in_flight.fetch_sub(1, Ordering::SeqCst);
            recorder.runs.lock().unwrap().push(RunRecord {
                id: plan.id.clone(),
                start,
                end: Instant::now(),
            });
            RunReport {
                started: SystemTime::now(),
                probes: Vec::new(),
                control: None,
            }
        })
    }

    /// Takes the NAT binding's idle time plus its timeouts, as the real one does.
    fn measure_nat_binding<'a>(
        &'a self,
        plan: &'a Plan,
    ) -> Pin<Box<dyn Future<Output = Option<ProbeRun>> + Send + 'a>> {
        Box::pin(async move {
            let config = plan.nat_binding.as_ref()?;
            let start = Instant::now();
            tokio::time::sleep(config.nat_binding? + 4 * plan.timeout).await;
            let measured = (start, Instant::now());
            self.0.measurements.lock().unwrap().push(measured);
            None
        })
    }
}

/// A scheduler on the recording runner, its outbox and the metrics it writes.
struct Harness {
    scheduler: Scheduler,
    recorder: Arc<Recorder>,
    outbox: Arc<Outbox>,
    metrics: Metrics,
    origin: Instant,
    /// The wall-clock time at `origin`.
    wall: SystemTime,
}

impl Harness {
    fn new(max_concurrent: usize) -> Self {
        Harness::at(max_concurrent, slots::aligned())
    }

    /// A scheduler started when the wall clock reads `wall`.
    fn at(max_concurrent: usize, wall: SystemTime) -> Self {
        let recorder = Arc::new(Recorder::default());
        let outbox = Arc::new(Outbox::new());
        let metrics = Metrics::new("test");
        let origin = Instant::now();
        let scheduler = Scheduler::with_runner(
            Box::new(RecordingRunner(Arc::clone(&recorder))),
            slots::Clock::new(origin, wall),
            metrics.clone(),
            max_concurrent,
            Arc::clone(&outbox),
        );
        Harness {
            scheduler,
            recorder,
            outbox,
            metrics,
            origin,
            wall,
        }
    }

    /// When the scheduler started: with [`Harness::new`] a wall-clock time on every test
    /// interval's grid, so a check's first slot is `origin + offset`.
    fn origin(&self) -> Instant {
        self.origin
    }

    fn clock(&self) -> slots::Clock {
        self.scheduler.shared.clock
    }

    /// The statuses waiting in the outbox (the newest per check).
    fn drain(&mut self) -> Vec<StatusUpdate> {
        use futures::FutureExt;
        self.outbox
            .take()
            .now_or_never()
            .flatten()
            .unwrap_or_default()
    }
}

fn spec(interval_secs: u64) -> Arc<VoipCheckSpec> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "target": { "kind": "Cloud", "name": "cloud.example.com" },
            "interval": format!("{interval_secs}s"),
            "timeout": "2s",
            "http": [ { "name": "web-ui", "url": "https://cloud.example.com/" } ]
        }))
        .unwrap(),
    )
}

fn plan(id: &CheckId, interval: Duration) -> Plan {
    Plan {
        id: id.clone(),
        interval,
        timeout: 2 * SECOND,
        probes: Vec::new(),
        control: None,
        nat_binding: None,
        policy: Policy {
            target: TargetKind::Cloud,
            failure_threshold: 1,
            success_threshold: 1,
            error_codes: None,
            keepalive: None,
            cert_expiry_warning: Duration::from_secs(14 * 86_400),
            call: None,
        },
    }
}

fn entry(name: &str, interval_secs: u64) -> CheckEntry {
    let id = CheckId::new("telephony", name);
    CheckEntry {
        plan: Ok(plan(&id, Duration::from_secs(interval_secs))),
        id,
        uid: None,
        generation: Some(1),
        spec: Some(spec(interval_secs)),
        previous: None,
    }
}

fn credentials_missing() -> PlanError {
    PlanError::CredentialsMissing {
        field: "spec.sip.register.credentialsSecretRef".into(),
        secret: "cloud-sip".into(),
        key: None,
    }
}

/// Lets every task that can make progress do so without moving the paused clock.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// The `voipcheck_schedule_lag_seconds` histogram's (count, sum).
fn lag(metrics: &Metrics) -> (u64, f64) {
    let text = metrics.encode();
    let value = |suffix: &str| {
        text.lines()
            .find(|line| line.starts_with(&format!("voipcheck_schedule_lag_seconds_{suffix}")))
            .and_then(|line| line.rsplit(' ').next())
            .map(|v| v.parse::<f64>().unwrap())
            .unwrap_or_else(|| panic!("no schedule lag {suffix} in\n{text}"))
    };
    (value("count") as u64, value("sum"))
}

#[tokio::test(start_paused = true)]
async fn each_check_runs_at_its_own_slot_spread_over_the_interval() {
    let harness = Harness::new(1000);
    let interval = Duration::from_secs(30);
    let ids: Vec<CheckId> = (0..200)
        .map(|i| {
            let entry = entry(&format!("check-{i}"), 30);
            let id = entry.id.clone();
            harness.scheduler.upsert(entry);
            id
        })
        .collect();
    let origin = harness.origin();
    tokio::time::sleep_until(origin + interval * 2).await;

    let mut firsts = Vec::new();
    for id in &ids {
        let starts = harness.recorder.starts_of(id);
        let offset = slots::offset(id, interval);
        assert_starts(
            &starts,
            &[origin + offset, origin + offset + interval],
            &format!("{id}: once per interval, at its offset"),
        );
        firsts.push(offset);
    }
    // No thundering herd: the first runs cover the interval, no second holds more than a few.
    firsts.sort();
    assert!(firsts[0] < Duration::from_secs(2) && firsts[199] > Duration::from_secs(28));
    let mut per_second = [0u32; 30];
    for offset in &firsts {
        per_second[offset.as_secs() as usize] += 1;
    }
    assert!(per_second.iter().all(|n| *n <= 20), "{per_second:?}");
}

/// Another process (a restart, the replica taking a shard over) started at another moment
/// puts the check on the same wall-clock slots.
#[tokio::test(start_paused = true)]
async fn slots_survive_a_restart() {
    let first = Harness::new(10);
    first.scheduler.upsert(entry("cloud", 30));
    tokio::time::sleep(Duration::from_secs(31)).await;
    let run = first.recorder.runs()[0].start - first.origin();
    first.scheduler.shutdown().await;

    tokio::time::sleep(Duration::from_secs(1234)).await;
    let second = Harness::at(10, slots::aligned() + (Instant::now() - first.origin()));
    second.scheduler.upsert(entry("cloud", 30));
    tokio::time::sleep(Duration::from_secs(31)).await;
    let again = second.recorder.runs()[0].start - first.origin();
    let phase = Duration::from_nanos(((again - run).as_nanos() % 30_000_000_000) as u64);
    assert!(
        phase.min(Duration::from_secs(30) - phase) <= TIMER_RESOLUTION,
        "{run:?} before, {again:?} after"
    );
}

/// A resumed check whose last run is `ago` before now.
fn ran_ago(harness: &Harness, ago: Duration) -> Resumable {
    let wall = harness.wall + (Instant::now() - harness.origin()) - ago;
    Resumable {
        history: History::default(),
        status: Some(Arc::new(VoipCheckStatus {
            last_run: Some(crate::api::LastRun {
                time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::try_from(wall).unwrap(),
                ),
                probes: Vec::new(),
            }),
            ..VoipCheckStatus::default()
        })),
    }
}

/// A check whose holder died before its next slot (or an operator down for longer than an
/// interval) runs within a quarter interval, by its offset, not up to an interval later; then
/// on its grid, the next slot at least half an interval on.
#[tokio::test(start_paused = true)]
async fn a_check_that_missed_its_slot_catches_up_then_runs_on_its_grid() {
    let harness = Harness::new(10);
    let interval = Duration::from_secs(30);
    let id = CheckId::new("telephony", "cloud");
    let offset = slots::offset(&id, interval);
    tokio::time::sleep(Duration::from_secs(600)).await;
    let now = Instant::now();
    harness.scheduler.resume(
        entry("cloud", 30),
        ran_ago(&harness, Duration::from_secs(45)),
    );
    tokio::time::sleep(Duration::from_secs(70)).await;
    let caught_up = now + offset / 4;
    let next = slots::after_catch_up(&harness.clock(), caught_up, offset, interval);
    assert_starts(
        &harness.recorder.starts_of(&id),
        &[caught_up, next, next + interval],
        "caught up",
    );
    assert!(next - caught_up >= interval / 2);
}

/// A check handed over between two runs runs at the slot one interval after its last run:
/// no earlier (a duplicate probe), no later (a gap), though its new holder started at another
/// moment than the old one.
#[tokio::test(start_paused = true)]
async fn a_check_handed_over_between_its_slots_runs_on_the_next() {
    let harness = Harness::at(10, slots::aligned() + Duration::from_secs(7));
    let interval = Duration::from_secs(30);
    let id = CheckId::new("telephony", "cloud");
    let offset = slots::offset(&id, interval);
    // Its last slot, at the wall clock's aligned() + 600 s + offset, as the replica before
    // wrote it: truncated to the second.
    let slot = harness.origin() + Duration::from_secs(593) + offset;
    tokio::time::sleep_until(slot + Duration::from_secs(5)).await;
    let ago = Duration::from_secs(5) + Duration::from_nanos(offset.subsec_nanos().into());
    harness
        .scheduler
        .resume(entry("cloud", 30), ran_ago(&harness, ago));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_starts(
        &harness.recorder.starts_of(&id),
        &[slot + interval, slot + 2 * interval],
        "handed over",
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_longer_than_the_interval_delays_the_next_and_the_lag_is_measured() {
    let harness = Harness::new(10);
    let entry = entry("slow", 10);
    let id = entry.id.clone();
    harness.recorder.takes(&id, Duration::from_secs(25));
    harness.scheduler.upsert(entry);
    tokio::time::sleep(Duration::from_secs(100)).await;

    let runs = harness.recorder.runs();
    for pair in runs.windows(2) {
        assert!(pair[1].start >= pair[0].end, "overlapping runs: {pair:?}");
    }
    let first = harness.origin() + slots::offset(&id, Duration::from_secs(10));
    let starts = harness.recorder.starts_of(&id);
    // Each run starts the moment the previous one ends: 25 s apart, never a burst.
    let after = |secs| first + Duration::from_secs(secs);
    assert_starts(&starts[..3], &[first, after(25), after(50)], "slow");
    // First run on time; the second was due at +10 s and started at +25 s; the third was due
    // at +30 s (the slots in between were skipped) and started at +50 s.
    let (count, sum) = lag(&harness.metrics);
    assert!(count >= 3);
    let expected: f64 = 15.0 + 20.0;
    assert!(
        sum >= expected,
        "lag sum {sum}, expected at least {expected}"
    );
}

#[tokio::test(start_paused = true)]
async fn on_time_runs_have_no_lag() {
    let harness = Harness::new(10);
    for i in 0..20 {
        harness.scheduler.upsert(entry(&format!("check-{i}"), 5));
    }
    tokio::time::sleep(Duration::from_secs(21)).await;
    let (count, sum) = lag(&harness.metrics);
    assert!(count >= 80, "{count} runs");
    assert!(
        sum <= count as f64 * TIMER_RESOLUTION.as_secs_f64(),
        "lag sum {sum}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_global_bound_limits_concurrent_runs_and_shows_as_lag() {
    let harness = Harness::new(4);
    for i in 0..50 {
        let entry = entry(&format!("check-{i}"), 10);
        harness.recorder.takes(&entry.id, Duration::from_secs(3));
        harness.scheduler.upsert(entry);
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(harness.recorder.max_in_flight.load(Ordering::SeqCst), 4);
    // 50 runs of 3 s on 4 permits need 37.5 s per 10 s interval: runs queue for permits, and
    // the wait is lag.
    let (_, sum) = lag(&harness.metrics);
    assert!(sum > 1.0, "lag sum {sum}");
}

#[tokio::test(start_paused = true)]
async fn a_plan_error_publishes_not_ready_once_and_probes_nothing() {
    let mut harness = Harness::new(10);
    let mut broken = entry("cloud", 10);
    broken.plan = Err(credentials_missing());
    harness.scheduler.upsert(broken.clone());
    settle().await;
    let updates = harness.drain();
    assert_eq!(updates.len(), 1, "{updates:?}");
    let ready = updates[0]
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Ready.as_str())
        .expect("a Ready condition");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "CredentialsMissing");

    // The same entry again (a re-reconcile) publishes nothing; time passing runs nothing.
    harness.scheduler.upsert(broken);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(harness.drain().is_empty());
    assert!(harness.recorder.runs().is_empty());

    // Fixed: the check starts on its slot.
    harness.scheduler.upsert(entry("cloud", 10));
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert_eq!(harness.recorder.runs().len(), 2);
    // Nobody took the first run's status: the second one replaced it.
    let updates = harness.drain();
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert!(updates[0].status.last_run.is_some());
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_entry_keeps_its_timer_and_a_new_interval_moves_to_its_grid() {
    let mut harness = Harness::new(10);
    let id = CheckId::new("telephony", "cloud");
    harness.scheduler.upsert(entry("cloud", 30));
    let first = harness.origin() + slots::offset(&id, Duration::from_secs(30));
    tokio::time::sleep_until(first + SECOND).await;
    let updates = harness.drain();
    assert!(
        !updates[0].transitions.is_empty(),
        "first run: conditions appear"
    );

    // Re-upserting the same entry (a re-reconcile) neither runs the check early nor delays it.
    for _ in 0..5 {
        harness.scheduler.upsert(entry("cloud", 30));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::time::sleep_until(first + Duration::from_secs(61)).await;
    let after = |secs| first + Duration::from_secs(secs);
    assert_starts(
        &harness.recorder.starts_of(&id),
        &[first, after(30), after(60)],
        "re-upserted",
    );

    // A new interval: the check moves to the new grid, and keeps its status: the conditions did
    // not change, so no transitions.
    harness.drain();
    let mut changed = entry("cloud", 10);
    changed.generation = Some(2);
    harness.scheduler.upsert(changed);
    let since = Instant::now();
    tokio::time::sleep(Duration::from_secs(25)).await;
    let offset = slots::offset(&id, Duration::from_secs(10));
    let next = slots::first_due(&harness.clock(), since, offset, Duration::from_secs(10));
    let after: Vec<Instant> = harness
        .recorder
        .starts_of(&id)
        .into_iter()
        .filter(|start| *start >= since)
        .collect();
    assert_starts(
        &after[..2],
        &[next, next + Duration::from_secs(10)],
        "new interval",
    );
    let updates = harness.drain();
    assert!(updates.iter().all(|u| u.generation == Some(2)));
    assert!(
        updates.iter().all(|u| u.transitions.is_empty()),
        "{updates:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn remove_stops_the_check_and_drops_its_series() {
    let mut harness = Harness::new(10);
    let id = CheckId::new("telephony", "cloud");
    harness.scheduler.upsert(entry("cloud", 5));
    harness.scheduler.upsert(entry("other", 5));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(harness.metrics.encode().contains("name=\"cloud\""));

    harness.scheduler.remove(&id);
    let runs = harness.recorder.starts_of(&id).len();
    harness.drain();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(harness.recorder.starts_of(&id).len(), runs);
    assert!(harness.drain().iter().all(|u| u.id != id));
    let text = harness.metrics.encode();
    assert!(!text.contains("name=\"cloud\""), "{text}");
    assert!(text.contains("name=\"other\""));
}

/// A removed check's run in flight ends by itself (its REGISTER gets its un-REGISTER) and
/// leaves no status and no series; before, the task was aborted mid-run.
#[tokio::test(start_paused = true)]
async fn a_run_in_flight_when_its_check_is_removed_ends_by_itself_and_leaves_nothing() {
    let mut harness = Harness::new(10);
    let slow = entry("slow", 10);
    let id = slow.id.clone();
    harness.recorder.takes(&id, Duration::from_secs(4));
    harness.scheduler.upsert(slow);
    while harness.recorder.in_flight.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    harness.scheduler.remove(&id);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let runs = harness.recorder.runs();
    assert_eq!(
        runs.len(),
        1,
        "the run was cut short, or another started: {runs:?}"
    );
    assert!(runs[0].end - runs[0].start >= Duration::from_secs(4));
    assert!(harness.drain().is_empty());
    assert!(!harness.metrics.encode().contains("name=\"slow\""));
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_runs_in_flight_and_starts_none() {
    let harness = Harness::new(10);
    let slow = entry("slow", 10);
    let id = slow.id.clone();
    harness.recorder.takes(&id, Duration::from_secs(4));
    harness.scheduler.upsert(slow);
    harness.scheduler.upsert(entry("idle", 10));
    // Until the slow check's run is in flight.
    while harness.recorder.in_flight.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let Harness {
        scheduler,
        recorder,
        outbox,
        ..
    } = harness;
    scheduler.shutdown().await;
    assert!(Instant::now() - started >= Duration::from_secs(3));
    let runs = recorder.runs().len();
    // The finished run's status was handed over.
    outbox.close();
    let mut received = Vec::new();
    while let Some(batch) = outbox.take().await {
        received.extend(batch);
    }
    assert!(received.iter().any(|u| u.id == id));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(recorder.runs().len(), runs);
}

/// The NAT binding measurement idles for the keep-alive (60 s) beside the runs: the check's
/// probes keep their 10 s interval, start on time, and it takes no run permit (before, it ran
/// inside the run, which then lasted 68 s and held a permit: a run every 68 s, ~58 s "late").
#[tokio::test(start_paused = true)]
async fn a_nat_binding_measurement_runs_beside_the_runs_and_delays_none() {
    let harness = Harness::new(1);
    let mut nat = entry("nat", 10);
    let Ok(plan) = &mut nat.plan else {
        unreachable!()
    };
    plan.nat_binding = Some(crate::probe::stun::StunConfig {
        servers: vec!["stun.example.net".into()],
        transport: crate::probe::stun::StunTransport::Udp,
        timeout: plan.timeout,
        nat_binding: Some(Duration::from_secs(60)),
        require: crate::probe::stun::StunRequire::All,
        ca: None,
    });
    let id = nat.id.clone();
    harness.scheduler.upsert(nat);
    // A second check shares the one permit: the measurement must not hold it.
    let other = entry("other", 10);
    let other_id = other.id.clone();
    harness.scheduler.upsert(other);
    let origin = harness.origin();
    let end = origin + Duration::from_secs(150);
    tokio::time::sleep_until(end).await;

    let every_10s = |id: &CheckId| -> Vec<Instant> {
        let first = origin + slots::offset(id, Duration::from_secs(10));
        (0..)
            .map(|i| first + i * Duration::from_secs(10))
            .take_while(|due| *due <= end)
            .collect()
    };
    let due = every_10s(&id);
    assert_starts(&harness.recorder.starts_of(&id), &due, "runs every 10 s");
    let other_due = every_10s(&other_id);
    assert_starts(
        &harness.recorder.starts_of(&other_id),
        &other_due,
        "the other check",
    );
    let first = due[0];
    // Measurements one at a time, back to back (each 68 s), from the check's slot on.
    let measurements = harness.recorder.measurements.lock().unwrap().clone();
    assert_eq!(measurements.len(), 2, "{measurements:?}");
    assert!(measurements[0].0 >= first && measurements[0].0 - first <= TIMER_RESOLUTION);
    assert!(measurements[1].0 >= measurements[0].1);
    let (count, sum) = lag(&harness.metrics);
    assert_eq!(count as usize, due.len() + other_due.len());
    assert!(sum < 0.1, "schedule lag {sum} s in all");
}

/// DESIGN.md §7: when every peer stops answering, each probe holds its socket until its 10 s
/// timeout; with a permit per probe and the budget the file descriptor limit allows, 10,000
/// checks of 3 probes still run every 30 s (before: 256 run permits held for whole runs gave
/// 25 runs/s against the 333/s needed, a run every ~6 minutes).
#[tokio::test(start_paused = true)]
async fn ten_thousand_checks_whose_peers_all_time_out_still_run_at_their_interval() {
    const CHECKS: usize = 10_000;
    let harness = Harness::new(probe_budget(1 << 20));
    let interval = Duration::from_secs(30);
    let web = crate::check::PlannedProbe::Http {
        name: "ui".into(),
        config: crate::probe::http::HttpConfig::new("http://192.0.2.1/".parse().unwrap()),
    };
    for i in 0..CHECKS {
        let mut check = entry(&format!("check-{i}"), 30);
        let Ok(plan) = &mut check.plan else {
            unreachable!()
        };
        plan.probes = vec![web.clone(), web.clone(), web.clone()];
        harness.recorder.takes(&check.id, Duration::from_secs(10));
        harness.scheduler.upsert(check);
    }
    let origin = harness.origin();
    tokio::time::sleep_until(origin + interval * 3).await;
    let runs = harness.recorder.runs().len();
    // Each check's first three slots have come; the last run may still be in flight.
    assert!(runs >= CHECKS * 3 - CHECKS / 3, "{runs} runs");
    let (count, sum) = lag(&harness.metrics);
    let mean = sum / count as f64;
    assert!(mean < 0.001, "mean lag {mean} s");
    assert!(harness.recorder.max_in_flight.load(Ordering::SeqCst) >= CHECKS / 3);
}

#[test]
fn the_probe_budget_follows_the_open_file_limit() {
    assert_eq!(probe_budget(1024), 768);
    assert_eq!(probe_budget(1 << 20), 65_536);
    assert_eq!(probe_budget(100), 16);
}

#[test]
fn changes_are_classified_by_spec_generation_and_plan() {
    let old = entry("cloud", 30);
    assert_eq!(Change::between(&old, &old.clone()), Change::Plan);
    let mut generation = old.clone();
    generation.generation = Some(2);
    assert_eq!(Change::between(&old, &generation), Change::Restart);
    let mut broken = old.clone();
    broken.plan = Err(credentials_missing());
    assert_eq!(Change::between(&old, &broken), Change::Restart);
    assert_eq!(Change::between(&broken, &broken.clone()), Change::Same);
    let mut other_error = old.clone();
    other_error.plan = Err(PlanError::TargetNotAllowed {
        field: "spec.http[0].url".into(),
        host: "cloud.example.com".into(),
    });
    assert_eq!(Change::between(&broken, &other_error), Change::Restart);
    assert_eq!(Change::between(&old, &entry("cloud", 10)), Change::Restart);
}

/// 10,000 idle checks each hold their task's future: the run's state is boxed while it runs,
/// so an idle task stays small (DESIGN.md §7 allows 200 MB for everything at 10,000 checks).
#[tokio::test]
async fn an_idle_check_task_is_small() {
    let harness = Harness::new(1);
    let (_entries, receiver) = watch::channel(Arc::new(entry("cloud", 30)));
    let (_stopping, stopping) = watch::channel(false);
    let registered = Arc::new(Mutex::new(true));
    let shared = Arc::clone(&harness.scheduler.shared);
    let resumed = Resumable::written(&entry("cloud", 30).plan, None);
    let task = task::drive(shared, receiver, registered, stopping, resumed);
    let size = std::mem::size_of_val(&task);
    assert!(size <= 2048, "an idle check's task takes {size} bytes");
}
