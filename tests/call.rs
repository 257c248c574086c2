//! The test call probe (`sip::call`) against real peers on loopback: Kamailio as the provider's
//! registrar and proxy (tests/peers/kamailio.cfg: 407 on INVITE, record-routing, test numbers)
//! and SIPp as the far end (tests/peers/sipp/call-*.xml).

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;
use support::kamailio::Kamailio;
use support::sipp::Sipp;
use voipcheck::probe::dns::Dns;
use voipcheck::probe::media::{Codec, MediaConfig, Mos};
use voipcheck::probe::sip::{
    self, Account, AnswerPolicy, CallConfig, CallOutcome, Callee, DigestAlgorithm, Party,
    SdpAddress,
};
use voipcheck::probe::{Failure, Outcome};
use voipcheck::secret::Secret;

const TIMEOUT: Duration = Duration::from_secs(5);
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn call_config(kamailio: &Kamailio, transport: &str, number: &str) -> CallConfig {
    CallConfig {
        caller: kamailio.caller(transport),
        callee: Callee::Number(kamailio.number(number, transport)),
        answer: AnswerPolicy::Required,
        ring_timeout: Duration::from_secs(2),
        media: None,
        advertise: SdpAddress::Local,
        timeout: TIMEOUT,
    }
}

async fn call(cfg: &CallConfig) -> CallOutcome {
    call_with(&Dns::system().unwrap(), cfg).await
}

async fn call_with(dns: &Dns, cfg: &CallConfig) -> CallOutcome {
    let outcome = sip::call(dns, cfg).await.expect("valid configuration");
    assert!(
        outcome.total <= cfg.bound(),
        "the call took {:?}, over its bound {:?}",
        outcome.total,
        cfg.bound()
    );
    outcome
}

/// The call was ended by the probe with `method`, answered 200.
fn assert_hung_up(outcome: &CallOutcome, method: &str, text: &str) {
    let hangup = outcome.hangup.as_ref().expect("hung up");
    assert_eq!(
        (hangup.by, hangup.method.as_str()),
        (Party::Caller, method),
        "{text}"
    );
    let answer = hangup.response.as_ref().map(|r| r.code);
    assert_eq!(answer, Some(200), "{text}");
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

/// A SIPp UAS playing `scenario` with its media on a port of its own, echoing RTP.
fn uas(scenario: &str, ip: IpAddr) -> Sipp {
    uas_with(scenario, ip, &[])
}

/// [`uas`] with more SIPp options.
fn uas_with(scenario: &str, ip: IpAddr, options: &[&str]) -> Sipp {
    let (ip_text, media_port) = (ip.to_string(), support::free_media_port().to_string());
    let mut all = vec!["-rtp_echo", "-mi", &ip_text, "-mp", &media_port];
    all.extend_from_slice(options);
    Sipp::start_with(scenario, ip, 1, &all)
}

fn echo_uas(ip: IpAddr) -> Sipp {
    uas("call-echo.xml", ip)
}

/// A call straight to a SIPp UAS (no proxy, no challenge), as to a peer that misbehaves.
fn direct(uas: &Sipp) -> CallConfig {
    CallConfig {
        caller: Account {
            server: uas.uri(None),
            username: "alice".into(),
            auth_username: None,
            domain: None,
            proxy: None,
            password: Secret::new("alice-secret"),
            ca: None,
        },
        callee: Callee::Number(uas.uri(Some("service"))),
        answer: AnswerPolicy::Required,
        ring_timeout: Duration::from_secs(1),
        media: None,
        advertise: SdpAddress::Local,
        timeout: TIMEOUT,
    }
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
        assert_hung_up(&outcome, "BYE", &text);
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
        assert_hung_up(&outcome, "CANCEL", &text);
        assert_eq!(sent(&outcome, "CANCEL"), 1, "{text}");
        // The 487 is acknowledged (as the 407 before it).
        assert_eq!(sent(&outcome, "ACK"), 2, "{text}");
        assert!(outcome.total >= cfg.ring_timeout);
    }
}

/// The lab's `stop-echo`: the proxy takes the call (100 Trying) and has no one to ring. Before
/// the fix the outcome's final response was the 407 answered on the way, so the failure read
/// "... within 2s (407 Proxy Authentication Required)".
#[tokio::test]
async fn a_call_the_proxy_cannot_ring_anywhere_did_not_ring_and_has_no_final_response() {
    let nobody = std::net::SocketAddr::new(LOCAL, support::free_port());
    let kamailio = Kamailio::builder().echo(nobody).start();
    let cfg = CallConfig {
        timeout: Duration::from_secs(2),
        ..call_config(&kamailio, "udp", "echo")
    };
    let outcome = call(&cfg).await;
    let text = flow(&outcome);
    assert_eq!(
        outcome.failure,
        Some(Failure::NoRinging { after: cfg.timeout }),
        "{text}"
    );
    assert_eq!(outcome.response, None, "{text}");
    assert_eq!(outcome.ringing, None, "{text}");
    assert_hung_up(&outcome, "CANCEL", &text);
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

/// A STUN server inside the test that tells every client it is `mapped` (a documentation
/// address: as if the probe sat behind NAT), so the offer must carry that address.
async fn stun_responder(
    mapped: std::net::SocketAddr,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use stun_rs::attributes::stun::XorMappedAddress;
    use stun_rs::{MessageClass, MessageEncoderBuilder, StunMessageBuilder, TransactionId};
    let socket = tokio::net::UdpSocket::bind((LOCAL, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((size, from)) = socket.recv_from(&mut buf).await {
            let Some(txid) = buf[..size].get(8..20).and_then(|t| t.first_chunk::<12>()) else {
                continue;
            };
            let answer =
                StunMessageBuilder::new(stun_rs::methods::BINDING, MessageClass::SuccessResponse)
                    .with_transaction_id(TransactionId::from(*txid))
                    .with_attribute(XorMappedAddress::from(mapped))
                    .build();
            let mut out = [0u8; 512];
            let size = MessageEncoderBuilder::default()
                .build()
                .encode(&mut out, &answer)
                .unwrap();
            let _ = socket.send_to(&out[..size], from).await;
        }
    });
    (addr, task)
}

#[tokio::test]
async fn the_offer_advertises_the_stun_mapped_address_or_the_local_one() {
    let mapped: std::net::SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let (stun, responder) = stun_responder(mapped).await;
    for advertise in [
        SdpAddress::StunMapped {
            server: stun.to_string(),
        },
        SdpAddress::Local,
    ] {
        let mut uas = echo_uas(LOCAL);
        let kamailio = Kamailio::builder().echo(uas.addr).start();
        let mut cfg = call_config(&kamailio, "udp", "echo");
        cfg.advertise = advertise.clone();
        let outcome = call(&cfg).await;
        let text = flow(&outcome);
        assert_eq!(outcome.failure, None, "{advertise:?}: {text}");
        let invite_sdp: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.contains("→  INVITE"))
            .filter(|l| l.contains("SDP: "))
            .take(2)
            .collect();
        match advertise {
            SdpAddress::StunMapped { .. } => {
                assert!(
                    invite_sdp[0].ends_with("SDP: c=IN IP4 198.51.100.7"),
                    "{text}"
                );
                assert!(
                    invite_sdp[1].ends_with("SDP: m=audio 40000 RTP/AVP 8 0 101"),
                    "{text}"
                );
            }
            SdpAddress::Local => {
                assert!(invite_sdp[0].ends_with("SDP: c=IN IP4 127.0.0.1"), "{text}");
                assert!(!text.contains("198.51.100.7"), "{text}");
            }
        }
        uas.assert_scenario_completes(Duration::from_secs(5));
    }
    responder.abort();
}

#[tokio::test]
async fn a_stun_server_that_does_not_answer_fails_the_media_not_the_server() {
    let kamailio = Kamailio::start();
    let silent = std::net::UdpSocket::bind((LOCAL, 0)).unwrap();
    let mut cfg = call_config(&kamailio, "udp", "echo");
    cfg.timeout = Duration::from_secs(1);
    cfg.advertise = SdpAddress::StunMapped {
        server: silent.local_addr().unwrap().to_string(),
    };
    let outcome = call(&cfg).await;
    assert!(
        matches!(&outcome.failure, Some(Failure::MediaNotNegotiated { detail }) if detail.contains("STUN")),
        "{outcome:#?}"
    );
    // No INVITE went out without an address to offer.
    assert_eq!(sent(&outcome, "INVITE"), 0);
}

#[tokio::test]
async fn an_answer_without_usable_sdp_fails_the_media_and_still_ends_the_call() {
    for scenario in ["call-no-sdp.xml", "call-unsupported-codec.xml"] {
        let mut far_end = uas(scenario, LOCAL);
        let outcome = call(&direct(&far_end)).await;
        let text = flow(&outcome);
        assert!(
            matches!(&outcome.failure, Some(Failure::MediaNotNegotiated { .. })),
            "{scenario}: {text}"
        );
        assert_eq!(outcome.response.as_ref().map(|r| r.code), Some(200));
        assert_eq!(sent(&outcome, "ACK"), 1, "{text}");
        assert_hung_up(&outcome, "BYE", &text);
        // SIPp got its ACK and BYE: no dialog left open.
        far_end.assert_scenario_completes(Duration::from_secs(5));
    }
}

/// A call straight to the UAS of `scenario` that rings (18x) and is not answered within the
/// ring timeout: its outcome, flow, and the UAS.
async fn not_answered(scenario: &str) -> (CallOutcome, String, Sipp) {
    let far_end = uas(scenario, LOCAL);
    let cfg = direct(&far_end);
    let outcome = call(&cfg).await;
    let text = flow(&outcome);
    let expected = Failure::NotAnswered {
        after: cfg.ring_timeout,
    };
    assert_eq!(outcome.failure, Some(expected), "{scenario}: {text}");
    (outcome, text, far_end)
}

#[tokio::test]
async fn early_media_then_silence_is_not_answered_and_cancelled() {
    let (outcome, text, mut far_end) = not_answered("call-early-media-silence.xml").await;
    assert_eq!(outcome.ringing.as_ref().map(|r| r.code), Some(183));
    // The early media's SDP is in the flow.
    let progress = text.split("←  SIP/2.0 183").nth(1).unwrap_or_default();
    let progress: Vec<&str> = progress
        .lines()
        .take_while(|l| !l.contains("  →  "))
        .collect();
    assert!(
        progress
            .iter()
            .any(|l| l.contains("SDP: c=IN IP4 127.0.0.1")),
        "{text}"
    );
    assert_eq!(
        outcome.response.as_ref().map(|r| r.code),
        Some(487),
        "{text}"
    );
    assert_eq!(
        (sent(&outcome, "CANCEL"), sent(&outcome, "ACK")),
        (1, 1),
        "{text}"
    );
    far_end.assert_scenario_completes(Duration::from_secs(5));
}

#[tokio::test]
async fn a_200_after_the_cancel_is_acknowledged_and_hung_up() {
    let (outcome, text, mut far_end) = not_answered("call-200-after-cancel.xml").await;
    assert_eq!(
        outcome.response.as_ref().map(|r| r.code),
        Some(200),
        "{text}"
    );
    assert_eq!(sent(&outcome, "CANCEL"), 1, "{text}");
    assert_eq!(sent(&outcome, "ACK"), 1, "{text}");
    assert_hung_up(&outcome, "BYE", &text);
    far_end.assert_scenario_completes(Duration::from_secs(5));
}

fn media(seconds: u64) -> Option<MediaConfig> {
    Some(MediaConfig {
        duration: Duration::from_secs(seconds),
        codec: Codec::Pcmu,
        mos_threshold: Mos::DEFAULT_THRESHOLD,
    })
}

#[tokio::test]
async fn an_echo_call_through_kamailio_measures_the_audio() {
    for transport in ["udp", "tcp"] {
        let mut far_end = echo_uas(LOCAL);
        let kamailio = Kamailio::builder().echo(far_end.addr).start();
        let mut cfg = call_config(&kamailio, transport, "echo");
        cfg.media = media(2);
        let outcome = call(&cfg).await;
        let text = flow(&outcome);
        assert_eq!(outcome.failure, None, "{transport}: {text}");
        let report = outcome.media.as_ref().expect("media measured");
        // The echo answered PCMA only, though PCMU was offered first.
        assert_eq!(report.codec, Codec::Pcma);
        assert_eq!(report.incoming.sent, 100, "{report:#?}");
        assert_eq!(report.incoming.lost, 0, "{report:#?}");
        assert!(report.round_trip.is_some(), "{report:#?}");
        assert!(report.mos() >= Mos::from_f64(4.3), "{report:#?}");
        assert_hung_up(&outcome, "BYE", &text);
        far_end.assert_scenario_completes(Duration::from_secs(5));
    }
}

/// A call with `seconds` of media straight to `far_end`: its outcome and flow.
async fn media_call(far_end: &Sipp, seconds: u64) -> (CallOutcome, String) {
    let mut cfg = direct(far_end);
    cfg.media = media(seconds);
    let outcome = call(&cfg).await;
    let text = flow(&outcome);
    (outcome, text)
}

#[tokio::test]
async fn a_far_end_hanging_up_during_the_media_dropped_the_call() {
    let mut far_end = uas("call-bye-during-media.xml", LOCAL);
    let (outcome, text) = media_call(&far_end, 3).await;
    assert!(
        matches!(outcome.failure, Some(Failure::DroppedEarly { after }) if after < Duration::from_secs(2)),
        "{text}"
    );
    let hangup = outcome.hangup.as_ref().expect("hung up");
    assert_eq!((hangup.by, hangup.method.as_str()), (Party::FarEnd, "BYE"));
    assert_eq!(sent(&outcome, "BYE"), 0, "{text}");
    assert!(
        outcome.total < Duration::from_secs(2),
        "{:?}",
        outcome.total
    );
    // SIPp got the 200 to its BYE.
    far_end.assert_scenario_completes(Duration::from_secs(5));
}

#[tokio::test]
async fn a_re_invite_during_the_call_is_answered_and_the_call_goes_on() {
    let mut far_end = uas("call-reinvite.xml", LOCAL);
    let (outcome, text) = media_call(&far_end, 2).await;
    assert_eq!(outcome.failure, None, "{text}");
    assert!(text.contains("←  INVITE sip:alice@"), "{text}");
    let answer = text
        .split("←  INVITE sip:alice@")
        .nth(1)
        .unwrap_or_default();
    assert!(answer.contains("→  SIP/2.0 200 OK"), "{text}");
    assert_hung_up(&outcome, "BYE", &text);
    assert!(outcome.media.is_some());
    far_end.assert_scenario_completes(Duration::from_secs(5));
}

#[tokio::test]
async fn each_retransmitted_200_is_acknowledged_again() {
    // -nr: SIPp would take our second ACK, which is the first one again (RFC 3261
    // §13.2.2.4), for a retransmission and answer it with the 200 again, without end.
    let mut far_end = uas_with("call-retransmitted-200.xml", LOCAL, &["-nr"]);
    let (outcome, text) = media_call(&far_end, 1).await;
    assert_eq!(outcome.failure, None, "{text}");
    // Every 200 to the INVITE (all but the last 200, the BYE's) got its ACK.
    let answers = lines(&outcome, "←")
        .iter()
        .filter(|l| l.starts_with("SIP/2.0 200"))
        .count();
    assert!(answers >= 3, "{text}");
    assert_eq!(sent(&outcome, "ACK"), answers - 1, "{text}");
    assert_hung_up(&outcome, "BYE", &text);
    far_end.assert_scenario_completes(Duration::from_secs(5));
}

#[tokio::test]
async fn an_answer_naming_media_outside_the_allow_list_gets_no_rtp_and_the_call_is_ended() {
    // Signalling on 127.0.0.1 (allowed), the answer's media on 127.0.0.2 (not).
    let media_port = support::free_media_port().to_string();
    let options = ["-rtp_echo", "-mi", "127.0.0.2", "-mp", &media_port];
    let mut far_end = Sipp::start_with("call-echo.xml", LOCAL, 1, &options);
    let dns = Dns::system()
        .unwrap()
        .restricted(|_, ip| ip == IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut cfg = direct(&far_end);
    cfg.media = media(1);
    let outcome = call_with(&dns, &cfg).await;
    let text = flow(&outcome);
    assert_eq!(
        outcome.failure,
        Some(Failure::TargetNotAllowed {
            name: format!("127.0.0.2:{media_port}"),
            address: "127.0.0.2".into()
        }),
        "{text}"
    );
    assert!(outcome.media.is_none(), "no RTP sent or measured: {text}");
    assert_hung_up(&outcome, "BYE", &text);
    far_end.assert_scenario_completes(Duration::from_secs(5));
}

/// The hairpin call: alice calls bob, whom the probe registers and answers itself.
fn hairpin(kamailio: &Kamailio, transport: &str, password: &str) -> CallConfig {
    let mut cfg = call_config(kamailio, transport, "bob");
    cfg.callee = Callee::Account {
        username: "bob".into(),
        auth_username: None,
        password: Secret::new(password),
    };
    cfg
}

#[tokio::test]
async fn a_hairpin_call_reaches_the_probes_own_callee_with_media_both_ways() {
    let kamailio = Kamailio::start();
    for transport in ["udp", "tcp"] {
        let mut cfg = hairpin(&kamailio, transport, "bob-secret");
        cfg.media = media(2);
        let outcome = call(&cfg).await;
        let text = flow(&outcome);
        assert_eq!(outcome.failure, None, "{transport}: {text}");
        let reached = outcome
            .callee_reached
            .expect("the INVITE reached the callee");
        assert!(reached <= outcome.setup_time.unwrap(), "{text}");
        let report = outcome.media.as_ref().expect("media measured");
        let outgoing = report.outgoing.as_ref().expect("measured by the callee");
        assert_eq!((outgoing.sent, outgoing.lost), (100, 0), "{report:#?}");
        assert_eq!(
            (report.incoming.sent, report.incoming.lost),
            (100, 0),
            "{report:#?}"
        );
        assert!(report.mos() >= Mos::from_f64(4.3), "{report:#?}");
        assert_hung_up(&outcome, "BYE", &text);
        // The callee answered through the record-routing proxy and removed its binding.
        assert!(text.contains("←  INVITE sip:bob-"), "{text}");
        assert!(
            kamailio.bindings("bob").is_empty(),
            "{:?}",
            kamailio.bindings("bob")
        );
        assert!(
            !text.contains("bob-secret") && !text.contains("alice-secret"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_hairpin_call_that_only_has_to_ring_is_cancelled_at_the_callee() {
    let kamailio = Kamailio::start();
    let mut cfg = hairpin(&kamailio, "udp", "bob-secret");
    cfg.answer = AnswerPolicy::RingingIsEnough;
    let outcome = call(&cfg).await;
    let text = flow(&outcome);
    assert_eq!(outcome.failure, None, "{text}");
    assert!(outcome.callee_reached.is_some(), "{text}");
    assert_eq!(
        outcome.response.as_ref().map(|r| r.code),
        Some(487),
        "{text}"
    );
    assert_hung_up(&outcome, "CANCEL", &text);
    // The callee got the CANCEL and ended its side with 487.
    assert!(text.contains("←  CANCEL sip:bob-"), "{text}");
    assert!(kamailio.bindings("bob").is_empty());
}

#[tokio::test]
async fn the_probes_own_callee_refuses_an_offer_naming_media_outside_the_allow_list() {
    // The caller's offer names 127.0.0.5 (its STUN-mapped address), which the allow-list
    // refuses: the callee answers 488 and sends no RTP there.
    let (stun, responder) = stun_responder("127.0.0.5:40000".parse().unwrap()).await;
    let kamailio = Kamailio::start();
    let mut cfg = hairpin(&kamailio, "udp", "bob-secret");
    cfg.media = media(1);
    cfg.advertise = SdpAddress::StunMapped {
        server: stun.to_string(),
    };
    let refused = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));
    let dns = Dns::system()
        .unwrap()
        .restricted(move |_, ip| ip != refused);
    let outcome = call_with(&dns, &cfg).await;
    let text = flow(&outcome);
    assert_eq!(
        outcome.failure,
        Some(Failure::TargetNotAllowed {
            name: "127.0.0.5:40000".into(),
            address: "127.0.0.5".into()
        }),
        "{text}"
    );
    assert!(
        text.contains("→  SIP/2.0 488 Not Acceptable Here"),
        "{text}"
    );
    assert!(kamailio.bindings("bob").is_empty());
    responder.abort();
}

#[tokio::test]
async fn a_callee_that_cannot_register_fails_the_call_before_it_is_made() {
    let kamailio = Kamailio::start();
    let outcome = call(&hairpin(&kamailio, "udp", "wrong-secret")).await;
    let text = flow(&outcome);
    assert_eq!(
        outcome.failure,
        Some(Failure::CalleeNotRegistered {
            cause: Box::new(Failure::AuthRejected { code: 401 })
        }),
        "{text}"
    );
    assert_eq!(sent(&outcome, "INVITE"), 0, "{text}");
    assert!(!text.contains("wrong-secret"), "{text}");
}
