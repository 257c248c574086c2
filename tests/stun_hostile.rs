//! The STUN probe against hostile or broken peers: small UDP and TCP servers inside the test.
//! Each case asserts the exact failure class and how long the probe took; none may panic or
//! hang.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stun_rs::attributes::discovery::ResponsePort;
use stun_rs::attributes::stun::{ErrorCode, MappedAddress, UnknownAttributes, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{
    MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessage, StunMessageBuilder,
    TransactionId,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use voipcheck::probe::dns::Dns;
use voipcheck::probe::stun::{
    MappedVia, NatBindingMethod, ServerAnswer, StunConfig, StunOutcome, StunRequire, StunTransport,
    probe,
};
use voipcheck::probe::{DnsErrorKind, DnsRecord, Failure};

const TIMEOUT: Duration = Duration::from_secs(1);
/// What a quick failure may take on loopback, and how late a timeout may come.
const MARGIN: Duration = Duration::from_millis(300);

fn txid_of(request: &[u8]) -> TransactionId {
    TransactionId::from(*request[8..20].first_chunk::<12>().unwrap())
}

fn encode(msg: &StunMessage) -> Vec<u8> {
    let mut buffer = [0u8; 1024];
    let size = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buffer, msg)
        .unwrap();
    buffer[..size].to_vec()
}

fn response(txid: TransactionId, class: MessageClass) -> StunMessageBuilder {
    StunMessageBuilder::new(BINDING, class).with_transaction_id(txid)
}

/// A correct success response telling `to` its address.
fn success(request: &[u8], to: SocketAddr) -> Vec<u8> {
    encode(
        &response(txid_of(request), MessageClass::SuccessResponse)
            .with_attribute(XorMappedAddress::from(to))
            .build(),
    )
}

fn error(request: &[u8], code: u16, reason: &str) -> StunMessageBuilder {
    response(txid_of(request), MessageClass::ErrorResponse).with_attribute(ErrorCode::new(
        stun_rs::ErrorCode::new(code, reason).unwrap(),
    ))
}

/// A UDP peer that answers each request (the `n`th, from 0) with the datagrams `answer`
/// returns, and records when requests arrived.
struct UdpPeer {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    task: JoinHandle<()>,
}

impl Drop for UdpPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn udp_peer(
    answer: impl Fn(&[u8], SocketAddr, usize) -> Vec<Vec<u8>> + Send + 'static,
) -> UdpPeer {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    let task = tokio::spawn(async move {
        let mut buffer = [0u8; 2048];
        loop {
            let (size, from) = socket.recv_from(&mut buffer).await.unwrap();
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push(Instant::now());
                seen.len() - 1
            };
            for datagram in answer(&buffer[..size], from, n) {
                socket.send_to(&datagram, from).await.unwrap();
            }
        }
    });
    UdpPeer {
        addr,
        arrivals,
        task,
    }
}

/// What a TCP peer does after reading a request.
enum Step {
    Send(Vec<u8>),
    Pause(Duration),
    Close,
}

struct TcpPeer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for TcpPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP peer that reads one 20-byte request per connection and then follows the script;
/// without `Close` it keeps the connection open and silent.
async fn tcp_peer(
    script: impl Fn(&[u8], SocketAddr) -> Vec<Step> + Send + Sync + 'static,
) -> TcpPeer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = Arc::new(script);
    let task = tokio::spawn(async move {
        loop {
            let (mut stream, from) = listener.accept().await.unwrap();
            let script = script.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 20];
                if stream.read_exact(&mut request).await.is_err() {
                    return;
                }
                for step in script(&request, from) {
                    match step {
                        Step::Send(bytes) => {
                            if stream.write_all(&bytes).await.is_err() {
                                return;
                            }
                        }
                        Step::Pause(d) => tokio::time::sleep(d).await,
                        Step::Close => return,
                    }
                }
                std::future::pending::<()>().await;
            });
        }
    });
    TcpPeer { addr, task }
}

async fn run(server: SocketAddr, transport: StunTransport) -> (StunOutcome, Duration) {
    let cfg = StunConfig {
        servers: vec![server.to_string()],
        transport,
        timeout: TIMEOUT,
        nat_binding: None,
        require: StunRequire::All,
        ca: None,
    };
    let start = Instant::now();
    let outcome = probe(&Dns::with_nameserver("127.0.0.1:9".parse().unwrap()), &cfg)
        .await
        .expect("valid configuration");
    (outcome, start.elapsed())
}

/// The probe failed quickly with a Protocol failure whose detail mentions `needle`.
#[track_caller]
fn assert_protocol_fast(outcome: &StunOutcome, took: Duration, needle: &str) {
    match &outcome.failure {
        Some(Failure::Protocol { detail }) => {
            assert!(detail.contains(needle), "{detail:?} lacks {needle:?}")
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    assert!(took < MARGIN, "took {took:?}");
}

#[track_caller]
fn assert_timeout(outcome: &StunOutcome, took: Duration) {
    assert_eq!(outcome.failure, Some(Failure::Timeout { after: TIMEOUT }));
    assert!(took >= TIMEOUT && took < TIMEOUT + MARGIN, "took {took:?}");
}

#[tokio::test]
async fn udp_garbage_is_a_protocol_failure() {
    let peer = udp_peer(|_, _, _| vec![b"SIP/2.0 400 Bad Request\r\n\r\n".to_vec()]).await;
    let (outcome, took) = run(peer.addr, StunTransport::Udp).await;
    assert_protocol_fast(&outcome, took, "not a STUN message");
}

#[tokio::test]
async fn udp_truncated_message_is_a_protocol_failure() {
    let peer = udp_peer(|request, from, _| {
        let whole = success(request, from);
        vec![whole[..whole.len() - 4].to_vec()]
    })
    .await;
    let (outcome, took) = run(peer.addr, StunTransport::Udp).await;
    assert_protocol_fast(&outcome, took, "malformed STUN message");
}

/// XOR-MAPPED-ADDRESS of the IPv4 family with 4 bytes instead of 8.
#[tokio::test]
async fn udp_malformed_xor_mapped_address_is_a_protocol_failure() {
    let peer = udp_peer(|request, from, _| {
        let mut bytes = success(request, from);
        bytes.truncate(20 + 4 + 4);
        bytes[2..4].copy_from_slice(&8u16.to_be_bytes());
        bytes[22..24].copy_from_slice(&4u16.to_be_bytes());
        vec![bytes]
    })
    .await;
    let (outcome, took) = run(peer.addr, StunTransport::Udp).await;
    assert_protocol_fast(&outcome, took, "attribute type (0x0020)");
}

#[tokio::test]
async fn udp_echo_of_the_request_is_a_protocol_failure() {
    let peer = udp_peer(|request, _, _| vec![request.to_vec()]).await;
    let (outcome, took) = run(peer.addr, StunTransport::Udp).await;
    assert_protocol_fast(&outcome, took, "request");
}

#[tokio::test]
async fn udp_oversized_datagram_is_a_protocol_failure() {
    let peer = udp_peer(|_, _, _| vec![vec![0u8; 4000]]).await;
    let (outcome, took) = run(peer.addr, StunTransport::Udp).await;
    assert_protocol_fast(&outcome, took, "larger than");
}

#[tokio::test]
async fn udp_error_response_is_typed() {
    let peer =
        udp_peer(|request, _, _| vec![encode(&error(request, 400, "Bad Request").build())]).await;
    let (outcome, took) = run(peer.addr, StunTransport::Udp).await;
    assert_eq!(outcome.failure, Some(Failure::StunError { code: 400 }));
    assert!(took < MARGIN, "took {took:?}");
}

/// Answers for another transaction are ignored (RFC 8489 §6.3); the request is retransmitted at
/// 0, 0.5 and 1.5 s (RFC 8489 §6.2.1), of which the 1 s timeout sees the first two.
#[tokio::test]
async fn udp_wrong_transaction_id_is_ignored_until_the_timeout() {
    let peer = udp_peer(|_, from, _| {
        vec![encode(
            &response(TransactionId::default(), MessageClass::SuccessResponse)
                .with_attribute(XorMappedAddress::from(from))
                .build(),
        )]
    })
    .await;
    let (outcome, took) = run(peer.addr, StunTransport::Udp).await;
    assert_timeout(&outcome, took);
    assert_eq!(peer.arrivals.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn udp_silence_times_out_after_rfc_8489_retransmissions() {
    let peer = udp_peer(|_, _, _| Vec::new()).await;
    let cfg = StunConfig {
        servers: vec![peer.addr.to_string()],
        transport: StunTransport::Udp,
        timeout: Duration::from_millis(3700),
        nat_binding: None,
        require: StunRequire::All,
        ca: None,
    };
    let start = Instant::now();
    let outcome = probe(&Dns::with_nameserver("127.0.0.1:9".parse().unwrap()), &cfg)
        .await
        .expect("valid configuration");
    let took = start.elapsed();
    assert_eq!(
        outcome.failure,
        Some(Failure::Timeout { after: cfg.timeout })
    );
    assert!(
        took >= cfg.timeout && took < cfg.timeout + MARGIN,
        "took {took:?}"
    );
    // Transmissions at 0, 0.5, 1.5 and 3.5 s: gaps of 0.5, 1 and 2 s.
    let arrivals = peer.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 4, "{arrivals:?}");
    for (pair, want) in arrivals.windows(2).zip([500, 1000, 2000]) {
        let gap = pair[1] - pair[0];
        let want = Duration::from_millis(want);
        assert!(
            gap >= want && gap < want + Duration::from_millis(200),
            "gap {gap:?}, want {want:?}"
        );
    }
}

/// The first request is lost; the retransmission 0.5 s later is answered.
#[tokio::test]
async fn udp_answer_to_a_retransmission_counts_it() {
    let peer = udp_peer(|request, from, n| match n {
        0 => Vec::new(),
        _ => vec![success(request, from)],
    })
    .await;
    let (outcome, _) = run(peer.addr, StunTransport::Udp).await;
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    let ServerAnswer::Binding(b) = &outcome.servers[0].answer else {
        panic!("{outcome:#?}");
    };
    assert_eq!(b.retransmits, 1);
    assert!(b.rtt >= Duration::from_millis(500), "rtt {:?}", b.rtt);
}

/// An RFC 3489 server: MAPPED-ADDRESS only.
#[tokio::test]
async fn udp_old_server_with_mapped_address_only() {
    let peer = udp_peer(|request, from, _| {
        vec![encode(
            &response(txid_of(request), MessageClass::SuccessResponse)
                .with_attribute(MappedAddress::from(from))
                .build(),
        )]
    })
    .await;
    let (outcome, _) = run(peer.addr, StunTransport::Udp).await;
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    let ServerAnswer::Binding(b) = &outcome.servers[0].answer else {
        panic!("{outcome:#?}");
    };
    assert_eq!(b.mapped_via, MappedVia::MappedAddress);
    assert_eq!(b.mapped, b.local);
}

/// An RFC 5389 server without RFC 5780 answers RESPONSE-PORT with 420 (RFC 8489 §6.3.1.1, a
/// comprehension-required attribute it does not know): the probe falls back to the same socket.
#[tokio::test]
async fn nat_binding_falls_back_on_420_unknown_attribute() {
    let peer = udp_peer(|request, from, _| {
        let (msg, _) = MessageDecoderBuilder::default()
            .build()
            .decode(request)
            .unwrap();
        if msg.get::<ResponsePort>().is_some() {
            let unknown = UnknownAttributes::from(&[0x0027u16][..]);
            vec![encode(
                &error(request, 420, "Unknown Attribute")
                    .with_attribute(unknown)
                    .build(),
            )]
        } else {
            vec![success(request, from)]
        }
    })
    .await;
    let cfg = StunConfig {
        servers: vec![peer.addr.to_string()],
        transport: StunTransport::Udp,
        timeout: TIMEOUT,
        nat_binding: Some(Duration::from_millis(100)),
        require: StunRequire::All,
        ca: None,
    };
    let outcome = probe(&Dns::with_nameserver("127.0.0.1:9".parse().unwrap()), &cfg)
        .await
        .expect("valid configuration");
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    let nat = outcome.nat_binding.unwrap();
    assert_eq!(nat.method, NatBindingMethod::SameSocket);
    assert!(nat.survived);
    // Main binding, first socket, second socket (420), first socket again.
    assert_eq!(peer.arrivals.lock().unwrap().len(), 4);
}

/// The server answers the probe's Binding and then falls silent: the NAT measurement that was
/// asked for cannot be made, and that is the probe's failure.
#[tokio::test]
async fn nat_binding_against_a_server_that_falls_silent_is_a_timeout() {
    let peer = udp_peer(|request, from, n| match n {
        0 => vec![success(request, from)],
        _ => Vec::new(),
    })
    .await;
    let cfg = StunConfig {
        servers: vec![peer.addr.to_string()],
        transport: StunTransport::Udp,
        timeout: TIMEOUT,
        nat_binding: Some(Duration::from_millis(100)),
        require: StunRequire::All,
        ca: None,
    };
    let start = Instant::now();
    let outcome = probe(&Dns::with_nameserver("127.0.0.1:9".parse().unwrap()), &cfg)
        .await
        .expect("valid configuration");
    let took = start.elapsed();
    assert_eq!(outcome.failure, Some(Failure::Timeout { after: TIMEOUT }));
    assert!(matches!(
        outcome.servers[0].answer,
        ServerAnswer::Binding(_)
    ));
    assert_eq!(outcome.nat_binding, None);
    // The first socket's Binding gets no answer: one timeout after the main Binding.
    assert!(took >= TIMEOUT && took < TIMEOUT + MARGIN, "took {took:?}");
}

#[tokio::test]
async fn tcp_oversized_frame_header_is_a_protocol_failure() {
    let peer = tcp_peer(|request, _| {
        let mut header = request.to_vec();
        header[0..2].copy_from_slice(&0x0101u16.to_be_bytes());
        header[2..4].copy_from_slice(&0xfffcu16.to_be_bytes());
        vec![Step::Send(header)]
    })
    .await;
    let (outcome, took) = run(peer.addr, StunTransport::Tcp).await;
    assert_protocol_fast(&outcome, took, "exceeds the 2048-byte bound");
}

#[tokio::test]
async fn tcp_garbage_is_a_protocol_failure() {
    let peer =
        tcp_peer(|_, _| vec![Step::Send(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec())]).await;
    let (outcome, took) = run(peer.addr, StunTransport::Tcp).await;
    assert_protocol_fast(&outcome, took, "not a STUN message");
}

#[tokio::test]
async fn tcp_truncated_message_then_close_is_a_protocol_failure() {
    let peer = tcp_peer(|request, from| {
        let whole = success(request, from);
        vec![Step::Send(whole[..whole.len() - 4].to_vec()), Step::Close]
    })
    .await;
    let (outcome, took) = run(peer.addr, StunTransport::Tcp).await;
    assert_protocol_fast(&outcome, took, "truncated");
}

#[tokio::test]
async fn tcp_close_without_answer_is_a_network_failure() {
    let peer = tcp_peer(|_, _| vec![Step::Close]).await;
    let (outcome, took) = run(peer.addr, StunTransport::Tcp).await;
    assert!(
        matches!(&outcome.failure, Some(Failure::Network { detail }) if detail.contains("closed before an answer")),
        "{outcome:#?}"
    );
    assert!(took < MARGIN, "took {took:?}");
}

#[tokio::test]
async fn tcp_error_response_is_typed() {
    let peer = tcp_peer(|request, _| {
        vec![Step::Send(encode(
            &error(request, 401, "Unauthorized").build(),
        ))]
    })
    .await;
    let (outcome, took) = run(peer.addr, StunTransport::Tcp).await;
    assert_eq!(outcome.failure, Some(Failure::StunError { code: 401 }));
    assert!(took < MARGIN, "took {took:?}");
}

#[tokio::test]
async fn tcp_silence_times_out() {
    let peer = tcp_peer(|_, _| Vec::new()).await;
    let (outcome, took) = run(peer.addr, StunTransport::Tcp).await;
    assert_timeout(&outcome, took);
}

/// A valid answer dripped one byte every 100 ms would take 3.2 s: the timeout bounds the read.
#[tokio::test]
async fn tcp_slow_drip_times_out() {
    let peer = tcp_peer(|request, from| {
        success(request, from)
            .into_iter()
            .flat_map(|byte| {
                [
                    Step::Send(vec![byte]),
                    Step::Pause(Duration::from_millis(100)),
                ]
            })
            .collect()
    })
    .await;
    let (outcome, took) = run(peer.addr, StunTransport::Tcp).await;
    assert_timeout(&outcome, took);
}

/// Answers for another transaction are skipped over TCP too, then the real one is taken.
#[tokio::test]
async fn tcp_skips_other_transactions() {
    let peer = tcp_peer(|request, from| {
        let other = encode(
            &response(TransactionId::default(), MessageClass::SuccessResponse)
                .with_attribute(XorMappedAddress::from(from))
                .build(),
        );
        vec![Step::Send(other), Step::Send(success(request, from))]
    })
    .await;
    let (outcome, _) = run(peer.addr, StunTransport::Tcp).await;
    assert_eq!(outcome.failure, None, "{outcome:#?}");
}

/// The name server does not answer (nothing listens on its port): a DNS timeout by the
/// probe's timeout at the latest, not a STUN Timeout (the STUN server was never asked).
#[tokio::test]
async fn unresolvable_server_name_fails_within_the_timeout() {
    let nameserver = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let cfg = StunConfig {
        servers: vec!["stun.voipcheck.test:3478".to_owned()],
        transport: StunTransport::Udp,
        timeout: TIMEOUT,
        nat_binding: None,
        require: StunRequire::All,
        ca: None,
    };
    let start = Instant::now();
    let outcome = probe(&Dns::with_nameserver(nameserver), &cfg)
        .await
        .expect("valid configuration");
    let took = start.elapsed();
    assert_eq!(
        outcome.failure,
        Some(Failure::DnsFailure {
            name: "stun.voipcheck.test".to_owned(),
            record: DnsRecord::Address,
            kind: DnsErrorKind::Timeout
        })
    );
    assert!(took < TIMEOUT + MARGIN, "took {took:?}");
    assert_eq!(outcome.servers[0].address, None);
}
