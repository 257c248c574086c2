//! Checks shared by replicas (DESIGN.md §7, §9): N VoipChecks at a 30 s interval, each with SIP
//! OPTIONS, STUN and HTTP against the test peers (Kamailio, coturn, nginx) on loopback, over R
//! `voipcheck operator` processes (this build's binary) that share them by shard Leases on the
//! in-bench API server (`tests/support/fake_api.rs`, reached through a kubeconfig). Prints per
//! replica: the shards it holds, its checks, RSS (its peak before and over the measured window,
//! and at its end), p99 schedule lag (from its /metrics histogram, over the measured window
//! only), and CPU seconds per 1,000 probes (its process's CPU from /proc over the window, two
//! /metrics scrapes included). Then one replica
//! is SIGKILLed: how long until its shards are held by the others, and until every check it
//! probed has run again on its new holder (its status written with a newer lastRun).
//!
//!   cargo bench --bench replicas -- --checks 30000 --replicas 3 --seconds 65
//!
//! The API server runs in this process and its CPU is not counted for any replica; on a small
//! machine it competes with them for the cores, which shows as schedule lag.
//!
//! Figures, not a pass/fail test: DESIGN.md's targets are printed next to them.

mod figures;
#[path = "../tests/support/mod.rs"]
mod support;

use figures::{Rss, histogram_buckets, process_cpu_time, process_rss_mib, quantile};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use support::Daemon;
use support::coturn::Coturn;
use support::fake_api::FakeApi;
use support::kamailio::Kamailio;
use support::nginx::Nginx;
use voipcheck::check::CheckId;
use voipcheck::operator::shards::{SHARDS, shard_of};

/// Probes per check run: SIP OPTIONS, STUN, HTTP.
const PROBES_PER_RUN: f64 = 3.0;
const NAMESPACE: &str = "bench";
const LEASE_NAMESPACE: &str = "ops";
const LOCATION: &str = "bench";
const LEASE_NAME: &str = "voipcheck-operator";
/// The production Lease duration (`LeaseTimings::default()`), which the processes use.
const LEASE_DURATION: Duration = Duration::from_secs(15);
const LAG: &str = "voipcheck_schedule_lag_seconds";

struct Settings {
    checks: usize,
    replicas: usize,
    seconds: u64,
    interval: u64,
    /// How long the replicas may take to start and share the shards.
    settle: Duration,
}

impl Settings {
    /// `--checks N`, `--replicas R`, `--seconds S` (the measured window), `--interval S`.
    /// Without cargo's `--bench` (under `cargo test --all-targets`) a small smoke run keeps the
    /// benchmark working without spending minutes of the test suite on it.
    fn from_args() -> Settings {
        let args: Vec<String> = std::env::args().collect();
        let mut settings = if args.iter().any(|a| a == "--bench") {
            Settings {
                checks: 30_000,
                replicas: 3,
                seconds: 65,
                interval: 30,
                settle: Duration::from_secs(300),
            }
        } else {
            Settings {
                checks: 60,
                replicas: 3,
                seconds: 6,
                interval: 5,
                settle: Duration::from_secs(60),
            }
        };
        for pair in args.windows(2) {
            let value = || {
                pair[1]
                    .parse::<u64>()
                    .unwrap_or_else(|_| panic!("{} needs a number", pair[0]))
            };
            match pair[0].as_str() {
                "--checks" => settings.checks = value() as usize,
                "--replicas" => settings.replicas = value() as usize,
                "--seconds" => settings.seconds = value(),
                "--interval" => settings.interval = value(),
                _ => {}
            }
        }
        settings
    }
}

/// VoipCheck `check-<i>` probing the peers.
fn check(i: usize, interval: u64, kamailio: &Kamailio, nginx: &Nginx, coturn: &Coturn) -> Value {
    // 5 s as in benches/schedule.rs; shorter than the smoke run's 5 s interval.
    let timeout = (interval / 3).clamp(1, 5);
    json!({
        "apiVersion": "voipcheck.io/v1alpha1", "kind": "VoipCheck",
        "metadata": { "name": format!("check-{i}"), "namespace": NAMESPACE },
        "spec": {
            "target": { "kind": "Cloud", "name": "bench.localhost" },
            "interval": format!("{interval}s"),
            "timeout": format!("{timeout}s"),
            "sip": {
                "server": kamailio.uri("udp"),
                "options": { "laggedThreshold": format!("{}ms", timeout * 500) }
            },
            "http": [ { "name": "web-ui", "url": nginx.http_url("/").as_str() } ],
            "stun": { "servers": [ coturn.server() ] }
        }
    })
}

/// A kubeconfig for the in-bench API server (plain HTTP, no credentials).
fn kubeconfig(api: &FakeApi, dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let config = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: bench\n\
         clusters: [{{name: bench, cluster: {{server: \"http://{}\"}}}}]\n\
         users: [{{name: bench, user: {{}}}}]\n\
         contexts: [{{name: bench, context: {{cluster: bench, user: bench, namespace: {LEASE_NAMESPACE}}}}}]\n",
        api.addr()
    );
    std::fs::write(&path, config).unwrap();
    path
}

/// One `voipcheck operator` process.
struct Replica {
    identity: String,
    metrics_port: u16,
    daemon: Daemon,
}

impl Replica {
    fn start(index: usize, kubeconfig: &std::path::Path, dir: &std::path::Path) -> Replica {
        let identity = format!("replica-{index}");
        let metrics_port = support::free_port();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_voipcheck"));
        command
            .args(["operator", "--namespace", NAMESPACE, "--location", LOCATION])
            .args([
                "--lease-namespace",
                LEASE_NAMESPACE,
                "--identity",
                &identity,
            ])
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn");
        let log = dir.join(format!("{identity}.log"));
        let mut daemon = Daemon::spawn(&identity, command, &log);
        daemon.wait_for_tcp(([127, 0, 0, 1], metrics_port).into());
        Replica {
            identity,
            metrics_port,
            daemon,
        }
    }

    /// `/metrics` (HTTP/1.0: the body ends with the connection).
    fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)) else {
            return String::new();
        };
        let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }

    /// Peak RSS since start; then resets the peak to the current RSS (Linux' clear_refs 5) so
    /// the next reading is the peak since now.
    fn peak_rss_and_reset(&self) -> f64 {
        let peak = process_rss_mib(self.daemon.id(), Rss::Peak);
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.daemon.id()), "5");
        peak
    }

    fn kill(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.daemon.id() as libc::pid_t, libc::SIGKILL) };
    }
}

/// The value of the first series of `metric` in `text` (every series has a `location` label).
fn gauge(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Who holds each shard's Lease.
fn holders(api: &FakeApi) -> Vec<Option<String>> {
    (0..SHARDS)
        .map(|n| {
            let lease = api.lease(LEASE_NAMESPACE, &format!("{LEASE_NAME}-{LOCATION}-{n}"))?;
            lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
        })
        .collect()
}

/// The time of a status' last run: this location's entry, or the top level as written before
/// there were locations.
fn last_run(status: &Value) -> Option<Timestamp> {
    let own = status["locations"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["name"] == LOCATION))
        .map(|e| &e["lastRun"]["time"]);
    own.unwrap_or(&status["lastRun"]["time"])
        .as_str()?
        .parse()
        .ok()
}

/// What one replica did over the measured window.
struct Window {
    cpu: Duration,
    runs: f64,
    /// The schedule lag histogram's buckets over the window.
    lag: Vec<(f64, f64)>,
}

fn measure(replica: &Replica, before: &str, after: &str, cpu_before: Duration) -> Window {
    let (start, end) = (
        histogram_buckets(before, LAG),
        histogram_buckets(after, LAG),
    );
    let lag = end
        .iter()
        .map(|&(le, count)| {
            let earlier = start.iter().find(|(l, _)| *l == le).map_or(0.0, |b| b.1);
            (le, count - earlier)
        })
        .collect();
    let count = format!("{LAG}_count");
    Window {
        cpu: process_cpu_time(replica.daemon.id()) - cpu_before,
        runs: gauge(after, &count) - gauge(before, &count),
        lag,
    }
}

/// Waits (looking `every`, at most `within`) until `done` holds; how long it took.
fn wait_until(
    what: &str,
    within: Duration,
    every: Duration,
    mut done: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(every);
    }
    started.elapsed()
}

fn main() {
    let settings = Settings::from_args();
    let kamailio = Kamailio::start();
    let nginx = Nginx::start();
    let coturn = Coturn::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let api = FakeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig(&api, dir.path());
    let mut shards = BTreeMap::new();
    for i in 0..settings.checks {
        let object = api.insert(check(i, settings.interval, &kamailio, &nginx, &coturn));
        let name = format!("check-{i}");
        let uid = object["metadata"]["uid"].as_str().map(str::to_owned);
        shards.insert(
            name.clone(),
            shard_of(uid.as_deref(), &CheckId::new(NAMESPACE, &name)),
        );
    }

    let started = Instant::now();
    let mut replicas: Vec<Replica> = (0..settings.replicas)
        .map(|i| Replica::start(i, &kubeconfig, dir.path()))
        .collect();
    // Each look scrapes every replica's /metrics (large at 10,000 checks): once a second.
    let second = Duration::from_secs(1);
    wait_until(
        "the checks spread over the replicas",
        settings.settle,
        second,
        || {
            api.clear_log();
            let held = holders(&api);
            let scheduled: f64 = replicas
                .iter()
                .map(|r| gauge(&r.metrics(), "voipcheck_checks"))
                .sum();
            held.iter().all(Option::is_some) && scheduled == settings.checks as f64
        },
    );
    println!(
        "checks {}  replicas {}  interval {}s  shards {SHARDS}  spread after {:.1} s",
        settings.checks,
        settings.replicas,
        settings.interval,
        started.elapsed().as_secs_f64()
    );
    // One interval more: every check has made its first run and written its first status.
    std::thread::sleep(Duration::from_secs(settings.interval));

    // The first runs (every check's first status and Events at once) make a peak of their own:
    // it is read here, and the window's peak apart from it.
    // Each replica's rates are over its own span between its two scrapes, which are seconds
    // apart from the other replicas' at 10,000 checks each: the window alone would count those
    // seconds' runs as the window's.
    let before: Vec<(String, Duration, f64, Instant)> = replicas
        .iter()
        .map(|r| {
            let start_peak = r.peak_rss_and_reset();
            let metrics = r.metrics();
            (
                metrics,
                process_cpu_time(r.daemon.id()),
                start_peak,
                Instant::now(),
            )
        })
        .collect();
    let window = Instant::now();
    let measured = Duration::from_secs(settings.seconds);
    while window.elapsed() < measured {
        api.clear_log();
        std::thread::sleep(Duration::from_secs(1));
    }
    let elapsed = window.elapsed();
    let held = holders(&api);
    let mut runs_per_second = 0.0;
    for (replica, (before, cpu_before, start_peak, since)) in replicas.iter().zip(&before) {
        let after = replica.metrics();
        let span = since.elapsed();
        let figures = measure(replica, before, &after, *cpu_before);
        runs_per_second += figures.runs / span.as_secs_f64();
        let probes = figures.runs * PROBES_PER_RUN;
        let shards_held = held
            .iter()
            .filter(|h| h.as_deref() == Some(replica.identity.as_str()))
            .count();
        println!(
            "{}: shards {shards_held}  checks {}  runs {}  probes/s {:.1}",
            replica.identity,
            gauge(&after, "voipcheck_checks"),
            figures.runs,
            probes / span.as_secs_f64()
        );
        println!(
            "  RSS (MiB) peak over window   {:>10.1}   (target <= 200 MiB per replica; now {:.1}, peak before the window {:.1})",
            process_rss_mib(replica.daemon.id(), Rss::Peak),
            process_rss_mib(replica.daemon.id(), Rss::Now),
            start_peak
        );
        println!(
            "  schedule lag p50 / p99 (ms)  {:>10.3} / {:.3}   (target p99 <= 5 ms)",
            quantile(&figures.lag, 0.5) * 1000.0,
            quantile(&figures.lag, 0.99) * 1000.0
        );
        println!(
            "  CPU s per 1,000 probes       {:>10.3}   (CPU {:.2} s, {:.0} % of one core)",
            figures.cpu.as_secs_f64() * 1000.0 / probes.max(1.0),
            figures.cpu.as_secs_f64(),
            100.0 * figures.cpu.as_secs_f64() / span.as_secs_f64()
        );
    }
    println!(
        "runs/s achieved / needed     {:>10.1} / {:.1}   (over {:.1} s)",
        runs_per_second,
        settings.checks as f64 / settings.interval as f64,
        elapsed.as_secs_f64()
    );

    if replicas.len() < 2 {
        return;
    }
    // SIGKILL the first replica: nothing is released, its Leases expire.
    let victim = replicas.remove(0);
    let moved: BTreeSet<&String> = shards
        .iter()
        .filter(|(_, shard)| held[**shard].as_deref() == Some(victim.identity.as_str()))
        .map(|(name, _)| name)
        .collect();
    let mut victim = victim;
    let killed_at = Timestamp::now();
    victim.kill();
    let survivors: BTreeSet<&str> = replicas.iter().map(|r| r.identity.as_str()).collect();
    let within = LEASE_DURATION * 4 + Duration::from_secs(settings.interval * 2);
    let taken = wait_until(
        "the killed replica's shards taken over",
        within,
        Duration::from_millis(100),
        || {
            api.clear_log();
            holders(&api)
                .iter()
                .all(|h| h.as_deref().is_some_and(|h| survivors.contains(h)))
        },
    );
    let mut waiting = moved.clone();
    let resumed = taken
        + wait_until("the moved checks run again", within, second, || {
            api.clear_log();
            waiting.retain(|name| {
                let status = api.status(NAMESPACE, name);
                status
                    .as_ref()
                    .and_then(last_run)
                    .is_none_or(|t| t < killed_at)
            });
            waiting.is_empty()
        });
    let target = LEASE_DURATION + Duration::from_secs(settings.interval);
    println!(
        "after a SIGKILL of {} ({} checks): shards taken over in {:.1} s, every check run again in {:.1} s   (target <= {:.0} s: lease duration + one interval)",
        victim.identity,
        moved.len(),
        taken.as_secs_f64(),
        resumed.as_secs_f64(),
        target.as_secs_f64()
    );
    for replica in &replicas {
        let text = replica.metrics();
        println!(
            "  {}: shards {}  checks {}  RSS peak since the window {:.1} MiB, now {:.1} MiB",
            replica.identity,
            gauge(&text, "voipcheck_shards_held"),
            gauge(&text, "voipcheck_checks"),
            process_rss_mib(replica.daemon.id(), Rss::Peak),
            process_rss_mib(replica.daemon.id(), Rss::Now)
        );
    }
}
