//! The audio of a test call on real sockets (no SIP): a probe leg against an in-test UDP echo
//! and against a second leg (the hairpin call's shape), through an impairment relay that drops
//! and delays RTP with a seeded pattern. The measured loss, jitter and MOS are held against
//! what the relay did.

mod support;

use std::net::IpAddr;
use std::time::Duration;
use support::relay::{Echo, Impairment, Relay, assert_echo_matches};
use tokio::time::Instant;
use voipcheck::probe::Failure;
use voipcheck::probe::media::{self, Codec, Leg, LegReport, MediaConfig, MediaDirection, Mos};

const V4: &str = "127.0.0.1";
const V6: &str = "::1";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP literal")
}

fn config(seconds: f64) -> MediaConfig {
    MediaConfig {
        duration: Duration::from_secs_f64(seconds),
        codec: Codec::Pcma,
        mos_threshold: Mos::DEFAULT_THRESHOLD,
    }
}

/// Well above any run of these tests; `until` itself is tested on its own.
fn until() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

/// Runs two legs against each other through `relay_for` (A = caller, B = callee).
async fn hairpin(
    address: &str,
    seconds: f64,
    a_to_b: Impairment,
    b_to_a: Impairment,
) -> (LegReport, LegReport, Relay) {
    let cfg = config(seconds);
    let caller = Leg::bind(ip(address)).expect("bind the caller's leg");
    let callee = Leg::bind(ip(address)).expect("bind the callee's leg");
    let relay = Relay::start(
        ip(address),
        Some(caller.local_addr()),
        callee.local_addr(),
        a_to_b,
        b_to_a,
    )
    .await;
    let (caller, callee) = tokio::join!(
        caller.run(relay.facing_a, &cfg, until()),
        callee.run(relay.facing_b, &cfg, until()),
    );
    (caller, callee, relay)
}

/// The one-way loss tolerance: none. Every drop is counted, wherever in the stream, because
/// the loss of our own streams is counted against what was sent.
#[tokio::test]
async fn echo_loss_jitter_and_mos_match_the_relays_impairment() {
    let cfg = config(3.0);
    let echo = Echo::start(ip(V4), false).await;
    let leg = Leg::bind(ip(V4)).expect("bind");
    let impairment = Impairment {
        drop: 0.06,
        max_delay: Duration::from_millis(30),
        seed: 9,
        pass_first: 3,
    };
    let relay = Relay::start(
        ip(V4),
        Some(leg.local_addr()),
        echo.addr,
        impairment,
        Impairment::NONE,
    )
    .await;
    let caller = leg.run(relay.facing_a, &cfg, until()).await;
    let log = relay.a_to_b.lock().unwrap();
    assert_eq!(caller.sent, 150);
    assert!(
        log.dropped >= 3,
        "the seeded pattern drops some: {}",
        log.dropped
    );

    // The tone went out as G.711 A-law with the marker on the first packet.
    let first = echo
        .first
        .lock()
        .unwrap()
        .clone()
        .expect("the echo got RTP");
    assert_eq!((first[0] >> 6, first[1] & 0x7F, first[1] >> 7), (2, 8, 1));
    assert_eq!(first.len(), 12 + 160);
    assert!(
        first[12..].iter().any(|&b| b != first[12]),
        "a tone, not a constant"
    );

    let report = media::report(Codec::Pcma, caller, None, true);
    assert_eq!(report.incoming.sent, 150);
    assert_echo_matches(&log, &report);
    let incoming = &report.incoming;
    assert!(
        incoming.mos < Mos::from_f64(4.2),
        "6% loss is audible: {}",
        incoming.mos
    );
    assert_eq!(
        report.outgoing, None,
        "an echo without RTCP reports nothing outgoing"
    );
    assert_eq!(report.failure(Mos::DEFAULT_THRESHOLD), None);
    assert_eq!(
        report.failure(Mos::from_f64(4.4)),
        Some(Failure::PoorQuality {
            mos: incoming.mos,
            threshold: Mos::from_f64(4.4),
        })
    );
}

#[tokio::test]
async fn a_hairpin_call_over_ipv6_measures_each_direction() {
    let a_to_b = Impairment {
        drop: 0.08,
        max_delay: Duration::from_millis(10),
        seed: 17,
        pass_first: 3,
    };
    let b_to_a = Impairment {
        drop: 0.03,
        seed: 23,
        ..a_to_b
    };
    let (caller, callee, relay) = hairpin(V6, 2.5, a_to_b, b_to_a).await;
    let (ab, ba) = (relay.a_to_b.lock().unwrap(), relay.b_to_a.lock().unwrap());
    assert!(
        ab.dropped > 0 && ba.dropped > 0,
        "{} {}",
        ab.dropped,
        ba.dropped
    );
    // Each leg heard the other's RTCP and reported on its stream.
    assert!(caller.rtcp_received >= 2 && callee.rtcp_received >= 2);
    let block = callee
        .far_report
        .clone()
        .expect("the caller reported on the callee's stream");
    assert_eq!(block.ssrc, callee.ssrc);

    let report = media::report(Codec::Pcma, caller, Some(callee), false);
    let outgoing = report.outgoing.clone().expect("measured by the callee");
    assert_eq!((outgoing.sent, outgoing.lost), (125, ab.dropped));
    assert_eq!(
        (report.incoming.sent, report.incoming.lost),
        (125, ba.dropped)
    );
    for (stats, log) in [(&outgoing, &ab), (&report.incoming, &ba)] {
        let reference = log.jitter().as_secs_f64() * 1000.0;
        let jitter = stats.jitter.as_secs_f64() * 1000.0;
        assert!(
            (jitter - reference).abs() < 1.0,
            "{jitter:.2} ms vs {reference:.2} ms"
        );
    }
    // RTCP's round trip between the legs: loopback, the RTCP passes the relay undelayed.
    let rtt = report.round_trip.expect("from RTCP LSR/DLSR");
    assert!(rtt < Duration::from_millis(20), "{rtt:?}");
    assert!(
        outgoing.mos < report.incoming.mos,
        "more loss outgoing: {report:?}"
    );
}

#[tokio::test]
async fn one_way_audio_names_the_silent_direction() {
    let ((caller_ab, callee_ab, _r1), (caller_ba, callee_ba, _r2)) = tokio::join!(
        hairpin(V4, 1.0, Impairment::NONE, Impairment::BLOCK),
        hairpin(V4, 1.0, Impairment::BLOCK, Impairment::NONE),
    );
    let only_out = media::report(Codec::Pcma, caller_ab, Some(callee_ab), false);
    assert_eq!(
        only_out.failure(Mos::DEFAULT_THRESHOLD),
        Some(Failure::OneWayAudio {
            silent: MediaDirection::Incoming
        }),
        "{only_out:?}"
    );
    let only_in = media::report(Codec::Pcma, caller_ba, Some(callee_ba), false);
    assert_eq!(
        only_in.failure(Mos::DEFAULT_THRESHOLD),
        Some(Failure::OneWayAudio {
            silent: MediaDirection::Outgoing
        }),
        "{only_in:?}"
    );
}

#[tokio::test]
async fn nothing_at_all_is_no_audio() {
    let cfg = config(1.0);
    // An echo target whose path drops everything, and a hairpin blocked both ways.
    let echo = Echo::start(ip(V4), false).await;
    let leg = Leg::bind(ip(V4)).expect("bind");
    let relay = Relay::start(
        ip(V4),
        Some(leg.local_addr()),
        echo.addr,
        Impairment::BLOCK,
        Impairment::NONE,
    )
    .await;
    let (echoed, (caller, callee, _relay)) = tokio::join!(
        leg.run(relay.facing_a, &cfg, until()),
        hairpin(V4, 1.0, Impairment::BLOCK, Impairment::BLOCK),
    );
    let echo_report = media::report(Codec::Pcma, echoed, None, true);
    assert_eq!(echo_report.incoming.received, 0);
    assert_eq!(
        echo_report.failure(Mos::DEFAULT_THRESHOLD),
        Some(Failure::NoAudio)
    );
    let hairpin_report = media::report(Codec::Pcma, caller, Some(callee), false);
    assert_eq!(
        hairpin_report.failure(Mos::DEFAULT_THRESHOLD),
        Some(Failure::NoAudio)
    );
}

/// Garbage, truncated and oversized datagrams, RTCP on the RTP port and a second SSRC, sent at
/// both ports during a call; and an echo that reflects our own RTCP, which is no report from
/// the far end.
#[tokio::test]
async fn hostile_datagrams_during_a_call_are_ignored() {
    let cfg = config(1.5);
    let echo = Echo::start(ip(V4), true).await;
    let leg = Leg::bind(ip(V4)).expect("bind");
    let target = leg.local_addr();
    let rtcp_target = std::net::SocketAddr::new(target.ip(), target.port() + 1);
    let attacker = tokio::net::UdpSocket::bind((ip(V4), 0))
        .await
        .expect("bind");
    let mut foreign = vec![0x80, 8, 0, 1, 0, 0, 0, 160, 0xBA, 0xD5, 0x5B, 0xC0];
    foreign.extend([0xD5; 160]);
    let hostile: Vec<Vec<u8>> = vec![
        b"INVITE sip:nobody SIP/2.0\r\n\r\n".to_vec(),
        vec![0x80, 8, 0, 1, 0, 0],
        vec![0x40; 172],
        vec![0x80, 201, 0, 1, 1, 2, 3, 4],
        vec![0x80; 3000],
        vec![
            0x90, 8, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4, 0xBE, 0xDE, 0, 1, 0x1F, 0, 0, 0,
        ],
        foreign.clone(),
        foreign,
        Vec::new(),
    ];
    let barrage = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for datagram in &hostile {
            attacker.send_to(datagram, target).await.expect("send");
            attacker.send_to(datagram, rtcp_target).await.expect("send");
        }
    };
    let (caller, ()) = tokio::join!(leg.run(echo.addr, &cfg, until()), barrage);
    let ignored = &caller.ignored;
    // The SIP text, the 6-byte stub, version 1, the bad extension and the empty datagram.
    assert_eq!(ignored.malformed, 5, "{ignored:?}");
    assert_eq!(ignored.oversized, 2, "one per port: {ignored:?}");
    assert_eq!(ignored.rtcp_on_rtp_port, 1, "{ignored:?}");
    // At the RTCP port the empty receiver report is RTCP from someone (counted); the other
    // datagrams but the oversized one are not understood, nor are our own reflected reports
    // (one a second and the last).
    assert_eq!(
        caller.rtcp_received, 1,
        "our own reflected RTCP is not the far end's"
    );
    assert!(
        ignored.rtcp_not_understood >= hostile.len() as u32 - 2 + 2,
        "{ignored:?}"
    );
    assert_eq!(caller.reception.other_source(), 2);
    let report = media::report(Codec::Pcma, caller, None, true);
    assert_eq!(
        (
            report.incoming.sent,
            report.incoming.received,
            report.incoming.lost
        ),
        (75, 75, 0)
    );
    assert_eq!(report.failure(Mos::DEFAULT_THRESHOLD), None);
}

#[tokio::test]
async fn a_leg_stops_at_its_deadline() {
    let echo = Echo::start(ip(V6), false).await;
    let leg = Leg::bind(ip(V6)).expect("bind");
    let started = Instant::now();
    let caller = leg
        .run(
            echo.addr,
            &config(5.0),
            started + Duration::from_millis(500),
        )
        .await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(600), "{took:?}");
    // 0, 20, ..., 480 ms: 25 packets, maybe one more at the 500 ms boundary.
    assert!((25..=26).contains(&caller.sent), "{}", caller.sent);
    assert!(caller.reception.received() >= caller.sent - 2);
}
