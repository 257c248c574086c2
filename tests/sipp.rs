//! The SIP probes against SIPp scenarios (tests/peers/sipp/): the odd but valid answers real
//! registrars and proxies give, on 127.0.0.1 and on [::1].

mod support;

use serde_json::json;
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;
use support::sipp::Sipp;
use voipcheck::api::VoipCheckSpec;
use voipcheck::check::{self, AllowList, CheckId, ProbeOutcome, StaticSecrets};
use voipcheck::probe::dns::Dns;
use voipcheck::probe::sip::{
    self, OptionsConfig, OptionsOutcome, QualifyState, RegisterConfig, RegisterOutcome,
};
use voipcheck::probe::{Failure, NotBoundReason, StatusHint};
use voipcheck::schedule::{CheckEntry, Scheduler};
use voipcheck::secret::Secret;

const TIMEOUT: Duration = Duration::from_secs(3);
const IPV4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const IPV6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);

/// No test here resolves a name: every server is an IP literal.
fn dns() -> Dns {
    Dns::with_nameserver(([127, 0, 0, 1], 9).into())
}

fn register_config(server: String, unregister: bool) -> RegisterConfig {
    RegisterConfig {
        server,
        username: "alice".into(),
        auth_username: None,
        domain: None,
        proxy: None,
        password: Secret::new("alice-secret"),
        expires: 300,
        unregister,
        timeout: TIMEOUT,
        ca: None,
    }
}

async fn register(cfg: &RegisterConfig) -> RegisterOutcome {
    sip::register(&dns(), cfg)
        .await
        .expect("valid configuration")
}

async fn options(server: String) -> OptionsOutcome {
    let cfg = OptionsConfig {
        server,
        proxy: None,
        lagged_threshold: Duration::from_secs(1),
        timeout: TIMEOUT,
        ca: None,
    };
    sip::options(&dns(), &cfg)
        .await
        .expect("valid configuration")
}

/// Before, the IPv6 To of the answer was refused ("response without a valid To") and the
/// qualify read Unreachable.
#[tokio::test]
async fn options_to_an_ipv6_literal_is_reachable() {
    let mut sipp = Sipp::start("options.xml", IPV6, 1);
    let server = sipp.uri(None);
    assert!(server.starts_with("sip:[::1]:"), "{server}");
    let outcome = options(server).await;
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    assert_eq!(outcome.state, QualifyState::Reachable);
    assert_eq!(outcome.response.unwrap().code, 200);
    assert_eq!(outcome.server.as_deref(), Some("sipp-uas"));
    sipp.assert_scenario_completes(Duration::from_secs(5));
}

/// A qualify only needs an answer: before, a 200 without To tag read Unreachable, the 200
/// hidden behind a protocol error.
#[tokio::test]
async fn options_answered_without_to_tag_is_reachable_and_shows_the_response() {
    for ip in [IPV4, IPV6] {
        let mut sipp = Sipp::start("options-untagged.xml", ip, 1);
        let outcome = options(sipp.uri(None)).await;
        assert_eq!(outcome.failure, None, "{ip}: {outcome:#?}");
        assert_eq!(outcome.state, QualifyState::Reachable);
        let response = outcome.response.unwrap();
        assert_eq!((response.code, response.reason.as_str()), (200, "OK"));
        sipp.assert_scenario_completes(Duration::from_secs(5));
    }
}

/// A NAT-aware registrar rewrites our Contact to another address and port (keeping its user
/// part) and lists another device's binding with a longer expiry: the granted expiry is ours
/// (120 s, not 3600 s), on IPv4 and IPv6 alike (before, an IPv6 Contact lost its expiry and an
/// IPv6 To failed the REGISTER at once).
#[tokio::test]
async fn the_granted_expiry_is_our_rewritten_bindings_on_ipv4_and_ipv6() {
    for ip in [IPV4, IPV6] {
        let mut sipp = Sipp::start("register-rewritten-contact.xml", ip, 1);
        let outcome = register(&register_config(sipp.uri(None), true)).await;
        assert_eq!(outcome.failure, None, "{ip}: {outcome:#?}");
        assert_eq!(outcome.granted_expires, Some(120), "{ip}: {outcome:#?}");
        let unregister = outcome.unregister.expect("un-REGISTER tried");
        assert_eq!(unregister.failure, None, "{ip}");
        assert_eq!(unregister.to_string(), "removed");
        sipp.assert_scenario_completes(Duration::from_secs(5));
    }
}

/// Before, each of these 200 OKs counted as registered.
#[tokio::test]
async fn a_200_that_does_not_hold_our_binding_is_not_registered() {
    let cases = [
        ("register-expires-zero.xml", NotBoundReason::ExpiresZero),
        (
            "register-expires-header-zero.xml",
            NotBoundReason::ExpiresZero,
        ),
        (
            "register-other-bindings.xml",
            NotBoundReason::OtherBindingsOnly { count: 2 },
        ),
        ("register-no-contact.xml", NotBoundReason::NoContact),
    ];
    for (scenario, reason) in cases {
        let mut sipp = Sipp::start(scenario, IPV4, 1);
        let outcome = register(&register_config(sipp.uri(None), true)).await;
        assert_eq!(
            outcome.failure,
            Some(Failure::NotBound { reason }),
            "{scenario}: {outcome:#?}"
        );
        assert_eq!(outcome.response.as_ref().unwrap().code, 200);
        assert_eq!(outcome.granted_expires, None, "{scenario}");
        // Nothing bound, nothing to remove.
        assert_eq!(outcome.unregister, None, "{scenario}");
        sipp.assert_scenario_completes(Duration::from_secs(5));
    }
}

/// Compact header forms (RFC 3261 §7.3.3) and folded lines (§7.3.1) in the 200 OK: our
/// binding's 90 s sit on a continuation line of a compact `m:` Contact (before, the folded
/// message was refused).
#[tokio::test]
async fn compact_and_folded_headers_are_read() {
    let mut sipp = Sipp::start("register-compact-folded.xml", IPV4, 1);
    let outcome = register(&register_config(sipp.uri(None), true)).await;
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    assert_eq!(outcome.granted_expires, Some(90));
    assert_eq!(outcome.server.as_deref(), Some("folded registrar"));
    assert_eq!(outcome.unregister.unwrap().failure, None);
    sipp.assert_scenario_completes(Duration::from_secs(5));
}

/// A 302 names where to go, a 503 when to come back; both are in the failure's text.
#[tokio::test]
async fn a_redirect_shows_its_contact_and_a_503_its_retry_after() {
    let sipp = Sipp::start("redirect.xml", IPV4, 1);
    let outcome = register(&register_config(sipp.uri(None), true)).await;
    let failure = outcome.failure.expect("a 302 is no success");
    assert_eq!(
        failure,
        Failure::SipStatus {
            code: 302,
            hint: Some(StatusHint::RedirectTo {
                contact: "<sip:alice@backup.example.test:5080>".into()
            })
        }
    );
    assert!(
        failure
            .to_string()
            .contains("redirecting to <sip:alice@backup.example.test:5080>"),
        "{failure}"
    );

    let sipp = Sipp::start("unavailable.xml", IPV4, 1);
    let outcome = register(&register_config(sipp.uri(None), true)).await;
    let failure = outcome.failure.expect("a 503 is no success");
    assert_eq!(
        failure,
        Failure::SipStatus {
            code: 503,
            hint: Some(StatusHint::RetryAfter { seconds: 120 })
        }
    );
    assert!(
        failure.to_string().contains("retry after 120 s"),
        "{failure}"
    );
}

/// The server answered the first REGISTER with a challenge, then not the answer: the failure
/// says what did arrive (before: "no answer within 3s").
#[tokio::test]
async fn an_unanswered_answer_to_a_challenge_says_the_challenge_came() {
    let sipp = Sipp::start("challenge-then-silence.xml", IPV4, 1);
    let mut cfg = register_config(sipp.uri(None), true);
    cfg.timeout = Duration::from_secs(1);
    let outcome = register(&cfg).await;
    match &outcome.failure {
        Some(failure @ Failure::NoFinalAnswer { arrived, .. }) => {
            assert_eq!(arrived, "401 Unauthorized to the previous REGISTER");
            assert!(!failure.to_string().contains("no answer"), "{failure}");
        }
        other => panic!("{other:?}"),
    }
}

/// A check whose registration is in flight when it is removed, or when the operator stops,
/// still sends its un-REGISTER: the scheduler lets a run in flight finish (SIPp's scenario only
/// completes once the un-REGISTER came and was answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_and_shutdown_mid_register_still_unregister() {
    for stop in ["remove", "shutdown"] {
        let sipp = Sipp::start("register-slow.xml", IPV4, 1);
        let (spec, plan) = slow_check(&sipp);
        let metrics = voipcheck::metrics::Metrics::new("test");
        let outbox = std::sync::Arc::new(voipcheck::schedule::Outbox::new());
        let scheduler = Scheduler::new(dns(), metrics, 4, outbox);
        let id = plan.id.clone();
        scheduler.upsert(CheckEntry {
            id: id.clone(),
            uid: None,
            generation: Some(1),
            spec: Some(std::sync::Arc::new(spec)),
            plan: Ok(plan),
            previous: None,
        });
        // The first slot comes within the 5 s interval; the registrar then holds the REGISTER.
        let wait = tokio::task::spawn_blocking(move || {
            sipp.wait_for_message("REGISTER sip:", Duration::from_secs(10));
            sipp
        });
        let mut sipp = wait.await.unwrap();
        match stop {
            "remove" => scheduler.remove(&id),
            _ => {
                scheduler.shutdown().await;
            }
        }
        let finished = tokio::task::spawn_blocking(move || {
            sipp.assert_scenario_completes(Duration::from_secs(10));
        });
        finished.await.unwrap_or_else(|e| panic!("{stop}: {e}"));
    }
}

/// A check of one REGISTER against SIPp, with a 2 s timeout and a 5 s interval.
fn slow_check(sipp: &Sipp) -> (VoipCheckSpec, check::Plan) {
    let spec: VoipCheckSpec = serde_json::from_value(json!({
        "target": { "kind": "Cloud", "name": "slow" },
        "interval": "5s",
        "timeout": "2s",
        "sip": {
            "server": sipp.uri(None),
            "register": {
                "username": "alice",
                "credentialsSecretRef": { "name": "sip", "key": "password" }
            }
        }
    }))
    .unwrap();
    let mut secrets = StaticSecrets::new();
    secrets.insert("lab", "sip", "password", Secret::new("alice-secret"));
    let id = CheckId::new("lab", "slow");
    let plan = check::plan(&id, &spec, &secrets, &AllowList::default()).unwrap();
    (spec, plan)
}

/// The registrar takes 1.5 s of the check's 2 s timeout, and 0.6 s for the un-REGISTER: the
/// un-REGISTER has its own budget and is not cut off by the check's timeout (before, it got
/// the 0.5 s left, failed, and the binding stayed behind).
#[tokio::test]
async fn a_slow_registration_still_gets_its_unregister() {
    let mut sipp = Sipp::start("register-slow.xml", IPV4, 1);
    let (spec, plan) = slow_check(&sipp);
    let report = check::run(&dns(), &plan).await;
    let ProbeOutcome::SipRegister(outcome) = &report.probes[0].outcome else {
        panic!("{:?}", report.probes[0].outcome);
    };
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    let unregister = outcome.unregister.as_ref().expect("un-REGISTER tried");
    assert_eq!(unregister.failure, None, "{outcome:#?}");
    assert_eq!(unregister.response.as_ref().unwrap().code, 200);
    sipp.assert_scenario_completes(Duration::from_secs(5));
    // lastRun shows it.
    let now = std::time::SystemTime::now();
    let (_, verdict) =
        voipcheck::verdict::evaluate(&plan.policy, &Default::default(), &report, now);
    let (status, _) =
        voipcheck::status::next_status(None, Some(&spec), &verdict, Some(&report), Some(1), now);
    let probes = status.last_run.unwrap().probes;
    assert_eq!(probes[0].unregister.as_deref(), Some("removed"));
}

/// `-v` prints the messages as a flow; the password, the nonce and the digest response never
/// appear.
#[test]
fn verbose_prints_the_flow_without_password_or_nonce() {
    let mut sipp = Sipp::start("challenge.xml", IPV4, 1);
    let password = "pw-must-not-show-0815";
    let output = Command::new(env!("CARGO_BIN_EXE_voipcheck"))
        .args(["probe", "sip-register", &sipp.uri(None)])
        .args(["--username", "alice", "-v", "--timeout", "3s"])
        .env("VOIPCHECK_SIP_PASSWORD", password)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    sipp.assert_scenario_completes(Duration::from_secs(5));
    for line in [
        "→  REGISTER sip:127.0.0.1:",
        "←  SIP/2.0 401 Unauthorized",
        "WWW-Authenticate: Digest realm=\"sipp\", nonce=\"…\"",
        "Authorization: Digest username=\"alice\"",
        "←  SIP/2.0 200 OK",
        "Expires: 0",
    ] {
        assert!(stdout.contains(line), "{line:?} missing in\n{stdout}");
    }
    assert_eq!(stdout.matches("→  REGISTER").count(), 3, "{stdout}");
    for secret in [password, "n0nce-must-not-show-4711"] {
        assert!(!stdout.contains(secret), "{secret} in\n{stdout}");
        assert!(!stderr.contains(secret), "{secret} in\n{stderr}");
    }
    let response = stdout
        .lines()
        .find(|l| l.contains("Authorization:"))
        .unwrap();
    assert!(response.contains("response=\"…\""), "{response}");
}
