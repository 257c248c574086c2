//! The operator's allow-list on every address a probe contacts (issue 8), with the resolver the
//! operator builds (`Dns::restricted` with `AllowList::allows`), unbound serving the test zone
//! and the real peers on loopback.

mod support;

use std::time::Duration;
use support::coturn::Coturn;
use support::dns::Unbound;
use support::kamailio::{Kamailio, options_config, reachable};
use support::nginx::Nginx;
use voipcheck::check::AllowList;
use voipcheck::probe::Failure;
use voipcheck::probe::dns::Dns;
use voipcheck::probe::http::{self, HttpConfig};
use voipcheck::probe::sip;
use voipcheck::probe::stun::{self, StunConfig, StunRequire, StunTransport};

const TIMEOUT: Duration = Duration::from_secs(4);

fn restricted(unbound: &Unbound, patterns: &[&str]) -> Dns {
    let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    let allow = AllowList::parse(&patterns).unwrap();
    Dns::with_nameserver(unbound.addr).restricted(move |name, ip| allow.allows(name, ip))
}

#[tokio::test]
async fn a_name_pattern_allows_what_the_name_resolves_to_and_only_via_that_name() {
    let kamailio = Kamailio::start();
    let unbound = Unbound::start(&[("SIP", kamailio.port)]);
    let dns = restricted(&unbound, &["*.voipcheck.test"]);
    // the name, its SRV targets (in the zone too) and their addresses
    for server in [
        format!("sip:dual.voipcheck.test:{}", kamailio.port),
        "sip:failover.voipcheck.test".to_owned(),
    ] {
        reachable(&dns, TIMEOUT, server).await;
    }
    // the same address written as a literal is not reached via the name
    let outcome = sip::options(
        &dns,
        &options_config(format!("sip:127.0.0.1:{}", kamailio.port), TIMEOUT),
    )
    .await
    .unwrap();
    assert_eq!(
        outcome.failure,
        Some(Failure::TargetNotAllowed {
            name: "127.0.0.1".into(),
            address: "127.0.0.1".into()
        })
    );
}

#[tokio::test]
async fn a_redirect_to_an_address_outside_the_list_is_refused() {
    let nginx = Nginx::start();
    let unbound = Unbound::start(&[]);
    let dns = restricted(&unbound, &["*.voipcheck.test"]);
    let url = format!("http://dual.voipcheck.test:{}/", nginx.http_port);
    let mut cfg = HttpConfig::new(url.parse().unwrap());
    cfg.timeout = TIMEOUT;
    let outcome = http::probe(&dns, &cfg).await.unwrap();
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    // /to-https redirects to https://127.0.0.1:…/, an address no pattern allows
    cfg.url = format!("{url}to-https").parse().unwrap();
    let outcome = http::probe(&dns, &cfg).await.unwrap();
    assert_eq!(
        outcome.failure,
        Some(Failure::TargetNotAllowed {
            name: "127.0.0.1".into(),
            address: "127.0.0.1".into()
        }),
        "{outcome:#?}"
    );
}

#[tokio::test]
async fn a_stun_servers_other_address_outside_the_list_is_not_contacted() {
    let coturn = Coturn::start_rfc5780();
    let other = coturn.other.unwrap();
    let unbound = Unbound::start(&[]);
    let cfg = StunConfig {
        servers: vec![coturn.addr.to_string()],
        transport: StunTransport::Udp,
        timeout: Duration::from_secs(1),
        nat_binding: Some(Duration::from_millis(200)),
        require: StunRequire::All,
        ca: None,
    };
    // only the server's own address: the NAT behaviour tests would ask 127.0.0.2
    let outcome = stun::probe(&restricted(&unbound, &["127.0.0.1/32"]), &cfg)
        .await
        .unwrap();
    assert_eq!(outcome.nat_behaviour, None, "{outcome:#?}");
    assert_eq!(
        outcome.failure,
        Some(Failure::TargetNotAllowed {
            name: other.to_string(),
            address: other.ip().to_string()
        })
    );
    // with its range allowed, the behaviour is measured
    let outcome = stun::probe(&restricted(&unbound, &["127.0.0.0/29"]), &cfg)
        .await
        .unwrap();
    assert!(outcome.nat_behaviour.is_some(), "{outcome:#?}");
}
