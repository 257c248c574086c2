//! The scheduler under load (DESIGN.md §7): N checks at a 30 s interval, each with SIP OPTIONS,
//! STUN and HTTP, against the test peers (Kamailio, coturn, nginx) on loopback, on one thread
//! as `voipcheck run` runs. Prints probes/s, schedule lag (p50/p99 from the exported histogram),
//! CPU seconds per 1,000 probes (getrusage of this process only: the peers are other
//! processes) and peak RSS (VmHWM).
//!
//!   cargo bench --bench schedule -- --checks 10000 --seconds 65
//!
//! Figures, not a pass/fail test: DESIGN.md's targets are printed next to them.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};
use support::coturn::Coturn;
use support::kamailio::Kamailio;
use support::nginx::Nginx;
use tokio::sync::mpsc;
use voipcheck::api::VoipCheckSpec;
use voipcheck::check::{self, AllowList, CheckId, StaticSecrets};
use voipcheck::metrics::Metrics;
use voipcheck::probe::dns::Dns;
use voipcheck::schedule::{CheckEntry, Scheduler};

/// Probes per check run: SIP OPTIONS, STUN, HTTP.
const PROBES_PER_RUN: u64 = 3;

struct Settings {
    checks: usize,
    seconds: u64,
    max_concurrent: usize,
}

impl Settings {
    /// `--checks N`, `--seconds S`, `--max-concurrent M`; anything else (cargo's `--bench`) is
    /// ignored.
    fn from_args() -> Settings {
        let mut settings = Settings {
            checks: 1000,
            seconds: 65,
            max_concurrent: 200,
        };
        let args: Vec<String> = std::env::args().collect();
        for pair in args.windows(2) {
            let value = || {
                pair[1]
                    .parse()
                    .unwrap_or_else(|_| panic!("{} needs a number", pair[0]))
            };
            match pair[0].as_str() {
                "--checks" => settings.checks = value(),
                "--seconds" => settings.seconds = value() as u64,
                "--max-concurrent" => settings.max_concurrent = value(),
                _ => {}
            }
        }
        settings
    }
}

fn spec(kamailio: &Kamailio, nginx: &Nginx, coturn: &Coturn) -> VoipCheckSpec {
    serde_json::from_value(serde_json::json!({
        "target": { "kind": "Cloud", "name": "bench.localhost" },
        "interval": "30s",
        "timeout": "5s",
        "sip": { "server": kamailio.uri("udp"), "options": {} },
        "http": [ { "name": "web-ui", "url": nginx.http_url("/").as_str() } ],
        "stun": { "servers": [ coturn.server() ] }
    }))
    .expect("a valid spec")
}

/// User and system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Peak resident set size in MiB (VmHWM).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// The `q` quantile of a Prometheus histogram, interpolated within its bucket as PromQL's
/// histogram_quantile does.
fn histogram_quantile(text: &str, metric: &str, q: f64) -> f64 {
    let prefix = format!("{metric}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| {
            let le = line.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = line.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let Some(&(_, total)) = buckets.last() else {
        return f64::NAN;
    };
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in &buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let share = (rank - lower.1) / (count - lower.1).max(f64::MIN_POSITIVE);
            return lower.0 + (le - lower.0) * share;
        }
        lower = (le, count);
    }
    f64::NAN
}

fn main() {
    let settings = Settings::from_args();
    let kamailio = Kamailio::start();
    let nginx = Nginx::start();
    let coturn = Coturn::start();
    let spec = Arc::new(spec(&kamailio, &nginx, &coturn));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let metrics = Metrics::new("bench");
        let (updates, mut received) = mpsc::channel(1024);
        let scheduler = Scheduler::new(
            Dns::system().expect("system resolver"),
            metrics.clone(),
            settings.max_concurrent,
            updates,
        );
        let (secrets, allow) = (StaticSecrets::new(), AllowList::default());
        let cpu_before = cpu_time();
        let started = Instant::now();
        for i in 0..settings.checks {
            let id = CheckId::new("bench", format!("check-{i}"));
            let plan = check::plan(&id, &spec, &secrets, &allow).expect("a plan");
            scheduler.upsert(CheckEntry {
                id,
                generation: None,
                spec: Arc::clone(&spec),
                plan: Ok(plan),
                previous: None,
            });
        }
        let counter = tokio::spawn(async move {
            let (mut runs, mut failed) = (0u64, 0u64);
            while let Some(update) = received.recv().await {
                runs += 1;
                let probes = update.status.last_run.iter().flat_map(|run| &run.probes);
                failed += probes.filter(|probe| !probe.success).count() as u64;
            }
            (runs, failed)
        });
        tokio::time::sleep(Duration::from_secs(settings.seconds)).await;
        scheduler.shutdown().await;
        let elapsed = started.elapsed();
        let cpu = cpu_time() - cpu_before;
        let (runs, failed) = counter.await.unwrap();
        let probes = runs * PROBES_PER_RUN;
        let peak_before_scrape = peak_rss_mib();
        let scrape_started = Instant::now();
        let text = metrics.encode();
        let scrape_took = scrape_started.elapsed();
        let lag = |q| histogram_quantile(&text, "voipcheck_schedule_lag_seconds", q) * 1000.0;

        println!(
            "checks {}  interval 30s  ran {:.1} s  max concurrent runs {}",
            settings.checks,
            elapsed.as_secs_f64(),
            settings.max_concurrent
        );
        println!("runs {runs}  probes {probes}  failed probes {failed}");
        println!(
            "probes/s                     {:>10.1}",
            probes as f64 / elapsed.as_secs_f64()
        );
        println!(
            "schedule lag p50 / p99 (ms)  {:>10.3} / {:.3}   (target p99 <= 5 ms)",
            lag(0.5),
            lag(0.99)
        );
        println!(
            "CPU s per 1,000 probes       {:>10.3}   (CPU {:.2} s, {:.0} % of one core)",
            cpu.as_secs_f64() * 1000.0 / probes.max(1) as f64,
            cpu.as_secs_f64(),
            100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64()
        );
        println!(
            "peak RSS (MiB)               {:>10.1}   (target <= 200 MiB at 10,000 checks)",
            peak_before_scrape
        );
        println!(
            "one /metrics encode          {:>10.1} MiB text, {} lines, {:.2} s; peak RSS after it {:.1} MiB",
            text.len() as f64 / (1024.0 * 1024.0),
            text.lines().count(),
            scrape_took.as_secs_f64(),
            peak_rss_mib()
        );
    });
}
