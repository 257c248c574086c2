//! The scheduler under load (DESIGN.md §7): N checks at a 30 s interval, each with SIP OPTIONS,
//! STUN and HTTP, against the test peers (Kamailio, coturn, nginx) on loopback, on one thread
//! as `voipcheck run` runs. Prints probes/s, schedule lag (p50/p99 from the exported histogram),
//! CPU seconds per 1,000 probes (getrusage of this process only: the peers are other
//! processes) and peak RSS (VmHWM).
//!
//!   cargo bench --bench schedule -- --checks 10000 --seconds 65
//!
//! Meanwhile /metrics is scraped every `--scrape-every` seconds (15) over HTTP with
//! `Accept-Encoding: gzip`, as Prometheus scrapes it: CPU per scrape (this process's CPU during
//! the scrape less the probing thread's, i.e. the encode and compression on their thread),
//! RSS during scrapes (VmHWM, reset before each), the compressed size, and how long the
//! probing thread's timers overslept during scrapes.
//!
//! Then the all-timeouts case: the same number of checks against black-holed peers (a UDP
//! socket that never answers SIP or STUN, a TCP listener that accepts and never answers HTTP),
//! each run waiting its timeout (10 s): runs per second achieved against the checks/interval
//! needed, and the interval each check effectively gets.
//!
//! Then, as DESIGN.md §7 asks, CPU per HTTP probe next to the peer tool: `--http-probes K`
//! sequential probes of the same nginx page by voipcheck's HTTP probe (this process's CPU) and
//! by Debian's prometheus-blackbox-exporter (its process's CPU, from /proc, serving `/probe`
//! as Prometheus would scrape it). 0 skips the comparison.
//!
//! Figures, not a pass/fail test: DESIGN.md's targets are printed next to them.

mod figures;
#[path = "../tests/support/mod.rs"]
mod support;

use figures::{histogram_buckets, process_cpu_time, quantile};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::coturn::Coturn;
use support::kamailio::Kamailio;
use support::nginx::Nginx;
use voipcheck::api::VoipCheckSpec;
use voipcheck::check::{self, AllowList, CheckId, StaticSecrets};
use voipcheck::metrics::{Health, Metrics};
use voipcheck::probe::dns::Dns;
use voipcheck::schedule::{self, CheckEntry, Outbox, Scheduler};

/// Probes per check run: SIP OPTIONS, STUN, HTTP.
const PROBES_PER_RUN: u64 = 3;

struct Settings {
    checks: usize,
    seconds: u64,
    max_concurrent: usize,
    http_probes: u32,
    scrape_every: u64,
    /// The all-timeouts case: its checks' interval and timeout, and how long it runs.
    blackhole_interval: u64,
    blackhole_timeout: u64,
    blackhole_seconds: u64,
}

impl Settings {
    /// `--checks N`, `--seconds S`, `--max-concurrent M`, `--http-probes K`,
    /// `--scrape-every S`, `--blackhole-seconds S` (0 skips the all-timeouts case). Without cargo's
    /// `--bench` (i.e. under `cargo test --all-targets`) a short smoke run keeps the benchmark
    /// working without spending a minute of the test suite on it.
    fn from_args() -> Settings {
        let args: Vec<String> = std::env::args().collect();
        let mut settings = if args.iter().any(|a| a == "--bench") {
            Settings {
                checks: 1000,
                seconds: 65,
                max_concurrent: schedule::probe_budget(schedule::open_files_limit()),
                http_probes: 2000,
                scrape_every: 15,
                blackhole_interval: 30,
                blackhole_timeout: 10,
                blackhole_seconds: 65,
            }
        } else {
            Settings {
                checks: 300,
                seconds: 2,
                max_concurrent: schedule::probe_budget(schedule::open_files_limit()),
                http_probes: 50,
                scrape_every: 1,
                blackhole_interval: 5,
                blackhole_timeout: 1,
                blackhole_seconds: 3,
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
                "--scrape-every" => settings.scrape_every = value() as u64,
                "--blackhole-seconds" => settings.blackhole_seconds = value() as u64,
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
    rusage(libc::RUSAGE_SELF)
}

/// User and system CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    rusage(libc::RUSAGE_THREAD)
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage writes into the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Resets VmHWM to the current RSS (Linux' clear_refs 5), so the next reading is the peak
/// since now.
fn reset_peak_rss() {
    // Without it (an old kernel) the reading is the peak since start: higher, never lower.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size in MiB (VmHWM).
fn peak_rss_mib() -> f64 {
    figures::process_rss_mib(std::process::id(), figures::Rss::Peak)
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

/// The figures of one scrape.
struct Scrape {
    /// This process's CPU during the scrape less the probing thread's.
    cpu: Duration,
    /// VmHWM at the end of the scrape, reset at its start.
    rss_mib: f64,
    /// The gzip-compressed body.
    bytes: usize,
    took: Duration,
    /// The longest a 1 ms timer of the probing thread overslept during the scrape.
    stall: Duration,
}

/// GETs /metrics from `addr` as Prometheus does (gzip accepted), from a task of the probing
/// thread, and measures it.
async fn scrape(addr: std::net::SocketAddr) -> Scrape {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    reset_peak_rss();
    let (process_before, thread_before) = (cpu_time(), thread_cpu_time());
    let started = Instant::now();
    let done = AtomicBool::new(false);
    let request = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // HTTP/1.0: the body ends with the connection, no chunked framing to decode.
        let request = "GET /metrics HTTP/1.0\r\nHost: bench\r\nAccept-Encoding: gzip\r\n\r\n";
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("receive");
        done.store(true, Ordering::Relaxed);
        response
    };
    let stalls = async {
        let mut longest = Duration::ZERO;
        while !done.load(Ordering::Relaxed) {
            let before = Instant::now();
            tokio::time::sleep(Duration::from_millis(1)).await;
            longest = longest.max(before.elapsed().saturating_sub(Duration::from_millis(1)));
        }
        longest
    };
    let (response, stall) = tokio::join!(request, stalls);
    let took = started.elapsed();
    let cpu = (cpu_time() - process_before).saturating_sub(thread_cpu_time() - thread_before);
    let head = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head_text = String::from_utf8_lossy(&response[..head]);
    assert!(head_text.contains("content-encoding: gzip"), "{head_text}");
    Scrape {
        cpu,
        rss_mib: peak_rss_mib(),
        bytes: response.len() - head - 4,
        took,
        stall,
    }
}

/// Scrapes `addr` every `every` until `stop` is set; the overall peak RSS is kept in `peak`
/// (each scrape resets VmHWM).
async fn scrape_every(
    addr: std::net::SocketAddr,
    every: Duration,
    stop: Arc<AtomicBool>,
    peak: Arc<std::sync::Mutex<f64>>,
) -> Vec<Scrape> {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut scrapes = Vec::new();
    loop {
        ticks.tick().await;
        if stop.load(Ordering::Relaxed) {
            return scrapes;
        }
        {
            let mut peak = peak.lock().unwrap();
            *peak = peak.max(peak_rss_mib());
        }
        scrapes.push(scrape(addr).await);
    }
}

/// Checks of `spec` as `bench/check-<i>`, scheduled; the returned counter counts their runs as
/// their statuses arrive (taken at once, so none is replaced by a newer one).
fn schedule(
    scheduler: &Scheduler,
    outbox: &Arc<Outbox>,
    spec: &Arc<VoipCheckSpec>,
    checks: usize,
) -> (Arc<AtomicU64>, tokio::task::JoinHandle<u64>) {
    let (secrets, allow) = (StaticSecrets::new(), AllowList::default());
    for i in 0..checks {
        let id = CheckId::new("bench", format!("check-{i}"));
        let plan = check::plan(&id, spec, &secrets, &allow).expect("a plan");
        scheduler.upsert(CheckEntry {
            id,
            uid: None,
            generation: None,
            spec: Some(Arc::clone(spec)),
            plan: Ok(plan),
            previous: None,
        });
    }
    let runs = Arc::new(AtomicU64::new(0));
    let failed = tokio::spawn({
        let (outbox, runs) = (outbox.clone(), runs.clone());
        async move {
            let mut failed = 0u64;
            while let Some(updates) = outbox.take().await {
                for update in updates {
                    runs.fetch_add(1, Ordering::Relaxed);
                    let probes = update.status.last_run.iter().flat_map(|run| &run.probes);
                    failed += probes.filter(|probe| !probe.success).count() as u64;
                }
            }
            failed
        }
    });
    (runs, failed)
}

/// The p50 and p99 schedule lag in ms from `metrics`.
fn lag_ms(metrics: &Metrics) -> (f64, f64) {
    let text = metrics.encode();
    let buckets = histogram_buckets(&text, "voipcheck_schedule_lag_seconds");
    let lag = |q| quantile(&buckets, q) * 1000.0;
    (lag(0.5), lag(0.99))
}

/// CPU of one gzip encode on a thread of its own, as the server's encoding thread does it
/// (its level and buffer) without the HTTP around it: a scrape's cost with nothing else in it.
fn encode_cpu(metrics: &Metrics) -> Duration {
    let metrics = metrics.clone();
    std::thread::spawn(move || {
        let before = thread_cpu_time();
        let gzip = flate2::write::GzEncoder::new(std::io::sink(), flate2::Compression::fast());
        let mut gzip = std::io::BufWriter::with_capacity(64 * 1024, gzip);
        metrics.encode_to(&mut gzip).expect("encode");
        let gzip = gzip
            .into_inner()
            .map_err(|e| e.into_error())
            .expect("flushed");
        gzip.finish().expect("compressed");
        thread_cpu_time() - before
    })
    .join()
    .expect("the encoding thread")
}

/// A scheduler on the real probes with the run's budget, and the outbox its runs fill.
fn scheduler(settings: &Settings, metrics: &Metrics) -> (Scheduler, Arc<Outbox>) {
    let outbox = Arc::new(Outbox::new());
    let scheduler = Scheduler::new(
        Dns::system().expect("system resolver"),
        metrics.clone(),
        settings.max_concurrent,
        outbox.clone(),
    );
    (scheduler, outbox)
}

/// The normal case: every peer answers, /metrics is scraped every `--scrape-every` seconds.
async fn normal_case(settings: &Settings, spec: Arc<VoipCheckSpec>) {
    let metrics = Metrics::new("bench");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(voipcheck::metrics::serve_on(
        listener,
        metrics.clone(),
        Health::default(),
        std::future::pending(),
    ));
    let (scheduler, outbox) = scheduler(settings, &metrics);
    let cpu_before = cpu_time();
    let started = Instant::now();
    let (runs, failed) = schedule(&scheduler, &outbox, &spec, settings.checks);
    let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::default());
    let scrapes = tokio::spawn(scrape_every(
        addr,
        Duration::from_secs(settings.scrape_every),
        stop.clone(),
        Arc::clone(&peak),
    ));
    tokio::time::sleep(Duration::from_secs(settings.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    scheduler.shutdown().await;
    outbox.close();
    let elapsed = started.elapsed();
    let cpu = cpu_time() - cpu_before;
    let (runs, failed) = (runs.load(Ordering::Relaxed), failed.await.unwrap());
    let scrapes = scrapes.await.unwrap();
    let peak_rss = peak.lock().unwrap().max(peak_rss_mib());
    let rss_now = figures::process_rss_mib(std::process::id(), figures::Rss::Now);
    let probes = runs * PROBES_PER_RUN;
    let (p50, p99) = lag_ms(&metrics);

    println!(
        "checks {}  interval 30s  ran {:.1} s  max concurrent probes {}",
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
        "schedule lag p50 / p99 (ms)  {p50:>10.3} / {p99:.3}   (target p99 <= 5 ms, while scraped every {} s)",
        settings.scrape_every
    );
    println!(
        "CPU s per 1,000 probes       {:>10.3}   (CPU {:.2} s, {:.0} % of one core, scrapes included)",
        cpu.as_secs_f64() * 1000.0 / probes.max(1) as f64,
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64()
    );
    println!(
        "peak RSS (MiB)               {peak_rss:>10.1}   (target <= 200 MiB at 10,000 checks; {rss_now:.1} at the end)"
    );
    let max = |f: fn(&Scrape) -> f64| scrapes.iter().map(f).fold(f64::NAN, f64::max);
    println!(
        "scrapes (gzip, over HTTP)    {:>10}   every {} s",
        scrapes.len(),
        settings.scrape_every
    );
    println!(
        "CPU per scrape max (s)       {:>10.3}   (target <= 0.15 s; each: {})",
        max(|s| s.cpu.as_secs_f64()),
        scrapes
            .iter()
            .map(|s| format!("{:.3}", s.cpu.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "RSS max during scrapes (MiB) {:>10.1}   (target <= 150 MiB)",
        max(|s| s.rss_mib)
    );
    println!(
        "scrape wall time max (s)     {:>10.3}   gzip body max {:.2} MiB",
        max(|s| s.took.as_secs_f64()),
        max(|s| s.bytes as f64) / (1024.0 * 1024.0)
    );
    println!(
        "probing thread stall in scrapes {:>7.3} ms max   (a 1 ms timer's oversleep; runs due meanwhile start this late)",
        max(|s| s.stall.as_secs_f64()) * 1000.0
    );
    println!(
        "one gzip encode, own thread  {:>10.3} s CPU   (target <= 0.15 s; after the run, no probing)",
        encode_cpu(&metrics).as_secs_f64()
    );
    let encode_started = Instant::now();
    let text = metrics.encode();
    println!(
        "one plain encode             {:>10.1} MiB text, {} lines, {:.3} s wall",
        text.len() as f64 / (1024.0 * 1024.0),
        text.lines().count(),
        encode_started.elapsed().as_secs_f64()
    );
}

/// Peers that never answer: a UDP socket (SIP, STUN) that is never read and a TCP listener
/// (HTTP) that accepts and reads but never writes, on a thread of their own.
struct BlackHole {
    udp: std::net::SocketAddr,
    tcp: std::net::SocketAddr,
    _socket: std::net::UdpSocket,
}

impl BlackHole {
    fn start() -> BlackHole {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (udp, tcp) = (socket.local_addr().unwrap(), listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((mut stream, _)) = listener.accept().await {
                    // Read (so a closed connection is noticed and its socket freed), never answer.
                    tokio::spawn(async move {
                        let mut sink = tokio::io::sink();
                        let _ = tokio::io::copy(&mut stream, &mut sink).await;
                    });
                }
            });
        });
        BlackHole {
            udp,
            tcp,
            _socket: socket,
        }
    }
}

/// Every peer stops answering: each run waits its whole timeout. Needed: checks / interval
/// runs per second.
async fn blackhole_case(settings: &Settings) {
    let hole = BlackHole::start();
    let timeout = settings.blackhole_timeout;
    let interval = settings.blackhole_interval;
    let spec: Arc<VoipCheckSpec> = Arc::new(
        serde_json::from_value(serde_json::json!({
            "target": { "kind": "Cloud", "name": "bench.localhost" },
            "interval": format!("{interval}s"),
            "timeout": format!("{timeout}s"),
            "sip": {
                "server": format!("sip:{};transport=udp", hole.udp),
                "options": { "laggedThreshold": format!("{}ms", timeout * 1000 / 2) }
            },
            "http": [ { "name": "web-ui", "url": format!("http://{}/", hole.tcp) } ],
            "stun": { "servers": [ hole.udp.to_string() ] }
        }))
        .expect("a valid spec"),
    );
    let metrics = Metrics::new("bench");
    let (scheduler, outbox) = scheduler(settings, &metrics);
    let (runs, failed) = schedule(&scheduler, &outbox, &spec, settings.checks);
    // Runs end a timeout after they start: from then on they end at the rate they start.
    let warmup = Duration::from_secs(timeout);
    tokio::time::sleep(warmup).await;
    let (counted_from, runs_before) = (Instant::now(), runs.load(Ordering::Relaxed));
    let rest = Duration::from_secs(settings.blackhole_seconds).saturating_sub(warmup);
    tokio::time::sleep(rest).await;
    let window = counted_from.elapsed();
    let counted = runs.load(Ordering::Relaxed) - runs_before;
    scheduler.shutdown().await;
    outbox.close();
    let failed = failed.await.unwrap();
    let (p50, p99) = lag_ms(&metrics);
    let achieved = counted as f64 / window.as_secs_f64();
    let needed = settings.checks as f64 / interval as f64;
    println!(
        "all timeouts: checks {}  interval {interval}s  timeout {timeout}s  max concurrent probes {}  counted {:.1} s after {timeout} s",
        settings.checks,
        settings.max_concurrent,
        window.as_secs_f64()
    );
    println!(
        "runs/s achieved / needed     {achieved:>10.1} / {needed:.1}   (target: the needed rate; {counted} runs, failed probes {failed})"
    );
    println!(
        "effective interval per check {:>10.1} s   (target {interval} s)",
        settings.checks as f64 / achieved.max(f64::MIN_POSITIVE)
    );
    println!("schedule lag p50 / p99 (ms)  {p50:>10.3} / {p99:.3}   (target p99 <= 5 ms)");
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
        normal_case(&settings, spec).await;
        if settings.blackhole_seconds > 0 {
            blackhole_case(&settings).await;
        }
        if settings.http_probes > 0 {
            let (ours, theirs) = compare_http_cpu(&nginx.http_url("/"), settings.http_probes).await;
            println!(
                "CPU s per 1,000 HTTP probes  {ours:>10.3}   blackbox_exporter {theirs:.3}   ({} sequential probes of the same page each)",
                settings.http_probes
            );
        }
    });
}
