//! The Grafana dashboard (dashboards/voipcheck.json) and the alert rules against a real
//! Prometheus (Debian `prometheus`) scraping `voipcheck run`, which probes the real test peers
//! (Kamailio, nginx over HTTP and HTTPS, coturn with a NAT binding test): every panel query and
//! every template variable, with the variables set to "All", returns series; every alert
//! expression evaluates, and the rules load and evaluate in the server; every metric family the
//! binary exports is on the dashboard. The operator's reconcile counters, which `voipcheck run`
//! does not count, come from the same metrics registry, fed as the operator's controller feeds
//! it. Without Prometheus: the dashboard's structure, variables and layout, and that the chart
//! ships the same file.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::coturn::Coturn;
use support::kamailio::Kamailio;
use support::nginx::Nginx;
use support::sipp::Sipp;
use support::{Daemon, free_port};
use voipcheck::metrics::{self, Health, Metrics, ReconcileResult, WriteKind};

const DASHBOARD: &str = "dashboards/voipcheck.json";
const CHART_DASHBOARD: &str = "charts/voipcheck/files/voipcheck.json";
const RULES: &str = "alerts/voipcheck.rules.yaml";
/// The `location` of every series in this test.
const LOCATION: &str = "lab";
/// How long the checks may take until every query has data (first runs are jittered over one
/// 5 s interval; rates need two scrapes).
const SETTLE: Duration = Duration::from_secs(60);

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo(DASHBOARD)).unwrap()).unwrap()
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

/// (panel title, expression) of every query.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap().to_owned();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_owned()))
        })
        .collect()
}

/// The query variables: (name, label_values definition).
fn variables(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_owned(),
                v["definition"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The expression Grafana sends with every variable at "All" (`.*`) and `$__rate_interval` at
/// a window that holds several of this test's 1 s scrapes.
fn substitute(expr: &str) -> String {
    expr.replace("$namespace", ".*")
        .replace("$check", ".*")
        .replace("$location", ".*")
        .replace("$__rate_interval", "1m")
}

/// `voipcheck_x` names in an expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let name = regex::Regex::new(r"\bvoipcheck_[a-z_]+").unwrap();
    name.find_iter(expr)
        .map(|m| m.as_str().to_owned())
        .collect()
}

fn alert_exprs() -> Vec<(String, String)> {
    let rules: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(repo(RULES)).unwrap()).unwrap();
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| {
            (
                r["alert"].as_str().unwrap().to_owned(),
                r["expr"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn dashboard_has_a_datasource_variable_and_the_check_variables() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64() >= Some(36));
    assert_eq!(dashboard["uid"], "voipcheck");
    let list = dashboard["templating"]["list"].as_array().unwrap();
    let datasource = list.iter().find(|v| v["type"] == "datasource").unwrap();
    assert_eq!(datasource["name"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let names: Vec<String> = variables(&dashboard).into_iter().map(|v| v.0).collect();
    assert_eq!(names, ["namespace", "check", "location"]);
    for variable in list.iter().filter(|v| v["type"] == "query") {
        assert_eq!(variable["datasource"]["uid"], "${datasource}");
        assert_eq!(variable["includeAll"], true);
        assert_eq!(variable["multi"], true);
    }
}

/// No hard-wired data source, every check metric filtered by all three variables, the
/// operator's by location; unique ids; panels inside the 24-column grid and not overlapping.
#[test]
fn every_panel_uses_the_variables_and_fits_the_grid() {
    let dashboard = dashboard();
    let operator = [
        "voipcheck_reconcile_total",
        "voipcheck_reconcile_errors_total",
        "voipcheck_schedule_lag_seconds_bucket",
        "voipcheck_checks",
        "voipcheck_leader",
        "voipcheck_shards",
        "voipcheck_shards_held",
        "voipcheck_status_pending_checks",
        "voipcheck_api_write_failures_total",
        "voipcheck_events_dropped_total",
        "voipcheck_build_info",
        "voipcheck_invalid_objects",
    ];
    let mut ids = BTreeSet::new();
    let mut cells: Vec<(String, [u64; 4])> = Vec::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap();
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "{title}: id");
        let g = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap());
        assert!(x + w <= 24, "{title}: wider than the grid");
        for (other, [ox, oy, ow, oh]) in &cells {
            let apart = x + w <= *ox || ox + ow <= x || y + h <= *oy || oy + oh <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        cells.push((title.to_owned(), [x, y, w, h]));
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        assert!(
            !panel["description"].as_str().unwrap_or("").is_empty(),
            "{title}: say what it shows"
        );
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            let expr = target["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                let wanted: &[&str] = if operator.contains(&name.as_str()) {
                    &[r#"location=~"$location""#]
                } else {
                    &[
                        r#"namespace=~"$namespace""#,
                        r#"name=~"$check""#,
                        r#"location=~"$location""#,
                    ]
                };
                for matcher in wanted {
                    assert!(expr.contains(matcher), "{title}: {expr} lacks {matcher}");
                }
            }
        }
    }
}

#[test]
fn the_chart_ships_the_same_dashboard() {
    let source = std::fs::read(repo(DASHBOARD)).unwrap();
    if std::env::var_os("UPDATE_CHART_FILES").is_some() {
        std::fs::write(repo(CHART_DASHBOARD), &source).unwrap();
    }
    assert!(
        std::fs::read(repo(CHART_DASHBOARD)).unwrap_or_default() == source,
        "{CHART_DASHBOARD} differs from {DASHBOARD}: copy it (UPDATE_CHART_FILES=1 cargo test \
         --test dashboard) and commit both"
    );
}

/// A Prometheus server on loopback with its own configuration and storage in a temporary
/// directory. Stopped when dropped.
struct Prometheus {
    port: u16,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes each (job, port) every second and loads the alert rules. `honor_labels` as in
    /// the chart's ServiceMonitor: the series' own `namespace` label wins.
    fn start(targets: &[(&str, u16)]) -> Prometheus {
        let binary = support::require_program("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let jobs: String = targets
            .iter()
            .map(|(job, port)| {
                format!(
                    "  - job_name: {job}\n    honor_labels: true\n    static_configs:\n      \
                     - targets: ['127.0.0.1:{port}']\n"
                )
            })
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\nscrape_configs:\n{jobs}",
            repo(RULES).display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let mut command = Command::new(binary);
        command
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let mut daemon = Daemon::spawn("prometheus", command, &dir.path().join("prometheus.log"));
        daemon.wait_for_tcp(SocketAddr::from(([127, 0, 0, 1], port)));
        let prometheus = Prometheus {
            port,
            daemon,
            _dir: dir,
        };
        // The API answers 503 until the storage is open.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !prometheus.http("/-/ready", &[]).starts_with("HTTP/1.0 200") {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                prometheus.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    /// The whole response to a GET.
    fn http(&self, path: &str, params: &[(&str, &str)]) -> String {
        let mut url = url::Url::parse(&format!("http://127.0.0.1:{}{path}", self.port)).unwrap();
        url.query_pairs_mut().extend_pairs(params);
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // HTTP/1.0: the body ends with the connection, never chunked.
        let target = &url[url::Position::BeforePath..];
        write!(stream, "GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    /// GET an API path; the JSON answer (status "success" or "error").
    fn get(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let response = self.http(path, params);
        let (_, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
    }

    /// The series of an instant query, or the server's error (a parse error, say).
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let answer = self.get("/api/v1/query", &[("query", expr)]);
        match answer["status"].as_str() {
            Some("success") => Ok(answer["data"]["result"].as_array().unwrap().clone()),
            _ => Err(format!("{}: {}", answer["errorType"], answer["error"])),
        }
    }

    fn log_text(&self) -> String {
        self.daemon.log_text()
    }
}

/// A running `voipcheck run`; killed when dropped.
struct Run(Child);

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One check that touches every probe and metric family: SIP REGISTER, OPTIONS and a test
/// call with a second of audio to Kamailio's echo number, HTTP and HTTPS (with the test CA, so a certificate expiry is recorded) against
/// nginx, STUN with a 1 s NAT binding test against coturn.
fn checks_file(dir: &Path, kamailio: &Kamailio, nginx: &Nginx, coturn: &Coturn) -> PathBuf {
    let ca = std::fs::read_to_string(nginx.ca.cert_path()).unwrap();
    let ca: String = ca.lines().map(|l| format!("    {l}\n")).collect();
    let text = format!(
        "apiVersion: voipcheck.io/v1alpha1
kind: VoipCheck
metadata: {{ name: lab, namespace: telephony }}
spec:
  target: {{ kind: Cloud, name: lab.localhost }}
  interval: 5s
  timeout: 1s
  failureThreshold: 2
  sip:
    server: sip:127.0.0.1:{sip};transport=udp
    register:
      username: alice
      credentialsSecretRef: {{ name: lab-sip, key: password }}
      expires: 60
    options: {{ laggedThreshold: 400ms }}
    call: {{ to: 'sip:echo@127.0.0.1:{sip}', ringTimeout: 1s, media: {{ duration: 1s }} }}
  http:
    - {{ name: web-ui, url: 'http://127.0.0.1:{http}/', bodyContains: STARFACE }}
    - name: web-ui-tls
      url: https://127.0.0.1:{https}/
      caSecretRef: {{ name: lab-ca, key: ca.crt }}
  stun:
    servers: ['{stun}']
    natBinding: {{ keepaliveInterval: 1s }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: lab-sip, namespace: telephony }}
stringData: {{ password: alice-secret }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: lab-ca, namespace: telephony }}
stringData:
  ca.crt: |
{ca}",
        sip = kamailio.port,
        http = nginx.http_port,
        https = nginx.https_port,
        stun = coturn.server(),
    );
    let path = dir.join("checks.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The registry as the operator's controller feeds it: reconciles, some failing.
fn serve_operator_counters(runtime: &tokio::runtime::Runtime) -> u16 {
    let metrics = Metrics::new(LOCATION);
    for result in [
        ReconcileResult::Ok,
        ReconcileResult::Ok,
        ReconcileResult::Error("kube_api"),
    ] {
        metrics.record_reconcile(result);
    }
    metrics.set_leader(true);
    metrics.set_shards(12, 12);
    metrics.set_status_pending(3);
    metrics.record_write_failure(WriteKind::Status, "timeout");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    runtime.spawn(metrics::serve(
        addr,
        metrics,
        Health::default(),
        std::future::pending(),
    ));
    port
}

#[test]
fn every_query_returns_series_from_a_real_prometheus() {
    // The echo number's far end, echoing RTP, for every call of the test (one per 5 s run).
    let media_port = support::free_media_port().to_string();
    let uas = Sipp::start_with(
        "call-echo.xml",
        Ipv4Addr::LOCALHOST.into(),
        1000,
        &["-rtp_echo", "-mi", "127.0.0.1", "-mp", &media_port],
    );
    let kamailio = Kamailio::builder().echo(uas.addr).start();
    let nginx = Nginx::start();
    let coturn = Coturn::start();
    let dir = tempfile::tempdir().unwrap();
    let file = checks_file(dir.path(), &kamailio, &nginx, &coturn);
    let run_port = free_port();
    let _run = Run(Command::new(env!("CARGO_BIN_EXE_voipcheck"))
        .arg("run")
        .arg("-f")
        .arg(&file)
        .arg(format!("--metrics-addr=127.0.0.1:{run_port}"))
        .arg(format!("--location={LOCATION}"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start voipcheck run"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let operator_port = serve_operator_counters(&runtime);
    let prometheus = Prometheus::start(&[
        ("voipcheck", run_port),
        ("voipcheck-operator", operator_port),
    ]);

    let dashboard = dashboard();
    let queries: Vec<(String, String)> = queries(&dashboard)
        .into_iter()
        .map(|(title, expr)| (title, substitute(&expr)))
        .collect();
    assert!(queries.len() >= 20, "{} queries", queries.len());

    // Poll until every panel has data; a parse error fails at once.
    let deadline = Instant::now() + SETTLE;
    loop {
        let mut empty = Vec::new();
        for (title, expr) in &queries {
            match prometheus.query(expr) {
                Ok(series) if series.is_empty() => empty.push(format!("{title}: {expr}")),
                Ok(_) => {}
                Err(error) => panic!("{title}: {expr}: {error}"),
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no series after {SETTLE:?} for:\n{}\n--- prometheus\n{}",
            empty.join("\n"),
            prometheus.log_text()
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // The variables' label_values() queries find values.
    for (name, definition) in variables(&dashboard) {
        let definition = substitute(&definition);
        let inner = definition
            .strip_prefix("label_values(")
            .and_then(|d| d.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{name}: {definition}"));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let answer = prometheus.get(
            &format!("/api/v1/label/{}/values", label.trim()),
            &[("match[]", selector.trim())],
        );
        assert_eq!(answer["status"], "success", "{name}: {answer}");
        assert!(
            !answer["data"].as_array().unwrap().is_empty(),
            "${name} has no values: {definition}"
        );
    }

    // Every metric family the binary exports is on the dashboard.
    let on_dashboard: BTreeSet<String> =
        queries.iter().flat_map(|(_, e)| metric_names(e)).collect();
    let exported = prometheus.get("/api/v1/label/__name__/values", &[]);
    for name in exported["data"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        if !name.starts_with("voipcheck_") {
            continue;
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        assert!(
            on_dashboard.iter().any(|q| q.starts_with(family)),
            "{name} is exported but on no panel"
        );
    }

    // Alert expressions evaluate (they may be empty: nothing alarming on the lab), and every
    // metric they read exists.
    for (alert, expr) in alert_exprs() {
        if let Err(error) = prometheus.query(&expr) {
            panic!("{alert}: {expr}: {error}");
        }
        for name in metric_names(&expr) {
            let series = prometheus
                .query(&format!("count({{__name__=\"{name}\"}})"))
                .unwrap();
            assert!(
                !series.is_empty(),
                "{alert} reads {name}, which has no series"
            );
        }
    }

    // The server loaded the rules and evaluated each without error.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = prometheus.get("/api/v1/rules", &[]);
        let rules: Vec<&Value> = answer["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        assert_eq!(rules.len(), alert_exprs().len(), "{answer}");
        for rule in &rules {
            assert_ne!(rule["health"], "err", "{rule}");
        }
        if rules.iter().all(|r| r["health"] == "ok") {
            break;
        }
        assert!(Instant::now() < deadline, "rules not evaluated: {answer}");
        std::thread::sleep(Duration::from_secs(1));
    }
}
