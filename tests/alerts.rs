//! The alert rules (alerts/voipcheck.rules.yaml) and the Alertmanager example: `promtool check
//! rules` accepts the rules, `promtool test rules` runs the unit tests in alerts/tests/, every
//! alert has a test where it fires and one where it does not, the rules name only condition
//! types and reasons the code writes, every alert's runbook_url lands on a section of the
//! README, the chart ships the same file, and `amtool` accepts the Alertmanager example and
//! routes the pages to the pager and everything else to tickets, and a real Alertmanager holds
//! back what would page twice and a paging check's tickets.

mod support;

use regex::Regex;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use voipcheck::api::{ConditionType, Reason};

const RULES: &str = "alerts/voipcheck.rules.yaml";
const CHART_RULES: &str = "charts/voipcheck/files/voipcheck.rules.yaml";
const ALERTMANAGER: &str = "alerts/alertmanager.example.yaml";
const README: &str = "README.md";
const CHART: &str = "charts/voipcheck/Chart.yaml";
/// The page by impact: a service unavailable to the customer, whoever's fault.
const UNAVAILABLE: &str = "VoipCheckServiceUnavailable";
/// The hotline's verdict; held back while `UNAVAILABLE` pages for the same check (and
/// aggregating location).
const REPORTABLE: &str = "VoipCheckHotlineReportable";
/// The alerts that page.
const PAGES: [&str; 2] = [UNAVAILABLE, REPORTABLE];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The alerting rules of the file, in order.
fn alerts() -> Vec<Value> {
    yaml(&repo(RULES))["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").clone())
        .filter(|rule| rule.get("alert").is_some())
        .collect()
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {value}"))
}

/// Runs a tool, failing the test with its output unless it succeeds; returns stdout.
fn run(command: &mut Command) -> String {
    let output = command.output().expect("run the tool");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn unit_test_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("alerts/tests"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no unit tests in alerts/tests");
    files
}

#[test]
fn promtool_accepts_the_rules() {
    let promtool = support::require_program("promtool");
    let out = run(Command::new(promtool)
        .args(["check", "rules"])
        .arg(repo(RULES)));
    assert!(
        out.contains(&format!("{} rules found", alerts().len())),
        "{out}"
    );
}

#[test]
fn promtool_unit_tests_pass() {
    let promtool = support::require_program("promtool");
    run(Command::new(promtool)
        .args(["test", "rules"])
        .args(unit_test_files()));
}

/// Every alert has a unit test case where it fires and one where it stays silent, so a rule
/// that can never fire (or always fires) is caught.
#[test]
fn every_alert_is_tested_firing_and_silent() {
    let mut seen: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for file in unit_test_files() {
        let tests = yaml(&file);
        for case in tests["tests"].as_array().expect("tests") {
            for check in case["alert_rule_test"].as_array().into_iter().flatten() {
                let fires = check["exp_alerts"]
                    .as_array()
                    .is_some_and(|alerts| !alerts.is_empty());
                let entry = seen.entry(text(check, "alertname").to_owned()).or_default();
                if fires {
                    entry.0 = true;
                } else {
                    entry.1 = true;
                }
            }
        }
    }
    for alert in alerts() {
        let name = text(&alert, "alert");
        let (fires, silent) = seen.get(name).copied().unwrap_or_default();
        assert!(fires, "{name}: no unit test where it fires");
        assert!(silent, "{name}: no unit test where it stays silent");
    }
}

/// Severity, summary and description on every alert; only the pages are critical, every
/// other alert is a ticket (warning, or info for what can wait).
#[test]
fn every_alert_says_how_urgent_and_what_to_check() {
    for alert in alerts() {
        let name = text(&alert, "alert");
        let severity = text(&alert["labels"], "severity");
        match PAGES.contains(&name) {
            true => assert_eq!(severity, "critical", "{name}"),
            false => assert!(
                ["warning", "info"].contains(&severity),
                "{name}: {severity}"
            ),
        }
        for key in ["summary", "description"] {
            assert!(
                !text(&alert["annotations"], key).trim().is_empty(),
                "{name}: empty {key}"
            );
        }
        assert!(
            alert.get("for").is_some(),
            "{name}: no `for:`; say why if none is wanted"
        );
    }
}

/// Alerts match on the stable names of src/api/conditions.rs; a misspelt one would never fire.
#[test]
fn rules_name_only_condition_types_and_reasons_the_code_writes() {
    // `type="X"`, `reason=~"A|B"`, `reason!~...` in expressions and `eq $labels.reason "A" "B"`
    // in templates.
    let matcher = Regex::new(r#"\b(type|reason)\s*(?:=|!=|=~|!~)\s*"([^"]*)""#).unwrap();
    let template = Regex::new(r#"eq \$labels\.reason((?: "[A-Za-z]+")+)"#).unwrap();
    let quoted = Regex::new(r#""([A-Za-z]+)""#).unwrap();
    let mut types = BTreeSet::new();
    let mut reasons = BTreeSet::new();
    for alert in alerts() {
        let expr = text(&alert, "expr");
        for m in matcher.captures_iter(expr) {
            let names = m[2].split('|').map(str::to_owned);
            match &m[1] {
                "type" => types.extend(names),
                _ => reasons.extend(names),
            }
        }
        for key in ["summary", "description"] {
            for m in template.captures_iter(text(&alert["annotations"], key)) {
                reasons.extend(quoted.captures_iter(&m[1]).map(|q| q[1].to_owned()));
            }
        }
    }
    for name in &types {
        let parsed: Result<ConditionType, _> = name.parse();
        assert!(parsed.is_ok(), "unknown condition type {name:?} in {RULES}");
    }
    for name in &reasons {
        let parsed: Result<Reason, _> = name.parse();
        assert!(parsed.is_ok(), "unknown reason {name:?} in {RULES}");
    }
    // The scan found what is there (it would pass vacuously on a broken pattern).
    assert!(types.contains("HotlineReportable") || types.contains("SipRegistered"));
    assert!(reasons.contains("ExpiresBeforeKeepalive") && reasons.contains("AuthRejected"));
}

/// GitHub's anchor of a Markdown heading: lower case, spaces to `-`, and every character but
/// letters, digits, `-` and `_` dropped.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of the README's headings, as GitHub numbers repeated ones (`-1`, `-2`, ...).
fn readme_anchors() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo(README)).unwrap();
    let mut anchors = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        let Some(heading) = line.strip_prefix('#').filter(|_| !fenced) else {
            continue;
        };
        let base = github_anchor(heading.trim_start_matches('#'));
        let anchor = (0..)
            .map(|n| match n {
                0 => base.clone(),
                n => format!("{base}-{n}"),
            })
            .find(|a| !anchors.contains(a))
            .unwrap();
        anchors.insert(anchor);
    }
    anchors
}

#[test]
fn github_anchors_are_computed_as_github_does() {
    assert_eq!(github_anchor(" VoipCheckStale"), "voipcheckstale");
    assert_eq!(
        github_anchor("Conditions and the hotline"),
        "conditions-and-the-hotline"
    );
    assert_eq!(
        github_anchor("`voipcheck run` (no cluster)"),
        "voipcheck-run-no-cluster"
    );
}

/// Every alert links its runbook: a `### <AlertName>` section of the README, on the project's
/// home (Chart.yaml's `home`), so the link the person paged opens lands on that section.
#[test]
fn every_runbook_url_lands_on_its_readme_section() {
    let home = text(&yaml(&repo(CHART)), "home").to_owned();
    let base = format!("{home}/blob/main/{README}#");
    let anchors = readme_anchors();
    for alert in alerts() {
        let name = text(&alert, "alert");
        let url = text(&alert["annotations"], "runbook_url");
        let anchor = url
            .strip_prefix(&base)
            .unwrap_or_else(|| panic!("{name}: {url} is not on {base}"));
        assert_eq!(anchor, github_anchor(name), "{name}: its own section");
        assert!(
            anchors.contains(anchor),
            "{name}: no heading #{anchor} in {README}"
        );
    }
}

#[test]
fn the_chart_ships_the_same_rules() {
    let source = std::fs::read(repo(RULES)).unwrap();
    if std::env::var_os("UPDATE_CHART_FILES").is_some() {
        std::fs::write(repo(CHART_RULES), &source).unwrap();
    }
    let copy = std::fs::read(repo(CHART_RULES)).unwrap_or_default();
    assert!(
        copy == source,
        "{CHART_RULES} differs from {RULES}: copy it (UPDATE_CHART_FILES=1 cargo test --test \
         alerts) and commit both"
    );
}

#[test]
fn amtool_accepts_the_alertmanager_example() {
    let amtool = support::require_program("amtool");
    let out = run(Command::new(amtool)
        .arg("check-config")
        .arg(repo(ALERTMANAGER)));
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Each alert of the rules, with its own labels, reaches the pager only if it is a page.
#[test]
fn the_pages_go_to_the_pager_and_the_rest_to_tickets() {
    let amtool = support::require_program("amtool");
    for alert in alerts() {
        let name = text(&alert, "alert");
        let receiver = if PAGES.contains(&name) {
            "pager"
        } else {
            "ticket"
        };
        let out = run(Command::new(&amtool)
            .args(["config", "routes", "test"])
            .arg(format!("--config.file={}", repo(ALERTMANAGER).display()))
            .arg(format!("--verify.receivers={receiver}"))
            .arg(format!("alertname={name}"))
            .arg(format!("severity={}", text(&alert["labels"], "severity")))
            .args(["namespace=telephony", "name=cloud", "location=fra"]));
        assert_eq!(out.trim(), receiver, "{name}");
    }
}

/// One HTTP/1.0 exchange with the Alertmanager API; the JSON body of the answer.
fn alertmanager_api(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.0 200"),
        "{method} {path}: {response}"
    );
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// The example's inhibit rules, in a running Alertmanager: a service-unavailable page holds
/// back the same outage's hotline page, a check that pages has its tickets suppressed, from
/// every location (the page is the verdict across them); another check's ticket and a
/// reportable outage without a service-unavailable page are not.
#[test]
fn one_outage_pages_once_and_holds_back_its_tickets() {
    let binary = support::require_program("prometheus-alertmanager");
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let mut command = Command::new(binary);
    command
        .arg(format!("--config.file={}", repo(ALERTMANAGER).display()))
        .arg(format!("--storage.path={}", dir.path().display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn");
    let mut daemon = support::Daemon::spawn(
        "alertmanager",
        command,
        &dir.path().join("alertmanager.log"),
    );
    daemon.wait_for_tcp(SocketAddr::from(([127, 0, 0, 1], port)));

    let alert = |name: &str, check: &str, location: &str, severity: &str| {
        serde_json::json!({
            "labels": {
                "alertname": name, "severity": severity,
                "namespace": "telephony", "name": check, "location": location,
            },
            "annotations": { "summary": format!("{name} {check} {location}") },
        })
    };
    let alerts = Value::Array(vec![
        alert(UNAVAILABLE, "cloud", "fra", "critical"),
        alert(REPORTABLE, "cloud", "fra", "critical"),
        alert("VoipCheckSipRegistrationLost", "cloud", "fra", "warning"),
        alert("VoipCheckWebUnreachable", "cloud", "fra", "warning"),
        alert("VoipCheckSipRegistrationLost", "cloud", "muc", "warning"),
        alert("VoipCheckSipRegistrationLost", "trunk", "fra", "warning"),
        alert("VoipCheckSipRegistrationLost", "pbx", "fra", "warning"),
        alert(REPORTABLE, "trunk", "muc", "critical"),
        alert("VoipCheckSipErrorCodesFrequent", "trunk", "muc", "warning"),
    ]);
    alertmanager_api(port, "POST", "/api/v2/alerts", Some(&alerts));

    let expected: BTreeMap<(String, String, String), &str> = [
        ((UNAVAILABLE, "cloud", "fra"), "active"),
        // One outage pages once: the service-unavailable page carries the verdict.
        ((REPORTABLE, "cloud", "fra"), "suppressed"),
        (
            ("VoipCheckSipRegistrationLost", "cloud", "fra"),
            "suppressed",
        ),
        (("VoipCheckWebUnreachable", "cloud", "fra"), "suppressed"),
        // The page lists the failures of every location.
        (
            ("VoipCheckSipRegistrationLost", "cloud", "muc"),
            "suppressed",
        ),
        (
            ("VoipCheckSipRegistrationLost", "trunk", "fra"),
            "suppressed",
        ),
        (("VoipCheckSipRegistrationLost", "pbx", "fra"), "active"),
        // A reportable outage no service-unavailable page covers pages on its own.
        ((REPORTABLE, "trunk", "muc"), "active"),
        (
            ("VoipCheckSipErrorCodesFrequent", "trunk", "muc"),
            "suppressed",
        ),
    ]
    .into_iter()
    .map(|((a, n, l), state)| ((a.to_owned(), n.to_owned(), l.to_owned()), state))
    .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = alertmanager_api(port, "GET", "/api/v2/alerts", None);
        let states: BTreeMap<(String, String, String), &str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let labels = &a["labels"];
                let key = ["alertname", "name", "location"].map(|k| text(labels, k).to_owned());
                (key.into(), a["status"]["state"].as_str().unwrap())
            })
            .collect();
        if states == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alert states {states:#?}, expected {expected:#?}\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
