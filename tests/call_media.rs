//! The test call's full path with an impaired media path: the probe (`sip::call`) calls
//! through Kamailio to SIPp's `-rtp_echo` UAS, whose SDP answer points the RTP at the in-test
//! impairment relay in front of SIPp's echo port. What the probe reports must match what the
//! relay did, as in tests/media.rs without SIP.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use support::kamailio::Kamailio;
use support::relay::{Impairment, Relay, assert_echo_matches};
use support::sipp::Sipp;
use voipcheck::probe::Failure;
use voipcheck::probe::dns::Dns;
use voipcheck::probe::media::{Codec, MediaConfig, Mos};
use voipcheck::probe::sip::{self, AnswerPolicy, CallConfig, CallOutcome, Callee, SdpAddress};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A call of `seconds` of media from Kamailio's test user to its echo number, whose SIPp UAS
/// advertises the relay (impairing `to_echo` and `from_echo`) in front of its echo.
async fn call_through_relay(
    seconds: u64,
    to_echo: Impairment,
    from_echo: Impairment,
) -> (CallOutcome, Relay) {
    let media_port = support::free_media_port();
    let echo = SocketAddr::new(LOCAL, media_port);
    let relay = Relay::start(LOCAL, None, echo, to_echo, from_echo).await;
    let (ip, media_port, relay_port) = (
        LOCAL.to_string(),
        media_port.to_string(),
        relay.facing_a.port().to_string(),
    );
    let options = [
        "-rtp_echo",
        "-mi",
        &ip,
        "-mp",
        &media_port,
        "-key",
        "relay_port",
        &relay_port,
    ];
    let mut far_end = Sipp::start_with("call-echo-relayed.xml", LOCAL, 1, &options);
    let kamailio = Kamailio::builder().echo(far_end.addr).start();
    let cfg = CallConfig {
        caller: kamailio.caller("udp"),
        callee: Callee::Number(kamailio.number("echo", "udp")),
        answer: AnswerPolicy::Required,
        ring_timeout: Duration::from_secs(2),
        media: Some(MediaConfig {
            duration: Duration::from_secs(seconds),
            codec: Codec::Pcma,
            mos_threshold: Mos::DEFAULT_THRESHOLD,
        }),
        advertise: SdpAddress::Local,
        timeout: Duration::from_secs(5),
    };
    let outcome = sip::call(&Dns::system().expect("resolver"), &cfg)
        .await
        .expect("a valid configuration");
    far_end.assert_scenario_completes(Duration::from_secs(5));
    (outcome, relay)
}

#[tokio::test]
async fn loss_and_jitter_on_the_media_path_are_measured_through_kamailio_and_sipp() {
    let impairment = Impairment {
        drop: 0.05,
        max_delay: Duration::from_millis(25),
        seed: 31,
        pass_first: 3,
    };
    let (outcome, relay) = call_through_relay(2, impairment, Impairment::NONE).await;
    let log = relay.a_to_b.lock().unwrap();
    let report = outcome.media.as_ref().expect("media measured");
    assert!(log.dropped > 0, "the seeded pattern drops some");
    assert_eq!(report.incoming.sent, 100, "{report:#?}");
    assert_echo_matches(&log, report);
    assert_eq!(outcome.failure, None, "{report:#?}");
}

#[tokio::test]
async fn an_echo_whose_way_back_is_cut_is_no_audio() {
    let (outcome, relay) = call_through_relay(1, Impairment::NONE, Impairment::BLOCK).await;
    assert!(
        relay.b_to_a.lock().unwrap().dropped > 0,
        "SIPp echoed into the cut"
    );
    let report = outcome.media.as_ref().expect("media measured");
    assert_eq!(report.incoming.received, 0, "{report:#?}");
    // Nothing echoed and no RTCP: which way failed cannot be told.
    assert_eq!(outcome.failure, Some(Failure::NoAudio), "{report:#?}");
}
