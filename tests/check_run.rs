//! `check::plan` + `check::run` against the real peers (Kamailio, nginx, coturn): a plan built
//! from a realistic spec and its Secrets runs every probe concurrently, and a stopped
//! registrar fails the REGISTER with a typed failure within the check's timeout.

mod support;

use serde_json::json;
use std::time::{Duration, Instant, SystemTime};
use support::coturn::Coturn;
use support::kamailio::Kamailio;
use support::nginx::{self, Nginx};
use voipcheck::api::{ConditionStatus, ConditionType, Reason, VoipCheckSpec};
use voipcheck::check::{self, AllowList, CheckId, ProbeKind, ProbeOutcome, StaticSecrets};
use voipcheck::probe::Failure;
use voipcheck::probe::dns::Dns;
use voipcheck::secret::Secret;
use voipcheck::verdict;

const NAMESPACE: &str = "lab";

fn dns() -> Dns {
    Dns::system().expect("system resolver configuration")
}

/// A Cloud check of the lab: REGISTER and OPTIONS over TLS (CA from a Secret), the web UI over
/// HTTPS (CA from a Secret), a page behind Basic auth, STUN with a 1 s NAT binding test, and
/// plain HTTP as the control probe.
fn lab_spec(kamailio: &Kamailio, nginx: &Nginx, coturn: &Coturn) -> VoipCheckSpec {
    serde_json::from_value(json!({
        "target": { "kind": "Cloud", "name": "lab" },
        "interval": "10s",
        "timeout": "2s",
        "sip": {
            "server": kamailio.uri("tls"),
            "register": {
                "username": "alice",
                "credentialsSecretRef": { "name": "sip", "key": "password" }
            },
            "options": { "laggedThreshold": "500ms" },
            "caSecretRef": { "name": "sip-ca", "key": "ca.crt" }
        },
        "http": [
            {
                "name": "web-ui",
                "url": nginx.https_url("127.0.0.1", nginx.https_port, "/").as_str(),
                "expectStatus": [200],
                "bodyContains": "STARFACE",
                "caSecretRef": { "name": "web-ca", "key": "ca.crt" }
            },
            {
                "name": "private",
                "url": nginx.http_url("/private").as_str(),
                "bodyContains": "private STARFACE page",
                "basicAuthSecretRef": { "name": "login" },
                "allowInsecureBasicAuth": true
            }
        ],
        "stun": {
            "servers": [coturn.server()],
            "natBinding": { "keepaliveInterval": "1s" }
        },
        "control": { "url": nginx.http_url("/").as_str() }
    }))
    .unwrap()
}

fn lab_secrets(kamailio: &Kamailio, nginx: &Nginx) -> StaticSecrets {
    let pem = |path: &std::path::Path| Secret::new(std::fs::read_to_string(path).unwrap());
    let mut secrets = StaticSecrets::new();
    secrets.insert(NAMESPACE, "sip", "password", Secret::new("alice-secret"));
    secrets.insert(NAMESPACE, "sip-ca", "ca.crt", pem(&kamailio.ca_file));
    secrets.insert(NAMESPACE, "web-ca", "ca.crt", pem(nginx.ca.cert_path()));
    secrets.insert(NAMESPACE, "login", "username", Secret::new(nginx::USERNAME));
    secrets.insert(NAMESPACE, "login", "password", Secret::new(nginx::PASSWORD));
    secrets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_probe_of_a_realistic_check_succeeds_concurrently() {
    let kamailio = Kamailio::start();
    let nginx = Nginx::start();
    let coturn = Coturn::start();
    let spec = lab_spec(&kamailio, &nginx, &coturn);
    let id = CheckId::new(NAMESPACE, "cloud");
    let plan = check::plan(
        &id,
        &spec,
        &lab_secrets(&kamailio, &nginx),
        &AllowList::default(),
    )
    .unwrap();

    let start = Instant::now();
    let report = check::run_with_nat_binding(&dns(), &plan).await;
    let elapsed = start.elapsed();

    let names: Vec<&str> = report.probes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "sip-register",
            "sip-options",
            "http:web-ui",
            "http:private",
            "stun"
        ]
    );
    let kinds: Vec<ProbeKind> = report.probes.iter().map(|p| p.kind).collect();
    use ProbeKind::*;
    assert_eq!(kinds, [SipRegister, SipOptions, Http, Http, Stun]);
    for probe in report.probes.iter().chain(&report.control) {
        assert_eq!(probe.failure(), None, "{}: {:?}", probe.name, probe.outcome);
        assert!(probe.duration > Duration::ZERO, "{}", probe.name);
    }
    match &report.probes[0].outcome {
        ProbeOutcome::SipRegister(outcome) => {
            assert_eq!(outcome.response.as_ref().unwrap().code, 200);
            assert_eq!(outcome.unregister.as_ref().map(|u| &u.failure), Some(&None));
        }
        other => panic!("{other:?}"),
    }
    match &report.probes[4].outcome {
        ProbeOutcome::Stun(outcome) => assert!(outcome.nat_binding.is_some()),
        other => panic!("{other:?}"),
    }
    let control = report.control.as_ref().unwrap();
    assert_eq!((control.name.as_str(), control.kind), ("control", Http));
    // Concurrent: the run lasts about as long as the NAT binding measurement (1 s idle), which
    // runs beside the probes, not after them; the probes run side by side too.
    let idle = Duration::from_secs(1);
    let longest = report.probes.iter().map(|p| p.duration).max().unwrap();
    let sum: Duration = report.probes.iter().map(|p| p.duration).sum();
    assert!(elapsed >= idle, "{elapsed:?}");
    assert!(
        elapsed < idle + Duration::from_millis(500),
        "{elapsed:?}: the measurement and the probes one after the other?"
    );
    assert!(longest < sum, "{longest:?} vs sum {sum:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_registrar_fails_register_with_a_typed_failure_within_the_timeout() {
    let mut kamailio = Kamailio::start();
    let nginx = Nginx::start();
    let spec: VoipCheckSpec = serde_json::from_value(json!({
        "target": { "kind": "Cloud", "name": "lab" },
        "interval": "10s",
        "timeout": "1s",
        "sip": {
            "server": kamailio.uri("udp"),
            "register": {
                "username": "alice",
                "credentialsSecretRef": { "name": "sip", "key": "password" }
            }
        },
        "http": [{ "name": "web-ui", "url": nginx.http_url("/").as_str() }]
    }))
    .unwrap();
    let mut secrets = StaticSecrets::new();
    secrets.insert(NAMESPACE, "sip", "password", Secret::new("alice-secret"));
    let plan = check::plan(
        &CheckId::new(NAMESPACE, "cloud"),
        &spec,
        &secrets,
        &AllowList::default(),
    )
    .unwrap();

    let before = check::run(&dns(), &plan).await;
    assert_eq!(before.probes[0].failure(), None, "{:?}", before.probes[0]);

    kamailio.daemon.stop();
    let start = Instant::now();
    let after = check::run(&dns(), &plan).await;
    let elapsed = start.elapsed();
    let register = &after.probes[0];
    assert!(
        matches!(
            register.failure(),
            Some(Failure::Timeout { .. } | Failure::ConnectRefused { .. })
        ),
        "{:?}",
        register.outcome
    );
    assert!(
        matches!(register.outcome, ProbeOutcome::SipRegister(_)),
        "the probe bounded itself, it was not cancelled: {:?}",
        register.outcome
    );
    assert!(elapsed <= plan.timeout + check::run::GRACE, "{elapsed:?}");
    assert_eq!(after.probes[1].failure(), None, "the web UI still answers");
}

/// The control probe asks whether this location reaches the internet: a control page answering
/// 404, 503 or a redirect says it does, so a stopped registrar is still a reportable outage
/// (and the control's own probe, `probe_success{probe="control"}`, passes). A control that gets
/// no answer at all (nothing listens) makes the same outage this location's network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_answer_of_the_control_page_proves_the_network_during_an_outage() {
    let mut kamailio = Kamailio::start();
    let nginx = Nginx::start();
    kamailio.daemon.stop();
    let silent = format!("http://127.0.0.1:{}/", support::free_port());
    let cases = [
        (nginx.http_url("/no-such-page").to_string(), true),
        (nginx.http_url("/status/503").to_string(), true),
        (nginx.http_url("/redirect").to_string(), true),
        (silent, false),
    ];
    for (control, answers) in cases {
        let spec: VoipCheckSpec = serde_json::from_value(json!({
            "target": { "kind": "Cloud", "name": "lab" },
            "timeout": "1s",
            "failureThreshold": 1,
            "sip": {
                "server": kamailio.uri("udp"),
                "register": {
                    "username": "alice",
                    "credentialsSecretRef": { "name": "sip", "key": "password" }
                }
            },
            "control": { "url": control }
        }))
        .unwrap();
        let mut secrets = StaticSecrets::new();
        secrets.insert(NAMESPACE, "sip", "password", Secret::new("alice-secret"));
        let id = CheckId::new(NAMESPACE, "cloud");
        let plan = check::plan(&id, &spec, &secrets, &AllowList::default()).unwrap();

        let report = check::run(&dns(), &plan).await;
        let probe = report.control.as_ref().unwrap();
        assert_eq!(probe.failure().is_none(), answers, "{control}: {probe:?}");
        let (_, verdict) = verdict::evaluate(
            &plan.policy,
            &verdict::History::default(),
            &report,
            SystemTime::now(),
        );
        let reportable = verdict.condition(ConditionType::HotlineReportable).unwrap();
        let expected = match answers {
            true => (ConditionStatus::True, Reason::ProviderOutage),
            false => (ConditionStatus::False, Reason::LocalNetworkProblem),
        };
        assert_eq!(
            (reportable.status, reportable.reason),
            expected,
            "{control}: {}",
            reportable.message
        );
    }
}
