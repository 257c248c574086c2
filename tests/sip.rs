//! The SIP probes against a real Kamailio registrar (tests/peers/kamailio.cfg) on loopback.

mod support;

use std::time::{Duration, Instant};
use support::kamailio::Kamailio;
use voipcheck::probe::dns::Dns;
use voipcheck::probe::sip::{
    self, DigestAlgorithm, OptionsConfig, OptionsOutcome, QualifyState, RegisterConfig,
    RegisterOutcome, Transport,
};
use voipcheck::probe::tls::CaSource;
use voipcheck::probe::{DnsErrorKind, DnsRecord, Failure, Outcome};
use voipcheck::secret::Secret;

const TIMEOUT: Duration = Duration::from_secs(5);

fn dns() -> Dns {
    Dns::system().expect("system resolver configuration")
}

fn register_config(
    kamailio: &Kamailio,
    transport: &str,
    user: &str,
    password: &str,
) -> RegisterConfig {
    RegisterConfig {
        server: kamailio.uri(transport),
        username: user.into(),
        auth_username: None,
        domain: None,
        proxy: None,
        password: Secret::new(password),
        expires: sip::DEFAULT_EXPIRES,
        unregister: true,
        timeout: TIMEOUT,
        ca: Some(CaSource::File(kamailio.ca_file.clone())),
    }
}

async fn register(cfg: &RegisterConfig) -> RegisterOutcome {
    sip::register(&dns(), cfg)
        .await
        .expect("valid configuration")
}

fn options_config(server: String, threshold: Duration) -> OptionsConfig {
    OptionsConfig {
        server,
        proxy: None,
        lagged_threshold: threshold,
        timeout: TIMEOUT,
        ca: None,
    }
}

async fn options(cfg: &OptionsConfig) -> OptionsOutcome {
    sip::options(&dns(), cfg)
        .await
        .expect("valid configuration")
}

async fn registers_over(transport: &str, expected: Transport) {
    let kamailio = Kamailio::start();
    let cfg = register_config(&kamailio, transport, "alice", "alice-secret");
    let outcome = register(&cfg).await;
    assert_eq!(
        outcome.failure,
        None,
        "{outcome:#?}\n{}",
        kamailio.daemon.log_text()
    );
    let target = outcome.target.as_ref().unwrap();
    assert_eq!(target.transport, expected);
    let port = if expected == Transport::Tls {
        kamailio.tls_port
    } else {
        kamailio.port
    };
    assert_eq!(target.address, ([127, 0, 0, 1], port).into());
    assert_eq!(outcome.response.as_ref().unwrap().code, 200);
    assert_eq!(outcome.auth_algorithm, Some(DigestAlgorithm::Md5));
    assert_eq!(outcome.granted_expires, Some(sip::DEFAULT_EXPIRES));
    assert!(
        outcome.server.as_deref().unwrap().contains("kamailio"),
        "{outcome:?}"
    );
    assert_eq!(outcome.unregister.as_ref().map(|u| &u.failure), Some(&None));
    // Issue 8: SIP over TLS reports its certificate chain's expiry, as HTTPS does.
    let expected_expiry = (expected == Transport::Tls).then_some(kamailio.cert_not_after);
    assert_eq!(outcome.cert_not_after, expected_expiry, "{outcome:#?}");
    let first = outcome.first_response.unwrap();
    let last = outcome.final_response.unwrap();
    assert!(first <= last && last <= outcome.total, "{outcome:?}");
    // The un-REGISTER left no binding behind.
    assert_eq!(kamailio.bindings("alice"), Vec::<String>::new());
}

#[tokio::test]
async fn register_answers_the_challenge_over_udp() {
    registers_over("udp", Transport::Udp).await;
}

#[tokio::test]
async fn register_answers_the_challenge_over_tcp() {
    registers_over("tcp", Transport::Tcp).await;
}

#[tokio::test]
async fn register_answers_the_challenge_over_tls() {
    registers_over("tls", Transport::Tls).await;
}

/// Kamailio on [::1] echoes IPv6 literals in To, From, Via and Contact. Before, the REGISTER
/// failed at the first 401 ("response without a valid To"), the OPTIONS read Unreachable, and
/// the granted expiry of an IPv6 Contact was lost.
#[tokio::test]
async fn register_and_options_work_on_ipv6_literals() {
    let kamailio = Kamailio::builder().ipv6().start();
    for transport in ["udp", "tcp"] {
        let mut cfg = register_config(&kamailio, transport, "alice", "alice-secret");
        cfg.expires = 240;
        assert!(cfg.server.starts_with("sip:[::1]:"), "{}", cfg.server);
        let outcome = register(&cfg).await;
        assert_eq!(
            outcome.failure,
            None,
            "{transport}: {outcome:#?}\n{}",
            kamailio.daemon.log_text()
        );
        assert_eq!(
            outcome.target.as_ref().unwrap().address,
            (std::net::Ipv6Addr::LOCALHOST, kamailio.port).into()
        );
        assert_eq!(outcome.granted_expires, Some(240), "{transport}");
        let unregister = outcome.unregister.as_ref().expect("un-REGISTER tried");
        assert_eq!(unregister.failure, None, "{transport}: {outcome:#?}");
        assert_eq!(kamailio.bindings("alice"), Vec::<String>::new());

        let outcome = options(&options_config(
            kamailio.uri(transport),
            sip::DEFAULT_LAGGED_THRESHOLD,
        ))
        .await;
        assert_eq!(outcome.failure, None, "{transport}: {outcome:#?}");
        assert_eq!(outcome.state, QualifyState::Reachable);
    }
}

#[tokio::test]
async fn without_unregister_the_binding_stays_with_the_granted_expiry() {
    let kamailio = Kamailio::start();
    let mut cfg = register_config(&kamailio, "udp", "bob", "bob-secret");
    cfg.unregister = false;
    cfg.expires = 120;
    let outcome = register(&cfg).await;
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    assert_eq!(outcome.granted_expires, Some(120));
    assert_eq!(outcome.unregister, None);
    let bindings = kamailio.bindings("bob");
    assert_eq!(bindings.len(), 1, "{bindings:?}");
    // Our Contact: the account's user with a suffix of this run's own (so the 200 OK shows
    // which binding is ours), at our address.
    let (user, address) = bindings[0].split_once('@').unwrap();
    let suffix = user
        .strip_prefix("sip:bob-")
        .unwrap_or_else(|| panic!("{bindings:?}"));
    assert!(suffix.len() == 8 && suffix.chars().all(|c| c.is_ascii_hexdigit()));
    let local_port = address.rsplit(':').next().unwrap();
    assert!(address.starts_with("127.0.0.1:"), "{bindings:?}");
    assert!(local_port.starts_with(|c: char| c.is_ascii_digit()));
}

#[tokio::test]
async fn a_wrong_password_is_rejected_after_the_answer() {
    let kamailio = Kamailio::start();
    let cfg = register_config(&kamailio, "udp", "alice", "wrong");
    let outcome = register(&cfg).await;
    assert_eq!(
        outcome.failure,
        Some(Failure::AuthRejected { code: 401 }),
        "{outcome:#?}"
    );
    assert_eq!(outcome.unregister, None);
    assert!(kamailio.bindings("alice").is_empty());
}

#[tokio::test]
async fn an_unknown_user_is_rejected() {
    let kamailio = Kamailio::start();
    let cfg = register_config(&kamailio, "tcp", "mallory", "guess");
    let outcome = register(&cfg).await;
    assert_eq!(
        outcome.failure,
        Some(Failure::AuthRejected { code: 401 }),
        "{outcome:#?}"
    );
}

#[tokio::test]
async fn a_blocked_account_is_forbidden_without_auth() {
    let kamailio = Kamailio::start();
    let cfg = register_config(&kamailio, "udp", "blocked", "x");
    let outcome = register(&cfg).await;
    assert_eq!(outcome.failure, Some(Failure::Forbidden), "{outcome:#?}");
    assert_eq!(outcome.response.unwrap().reason, "Forbidden");
    assert_eq!(outcome.auth_algorithm, None);
}

#[tokio::test]
async fn sha_256_challenges_are_answered() {
    let kamailio = Kamailio::builder().sha256().start();
    let cfg = register_config(&kamailio, "tcp", "alice", "alice-secret");
    let outcome = register(&cfg).await;
    assert_eq!(
        outcome.failure,
        None,
        "{outcome:#?}\n{}",
        kamailio.daemon.log_text()
    );
    assert_eq!(outcome.auth_algorithm, Some(DigestAlgorithm::Sha256));
    assert_eq!(outcome.unregister.as_ref().map(|u| &u.failure), Some(&None));
    let wrong = register(&register_config(&kamailio, "tcp", "alice", "wrong")).await;
    assert_eq!(wrong.failure, Some(Failure::AuthRejected { code: 401 }));
}

#[tokio::test]
async fn an_interval_too_brief_is_retried_with_min_expires() {
    let kamailio = Kamailio::start();
    let mut cfg = register_config(&kamailio, "udp", "alice", "alice-secret");
    cfg.expires = 10; // below the registrar's min_expires of 60
    let outcome = register(&cfg).await;
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    assert_eq!(outcome.granted_expires, Some(60));
    assert_eq!(outcome.unregister.as_ref().map(|u| &u.failure), Some(&None));
}

#[tokio::test]
async fn options_is_reachable_with_a_measured_rtt() {
    let kamailio = Kamailio::start();
    for transport in ["udp", "tcp"] {
        let outcome = options(&options_config(
            kamailio.uri(transport),
            sip::DEFAULT_LAGGED_THRESHOLD,
        ))
        .await;
        assert_eq!(outcome.failure, None, "{outcome:#?}");
        assert_eq!(outcome.state, QualifyState::Reachable);
        assert_eq!(outcome.response.as_ref().unwrap().code, 200);
        let rtt = outcome.rtt.unwrap();
        assert!(
            rtt > Duration::ZERO && rtt < Duration::from_millis(500),
            "{rtt:?}"
        );
        assert!(outcome.facts().iter().any(|(k, _)| *k == "rtt"));
    }
    let mut tls = options_config(kamailio.uri("tls"), sip::DEFAULT_LAGGED_THRESHOLD);
    tls.ca = Some(CaSource::File(kamailio.ca_file.clone()));
    let outcome = options(&tls).await;
    assert_eq!(outcome.state, QualifyState::Reachable, "{outcome:#?}");
    assert_eq!(outcome.cert_not_after, Some(kamailio.cert_not_after));
    assert!(
        outcome
            .facts()
            .iter()
            .any(|(k, _)| *k == "certificate expires"),
        "{:?}",
        outcome.facts()
    );
}

#[tokio::test]
async fn tls_without_the_test_ca_fails_with_unknown_issuer() {
    let kamailio = Kamailio::start();
    let outcome = options(&options_config(
        kamailio.uri("tls"),
        sip::DEFAULT_LAGGED_THRESHOLD,
    ))
    .await;
    assert_eq!(
        outcome.failure,
        Some(Failure::Tls {
            detail: voipcheck::probe::TlsFailure::UnknownIssuer
        }),
        "{outcome:#?}"
    );
    assert_eq!(outcome.state, QualifyState::Unreachable);
}

#[tokio::test]
async fn a_late_answer_is_lagged_and_a_later_one_unreachable() {
    let kamailio = Kamailio::start();
    // The registrar answers sip:lagged@ after at least 300 ms (usleep): with maxms 280 ms the
    // answer is late but well inside chan_sip's 560 ms window.
    let lagged_uri = format!("sip:lagged@127.0.0.1:{}", kamailio.port);
    let outcome = options(&options_config(
        lagged_uri.clone(),
        Duration::from_millis(280),
    ))
    .await;
    assert_eq!(
        outcome.state,
        QualifyState::Lagged,
        "{outcome:#?} {}",
        kamailio.daemon.log_text()
    );
    let rtt = outcome.rtt.unwrap();
    assert!(rtt >= Duration::from_millis(300), "{rtt:?}");
    assert_eq!(
        outcome.failure,
        Some(Failure::Lagged {
            rtt,
            threshold: Duration::from_millis(280)
        })
    );
    // With maxms 100 ms chan_sip stops waiting after 200 ms: UNREACHABLE.
    let started = Instant::now();
    let outcome = options(&options_config(lagged_uri, Duration::from_millis(100))).await;
    assert_eq!(outcome.state, QualifyState::Unreachable, "{outcome:#?}");
    assert_eq!(
        outcome.failure,
        Some(Failure::Timeout {
            after: Duration::from_millis(200)
        })
    );
    assert!(started.elapsed() < Duration::from_millis(400));
}

#[tokio::test]
async fn a_closed_port_is_refused() {
    let port = support::free_port();
    for transport in ["udp", "tcp"] {
        let server = format!("sip:127.0.0.1:{port};transport={transport}");
        let started = Instant::now();
        let outcome = options(&options_config(server, sip::DEFAULT_LAGGED_THRESHOLD)).await;
        // Over UDP the socket is connected, so loopback's ICMP port unreachable arrives as
        // ECONNREFUSED on the next receive.
        assert!(
            matches!(outcome.failure, Some(Failure::ConnectRefused { .. })),
            "{transport}: {outcome:#?}"
        );
        assert_eq!(outcome.state, QualifyState::Unreachable);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

/// A name server that answers every query with NXDOMAIN (RFC 1035 §4.1.1, RCODE 3), so the
/// test does not depend on the machine's resolver or the internet.
async fn nxdomain_server() -> std::net::SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let query = &buf[..n];
            // Header: same ID, QR + RD + RA, RCODE 3; the question echoed, nothing else.
            let mut question_end = 12;
            while question_end < n && query[question_end] != 0 {
                question_end += usize::from(query[question_end]) + 1;
            }
            question_end = (question_end + 5).min(n);
            let mut answer = vec![query[0], query[1], 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0];
            answer.extend_from_slice(&query[12..question_end]);
            let _ = socket.send_to(&answer, from).await;
        }
    });
    addr
}

#[tokio::test]
async fn a_name_that_does_not_exist_is_nxdomain() {
    let dns = Dns::with_nameserver(nxdomain_server().await);
    let cfg = options_config(
        "sip:no-such-host.invalid".into(),
        sip::DEFAULT_LAGGED_THRESHOLD,
    );
    let outcome = sip::options(&dns, &cfg).await.unwrap();
    assert_eq!(
        outcome.failure,
        Some(Failure::DnsFailure {
            name: "no-such-host.invalid".into(),
            record: DnsRecord::Address,
            kind: DnsErrorKind::NxDomain
        }),
        "{outcome:#?}"
    );
    assert_eq!(
        (outcome.target, outcome.state),
        (None, QualifyState::Unreachable)
    );
}

#[tokio::test]
async fn the_system_resolver_reports_a_dot_invalid_name_as_a_dns_failure() {
    let started = Instant::now();
    let cfg = options_config(
        "sip:no-such-host.invalid".into(),
        sip::DEFAULT_LAGGED_THRESHOLD,
    );
    let outcome = options(&cfg).await;
    // NXDOMAIN wherever a resolver answers (RFC 6761 §6.4); a machine without a reachable
    // resolver can only say that the resolver failed.
    assert!(
        matches!(
            &outcome.failure,
            Some(Failure::DnsFailure {
                kind: DnsErrorKind::NxDomain | DnsErrorKind::ResolverFailed,
                ..
            })
        ),
        "{outcome:#?}"
    );
    assert!(started.elapsed() <= TIMEOUT + Duration::from_millis(500));
}

#[tokio::test]
async fn the_password_appears_nowhere_in_the_output() {
    let kamailio = Kamailio::start();
    let password = "alice-secret";
    let cfg = register_config(&kamailio, "udp", "alice", password);
    assert!(!format!("{cfg:?}").contains(password));
    let good = register(&cfg).await;
    let bad = register(&register_config(&kamailio, "udp", "alice", "wrong-secret")).await;
    for outcome in [&good, &bad] {
        let json = serde_json::to_string(outcome).unwrap();
        assert!(
            !json.contains(password) && !json.contains("wrong-secret"),
            "{json}"
        );
        let debug = format!("{outcome:?}");
        assert!(!debug.contains(password) && !debug.contains("wrong-secret"));
        let facts = format!("{:?}", outcome.facts());
        assert!(!facts.contains(password));
        if let Some(failure) = outcome.failure() {
            assert!(!failure.to_string().contains("wrong-secret"));
        }
    }
    assert!(kamailio.daemon.log_text().len() < 1_000_000);
}
