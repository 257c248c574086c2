//! Every target and every address (issue 8): RFC 3263 failover across SRV targets, RFC 8305
//! across the addresses of a name, for SIP, HTTP and STUN, against unbound serving the test
//! zone (tests/peers/voipcheck.test.zone) and the real peers on loopback.

mod support;

use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};
use support::coturn::Coturn;
use support::dns::Unbound;
use support::kamailio::{Kamailio, options_config, reachable};
use support::nginx::Nginx;
use voipcheck::api::{ConditionStatus, ConditionType, Reason, VoipCheckSpec};
use voipcheck::check::{self, AllowList, CheckId, StaticSecrets};
use voipcheck::probe::http::{self, HttpConfig};
use voipcheck::probe::sip::{self, QualifyState, RegisterConfig};
use voipcheck::probe::stun::{self, ServerAnswer, StunConfig, StunRequire, StunTransport};
use voipcheck::probe::tls::CaSource;
use voipcheck::probe::{Failure, attempts::Attempt};
use voipcheck::secret::Secret;
use voipcheck::verdict;

const TIMEOUT: Duration = Duration::from_secs(4);

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// The addresses of the failed attempts, in order.
fn failed_addresses(attempts: &[Attempt]) -> Vec<Option<SocketAddr>> {
    attempts.iter().map(|a| a.address).collect()
}

#[tokio::test]
async fn a_dual_stack_name_whose_server_listens_on_ipv4_only_is_reachable() {
    let kamailio = Kamailio::start();
    let unbound = Unbound::start(&[]);
    let dns = unbound.dns();
    for transport in ["udp", "tcp"] {
        let port = kamailio.port;
        let server = format!("sip:dual.voipcheck.test:{port};transport={transport}");
        let outcome = reachable(&dns, TIMEOUT, server).await;
        let target = outcome.target.as_ref().unwrap();
        assert_eq!(target.address, addr(&format!("127.0.0.1:{port}")));
        // AAAA first (RFC 8305 §4), refused, then IPv4
        assert_eq!(
            failed_addresses(&outcome.attempts),
            vec![Some(addr(&format!("[::1]:{port}")))],
            "{transport}"
        );
    }
}

#[tokio::test]
async fn a_name_with_one_dead_address_of_two_is_always_reachable() {
    let kamailio = Kamailio::start();
    let unbound = Unbound::start(&[]);
    let dns = unbound.dns();
    // unbound rotates the two A records; each order must work, every time.
    for run in 0..6 {
        let server = format!("sip:two.voipcheck.test:{}", kamailio.port);
        let outcome = reachable(&dns, TIMEOUT, server).await;
        assert_eq!(outcome.failure, None, "run {run}");
    }
}

#[tokio::test]
async fn sips_localhost_reaches_a_tls_server_on_ipv4_only_past_ipv6_first() {
    let kamailio = Kamailio::start();
    let unbound = Unbound::start(&[]);
    let dns = unbound.dns();
    let mut cfg = options_config(format!("sips:localhost:{}", kamailio.tls_port), TIMEOUT);
    cfg.ca = Some(CaSource::File(kamailio.ca_file.clone()));
    let outcome = sip::options(&dns, &cfg).await.unwrap();
    assert_eq!(outcome.state, QualifyState::Reachable, "{outcome:#?}");
    assert_eq!(
        outcome.target.unwrap().address,
        addr(&format!("127.0.0.1:{}", kamailio.tls_port))
    );
}

#[tokio::test]
async fn a_dead_srv_primary_fails_over_to_the_backup_and_names_the_primary() {
    let kamailio = Kamailio::start();
    let unbound = Unbound::start(&[("SIP", kamailio.port)]);
    let dns = unbound.dns();
    let port = kamailio.port;
    let outcome = reachable(&dns, TIMEOUT, "sip:failover.voipcheck.test".into()).await;
    assert_eq!(
        outcome.target.as_ref().unwrap().name,
        format!("backup.voipcheck.test:{port}")
    );
    assert_eq!(outcome.attempts.len(), 1, "{outcome:#?}");
    assert_eq!(
        outcome.attempts[0].target,
        format!("primary.voipcheck.test:{port}")
    );
    assert!(matches!(
        outcome.attempts[0].failure,
        Failure::ConnectRefused { .. }
    ));

    // REGISTER too, over the same failover (TCP: the registrar takes both on one port)
    let cfg = RegisterConfig {
        server: "sip:failover.voipcheck.test;transport=tcp".into(),
        username: "alice".into(),
        auth_username: None,
        domain: Some("127.0.0.1".into()),
        proxy: None,
        password: Secret::new("alice-secret"),
        expires: 60,
        unregister: true,
        timeout: TIMEOUT,
        ca: None,
    };
    let outcome = sip::register(&dns, &cfg).await.unwrap();
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    assert_eq!(
        outcome.target.as_ref().unwrap().name,
        format!("backup.voipcheck.test:{port}")
    );
    assert_eq!(
        outcome.attempts[0].target,
        format!("primary.voipcheck.test:{port}")
    );
}

#[tokio::test]
async fn a_udp_primary_that_never_answers_leaves_the_backup_time_to_answer() {
    let kamailio = Kamailio::start();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let unbound = Unbound::start(&[("SIP", kamailio.port), ("SILENT", silent_port)]);
    let dns = unbound.dns();
    let started = Instant::now();
    let outcome = reachable(&dns, TIMEOUT, "sip:silent-primary.voipcheck.test".into()).await;
    assert!(matches!(
        outcome.attempts[0].failure,
        Failure::Timeout { .. }
    ));
    // the primary had half of the budget, no more
    let took = started.elapsed();
    assert!(took >= TIMEOUT / 2 && took < TIMEOUT, "took {took:?}");
}

#[tokio::test]
async fn every_target_dead_is_unreachable_with_each_failure_listed() {
    let kamailio = Kamailio::start();
    let unbound = Unbound::start(&[("SIP", kamailio.port)]);
    let dns = unbound.dns();
    let outcome = sip::options(
        &dns,
        &options_config("sip:alldead.voipcheck.test".into(), TIMEOUT),
    )
    .await
    .unwrap();
    assert_eq!(outcome.state, QualifyState::Unreachable);
    assert!(matches!(
        outcome.failure,
        Some(Failure::ConnectRefused { .. })
    ));
    let targets: Vec<&str> = outcome.attempts.iter().map(|a| a.target.as_str()).collect();
    assert_eq!(targets.len(), 2, "{outcome:#?}");
    assert!(targets[0].starts_with("primary.voipcheck.test:"));
    assert!(targets[1].starts_with("backup.voipcheck.test:"));
}

#[tokio::test]
async fn http_on_a_dual_stack_name_and_on_two_addresses() {
    let nginx = Nginx::start();
    let unbound = Unbound::start(&[]);
    let dns = unbound.dns();
    let port = nginx.http_port;
    let mut cfg = HttpConfig::new(
        format!("http://dual.voipcheck.test:{port}/")
            .parse()
            .unwrap(),
    );
    cfg.timeout = TIMEOUT;
    let outcome = http::probe(&dns, &cfg).await.unwrap();
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    assert_eq!(outcome.peer, Some(addr(&format!("127.0.0.1:{port}"))));
    assert_eq!(
        failed_addresses(&outcome.attempts),
        vec![Some(addr(&format!("[::1]:{port}")))]
    );
    cfg.url = format!("http://two.voipcheck.test:{port}/")
        .parse()
        .unwrap();
    for run in 0..4 {
        let outcome = http::probe(&dns, &cfg).await.unwrap();
        assert_eq!(outcome.failure, None, "run {run}: {outcome:#?}");
    }
}

#[tokio::test]
async fn stun_on_a_dual_stack_name_over_udp_and_tcp() {
    let coturn = Coturn::start();
    let unbound = Unbound::start(&[]);
    let dns = unbound.dns();
    let port = coturn.addr.port();
    for transport in [StunTransport::Udp, StunTransport::Tcp] {
        let cfg = StunConfig {
            servers: vec![format!("dual.voipcheck.test:{port}")],
            transport,
            timeout: TIMEOUT,
            nat_binding: None,
            require: StunRequire::All,
            ca: None,
        };
        let outcome = stun::probe(&dns, &cfg).await.unwrap();
        let server = &outcome.servers[0];
        assert!(
            matches!(server.answer, ServerAnswer::Binding(_)),
            "{transport:?}: {outcome:#?}"
        );
        assert_eq!(server.address, Some(coturn.addr));
        assert_eq!(
            failed_addresses(&server.attempts),
            vec![Some(addr(&format!("[::1]:{port}")))]
        );
    }
}

#[tokio::test]
async fn http_on_the_ipv6_loopback_as_a_literal_and_by_name() {
    let nginx = Nginx::start();
    let unbound = Unbound::start(&[]);
    let dns = unbound.dns();
    let port = nginx.http6_port;
    for url in [
        format!("http://[::1]:{port}/"),
        format!("http://dual.voipcheck.test:{port}/"),
    ] {
        let mut cfg = HttpConfig::new(url.parse().unwrap());
        cfg.timeout = TIMEOUT;
        cfg.body_contains = Some("over IPv6".into());
        let outcome = http::probe(&dns, &cfg).await.unwrap();
        assert_eq!(outcome.failure, None, "{url}: {outcome:#?}");
        assert_eq!(outcome.peer, Some(addr(&format!("[::1]:{port}"))));
        assert_eq!(outcome.attempts, vec![], "{url}");
    }
}

#[tokio::test]
async fn stun_on_the_ipv6_loopback_as_a_literal_and_by_name() {
    let coturn = Coturn::start_ipv6();
    let unbound = Unbound::start(&[]);
    let port = coturn.addr.port();
    for transport in [StunTransport::Udp, StunTransport::Tcp] {
        let cfg = StunConfig {
            servers: vec![coturn.server(), format!("dual.voipcheck.test:{port}")],
            transport,
            timeout: TIMEOUT,
            nat_binding: None,
            require: StunRequire::All,
            ca: None,
        };
        let outcome = stun::probe(&unbound.dns(), &cfg).await.unwrap();
        for server in &outcome.servers {
            let ServerAnswer::Binding(binding) = &server.answer else {
                panic!("{transport:?}: {outcome:#?}");
            };
            assert_eq!(server.address, Some(coturn.addr));
            assert_eq!(binding.mapped.ip(), coturn.addr.ip(), "{transport:?}");
        }
    }
}

/// The whole chain, plan to verdict, as the operator runs it (allow-list by name included):
/// a dead primary with a serving backup is a degraded pass naming the primary, every target
/// dead the outage it always was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_reads_backup_serving_as_degraded_and_all_dead_as_an_outage() {
    let kamailio = Kamailio::start();
    let unbound = Unbound::start(&[("SIP", kamailio.port)]);
    let allow = AllowList::parse(&["*.voipcheck.test".to_owned()]).unwrap();
    let resolver = allow.clone();
    let dns = unbound
        .dns()
        .restricted(move |name, ip| resolver.allows(name, ip));
    let secrets = StaticSecrets::new();
    let port = kamailio.port;
    let cases = [
        ("failover", (ConditionStatus::True, Reason::BackupServing)),
        ("alldead", (ConditionStatus::False, Reason::Unreachable)),
    ];
    for (name, reachable) in cases {
        let spec: VoipCheckSpec = serde_json::from_value(json!({
            "target": { "kind": "Cloud", "name": "lab" },
            "timeout": "4s",
            "failureThreshold": 1,
            "sip": {
                "server": format!("sip:{name}.voipcheck.test"),
                "options": {},
            }
        }))
        .unwrap();
        let plan = check::plan(&CheckId::new("lab", name), &spec, &secrets, &allow).unwrap();
        let report = check::run(&dns, &plan).await;
        let (_, verdict) = verdict::evaluate(
            &plan.policy,
            &Default::default(),
            &report,
            SystemTime::now(),
        );
        let condition = verdict.condition(ConditionType::SipReachable).unwrap();
        assert_eq!(
            (condition.status, condition.reason),
            reachable,
            "{name}: {condition:?}"
        );
        let hotline = verdict.condition(ConditionType::HotlineReportable).unwrap();
        if name == "failover" {
            let primary = format!("primary.voipcheck.test:{port} (127.0.0.3:{port})");
            assert!(
                condition.message.contains(&primary),
                "{}",
                condition.message
            );
            assert_eq!(hotline.reason, Reason::Healthy);
        } else {
            assert_eq!(hotline.reason, Reason::ProviderOutage);
        }
    }
}
