//! The test call probe (`sip::call`) against real peers on loopback: Kamailio as the provider's
//! registrar and proxy (tests/peers/kamailio.cfg: 407 on INVITE, record-routing, test numbers)
//! and SIPp as the far end (tests/peers/sipp/call-*.xml).

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;
use support::kamailio::Kamailio;
use support::sipp::Sipp;
use voipcheck::probe::dns::Dns;
use voipcheck::probe::sip::{
    self, Account, AnswerPolicy, CallConfig, CallOutcome, Callee, DigestAlgorithm, Party,
    SdpAddress,
};
use voipcheck::probe::tls::CaSource;
use voipcheck::probe::{Failure, Outcome};
use voipcheck::secret::Secret;

const TIMEOUT: Duration = Duration::from_secs(5);
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn account(kamailio: &Kamailio, transport: &str) -> Account {
    Account {
        server: kamailio.uri(transport),
        username: "alice".into(),
        auth_username: None,
        domain: None,
        proxy: None,
        password: Secret::new("alice-secret"),
        ca: Some(CaSource::File(kamailio.ca_file.clone())),
    }
}

fn call_config(kamailio: &Kamailio, transport: &str, number: &str) -> CallConfig {
    CallConfig {
        caller: account(kamailio, transport),
        callee: Callee::Number(kamailio.number(number, transport)),
        answer: AnswerPolicy::Required,
        ring_timeout: Duration::from_secs(2),
        media: None,
        advertise: SdpAddress::Local,
        timeout: TIMEOUT,
    }
}

async fn call(cfg: &CallConfig) -> CallOutcome {
    let outcome = sip::call(&Dns::system().unwrap(), cfg)
        .await
        .expect("valid configuration");
    assert!(
        outcome.total <= cfg.bound(),
        "the call took {:?}, over its bound {:?}",
        outcome.total,
        cfg.bound()
    );
    outcome
}

/// The call flow as `probe -v` prints it.
fn flow(outcome: &CallOutcome) -> String {
    let lines: Vec<String> = outcome.flow.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// The first lines of the messages sent (`→`) or received (`←`), in order.
fn lines(outcome: &CallOutcome, arrow: &str) -> Vec<String> {
    flow(outcome)
        .lines()
        .filter_map(|l| {
            l.split_once(&format!("{arrow}  "))
                .map(|(_, rest)| rest.to_owned())
        })
        .collect()
}

fn sent(outcome: &CallOutcome, method: &str) -> usize {
    lines(outcome, "→")
        .iter()
        .filter(|l| l.starts_with(&format!("{method} ")))
        .count()
}

fn echo_uas(ip: IpAddr) -> Sipp {
    let media_port = support::free_port().to_string();
    Sipp::start_with(
        "call-echo.xml",
        ip,
        1,
        &["-rtp_echo", "-mi", &ip.to_string(), "-mp", &media_port],
    )
}

#[tokio::test]
async fn an_answered_call_is_authenticated_acknowledged_and_hung_up() {
    for transport in ["udp", "tcp", "tls"] {
        let mut uas = echo_uas(LOCAL);
        let kamailio = Kamailio::builder().echo(uas.addr).start();
        let outcome = call(&call_config(&kamailio, transport, "echo")).await;
        let text = flow(&outcome);
        assert_eq!(outcome.failure, None, "{transport}: {outcome:#?}\n{text}");
        assert_eq!(outcome.response.as_ref().map(|r| r.code), Some(200));
        assert_eq!(outcome.ringing.as_ref().map(|r| r.code), Some(180));
        assert_eq!(outcome.auth_algorithm, Some(DigestAlgorithm::Md5));
        assert!(outcome.post_dial_delay.unwrap() <= outcome.setup_time.unwrap());
        let hangup = outcome.hangup.as_ref().expect("hung up");
        assert_eq!(hangup.by, Party::Caller);
        assert_eq!(hangup.method, "BYE");
        assert_eq!(
            hangup.response.as_ref().map(|r| r.code),
            Some(200),
            "{text}"
        );
        // The challenge, the authenticated INVITE, the ACKs of the 407 and of the 200, BYE.
        assert!(text.contains("←  SIP/2.0 407"), "{text}");
        assert_eq!(sent(&outcome, "INVITE"), 2, "{text}");
        assert_eq!(sent(&outcome, "ACK"), 2, "{text}");
        assert_eq!(sent(&outcome, "BYE"), 1, "{text}");
        assert!(!text.contains("alice-secret"), "{text}");
        assert!(outcome.facts().iter().any(|(k, _)| *k == "setup time"));
        // SIPp saw the whole dialog: INVITE, ACK and BYE through the record-routing proxy.
        uas.assert_scenario_completes(Duration::from_secs(5));
    }
}

#[tokio::test]
async fn rejected_calls_keep_their_code() {
    let kamailio = Kamailio::start();
    for (number, expected) in [
        (
            "404",
            Failure::SipStatus {
                code: 404,
                hint: None,
            },
        ),
        (
            "480",
            Failure::SipStatus {
                code: 480,
                hint: None,
            },
        ),
        (
            "486",
            Failure::SipStatus {
                code: 486,
                hint: None,
            },
        ),
        ("403", Failure::Forbidden),
        ("488", Failure::NotAcceptableHere),
    ] {
        let outcome = call(&call_config(&kamailio, "udp", number)).await;
        let text = flow(&outcome);
        assert_eq!(outcome.failure, Some(expected), "{number}: {text}");
        assert_eq!(
            outcome.response.as_ref().map(|r| r.code.to_string()),
            Some(number.to_owned())
        );
        // The final response is acknowledged in its transaction; no dialog to end.
        assert_eq!(sent(&outcome, "ACK"), 2, "{text}");
        assert_eq!(
            sent(&outcome, "BYE") + sent(&outcome, "CANCEL"),
            0,
            "{text}"
        );
        assert_eq!(outcome.hangup, None);
    }
}

#[tokio::test]
async fn a_503_is_kept_after_the_only_destination_gave_it() {
    let kamailio = Kamailio::start();
    let outcome = call(&call_config(&kamailio, "tcp", "503")).await;
    assert!(
        matches!(outcome.failure, Some(Failure::SipStatus { code: 503, .. })),
        "{outcome:#?}"
    );
}

#[tokio::test]
async fn a_call_that_rings_until_the_ring_timeout_is_cancelled() {
    let kamailio = Kamailio::start();
    for transport in ["udp", "tcp"] {
        let cfg = call_config(&kamailio, transport, "ring");
        let outcome = call(&cfg).await;
        let text = flow(&outcome);
        assert_eq!(
            outcome.failure,
            Some(Failure::NotAnswered {
                after: cfg.ring_timeout
            }),
            "{transport}: {text}"
        );
        assert_eq!(outcome.ringing.as_ref().map(|r| r.code), Some(180));
        assert_eq!(
            outcome.response.as_ref().map(|r| r.code),
            Some(487),
            "{text}"
        );
        let hangup = outcome.hangup.as_ref().expect("cancelled");
        assert_eq!(
            (hangup.by, hangup.method.as_str()),
            (Party::Caller, "CANCEL")
        );
        assert_eq!(
            hangup.response.as_ref().map(|r| r.code),
            Some(200),
            "{text}"
        );
        assert_eq!(sent(&outcome, "CANCEL"), 1, "{text}");
        // The 487 is acknowledged (as the 407 before it).
        assert_eq!(sent(&outcome, "ACK"), 2, "{text}");
        assert!(outcome.total >= cfg.ring_timeout);
    }
}

#[tokio::test]
async fn ringing_is_enough_succeeds_at_the_first_180_and_cancels() {
    let kamailio = Kamailio::start();
    let mut cfg = call_config(&kamailio, "udp", "ring");
    cfg.answer = AnswerPolicy::RingingIsEnough;
    cfg.ring_timeout = Duration::from_secs(20);
    let outcome = call(&cfg).await;
    let text = flow(&outcome);
    assert_eq!(outcome.failure, None, "{text}");
    assert_eq!(outcome.ringing.as_ref().map(|r| r.code), Some(180));
    assert!(outcome.post_dial_delay.is_some());
    assert_eq!(outcome.setup_time, None);
    assert_eq!(sent(&outcome, "CANCEL"), 1, "{text}");
    assert!(
        outcome.total < Duration::from_secs(5),
        "{:?}",
        outcome.total
    );
}

#[tokio::test]
async fn a_call_over_ipv6_offers_an_ipv6_address() {
    let mut uas = echo_uas(IpAddr::V6(Ipv6Addr::LOCALHOST));
    let kamailio = Kamailio::builder().ipv6().echo(uas.addr).start();
    let outcome = call(&call_config(&kamailio, "udp", "echo")).await;
    let text = flow(&outcome);
    assert_eq!(outcome.failure, None, "{text}");
    assert!(text.contains("SDP: c=IN IP6 ::1"), "{text}");
    uas.assert_scenario_completes(Duration::from_secs(5));
}

#[tokio::test]
async fn a_caller_with_a_wrong_password_is_rejected() {
    let kamailio = Kamailio::start();
    let mut cfg = call_config(&kamailio, "udp", "echo");
    cfg.caller.password = Secret::new("wrong-secret");
    let outcome = call(&cfg).await;
    let text = flow(&outcome);
    assert_eq!(
        outcome.failure,
        Some(Failure::AuthRejected { code: 407 }),
        "{text}"
    );
    assert!(!text.contains("wrong-secret"), "{text}");
}

#[test]
fn bad_configurations_are_refused_before_anything_is_sent() {
    let kamailio = Kamailio::start();
    let mut cfg = call_config(&kamailio, "udp", "echo");
    cfg.callee = Callee::Number("tel:+4930123".into());
    assert_eq!(cfg.validate().unwrap_err().field, "call.to");
    let mut cfg = call_config(&kamailio, "udp", "echo");
    cfg.ring_timeout = Duration::ZERO;
    assert_eq!(cfg.validate().unwrap_err().field, "call.ringTimeout");
    let mut cfg = call_config(&kamailio, "udp", "echo");
    cfg.callee = Callee::Account {
        username: "bob@x".into(),
        auth_username: None,
        password: Secret::new("p"),
    };
    assert_eq!(cfg.validate().unwrap_err().field, "call.callee.username");
}
