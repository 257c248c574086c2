//! `voipcheck run -f` end to end: the real binary against the real peers (Kamailio, SIPp as its
//! echo service, nginx, coturn), reading examples/lab.yaml with the peers' ports filled in. An
//! outage of the registrar turns reportable after failureThreshold runs and recovers when a
//! registrar is back on the same port; so does an echo service that stops answering the lab's
//! test call; bad files are refused with their place; SIGHUP reloads.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::coturn::Coturn;
use support::free_port;
use support::kamailio::Kamailio;
use support::nginx::Nginx;
use support::sipp::Sipp;

/// The lab file's interval (the API's minimum).
const INTERVAL: Duration = Duration::from_secs(5);

/// A running `voipcheck run`, its output collected line by line. Stopped when dropped.
struct Voipcheck {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Voipcheck {
    fn start(args: &[&str]) -> Voipcheck {
        let mut child = Command::new(env!("CARGO_BIN_EXE_voipcheck"))
            .arg("run")
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start voipcheck run");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Voipcheck {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits for a stdout line containing every one of `parts`; returns it.
    fn wait_for(&mut self, parts: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .find(|line| parts.iter().all(|part| line.contains(part)))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("voipcheck exited with {status}:\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "no line with {parts:?} within {within:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for a stderr line containing `part`.
    fn wait_for_log(&mut self, part: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .find(|line| line.contains(part))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {part:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn output(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// SIGTERM, then the exit status (within 10 s).
    fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIGTERM:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Voipcheck {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(stream: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(line) => sink.lock().unwrap().push(line),
                Err(_) => break,
            }
        }
    });
    lines
}

/// examples/lab.yaml with the lab's fixed ports replaced by the running peers'.
fn lab_file(dir: &Path, kamailio: &Kamailio, nginx: &Nginx, coturn: &Coturn) -> PathBuf {
    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab.yaml");
    let mut text = std::fs::read_to_string(lab).unwrap();
    for (lab_port, port) in [
        ("127.0.0.1:25060", format!("127.0.0.1:{}", kamailio.port)),
        ("127.0.0.1:28080", format!("127.0.0.1:{}", nginx.http_port)),
        ("127.0.0.1:23478", coturn.server()),
    ] {
        assert!(
            text.contains(lab_port),
            "examples/lab.yaml lacks {lab_port}"
        );
        text = text.replace(lab_port, &port);
    }
    let path = dir.join("lab.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `voipcheck run` on the lab file for these peers (written into `dir`), serving /metrics on
/// the port returned.
fn run_lab(dir: &Path, kamailio: &Kamailio, nginx: &Nginx, coturn: &Coturn) -> (Voipcheck, u16) {
    let file = lab_file(dir, kamailio, nginx, coturn);
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let voipcheck = Voipcheck::start(&[
        "-f",
        file.to_str().unwrap(),
        "--metrics-addr",
        &metrics_addr,
    ]);
    (voipcheck, metrics_port)
}

/// The body of GET /metrics.
fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of `metric` for check `name` (any other labels).
fn gauge(metrics: &str, metric: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")))
        .find(|line| line.contains(&format!("name=\"{name}\"")))
        .and_then(|line| line.rsplit(' ').next())
        .map(|value| value.parse().unwrap())
}

/// A VoipCheck with one HTTP probe (and nothing else) of `url`.
fn http_check(name: &str, url: &str) -> String {
    format!(
        "apiVersion: voipcheck.io/v1alpha1
kind: VoipCheck
metadata: {{ name: {name} }}
spec:
  target: {{ kind: Portal, name: {name} }}
  interval: 5s
  timeout: 1s
  http:
    - {{ name: web, url: '{url}' }}
"
    )
}

/// The lab's echo service (scripts/lab start_echo): SIPp answering calls to Kamailio's number
/// `echo` and echoing their RTP.
fn echo_service() -> Sipp {
    let media_port = support::free_media_port().to_string();
    Sipp::start_with(
        "call-echo.xml",
        "127.0.0.1".parse().unwrap(),
        1000,
        &["-rtp_echo", "-mi", "127.0.0.1", "-mp", &media_port],
    )
}

/// The lab-call check's interval and failureThreshold (examples/lab.yaml).
const CALL_INTERVAL: Duration = Duration::from_secs(15);

#[test]
fn the_labs_test_call_is_answered_with_audio_and_a_dead_echo_service_turns_reportable() {
    let echo = echo_service();
    let kamailio = Kamailio::builder().echo(echo.addr).start();
    let nginx = Nginx::start();
    let coturn = Coturn::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut voipcheck, metrics_port) = run_lab(dir.path(), &kamailio, &nginx, &coturn);

    let first = 2 * CALL_INTERVAL + Duration::from_secs(5);
    voipcheck.wait_for(&["default/lab-call CallPossible True Answered"], first);
    voipcheck.wait_for(&["default/lab-call MediaQuality True Good"], first);
    voipcheck.wait_for(&["default/lab-call Ready True Healthy"], first);
    let metrics = scrape(metrics_port);
    let mos = metrics
        .lines()
        .find(|l| l.starts_with("voipcheck_call_mos{") && l.contains("name=\"lab-call\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(mos.is_some_and(|mos| mos >= 4.3), "{metrics}");

    // The echo service dies, the line stays registered: the call no longer gets through, and
    // after failureThreshold (2) runs that is the provider's outage.
    drop(echo);
    let outage = 3 * CALL_INTERVAL + Duration::from_secs(10);
    let failed = voipcheck.wait_for(&["default/lab-call CallPossible True→False"], outage);
    voipcheck.wait_for(
        &["default/lab-call HotlineReportable False→True ProviderOutage"],
        outage,
    );
    assert!(
        !voipcheck
            .output()
            .contains("default/lab-call SipRegistered True→False"),
        "{failed}\n{}",
        voipcheck.output()
    );
    let metrics = scrape(metrics_port);
    assert_eq!(
        gauge(&metrics, "voipcheck_hotline_reportable", "lab-call"),
        Some(1.0),
        "{metrics}"
    );
    let status = voipcheck.terminate();
    assert!(status.success(), "{status}:\n{}", voipcheck.output());
}

#[test]
fn an_outage_of_the_registrar_turns_reportable_and_recovers() {
    let mut kamailio = Kamailio::start();
    let nginx = Nginx::start();
    let coturn = Coturn::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut voipcheck, metrics_port) = run_lab(dir.path(), &kamailio, &nginx, &coturn);

    // The first run comes within one interval (its jittered slot): the cloud is Ready.
    let first = 2 * INTERVAL + Duration::from_secs(2);
    voipcheck.wait_for(&["default/lab SipRegistered True Registered"], first);
    voipcheck.wait_for(&["default/lab SipReachable True Reachable"], first);
    voipcheck.wait_for(&["default/lab WebReachable True Reachable"], first);
    voipcheck.wait_for(&["default/lab Ready True Healthy"], first);
    voipcheck.wait_for(&["default/lab HotlineReportable False Healthy"], first);
    // On loopback STUN maps only a private address: a problem of this location (the lab-nat
    // check, interval 15 s, threshold 1, a 10 s NAT binding wait), not reportable.
    let nat = Duration::from_secs(2 * 15 + 10 + 2);
    voipcheck.wait_for(
        &["default/lab-nat StunReachable", "False PrivateAddressOnly"],
        nat,
    );
    voipcheck.wait_for(
        &[
            "default/lab-nat HotlineReportable",
            "False",
            "LocalNetworkProblem",
        ],
        nat,
    );
    let metrics = scrape(metrics_port);
    assert_eq!(
        gauge(&metrics, "voipcheck_hotline_reportable", "lab"),
        Some(0.0),
        "{metrics}"
    );
    // Alone, its own verdict is the verdict across locations the pages read.
    assert_eq!(
        gauge(&metrics, "voipcheck_status_hotline_reportable", "lab"),
        Some(0.0),
        "{metrics}"
    );
    // The one process probing these checks holds its location: no VoipCheckShardsUnheld.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("voipcheck_leader{") && l.ends_with(" 1")),
        "{metrics}"
    );

    // The registrar goes away: after failureThreshold (2) failed runs, not after the first.
    kamailio.daemon.stop();
    let stopped = Instant::now();
    let outage = 3 * INTERVAL + Duration::from_secs(2);
    voipcheck.wait_for(&["default/lab SipRegistered True→False"], outage);
    let took = stopped.elapsed();
    assert!(
        took > INTERVAL - Duration::from_millis(500),
        "SipRegistered turned False {took:?} after the stop: before the second failed run?"
    );
    voipcheck.wait_for(
        &["default/lab HotlineReportable False→True ProviderOutage"],
        outage,
    );
    let metrics = scrape(metrics_port);
    assert_eq!(
        gauge(&metrics, "voipcheck_hotline_reportable", "lab"),
        Some(1.0),
        "{metrics}"
    );
    // The incident rides along for the alert's annotations, since its first failed run.
    let since = gauge(
        &metrics,
        "voipcheck_incident_since_timestamp_seconds",
        "lab",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        since.is_some_and(|s| s <= now && s > now - 120.0),
        "{metrics}"
    );
    // The same at the status level, where the pages look: one location, failing.
    for (metric, expected) in [
        ("voipcheck_status_hotline_reportable", Some(1.0)),
        ("voipcheck_status_failing_locations", Some(1.0)),
        ("voipcheck_status_incident_since_timestamp_seconds", since),
    ] {
        assert_eq!(
            gauge(&metrics, metric, "lab"),
            expected,
            "{metric}: {metrics}"
        );
    }

    // A registrar on the same port again: recovery on the next run.
    let _kamailio = Kamailio::builder().port(kamailio.port).start();
    let recovery = 2 * INTERVAL + Duration::from_secs(2);
    voipcheck.wait_for(
        &["default/lab SipRegistered False→True Registered"],
        recovery,
    );
    voipcheck.wait_for(
        &["default/lab HotlineReportable True→False Healthy"],
        recovery,
    );
    voipcheck.wait_for(&["default/lab Ready False→True Healthy"], recovery);
    let metrics = scrape(metrics_port);
    assert_eq!(
        gauge(&metrics, "voipcheck_hotline_reportable", "lab"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        gauge(
            &metrics,
            "voipcheck_incident_since_timestamp_seconds",
            "lab"
        ),
        None
    );

    let status = voipcheck.terminate();
    assert!(status.success(), "{status}:\n{}", voipcheck.output());
    let output = voipcheck.output();
    assert!(
        !output.contains("alice-secret"),
        "the password was printed:\n{output}"
    );
}

#[test]
fn a_bad_file_exits_2_naming_file_document_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("checks.yaml");
    let good = http_check("web", "http://127.0.0.1:9/");
    let cases = [
        (
            format!(
                "{good}---\n{}",
                good.replace("interval: 5s", "interval: often")
            ),
            ["document 2", "spec.interval", "often"],
        ),
        // Exit 101 (a panic in the duration arithmetic) before issue 8.
        (
            format!(
                "{good}---\n{}",
                good.replace("interval: 5s", "interval: 99999999999999999999s")
            ),
            ["document 2", "spec.interval", "too long"],
        ),
        // Ignored before issue 8: the default threshold applied.
        (
            format!(
                "{good}---\n{}",
                good.replace("interval: 5s", "interval: 5s\n  failureTreshold: 5")
            ),
            ["document 2", "spec.failureTreshold", "unknown field"],
        ),
        (
            format!("{good}---\nspec: [unclosed\n"),
            ["document 2", "not valid YAML", "line"],
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&file, &text).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_voipcheck"))
            .args(["run", "-f", file.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
        for part in expected {
            assert!(stderr.contains(part), "{part:?} missing in: {stderr}");
        }
    }
}

#[test]
fn an_invalid_check_is_not_ready_while_the_others_run() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("checks.yaml");
    let good = http_check("web", nginx.http_url("/").as_str());
    let invalid =
        http_check("slow", nginx.http_url("/").as_str()).replace("timeout: 1s", "timeout: 5s");
    std::fs::write(&file, format!("{good}---\n{invalid}")).unwrap();
    let mut voipcheck = Voipcheck::start(&["-f", file.to_str().unwrap()]);
    voipcheck.wait_for(
        &["default/slow Ready False InvalidSpec", "spec.timeout"],
        Duration::from_secs(5),
    );
    voipcheck.wait_for_log("document 2", Duration::from_secs(1));
    voipcheck.wait_for(
        &["default/web WebReachable True Reachable"],
        INTERVAL + Duration::from_secs(3),
    );
}

#[test]
fn sighup_reloads_the_file_and_a_bad_one_keeps_the_checks() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("checks.yaml");
    let url = nginx.http_url("/");
    let first = http_check("first", url.as_str());
    std::fs::write(&file, &first).unwrap();
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut voipcheck = Voipcheck::start(&[
        "-f",
        file.to_str().unwrap(),
        "--metrics-addr",
        &metrics_addr,
        "--log-format",
        "json",
    ]);
    let within = INTERVAL + Duration::from_secs(3);
    let line = voipcheck.wait_for(
        &["\"name\":\"first\"", "\"condition\":\"WebReachable\""],
        within,
    );
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["status"], "True");

    // A second check, and the first one gone.
    let second = http_check("second", url.as_str());
    std::fs::write(&file, &second).unwrap();
    voipcheck.signal(libc::SIGHUP);
    voipcheck.wait_for(
        &["\"name\":\"second\"", "\"condition\":\"WebReachable\""],
        within,
    );
    let metrics = scrape(metrics_port);
    assert!(
        gauge(&metrics, "voipcheck_probe_success", "second").is_some(),
        "{metrics}"
    );
    assert!(!metrics.contains("name=\"first\""), "{metrics}");

    // A broken file: logged, and the running check stays.
    std::fs::write(&file, "kind: [").unwrap();
    voipcheck.signal(libc::SIGHUP);
    let log = voipcheck.wait_for_log("reload failed", Duration::from_secs(5));
    let log: serde_json::Value = serde_json::from_str(&log).expect("JSON logs");
    assert_eq!(log["level"], "ERROR");
    std::thread::sleep(INTERVAL + Duration::from_secs(1));
    let metrics = scrape(metrics_port);
    assert!(
        gauge(&metrics, "voipcheck_probe_success", "second").is_some(),
        "{metrics}"
    );

    let status = voipcheck.terminate();
    assert!(status.success(), "{status}:\n{}", voipcheck.output());
}

#[test]
fn once_runs_every_probe_now_and_exits_with_the_result() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("checks.yaml");
    let run_with = |text: &str, args: &[&str]| {
        std::fs::write(&file, text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_voipcheck"))
            .args(["run", "--once", "-f", file.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    let run = |text: &str| run_with(text, &[]);
    let output = run(&http_check("web", nginx.http_url("/").as_str()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("default/web http:web OK"), "{stdout}");

    let output = run(&http_check("web", nginx.http_url("/status/503").as_str()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("default/web http:web FAILED"), "{stdout}");

    let failing = http_check("web", nginx.http_url("/status/503").as_str());
    let output = run_with(&failing, &["--log-format", "json"]);
    assert_eq!(output.status.code(), Some(1));
    let line: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    assert_eq!(line["probe"], "http:web");
    assert_eq!(line["success"], false);
    assert_eq!(line["failure"], "HttpStatus");

    // The operator's default allow-list holds here too: no cloud metadata endpoint. A check
    // that cannot run is bad input: exit status 2 (1 before issue 8, as for a failed probe).
    let output = run(&http_check("metadata", "http://169.254.169.254/latest/"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("default/metadata NOT RUNNABLE"), "{stdout}");

    // A STUN server on loopback maps a private address: the probe answered, and the check's
    // StunReachable is False all the same, so --once says so (it printed OK before issue 8).
    let coturn = Coturn::start();
    let stun = format!(
        "apiVersion: voipcheck.io/v1alpha1
kind: VoipCheck
metadata: {{ name: nat }}
spec:
  target: {{ kind: Other, name: nat }}
  interval: 5s
  timeout: 1s
  stun: {{ servers: ['{}'] }}
",
        coturn.server()
    );
    let output = run(&stun);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("default/nat stun FAILED StunReachable PrivateAddressOnly, this location"),
        "{stdout}"
    );

    // Another kind of object beside the checks is skipped with a warning (it rejected the
    // whole file before issue 8).
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: x }\n";
    let good = http_check("web", nginx.http_url("/").as_str());
    let output = run(&format!("{good}---\n{deployment}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("document 2") && stderr.contains("skipped apps/v1 Deployment"),
        "{stderr}"
    );
}

/// `voipcheck validate -f` reads the file as `run` does and plans each check, without sending
/// anything: exit 0 when every check can run, 2 otherwise, one line per check.
#[test]
fn validate_checks_a_file_without_probing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("checks.yaml");
    let validate = |text: &str| {
        std::fs::write(&file, text).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_voipcheck"))
            .args(["validate", "-f", file.to_str().unwrap()])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code(), text)
    };
    // A port nobody listens on: validation must not need the peer.
    let good = http_check("web", "http://127.0.0.1:9/");
    let (code, text) = validate(&good);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("default/web VALID: probes http:web"),
        "{text}"
    );

    let slow = good
        .replace("name: web }", "name: slow }")
        .replace("timeout: 1s", "timeout: 5s");
    let (code, text) = validate(&format!("{good}---\n{slow}"));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("default/web VALID"), "{text}");
    assert!(
        text.contains("default/slow NOT RUNNABLE") && text.contains("spec.timeout"),
        "{text}"
    );

    let (code, text) = validate(&good.replace("  http:", "  htp: []\n  http:"));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("spec.htp: unknown field"), "{text}");
}
