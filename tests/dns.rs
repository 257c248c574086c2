//! DNS diagnostics (issue 8) against unbound serving the test zone: each way a lookup fails is
//! its own kind and says what happened for which name and record type; service discovery that
//! gets no answer leaves the address lookup its budget; `--nameserver` points the CLI at a
//! given server.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::dns::{DropNaptr, Unbound};
use support::kamailio::{Kamailio, options_config};
use voipcheck::probe::dns::Dns;
use voipcheck::probe::sip::{self, QualifyState};
use voipcheck::probe::{DnsErrorKind, DnsRecord, Failure};

const TIMEOUT: Duration = Duration::from_secs(4);

#[tokio::test]
async fn each_failed_lookup_says_what_happened_for_which_name_and_record_type() {
    let unbound = Unbound::start(&[]);
    let dns = unbound.dns();
    let cases = [
        ("nx.voipcheck.test", DnsErrorKind::NxDomain, "NXDOMAIN"),
        ("nodata.voipcheck.test", DnsErrorKind::NoRecords, "NODATA"),
        ("x.servfail.test", DnsErrorKind::ServFail, "SERVFAIL"),
        ("x.refused.voipcheck.test", DnsErrorKind::Refused, "REFUSED"),
        ("x.dropped.voipcheck.test", DnsErrorKind::Timeout, "timeout"),
    ];
    for (name, kind, word) in cases {
        // An explicit port: no service discovery, only the address lookup.
        let started = Instant::now();
        let outcome = sip::options(&dns, &options_config(format!("sip:{name}:5060"), TIMEOUT))
            .await
            .unwrap();
        let failure = outcome.failure.clone().unwrap();
        assert_eq!(
            failure,
            Failure::DnsFailure {
                name: name.into(),
                record: DnsRecord::Address,
                kind
            },
            "{name}: {}",
            unbound.log_text()
        );
        let message = failure.to_string();
        assert!(
            message.contains(name) && message.contains("A/AAAA") && message.contains(word),
            "{message}"
        );
        assert!(started.elapsed() < TIMEOUT + Duration::from_millis(500));
    }
}

#[tokio::test]
async fn a_resolver_that_drops_naptr_queries_does_not_eat_the_address_budget() {
    let kamailio = Kamailio::start();
    let unbound = Unbound::start(&[("SIP", kamailio.port)]);
    let relay = DropNaptr::start(unbound.addr).await;
    let dns = Dns::with_nameserver(relay.addr);
    let started = Instant::now();
    let outcome = sip::options(
        &dns,
        &options_config("sip:slow.voipcheck.test".into(), TIMEOUT),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(outcome.state, QualifyState::Reachable, "{outcome:#?}");
    assert_eq!(
        outcome.dns_fallbacks,
        vec![Failure::DnsFailure {
            name: "slow.voipcheck.test".into(),
            record: DnsRecord::Naptr,
            kind: DnsErrorKind::Timeout,
        }]
    );
    // the NAPTR query had its quarter of the timeout, then SRV and A answered at once
    assert!(took >= TIMEOUT / 4 && took < TIMEOUT / 2, "took {took:?}");
}

#[tokio::test]
async fn the_cli_asks_the_nameserver_it_is_given_and_prints_the_failover() {
    let kamailio = Kamailio::start();
    let unbound = Unbound::start(&[("SIP", kamailio.port)]);
    let output = Command::new(env!("CARGO_BIN_EXE_voipcheck"))
        .args(["probe", "sip-options", "sip:failover.voipcheck.test"])
        .args(["--nameserver", &unbound.addr.to_string(), "--timeout", "4s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let port = kamailio.port;
    assert!(
        stdout.contains(&format!("backup.voipcheck.test:{port}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("tried and failed")
            && stdout.contains(&format!("primary.voipcheck.test:{port} (127.0.0.3:{port})")),
        "{stdout}"
    );
}

#[test]
fn a_nameserver_that_is_no_address_is_a_usage_error() {
    for command in [
        vec!["probe", "sip-options", "sip:127.0.0.1"],
        vec!["run", "-f", "/dev/null", "--once"],
        vec!["operator"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_voipcheck"))
            .args(&command)
            .args(["--nameserver", "ns.example.com"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{command:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--nameserver"), "{command:?}: {stderr}");
    }
}
