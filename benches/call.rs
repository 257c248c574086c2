//! The media of test calls under load (issue 9): N probe legs at once, each sending 20 ms
//! G.711 RTP for S seconds to a UDP echo (what SIPp's `-rtp_echo` does) on loopback, on one
//! thread as `voipcheck run` runs. Prints the probe's own send-timer accuracy (each packet's
//! deviation from its 20 ms schedule: p50/p99/max; target p99 ≤ 1 ms, the jitter the probe
//! itself adds), the CPU time per call (getrusage of the legs' thread; the echo runs on its
//! own thread and is not counted) and the concurrent calls of that length one core sustains.
//! The legs run once started all in the same instant and once spread over a 20 ms period.
//!
//!   cargo bench --bench call -- --legs 100 --seconds 5
//!
//! Figures, not a pass/fail test: the targets are printed next to them.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use support::relay::Echo;
use tokio::time::Instant;
use voipcheck::probe::media::{Codec, Leg, LegReport, MediaConfig, Mos, PTIME};

/// The target of issue 9 for the probe's own timer: p99 ≤ 1 ms.
const TARGET_P99: Duration = Duration::from_millis(1);

struct Settings {
    /// Leg counts to run, one case each.
    legs: Vec<usize>,
    seconds: f64,
}

impl Settings {
    /// `--legs N` (adds a case after the single leg), `--seconds S`. Without cargo's `--bench`
    /// (under `cargo test --all-targets`) a short smoke run keeps the benchmark working.
    fn from_args() -> Settings {
        let args: Vec<String> = std::env::args().collect();
        let bench = args.iter().any(|a| a == "--bench");
        let mut settings = Settings {
            legs: vec![1, if bench { 100 } else { 10 }],
            seconds: if bench { 5.0 } else { 0.3 },
        };
        for pair in args.windows(2) {
            let value = || {
                pair[1]
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("{} needs a number", pair[0]))
            };
            match pair[0].as_str() {
                "--legs" => settings.legs = vec![1, value() as usize],
                "--seconds" => settings.seconds = value(),
                _ => {}
            }
        }
        settings
    }
}

/// User and system CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// How late each packet went out against its schedule (packet `n` due at `n × 20 ms` after
/// the leg started).
fn deviations(reports: &[LegReport]) -> Vec<Duration> {
    let mut all: Vec<Duration> = reports
        .iter()
        .flat_map(|r| {
            r.send_times
                .iter()
                .enumerate()
                .map(|(n, &at)| at.abs_diff(PTIME * n as u32))
        })
        .collect();
    all.sort_unstable();
    all
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Runs `legs` legs at once against the echo; prints timer accuracy and CPU. `staggered`
/// starts them spread over one 20 ms period, as independent calls start; otherwise all in the
/// same instant, the worst case for a single thread (every leg's packet is due together).
async fn case(echo: &Echo, legs: usize, seconds: f64, staggered: bool) {
    let cfg = config(Duration::from_secs_f64(seconds));
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let bound: Vec<Leg> = (0..legs)
        .map(|_| Leg::bind(ip).expect("bind a leg"))
        .collect();
    let until = Instant::now() + cfg.duration + Duration::from_secs(5);
    let cpu_before = thread_cpu_time();
    let wall = Instant::now();
    let reports =
        futures::future::join_all(bound.into_iter().map(|leg| leg.run(echo.addr, &cfg, until)))
            .await;
    let cpu = thread_cpu_time() - cpu_before;
    let wall = wall.elapsed();
    let sent: u32 = reports.iter().map(|r| r.sent).sum();
    let echoed: u32 = reports.iter().map(|r| r.reception.received()).sum();
    let late = deviations(&reports);
    let p99 = quantile(&late, 0.99);
    let per_call = cpu / legs as u32;
    // A core runs a call's worth of work in `per_call`; a call lasts the media's duration.
    let sustained = cfg.duration.as_secs_f64() / per_call.as_secs_f64().max(1e-9);
    let start = if staggered { "staggered" } else { "together" };
    println!(
        "{legs:>4} legs × {seconds} s, started {start}: send timer p50 {}  p99 {} (target ≤ {})  max {}  | {sent} packets sent, {echoed} echoed | wall {:.2} s",
        ms(quantile(&late, 0.5)),
        ms(p99),
        ms(TARGET_P99),
        ms(quantile(&late, 1.0)),
        wall.as_secs_f64(),
    );
    println!(
        "{legs:>4} legs × {seconds} s, started {start}: CPU {} per call ({:.2}% of a core per call) → one core sustains ≈ {sustained:.0} concurrent calls of {seconds} s",
        ms(per_call),
        100.0 * per_call.as_secs_f64() / cfg.duration.as_secs_f64(),
    );
}

fn config(duration: Duration) -> MediaConfig {
    MediaConfig {
        duration,
        codec: Codec::Pcma,
        mos_threshold: Mos::DEFAULT_THRESHOLD,
    }
}

/// /proc/loadavg's 1-, 5- and 15-minute averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// One 200 ms leg against the echo, its figures discarded.
async fn case_quietly(echo: &Echo) {
    let cfg = config(Duration::from_millis(200));
    let leg = Leg::bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("bind a leg");
    leg.run(echo.addr, &cfg, Instant::now() + Duration::from_secs(2))
        .await;
}

fn main() {
    let settings = Settings::from_args();
    // The echo on its own thread and runtime: its CPU is not the probe's.
    let echo_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for the echo");
    let echo = echo_runtime.block_on(Echo::start(IpAddr::V4(Ipv4Addr::LOCALHOST), false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the legs");
    println!(
        "load average before: {} (2 cores shared with other work inflate the figures)",
        load_average()
    );
    runtime.block_on(async {
        // A short leg first: the tone tables, the runtime and the sockets warm up uncounted.
        case_quietly(&echo).await;
        for &legs in &settings.legs {
            case(&echo, legs, settings.seconds, false).await;
            if legs > 1 {
                case(&echo, legs, settings.seconds, true).await;
            }
        }
    });
    drop(echo_runtime);
}
