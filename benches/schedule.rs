//! The scheduler under load (DESIGN.md §7): N checks at a 30 s interval, each with SIP OPTIONS,
//! STUN and HTTP, against the test peers (Kamailio, coturn, nginx) on loopback, on one thread
//! as `voipcheck run` runs. Prints probes/s, schedule lag (p50/p99 from the exported histogram),
//! CPU seconds per 1,000 probes (getrusage of this process only: the peers are other
//! processes) and peak RSS (VmHWM).
//!
//!   cargo bench --bench schedule -- --checks 10000 --seconds 65
//!
//! Then, as DESIGN.md §7 asks, CPU per HTTP probe next to the peer tool: `--http-probes K`
//! sequential probes of the same nginx page by voipcheck's HTTP probe (this process's CPU) and
//! by Debian's prometheus-blackbox-exporter (its process's CPU, from /proc, serving `/probe`
//! as Prometheus would scrape it). 0 skips the comparison.
//!
//! Figures, not a pass/fail test: DESIGN.md's targets are printed next to them.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};
use support::coturn::Coturn;
use support::kamailio::Kamailio;
use support::nginx::Nginx;
use voipcheck::api::VoipCheckSpec;
use voipcheck::check::{self, AllowList, CheckId, StaticSecrets};
use voipcheck::metrics::Metrics;
use voipcheck::probe::dns::Dns;
use voipcheck::schedule::{CheckEntry, Outbox, Scheduler};

/// Probes per check run: SIP OPTIONS, STUN, HTTP.
const PROBES_PER_RUN: u64 = 3;

struct Settings {
    checks: usize,
    seconds: u64,
    max_concurrent: usize,
    http_probes: u32,
}

impl Settings {
    /// `--checks N`, `--seconds S`, `--max-concurrent M`, `--http-probes K`. Without cargo's
    /// `--bench` (i.e. under `cargo test --all-targets`) a short smoke run keeps the benchmark
    /// working without spending a minute of the test suite on it.
    fn from_args() -> Settings {
        let args: Vec<String> = std::env::args().collect();
        let mut settings = if args.iter().any(|a| a == "--bench") {
            Settings {
                checks: 1000,
                seconds: 65,
                max_concurrent: 200,
                http_probes: 2000,
            }
        } else {
            Settings {
                checks: 300,
                seconds: 2,
                max_concurrent: 200,
                http_probes: 50,
            }
        };
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
                "--http-probes" => settings.http_probes = value() as u32,
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

/// CPU time (user + system) of process `pid`, from /proc/<pid>/stat (clock ticks of 10 ms).
fn process_cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the peer's stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// CPU seconds per 1,000 HTTP probes of `url`: voipcheck's probe, then blackbox_exporter's.
async fn compare_http_cpu(url: &url::Url, probes: u32) -> (f64, f64) {
    use voipcheck::probe::{Outcome, http};
    let dns = Dns::system().expect("system resolver");
    let mut config = http::HttpConfig::new(url.clone());
    config.timeout = Duration::from_secs(5);
    let before = cpu_time();
    for _ in 0..probes {
        let outcome = http::probe(&dns, &config).await.expect("a valid config");
        assert!(outcome.failure().is_none(), "{:?}", outcome.failure());
    }
    let ours = (cpu_time() - before).as_secs_f64();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("blackbox.yml");
    std::fs::write(
        &config,
        "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n",
    )
    .unwrap();
    let port = support::free_port();
    let mut command =
        std::process::Command::new(support::require_program("prometheus-blackbox-exporter"));
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=error");
    let log = dir.path().join("blackbox.log");
    let mut blackbox = support::Daemon::spawn("blackbox_exporter", command, &log);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    blackbox.wait_for_tcp(addr);
    let pid = blackbox.id();
    let request =
        format!("GET /probe?module=http_2xx&target={url} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let before = process_cpu_time(pid);
    for _ in 0..probes {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.contains("probe_success 1"), "{response}");
    }
    let theirs = (process_cpu_time(pid) - before).as_secs_f64();
    let per_thousand = |cpu: f64| cpu * 1000.0 / f64::from(probes.max(1));
    (per_thousand(ours), per_thousand(theirs))
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
        let outbox = Arc::new(Outbox::new());
        let scheduler = Scheduler::new(
            Dns::system().expect("system resolver"),
            metrics.clone(),
            settings.max_concurrent,
            outbox.clone(),
        );
        let (secrets, allow) = (StaticSecrets::new(), AllowList::default());
        let cpu_before = cpu_time();
        let started = Instant::now();
        for i in 0..settings.checks {
            let id = CheckId::new("bench", format!("check-{i}"));
            let plan = check::plan(&id, &spec, &secrets, &allow).expect("a plan");
            scheduler.upsert(CheckEntry {
                id,
                uid: None,
                generation: None,
                spec: Some(Arc::clone(&spec)),
                plan: Ok(plan),
                previous: None,
            });
        }
        // Taken as soon as they arrive, so no status of a check (30 s apart) is replaced by
        // the next one and every run is counted.
        let counter = tokio::spawn({
            let outbox = outbox.clone();
            async move {
                let (mut runs, mut failed) = (0u64, 0u64);
                while let Some(updates) = outbox.take().await {
                    for update in updates {
                        runs += 1;
                        let probes = update.status.last_run.iter().flat_map(|run| &run.probes);
                        failed += probes.filter(|probe| !probe.success).count() as u64;
                    }
                }
                (runs, failed)
            }
        });
        tokio::time::sleep(Duration::from_secs(settings.seconds)).await;
        scheduler.shutdown().await;
        outbox.close();
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
        if settings.http_probes > 0 {
            let (ours, theirs) = compare_http_cpu(&nginx.http_url("/"), settings.http_probes).await;
            println!(
                "CPU s per 1,000 HTTP probes  {ours:>10.3}   blackbox_exporter {theirs:.3}   ({} sequential probes of the same page each)",
                settings.http_probes
            );
        }
    });
}
