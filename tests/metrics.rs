//! Metrics from real probe runs: the exposition passes `promtool check metrics`, carries no
//! credential, drops a deleted check's series, is served (plain or gzip) with /healthz and
//! /readyz, and a scrape never holds up the runs recording their results.

mod support;

use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use support::kamailio::Kamailio;
use support::nginx::{self, Nginx};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use voipcheck::api::{ConditionStatus, ConditionType, LocationStatus, Reason, VoipCheckSpec};
use voipcheck::check::{
    self, AllowList, CheckId, Plan, PlanError, ProbeKind, ProbeOutcome, ProbeRun, RunReport,
    StaticSecrets,
};
use voipcheck::metrics::{Health, Metrics, ReconcileResult};
use voipcheck::probe::Failure;
use voipcheck::probe::dns::Dns;
use voipcheck::probe::media::MediaReport;
use voipcheck::secret::Secret;
use voipcheck::verdict::{ConditionValue, History, Verdict, evaluate, not_runnable};

const SIP_PASSWORD: &str = "alice-secret";

/// One run of a check with every kind of SIP and HTTP probe against the real peers; the web
/// page behind Basic auth gets its credentials from a Secret, so they sit in the plan's URL.
async fn real_run(kamailio: &Kamailio, nginx: &Nginx, id: &CheckId) -> (Plan, RunReport) {
    let spec: VoipCheckSpec = serde_json::from_value(json!({
        "target": { "kind": "Cloud", "name": "lab" },
        "interval": "10s",
        "timeout": "2s",
        "sip": {
            "server": kamailio.uri("tls"),
            "caSecretRef": { "name": "sip-ca", "key": "ca.crt" },
            "register": {
                "username": "alice",
                "credentialsSecretRef": { "name": "sip", "key": "password" }
            },
            "options": { "laggedThreshold": "500ms" }
        },
        "http": [
            {
                "name": "web-ui",
                "url": nginx.https_url("127.0.0.1", nginx.https_port, "/").as_str(),
                "caSecretRef": { "name": "web-ca", "key": "ca.crt" }
            },
            {
                "name": "private",
                "url": nginx.http_url("/private").as_str(),
                "basicAuthSecretRef": { "name": "login" },
                "allowInsecureBasicAuth": true
            },
            { "name": "down", "url": nginx.http_url("/status/503").as_str() }
        ],
        "control": { "url": nginx.http_url("/").as_str() }
    }))
    .unwrap();
    let mut secrets = StaticSecrets::new();
    secrets.insert(&id.namespace, "sip", "password", Secret::new(SIP_PASSWORD));
    let sip_ca = std::fs::read_to_string(&kamailio.ca_file).unwrap();
    secrets.insert(&id.namespace, "sip-ca", "ca.crt", Secret::new(sip_ca));
    let ca = std::fs::read_to_string(nginx.ca.cert_path()).unwrap();
    secrets.insert(&id.namespace, "web-ca", "ca.crt", Secret::new(ca));
    secrets.insert(
        &id.namespace,
        "login",
        "username",
        Secret::new(nginx::USERNAME),
    );
    secrets.insert(
        &id.namespace,
        "login",
        "password",
        Secret::new(nginx::PASSWORD),
    );
    let plan = check::plan(id, &spec, &secrets, &AllowList::default()).unwrap();
    let report = check::run(&Dns::system().unwrap(), &plan).await;
    let failing: Vec<&str> = report
        .probes
        .iter()
        .filter(|p| p.failure().is_some())
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(failing, ["http:down"], "{report:?}");
    (plan, report)
}

fn condition(type_: ConditionType, status: ConditionStatus, reason: Reason) -> ConditionValue {
    ConditionValue {
        type_,
        status,
        reason,
        message: "a message with 127.0.0.1 and codes: never a label".into(),
    }
}

fn verdict(ready: bool) -> Verdict {
    use ConditionStatus::{False, True};
    Verdict {
        conditions: vec![
            if ready {
                condition(ConditionType::Ready, True, Reason::Healthy)
            } else {
                condition(ConditionType::Ready, False, Reason::ProbesFailing)
            },
            condition(ConditionType::WebReachable, False, Reason::HttpStatus),
            condition(
                ConditionType::HotlineReportable,
                True,
                Reason::ProviderOutage,
            ),
        ],
        incident: None,
    }
}

/// The series (lines without comments) of `text` whose labels include `label`.
fn series_with<'a>(text: &'a str, label: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(label))
        .collect()
}

/// The value of the series `name` with exactly `labels` (in any order), if present.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, rest) = series.split_once('{').unwrap_or((series, "}"));
            let mut found: Vec<String> = rest
                .strip_suffix('}')?
                .split(',')
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            found.sort();
            (series_name == name && found == wanted).then(|| value.parse().unwrap())
        })
}

fn promtool_check(text: &str) {
    let promtool = support::require_program("promtool");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n--- input ---\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_runs_give_lint_free_metrics_without_credentials() {
    let kamailio = Kamailio::start();
    let nginx = Nginx::start();
    let metrics = Metrics::new("lab-1");
    let id = CheckId::new("telephony", "cloud");
    let (plan, report) = real_run(&kamailio, &nginx, &id).await;
    metrics.record_run(&id, &report);
    let (_, verdict) = evaluate(
        &plan.policy,
        &History::default(),
        &report,
        SystemTime::now(),
    );
    metrics.record_verdict(&id, &verdict);
    // A check that cannot run has conditions too.
    let broken = CheckId::new("telephony", "broken");
    let error = PlanError::TargetNotAllowed {
        field: "spec.sip.server".into(),
        host: "169.254.169.254".into(),
    };
    metrics.record_verdict(&broken, &not_runnable(&error));
    metrics.record_reconcile(ReconcileResult::Ok);
    metrics.record_reconcile(ReconcileResult::Error("kube_api"));
    metrics.observe_schedule_lag(Duration::from_micros(300));
    metrics.set_checks(1);
    let text = metrics.encode();
    promtool_check(&text);

    let probe = |name: &str, probe: &str| {
        let labels = [
            ("location", "lab-1"),
            ("name", "cloud"),
            ("namespace", "telephony"),
            ("probe", probe),
        ];
        value(&text, name, &labels).unwrap_or_else(|| panic!("no {name} of {probe} in\n{text}"))
    };
    assert_eq!(probe("voipcheck_probe_success", "sip-register"), 1.0);
    assert_eq!(probe("voipcheck_probe_success", "http:down"), 0.0);
    assert_eq!(probe("voipcheck_probe_success", "control"), 1.0);
    assert!(probe("voipcheck_probe_duration_seconds", "sip-options") > 0.0);
    assert_eq!(
        probe("voipcheck_sip_registration_status", "sip-register"),
        1.0
    );
    assert_eq!(
        probe("voipcheck_sip_last_status_code", "sip-options"),
        200.0
    );
    assert!(probe("voipcheck_sip_rtt_seconds", "sip-options") > 0.0);
    assert_eq!(probe("voipcheck_http_status_code", "http:down"), 503.0);
    assert_eq!(probe("voipcheck_http_status_code", "http:private"), 200.0);
    let not_after = nginx
        .valid_not_after
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    assert_eq!(
        probe("voipcheck_tls_cert_expiry_timestamp_seconds", "http:web-ui"),
        not_after.as_secs() as f64
    );
    // SIP over TLS too (issue 8: it exported none before).
    let sip_not_after = kamailio
        .cert_not_after
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    for sip in ["sip-register", "sip-options"] {
        assert_eq!(
            probe("voipcheck_tls_cert_expiry_timestamp_seconds", sip),
            sip_not_after.as_secs() as f64
        );
    }
    assert_eq!(
        series_with(&text, "voipcheck_tls_cert_expiry_timestamp_seconds{").len(),
        3,
        "only HTTPS and SIP over TLS have one"
    );
    let responses = [
        ("code", "200"),
        ("location", "lab-1"),
        ("method", "REGISTER"),
        ("name", "cloud"),
        ("namespace", "telephony"),
        ("probe", "sip-register"),
    ];
    assert_eq!(
        value(&text, "voipcheck_sip_responses_total", &responses),
        Some(1.0)
    );
    for phase in ["resolve", "connect", "tls", "processing", "transfer"] {
        let labels = [
            ("location", "lab-1"),
            ("name", "cloud"),
            ("namespace", "telephony"),
            ("phase", phase),
            ("probe", "http:web-ui"),
        ];
        assert!(
            value(&text, "voipcheck_http_phase_duration_seconds", &labels).is_some(),
            "{phase} missing"
        );
    }
    // One series per condition of the real verdict, each with its current triple.
    for c in &verdict.conditions {
        let labels = [
            ("location", "lab-1"),
            ("name", "cloud"),
            ("namespace", "telephony"),
            ("reason", c.reason.as_str()),
            ("status", c.status.as_str()),
            ("type", c.type_.as_str()),
        ];
        assert_eq!(
            value(&text, "voipcheck_condition", &labels),
            Some(1.0),
            "{c:?}"
        );
    }
    let conditions = series_with(&text, "voipcheck_condition{");
    let of_cloud = conditions
        .iter()
        .filter(|l| l.contains("name=\"cloud\""))
        .count();
    assert_eq!(of_cloud, verdict.conditions.len(), "{conditions:#?}");
    let broken = [
        ("location", "lab-1"),
        ("name", "broken"),
        ("namespace", "telephony"),
        ("reason", "TargetNotAllowed"),
        ("status", "False"),
        ("type", "Ready"),
    ];
    assert_eq!(value(&text, "voipcheck_condition", &broken), Some(1.0));
    // One failed run of three (failureThreshold) is not yet an outage.
    let check = [
        ("location", "lab-1"),
        ("name", "cloud"),
        ("namespace", "telephony"),
    ];
    assert_eq!(
        value(&text, "voipcheck_hotline_reportable", &check),
        Some(0.0)
    );
    let location = [("location", "lab-1")];
    assert_eq!(
        value(&text, "voipcheck_reconcile_total", &location),
        Some(2.0)
    );
    let errors = [("category", "kube_api"), ("location", "lab-1")];
    assert_eq!(
        value(&text, "voipcheck_reconcile_errors_total", &errors),
        Some(1.0)
    );
    assert_eq!(value(&text, "voipcheck_checks", &location), Some(1.0));
    assert_eq!(
        value(&text, "voipcheck_schedule_lag_seconds_count", &location),
        Some(1.0)
    );

    for credential in [
        SIP_PASSWORD,
        nginx::PASSWORD,
        nginx::PASSWORD_IN_URL,
        nginx::USERNAME,
        "127.0.0.1",
        "a message",
    ] {
        assert!(
            !text.contains(credential),
            "{credential:?} in the metrics:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_check_leaves_no_series_and_stale_conditions_go() {
    let kamailio = Kamailio::start();
    let nginx = Nginx::start();
    let metrics = Metrics::new("lab-1");
    let kept = CheckId::new("telephony", "kept");
    let deleted = CheckId::new("telephony", "deleted");
    for id in [&kept, &deleted] {
        let (_, report) = real_run(&kamailio, &nginx, id).await;
        metrics.record_run(id, &report);
        metrics.record_verdict(id, &verdict(true));
    }
    metrics.record_verdict(&kept, &verdict(false));
    let text = metrics.encode();
    let ready = series_with(&text, "type=\"Ready\"");
    assert_eq!(ready.len(), 2, "one Ready triple per check:\n{ready:#?}");
    assert!(
        ready
            .iter()
            .any(|l| l.contains("name=\"kept\"") && l.contains("ProbesFailing"))
    );
    assert!(!series_with(&text, "name=\"deleted\"").is_empty());

    metrics.remove_check(&deleted);
    let text = metrics.encode();
    assert_eq!(series_with(&text, "name=\"deleted\""), Vec::<&str>::new());
    assert!(series_with(&text, "name=\"kept\"").len() > 20, "{text}");
    promtool_check(&text);
}

/// A probe run stopped at its timeout.
fn cancelled(name: &str, kind: ProbeKind) -> ProbeRun {
    ProbeRun {
        name: name.into(),
        kind,
        outcome: ProbeOutcome::Cancelled(Failure::Timeout {
            after: Duration::from_secs(2),
        }),
        duration: Duration::from_millis(2250),
    }
}

fn report(probes: Vec<ProbeRun>) -> RunReport {
    RunReport {
        started: SystemTime::now(),
        probes,
        control: None,
    }
}

/// A run of every kind of probe, each stopped at its timeout (16 series).
fn timed_out_run() -> RunReport {
    report(vec![
        cancelled("sip-register", ProbeKind::SipRegister),
        cancelled("sip-options", ProbeKind::SipOptions),
        cancelled("http:web-ui", ProbeKind::Http),
        cancelled("stun", ProbeKind::Stun),
    ])
}

/// `metrics` with `count` checks that each ran once and have a verdict.
fn fill(metrics: &Metrics, count: usize) {
    let (run, verdict) = (timed_out_run(), verdict(false));
    for i in 0..count {
        let id = CheckId::new("load", format!("check-{i:05}"));
        metrics.record_run(&id, &run);
        metrics.record_verdict(&id, &verdict);
    }
}

#[test]
fn a_probe_gone_from_the_spec_and_a_cancelled_probe_leave_no_stale_facts() {
    let metrics = Metrics::new("lab-1");
    let id = CheckId::new("ns", "check");
    metrics.record_run(
        &id,
        &report(vec![
            cancelled("sip-register", ProbeKind::SipRegister),
            cancelled("stun", ProbeKind::Stun),
        ]),
    );
    let text = metrics.encode();
    let labels = |probe| {
        [
            ("location", "lab-1"),
            ("name", "check"),
            ("namespace", "ns"),
            ("probe", probe),
        ]
    };
    assert_eq!(
        value(
            &text,
            "voipcheck_sip_registration_status",
            &labels("sip-register")
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "voipcheck_sip_last_status_code",
            &labels("sip-register")
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "voipcheck_probe_success", &labels("stun")),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "voipcheck_stun_public_address", &labels("stun")),
        Some(0.0)
    );
    assert!(!text.contains("voipcheck_stun_rtt_seconds{"), "{text}");
    assert!(
        !text.contains("voipcheck_nat_binding_lifetime_seconds{"),
        "{text}"
    );

    metrics.record_run(
        &id,
        &report(vec![cancelled("sip-register", ProbeKind::SipRegister)]),
    );
    let text = metrics.encode();
    assert_eq!(series_with(&text, "probe=\"stun\""), Vec::<&str>::new());
    assert!(!series_with(&text, "probe=\"sip-register\"").is_empty());
}

fn unix(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Freshness and identity: when each check last completed a run and how often it should,
/// the version, and the standard process metrics under their unprefixed names; a deleted
/// check's series go with it.
#[test]
fn runs_are_timestamped_and_the_process_identifies_itself() {
    let metrics = Metrics::new("lab-1");
    let (kept, deleted) = (CheckId::new("ns", "kept"), CheckId::new("ns", "deleted"));
    let before = SystemTime::now();
    for id in [&kept, &deleted] {
        metrics.set_interval(id, Duration::from_secs(30));
        metrics.record_run(id, &timed_out_run());
    }
    let after = SystemTime::now();
    let text = metrics.encode();
    promtool_check(&text);
    let check = [("location", "lab-1"), ("name", "kept"), ("namespace", "ns")];
    let unix = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let last_run = value(&text, "voipcheck_last_run_timestamp_seconds", &check).unwrap();
    assert!(
        (unix(before)..=unix(after)).contains(&last_run),
        "{last_run}"
    );
    assert_eq!(
        value(&text, "voipcheck_check_interval_seconds", &check),
        Some(30.0)
    );
    let version = [
        ("location", "lab-1"),
        ("version", env!("CARGO_PKG_VERSION")),
    ];
    assert_eq!(value(&text, "voipcheck_build_info", &version), Some(1.0));
    let location = [("location", "lab-1")];
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        // CPU time counts whole seconds: 0 in a young process.
        let found = value(&text, name, &location);
        let least = if name == "process_cpu_seconds_total" {
            0.0
        } else {
            1.0
        };
        assert!(found.is_some_and(|v| v >= least), "{name}: {found:?}");
    }
    assert!(!text.contains("voipcheck_process_"), "{text}");

    metrics.remove_check(&deleted);
    let text = metrics.encode();
    assert_eq!(series_with(&text, "name=\"deleted\""), Vec::<&str>::new());
    assert_eq!(
        value(&text, "voipcheck_check_interval_seconds", &check),
        Some(30.0)
    );
}

/// The scheduler exports each check's interval when its timer starts and the time of each
/// completed run, so a check that stops running shows as an ever older timestamp.
#[tokio::test]
async fn a_scheduled_check_exports_its_interval_and_last_run() {
    use voipcheck::schedule::{CheckEntry, Outbox, Scheduler};
    let nginx = Nginx::start();
    let spec: VoipCheckSpec = serde_json::from_value(json!({
        "target": { "kind": "Portal", "name": "lab" },
        "interval": "5s",
        "timeout": "2s",
        "http": [ { "name": "web-ui", "url": nginx.http_url("/").as_str() } ]
    }))
    .unwrap();
    let id = CheckId::new("ns", "scheduled");
    let plan = check::plan(&id, &spec, &StaticSecrets::new(), &AllowList::default()).unwrap();
    let metrics = Metrics::new("lab-1");
    let outbox = std::sync::Arc::new(Outbox::new());
    let scheduler = Scheduler::new(Dns::system().unwrap(), metrics.clone(), 4, outbox.clone());
    scheduler.upsert(CheckEntry {
        id,
        uid: None,
        generation: None,
        spec: Some(std::sync::Arc::new(spec)),
        plan: Ok(plan),
        previous: None,
    });
    // The first run comes within one interval (each check has its slot in it).
    tokio::time::timeout(Duration::from_secs(10), outbox.take())
        .await
        .expect("a run within the interval")
        .unwrap();
    let text = metrics.encode();
    let check = [
        ("location", "lab-1"),
        ("name", "scheduled"),
        ("namespace", "ns"),
    ];
    assert_eq!(
        value(&text, "voipcheck_check_interval_seconds", &check),
        Some(5.0)
    );
    let last_run = value(&text, "voipcheck_last_run_timestamp_seconds", &check).unwrap();
    let now = unix(SystemTime::now());
    assert!(
        (now - 10.0..=now).contains(&last_run),
        "{last_run} at {now}"
    );
    scheduler.shutdown().await;
}

/// The incident a check's status carries is a series (for the alert's annotations) while
/// it lasts, labelled from the spec, absent fields as empty values.
#[test]
fn an_incident_is_exported_while_it_lasts() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use voipcheck::api::Incident;
    let spec: VoipCheckSpec = serde_json::from_value(json!({
        "target": { "kind": "ConnectTrunk", "name": "4972100000000" },
        "sip": { "server": "sip:connect.example.net", "options": {} },
        "report": { "serverLicense": "ABC-123", "contact": "NOC" }
    }))
    .unwrap();
    let since = Time(Timestamp::from_second(1_700_000_000).unwrap());
    let incident = Incident::new(&spec, since, "503 in 9 of 20 runs".into());
    let metrics = Metrics::new("lab-1");
    let id = CheckId::new("ns", "trunk");
    metrics.record_incident(&id, Some(&incident));
    let text = metrics.encode();
    promtool_check(&text);
    let labels = [
        ("cloud_name", ""),
        ("location", "lab-1"),
        ("name", "trunk"),
        ("namespace", "ns"),
        ("server_license", "ABC-123"),
        ("service", "ConnectTrunk"),
        ("target", "4972100000000"),
    ];
    assert_eq!(
        value(&text, "voipcheck_incident_since_timestamp_seconds", &labels),
        Some(1_700_000_000.0),
        "{text}"
    );
    assert!(!text.contains("NOC") && !text.contains("503 in"), "{text}");

    metrics.record_incident(&id, None);
    let text = metrics.encode();
    assert!(!text.contains("voipcheck_incident_since"), "{text}");
    // Clearing the incident of a check the store does not have adds nothing.
    metrics.remove_check(&id);
    metrics.record_incident(&id, None);
    assert_eq!(
        series_with(&metrics.encode(), "name=\"trunk\""),
        Vec::<&str>::new()
    );
    metrics.record_incident(&id, Some(&incident));
    metrics.remove_check(&id);
    assert_eq!(
        series_with(&metrics.encode(), "name=\"trunk\""),
        Vec::<&str>::new()
    );
}

/// One location's entry as its writer makes it from its verdict.
fn location_entry(name: &str, spec: &VoipCheckSpec, verdict: &Verdict) -> LocationStatus {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let (written, _) =
        voipcheck::status::next_status(None, Some(spec), verdict, None, Some(1), now);
    LocationStatus {
        name: name.to_owned(),
        observed_generation: written.observed_generation,
        conditions: written.conditions,
        incident: written.incident,
        last_run: None,
        stale: None,
    }
}

/// The verdict across locations is exported as its own series by the replica that writes it,
/// so an alert reads one series per check instead of re-deriving the verdict; a check that
/// leaves this replica leaves none of them behind.
#[test]
fn the_verdict_across_locations_is_exported_and_removed_with_its_check() {
    use voipcheck::api::Incident;
    use voipcheck::verdict::{Across, IncidentEvidence, aggregate};
    let spec: VoipCheckSpec = serde_json::from_value(json!({
        "target": { "kind": "Cloud", "name": "maxmuster.starface-cloud.com" },
        "sip": { "server": "sip:maxmuster.starface-cloud.com", "options": {} },
        "report": { "cloudName": "maxmuster" }
    }))
    .unwrap();
    let since = SystemTime::UNIX_EPOCH + Duration::from_secs(1_699_999_000);
    let outage = Verdict {
        incident: Some(IncidentEvidence {
            since,
            evidence: "sip-register: no answer within 10s".into(),
        }),
        ..verdict(false)
    };
    let healthy = Verdict {
        conditions: vec![
            condition(ConditionType::Ready, ConditionStatus::True, Reason::Healthy),
            condition(
                ConditionType::HotlineReportable,
                ConditionStatus::False,
                Reason::Healthy,
            ),
        ],
        incident: None,
    };
    let across = |entries: &[LocationStatus]| {
        aggregate(&Across {
            spec: &spec,
            generation: Some(1),
            entries,
            previous: None,
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_010),
            stale_after: Duration::from_secs(390),
        })
    };
    let metrics = Metrics::new("office");
    let id = CheckId::new("telephony", "maxmuster");
    let labels = [
        ("location", "office"),
        ("name", "maxmuster"),
        ("namespace", "telephony"),
    ];
    let condition_labels = |type_: &'static str, status: &'static str, reason: &'static str| {
        let mut all = labels.to_vec();
        all.extend([("type", type_), ("status", status), ("reason", reason)]);
        all
    };

    // Failing from the office, working from eu-west: not reportable, one failing location.
    let one_fails = across(&[
        location_entry("office", &spec, &outage),
        location_entry("eu-west", &spec, &healthy),
    ]);
    metrics.record_aggregate(&id, &one_fails);
    let text = metrics.encode();
    promtool_check(&text);
    for (name, expected) in [
        ("voipcheck_status_hotline_reportable", 0.0),
        ("voipcheck_status_failing_locations", 1.0),
        ("voipcheck_status_stale_locations", 0.0),
    ] {
        assert_eq!(value(&text, name, &labels), Some(expected), "{name}");
    }
    let ready = condition_labels("Ready", "False", "LocalNetworkProblem");
    assert_eq!(
        value(&text, "voipcheck_status_condition", &ready),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("voipcheck_status_incident_since"), "{text}");

    // Failing from both: reportable, with the incident's series; the old triples are gone.
    let both_fail = across(&[
        location_entry("office", &spec, &outage),
        location_entry("eu-west", &spec, &outage),
    ]);
    metrics.record_aggregate(&id, &both_fail);
    let text = metrics.encode();
    promtool_check(&text);
    assert_eq!(
        value(&text, "voipcheck_status_hotline_reportable", &labels),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "voipcheck_status_failing_locations", &labels),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "voipcheck_status_condition", &ready),
        None,
        "{text}"
    );
    let reportable = condition_labels("HotlineReportable", "True", "ProviderOutage");
    assert_eq!(
        value(&text, "voipcheck_status_condition", &reportable),
        Some(1.0)
    );
    let incident: &Incident = both_fail.incident.as_ref().unwrap();
    assert_eq!(incident.since.0.as_second(), 1_699_999_000);
    let mut incident_labels = labels.to_vec();
    incident_labels.extend([
        ("cloud_name", "maxmuster"),
        ("server_license", ""),
        ("service", "Cloud"),
        ("target", "maxmuster.starface-cloud.com"),
    ]);
    assert_eq!(
        value(
            &text,
            "voipcheck_status_incident_since_timestamp_seconds",
            &incident_labels
        ),
        Some(1_699_999_000.0),
        "{text}"
    );
    // Not the location's own series: those come from its own runs.
    assert!(!text.contains("voipcheck_hotline_reportable{"), "{text}");

    metrics.remove_check(&id);
    assert_eq!(
        series_with(&metrics.encode(), "name=\"maxmuster\""),
        Vec::<&str>::new()
    );
}

/// `voipcheck run` runs its checks alone: its own verdict is the verdict across locations, so
/// the pages (which read the status_* series) work there too; an operator location leaves those
/// to the aggregating replica.
#[test]
fn a_process_running_alone_exports_its_own_verdict_as_the_status_verdict() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use voipcheck::api::Incident;
    let spec: VoipCheckSpec = serde_json::from_value(json!({
        "target": { "kind": "Cloud", "name": "maxmuster.starface-cloud.com" },
        "sip": { "server": "sip:maxmuster.starface-cloud.com", "options": {} }
    }))
    .unwrap();
    let since = Time(Timestamp::from_second(1_700_000_000).unwrap());
    let incident = Incident::new(&spec, since, "sip-register: no answer".into());
    let id = CheckId::new("telephony", "maxmuster");
    let labels = [
        ("location", "customer"),
        ("name", "maxmuster"),
        ("namespace", "telephony"),
    ];
    let mut incident_labels = labels.to_vec();
    incident_labels.extend([
        ("cloud_name", ""),
        ("server_license", ""),
        ("service", "Cloud"),
        ("target", "maxmuster.starface-cloud.com"),
    ]);
    let record = |metrics: &Metrics, incident: Option<&Incident>| {
        metrics.record_verdict(&id, &verdict(false));
        metrics.record_incident(&id, incident);
        metrics.encode()
    };

    let alone = Metrics::alone("customer");
    let text = record(&alone, Some(&incident));
    promtool_check(&text);
    // Ready False ProbesFailing with ProviderOutage: a provider-side failure, here.
    for name in [
        "voipcheck_status_hotline_reportable",
        "voipcheck_status_failing_locations",
    ] {
        assert_eq!(value(&text, name, &labels), Some(1.0), "{name}");
    }
    let mut ready = labels.to_vec();
    ready.extend([
        ("type", "Ready"),
        ("status", "False"),
        ("reason", "ProbesFailing"),
    ]);
    assert_eq!(
        value(&text, "voipcheck_status_condition", &ready),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "voipcheck_status_incident_since_timestamp_seconds",
            &incident_labels
        ),
        Some(1_700_000_000.0)
    );
    let text = record(&alone, None);
    assert!(!text.contains("voipcheck_status_incident_since"), "{text}");
    alone.remove_check(&id);
    assert_eq!(
        series_with(&alone.encode(), "name=\"maxmuster\""),
        Vec::<&str>::new()
    );

    let location = Metrics::new("customer");
    let text = record(&location, Some(&incident));
    assert!(!text.contains("voipcheck_status_condition"), "{text}");
    assert!(!text.contains("voipcheck_status_hotline"), "{text}");
}

#[test]
fn shards_and_the_share_held_are_exported() {
    let metrics = Metrics::new("fra");
    metrics.set_shards(12, 4);
    let text = metrics.encode();
    promtool_check(&text);
    assert_eq!(
        value(&text, "voipcheck_shards", &[("location", "fra")]),
        Some(12.0)
    );
    assert_eq!(
        value(&text, "voipcheck_shards_held", &[("location", "fra")]),
        Some(4.0)
    );
}

/// Sends one raw HTTP/1.1 request and returns the status code and the whole response.
async fn get(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let code = response.split(' ').nth(1).unwrap().parse().unwrap();
    (code, response)
}

/// GET /metrics with hyper's client, as a scraper does, optionally with `Accept-Encoding`;
/// returns the response head and the body as sent (decoded from chunked transfer only).
async fn scrape(
    addr: std::net::SocketAddr,
    accept_encoding: Option<&str>,
) -> (hyper::http::response::Parts, Vec<u8>) {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::get("/metrics").header("host", "test");
    if let Some(coding) = accept_encoding {
        request = request.header("accept-encoding", coding);
    }
    let request = request.body(Empty::<hyper::body::Bytes>::new()).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), async {
        let response = sender.send_request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        (parts, body.collect().await.unwrap().to_bytes().to_vec())
    })
    .await
    .expect("the scrape completes");
    assert_eq!(response.0.status, 200);
    response
}

#[tokio::test]
async fn serve_answers_metrics_health_and_readiness() {
    let metrics = Metrics::new("lab-1");
    metrics.set_checks(3);
    let health = Health::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(voipcheck::metrics::serve_on(
        listener,
        metrics.clone(),
        health.clone(),
        async {
            let _ = stopped.await;
        },
    ));

    let (head, body) = scrape(addr, None).await;
    assert_eq!(head.headers["content-type"], "text/plain; version=0.0.4");
    let body = String::from_utf8(body).unwrap();
    assert_eq!(
        value(&body, "voipcheck_checks", &[("location", "lab-1")]),
        Some(3.0)
    );
    assert_eq!(get(addr, "GET", "/healthz").await.0, 200);
    assert_eq!(get(addr, "GET", "/readyz").await.0, 503);
    health.set_ready(true);
    assert_eq!(get(addr, "GET", "/readyz").await.0, 200);
    assert_eq!(get(addr, "GET", "/").await.0, 404);
    assert_eq!(get(addr, "GET", "/metrics/../secret").await.0, 404);
    let (code, response) = get(addr, "POST", "/metrics").await;
    assert_eq!(code, 405);
    assert!(response.contains("allow: GET, HEAD"), "{response}");
    let (code, response) = get(addr, "HEAD", "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        response.contains("content-type: text/plain; version=0.0.4"),
        "{response}"
    );

    // A client that never sends its request is cut off after the header timeout, and does
    // not keep others from being served meanwhile.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert_eq!(get(addr, "GET", "/healthz").await.0, 200);
    let start = Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut buf))
        .await
        .expect("the server closes a silent connection")
        .ok();
    assert!(
        start.elapsed() < Duration::from_secs(7),
        "{:?}",
        start.elapsed()
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(6), server)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

/// The lines of an exposition without the process metrics, which change between scrapes.
fn without_process_metrics(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with("process_") && !l.contains(" process_"))
        .collect()
}

/// A scraper that accepts gzip gets the exposition gzip-compressed, one that does not gets
/// it plain; both are the whole text (many chunks of it), equal to `encode`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_gzip_compressed_when_the_scraper_accepts_it() {
    use std::io::Read;
    let metrics = Metrics::new("lab-1");
    fill(&metrics, 2000);
    let expected = metrics.encode();
    assert!(
        expected.len() > 1 << 20,
        "several chunks: {}",
        expected.len()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(voipcheck::metrics::serve_on(
        listener,
        metrics.clone(),
        Health::default(),
        std::future::pending(),
    ));

    // What Prometheus sends.
    let accept = "gzip";
    let (head, compressed) = scrape(addr, Some(accept)).await;
    assert_eq!(head.headers["content-encoding"], "gzip");
    assert_eq!(head.headers["vary"], "accept-encoding");
    assert!(
        compressed.len() * 10 < expected.len(),
        "{} bytes compressed",
        compressed.len()
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .expect("a valid gzip stream");
    assert_eq!(
        without_process_metrics(&text),
        without_process_metrics(&expected)
    );

    for accept in [None, Some("identity"), Some("gzip;q=0")] {
        let (head, plain) = scrape(addr, accept).await;
        assert_eq!(head.headers.get("content-encoding"), None, "{accept:?}");
        let plain = String::from_utf8(plain).unwrap();
        assert_eq!(
            without_process_metrics(&plain),
            without_process_metrics(&expected),
            "{accept:?}"
        );
    }
}

/// Runs finishing while a large store is being encoded record their results at once,
/// instead of waiting for the encode to release the store (before, the lock was held while
/// every series was built: ~55 ms at 10,000 checks in a release build, ~0.5 s here).
///
/// The longest recording during an encode must stay under a twentieth of the encode; a
/// busy machine may preempt one recording for that long, so the best of three encodes counts
/// (with the lock held, every encode blocks a recording for most of its build).
#[test]
fn runs_recorded_during_a_scrape_are_not_held_up_by_it() {
    let metrics = Metrics::new("lab-1");
    fill(&metrics, 20_000);
    let id = CheckId::new("load", "check-00042");
    let run = timed_out_run();
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let text = metrics.encode();
        let encode_takes = started.elapsed();
        drop(text);
        let scrape = std::thread::spawn({
            let metrics = metrics.clone();
            move || metrics.encode().len()
        });
        let (mut runs, mut longest) = (0, Duration::ZERO);
        while !scrape.is_finished() {
            let started = Instant::now();
            metrics.record_run(&id, &run);
            longest = longest.max(started.elapsed());
            runs += 1;
        }
        assert!(scrape.join().unwrap() > 0);
        assert!(runs > 100, "{runs} runs recorded during the encode");
        if longest < encode_takes / 20 {
            return;
        }
        attempts.push(format!(
            "up to {longest:?} during an encode of {encode_takes:?}"
        ));
    }
    panic!("recording a run took {attempts:#?}");
}

#[tokio::test]
async fn serve_reports_a_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let result = voipcheck::metrics::serve(
        addr,
        Metrics::new("x"),
        Health::default(),
        std::future::pending(),
    )
    .await;
    assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::AddrInUse);
}

/// A test call as the call probe reports it: final response `code` (`None`: none came),
/// ringing after 80 ms, answered 40 ms later when `code` is 200, and `media` as measured.
fn call_run(code: Option<u16>, media: Option<MediaReport>) -> ProbeRun {
    use voipcheck::probe::sip::{CallOutcome, StatusLine};
    let status = |code: u16, reason: &str| StatusLine {
        code,
        reason: reason.into(),
    };
    let answered = code == Some(200);
    let failure = match code {
        Some(200) => None,
        Some(code) => Some(Failure::SipStatus { code, hint: None }),
        None => Some(Failure::NoRinging {
            after: Duration::from_secs(2),
        }),
    };
    let outcome = CallOutcome {
        target: None,
        response: code.map(|c| status(c, "Reason")),
        ringing: code.map(|_| status(180, "Ringing")),
        server: None,
        auth_algorithm: None,
        post_dial_delay: code.map(|_| Duration::from_millis(80)),
        setup_time: answered.then(|| Duration::from_millis(120)),
        callee_reached: None,
        hangup: None,
        media,
        total: Duration::from_secs(6),
        attempts: Vec::new(),
        dns_fallbacks: Vec::new(),
        cert_not_after: None,
        failure,
        flow: Vec::new(),
    };
    ProbeRun {
        name: "sip-call".into(),
        kind: ProbeKind::SipCall,
        outcome: ProbeOutcome::SipCall(outcome),
        duration: Duration::from_secs(6),
    }
}

/// The audio of a hairpin call: both directions measured by the probe's own legs.
fn hairpin_media() -> MediaReport {
    use voipcheck::probe::media::{Codec, MeasuredBy, Mos, StreamStats};
    let stream = |received: u32, jitter_ms: u64, mos: f64| StreamStats {
        measured_by: MeasuredBy::Probe,
        sent: 250,
        received,
        lost: 250 - received,
        loss_ratio: f64::from(250 - received) / 250.0,
        jitter: Duration::from_millis(jitter_ms),
        mos: Mos::from_f64(mos),
    };
    MediaReport {
        codec: Codec::Pcma,
        duration: Duration::from_secs(5),
        outgoing: Some(stream(245, 4, 4.02)),
        incoming: stream(250, 1, 4.41),
        round_trip: Some(Duration::from_millis(41)),
        rtcp_received: 2,
    }
}

#[test]
fn a_test_call_exports_its_timings_its_audio_per_direction_and_its_invite_responses() {
    let metrics = Metrics::new("lab-1");
    let id = CheckId::new("ns", "call");
    metrics.record_run(
        &id,
        &report(vec![call_run(Some(200), Some(hairpin_media()))]),
    );
    let text = metrics.encode();
    promtool_check(&text);
    let probe = [
        ("location", "lab-1"),
        ("name", "call"),
        ("namespace", "ns"),
        ("probe", "sip-call"),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut labels = probe.to_vec();
        labels.push(extra);
        labels
    };
    let expected = [
        (
            "voipcheck_call_post_dial_delay_seconds",
            probe.to_vec(),
            0.08,
        ),
        ("voipcheck_call_setup_seconds", probe.to_vec(), 0.12),
        ("voipcheck_sip_last_status_code", probe.to_vec(), 200.0),
        ("voipcheck_rtp_round_trip_seconds", probe.to_vec(), 0.041),
        (
            "voipcheck_sip_responses_total",
            with(("method", "INVITE"))
                .into_iter()
                .chain([("code", "200")])
                .collect(),
            1.0,
        ),
        (
            "voipcheck_rtp_loss_ratio",
            with(("direction", "outgoing")),
            0.02,
        ),
        (
            "voipcheck_rtp_loss_ratio",
            with(("direction", "incoming")),
            0.0,
        ),
        (
            "voipcheck_rtp_jitter_seconds",
            with(("direction", "outgoing")),
            0.004,
        ),
        (
            "voipcheck_rtp_jitter_seconds",
            with(("direction", "incoming")),
            0.001,
        ),
        ("voipcheck_call_mos", with(("direction", "outgoing")), 4.02),
        ("voipcheck_call_mos", with(("direction", "incoming")), 4.41),
    ];
    for (name, labels, expected) in expected {
        assert_eq!(
            value(&text, name, &labels),
            Some(expected),
            "{name} {labels:?}\n{text}"
        );
    }

    // A rejected call: its code counts, and no audio figures stay from the call before.
    metrics.record_run(&id, &report(vec![call_run(Some(503), None)]));
    let text = metrics.encode();
    promtool_check(&text);
    let invite = |code| {
        let mut labels = with(("method", "INVITE"));
        labels.push(("code", code));
        value(&text, "voipcheck_sip_responses_total", &labels)
    };
    assert_eq!((invite("200"), invite("503")), (Some(1.0), Some(1.0)));
    assert_eq!(
        value(&text, "voipcheck_sip_last_status_code", &probe),
        Some(503.0)
    );
    for family in [
        "rtp_loss_ratio",
        "rtp_jitter_seconds",
        "call_mos",
        "rtp_round_trip_seconds",
        "call_setup_seconds",
    ] {
        assert!(
            !text.contains(&format!("voipcheck_{family}{{")),
            "{family}\n{text}"
        );
    }

    // A call that never rang, then one cancelled at its bound: no timings, code 0.
    for run in [
        call_run(None, None),
        cancelled("sip-call", ProbeKind::SipCall),
    ] {
        metrics.record_run(&id, &report(vec![run]));
        let text = metrics.encode();
        assert_eq!(
            value(&text, "voipcheck_sip_last_status_code", &probe),
            Some(0.0)
        );
        assert!(
            !text.contains("voipcheck_call_post_dial_delay_seconds{"),
            "{text}"
        );
    }

    // A deleted check's call series go with it.
    metrics.record_run(
        &id,
        &report(vec![call_run(Some(200), Some(hairpin_media()))]),
    );
    metrics.remove_check(&id);
    assert_eq!(
        series_with(&metrics.encode(), "name=\"call\""),
        Vec::<&str>::new()
    );
}
