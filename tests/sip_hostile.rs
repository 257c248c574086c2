//! The SIP probes against hostile or broken peers: small servers inside the tests on loopback.
//! Each case asserts the exact failure class and that the probe returned within its timeout
//! plus a small margin.

mod support;

use md5::Md5;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use voipcheck::probe::Failure;
use voipcheck::probe::dns::Dns;
use voipcheck::probe::sip::{
    self, DigestAlgorithm, OptionsConfig, OptionsOutcome, QualifyState, RegisterConfig,
    RegisterOutcome,
};
use voipcheck::secret::Secret;

const TIMEOUT: Duration = Duration::from_secs(1);
/// What a probe may take beyond its timeout.
const MARGIN: Duration = Duration::from_millis(300);

const PASSWORD: &str = "s3cret-pw";

/// The requests a peer received, as text.
type Seen = Arc<Mutex<Vec<String>>>;

/// A UDP peer: `answer(request, how many came before)` gives the datagrams to send back.
async fn udp_peer(
    answer: impl Fn(&str, usize) -> Vec<Vec<u8>> + Send + 'static,
) -> (SocketAddr, Seen) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            let before = {
                let mut log = log.lock().unwrap();
                log.push(request.clone());
                log.len() - 1
            };
            for datagram in answer(&request, before) {
                let _ = socket.send_to(&datagram, from).await;
            }
        }
    });
    (addr, seen)
}

/// A TCP peer for one connection: reads the first request, then hands over the stream.
async fn tcp_peer<F, Fut>(behave: F) -> SocketAddr
where
    F: FnOnce(TcpStream, String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        behave(stream, String::from_utf8_lossy(&request).into_owned()).await;
    });
    addr
}

/// The value of the first header `name` in `request`.
fn header<'a>(request: &'a str, name: &str) -> &'a str {
    request
        .lines()
        .find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} in {request}"))
}

/// A response to `request` that matches it, with `extra` headers (each ending in CRLF). A 2xx
/// to a REGISTER lists its Contact with the Expires asked for, as a registrar does.
fn respond(request: &str, status: &str, extra: &str) -> String {
    let binding = match request.starts_with("REGISTER") && status.starts_with('2') {
        true => format!(
            "Contact: {};expires={}\r\n",
            header(request, "Contact"),
            header(request, "Expires")
        ),
        false => String::new(),
    };
    format!(
        "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=hostile\r\nCall-ID: {}\r\nCSeq: {}\r\n{binding}{extra}Content-Length: 0\r\n\r\n",
        header(request, "Via"),
        header(request, "From"),
        header(request, "To"),
        header(request, "Call-ID"),
        header(request, "CSeq"),
    )
}

fn options_cfg(addr: SocketAddr, transport: &str) -> OptionsConfig {
    OptionsConfig {
        server: format!("sip:{addr};transport={transport}"),
        proxy: None,
        lagged_threshold: TIMEOUT,
        timeout: TIMEOUT,
        ca: None,
    }
}

fn register_cfg(addr: SocketAddr) -> RegisterConfig {
    RegisterConfig {
        server: format!("sip:{addr};transport=udp"),
        username: "alice".into(),
        auth_username: None,
        domain: Some("example.test".into()),
        proxy: None,
        password: Secret::new(PASSWORD),
        expires: 300,
        unregister: false,
        timeout: TIMEOUT,
        ca: None,
    }
}

/// Runs OPTIONS and checks it ended within the timeout plus margin.
async fn options(cfg: &OptionsConfig) -> OptionsOutcome {
    let started = Instant::now();
    let outcome = sip::options(&Dns::with_nameserver(([127, 0, 0, 1], 9).into()), cfg)
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(took <= cfg.timeout + MARGIN, "took {took:?}: {outcome:#?}");
    outcome
}

async fn register(cfg: &RegisterConfig) -> RegisterOutcome {
    let started = Instant::now();
    let outcome = sip::register(&Dns::with_nameserver(([127, 0, 0, 1], 9).into()), cfg)
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(took <= cfg.timeout + MARGIN, "took {took:?}: {outcome:#?}");
    assert!(!format!("{outcome:?}").contains(PASSWORD));
    outcome
}

fn protocol(outcome: &Option<Failure>) -> bool {
    matches!(outcome, Some(Failure::Protocol { .. }))
}

fn timeout(outcome: &Option<Failure>) -> bool {
    matches!(outcome, Some(Failure::Timeout { .. }))
}

// ---- garbage and truncation ----

#[tokio::test]
async fn garbage_over_udp_is_a_protocol_failure_at_the_deadline() {
    let (addr, _) = udp_peer(|_, _| vec![vec![0x00, 0xff, 0x13, 0x37, b'\r', b'\n', 0xfe]]).await;
    let outcome = options(&options_cfg(addr, "udp")).await;
    assert!(protocol(&outcome.failure), "{outcome:#?}");
    assert_eq!(outcome.state, QualifyState::Unreachable);
}

#[tokio::test]
async fn garbage_over_tcp_fails_at_once() {
    let addr = tcp_peer(|mut stream, _| async move {
        let _ = stream
            .write_all(&[0x16, 0x03, 0x01, 0x00, 0xff, 0x00])
            .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let started = Instant::now();
    let outcome = options(&options_cfg(addr, "tcp")).await;
    assert!(protocol(&outcome.failure), "{outcome:#?}");
    assert!(started.elapsed() < TIMEOUT / 2);
}

#[tokio::test]
async fn an_http_server_on_the_sip_port_is_a_protocol_failure() {
    let addr = tcp_peer(|mut stream, _| async move {
        let _ = stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let outcome = options(&options_cfg(addr, "tcp")).await;
    assert!(protocol(&outcome.failure), "{outcome:#?}");
}

#[tokio::test]
async fn headers_cut_midway_then_close_is_a_protocol_failure() {
    let addr = tcp_peer(|mut stream, request| async move {
        let full = respond(&request, "200 OK", "");
        let _ = stream.write_all(&full.as_bytes()[..full.len() / 2]).await;
    })
    .await;
    let outcome = options(&options_cfg(addr, "tcp")).await;
    assert!(protocol(&outcome.failure), "{outcome:#?}");
}

#[tokio::test]
async fn a_body_shorter_than_content_length_then_close_is_a_protocol_failure() {
    let addr = tcp_peer(|mut stream, request| async move {
        let full =
            respond(&request, "200 OK", "").replace("Content-Length: 0", "Content-Length: 500");
        let _ = stream.write_all(full.as_bytes()).await;
        let _ = stream.write_all(b"v=0\r\n").await;
    })
    .await;
    let outcome = options(&options_cfg(addr, "tcp")).await;
    assert!(protocol(&outcome.failure), "{outcome:#?}");
}

#[tokio::test]
async fn a_truncated_datagram_is_a_protocol_failure() {
    let (addr, _) = udp_peer(|request, _| {
        let full = respond(request, "200 OK", "");
        vec![full.as_bytes()[..40].to_vec()]
    })
    .await;
    let outcome = options(&options_cfg(addr, "udp")).await;
    assert!(protocol(&outcome.failure), "{outcome:#?}");
}

#[tokio::test]
async fn the_connection_closed_without_answer_is_a_network_failure() {
    let addr = tcp_peer(|stream, _| async move { drop(stream) }).await;
    let outcome = options(&options_cfg(addr, "tcp")).await;
    assert!(
        matches!(outcome.failure, Some(Failure::Network { .. })),
        "{outcome:#?}"
    );
}

// ---- size ----

#[tokio::test]
async fn a_one_mebibyte_response_is_refused_without_reading_it() {
    let addr = tcp_peer(|mut stream, request| async move {
        let head =
            respond(&request, "200 OK", "").replace("Content-Length: 0", "Content-Length: 1048576");
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(&vec![b'x'; 1 << 20]).await;
    })
    .await;
    let outcome = options(&options_cfg(addr, "tcp")).await;
    assert!(protocol(&outcome.failure), "{outcome:#?}");
}

#[tokio::test]
async fn a_mebibyte_of_headers_is_refused_after_64_kib() {
    let addr = tcp_peer(|mut stream, _| async move {
        let mut flood = b"SIP/2.0 200 OK\r\n".to_vec();
        while flood.len() < 1 << 20 {
            flood.extend_from_slice(
                b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        let _ = stream.write_all(&flood).await;
    })
    .await;
    let outcome = options(&options_cfg(addr, "tcp")).await;
    match &outcome.failure {
        Some(Failure::Protocol { detail }) => assert!(detail.contains("64 KiB"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

// ---- matching and timing ----

#[tokio::test]
async fn a_response_with_a_wrong_branch_is_ignored() {
    let (addr, _) = udp_peer(|request, _| {
        let via = header(request, "Via");
        let wrong = respond(request, "200 OK", "")
            .replace(via, "SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKnot-yours");
        vec![wrong.into_bytes()]
    })
    .await;
    let outcome = options(&options_cfg(addr, "udp")).await;
    assert!(timeout(&outcome.failure), "{outcome:#?}");
    assert_eq!(outcome.response, None);
}

#[tokio::test]
async fn a_response_with_a_wrong_cseq_is_ignored() {
    let (addr, _) = udp_peer(|request, _| {
        let cseq = header(request, "CSeq");
        vec![
            respond(request, "200 OK", "")
                .replace(cseq, "999 OPTIONS")
                .into_bytes(),
        ]
    })
    .await;
    let outcome = options(&options_cfg(addr, "udp")).await;
    assert!(timeout(&outcome.failure), "{outcome:#?}");
}

#[tokio::test]
async fn silence_times_out_after_rfc_3261_retransmissions() {
    let (addr, seen) = udp_peer(|_, _| Vec::new()).await;
    let mut cfg = options_cfg(addr, "udp");
    cfg.timeout = Duration::from_secs(2);
    cfg.lagged_threshold = Duration::from_secs(2);
    let started = Instant::now();
    let outcome = options(&cfg).await;
    assert!(timeout(&outcome.failure), "{outcome:#?}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    // Sent at 0, 0.5 and 1.5 s (T1 doubling); the next would be at 3.5 s.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen.iter()
            .all(|r| header(r, "Via") == header(&seen[0], "Via"))
    );
}

#[tokio::test]
async fn silence_over_tcp_times_out_without_retransmissions() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let addr = tcp_peer(|mut stream, _| async move {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest)).await;
        let _ = tx.send(rest);
    })
    .await;
    let outcome = options(&options_cfg(addr, "tcp")).await;
    assert!(timeout(&outcome.failure), "{outcome:#?}");
    assert!(rx.await.unwrap().is_empty(), "retransmitted over TCP");
}

#[tokio::test]
async fn a_slow_drip_ends_at_the_timeout() {
    let addr = tcp_peer(|mut stream, request| async move {
        for byte in respond(&request, "200 OK", "").bytes() {
            if stream.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let outcome = options(&options_cfg(addr, "tcp")).await;
    assert!(timeout(&outcome.failure), "{outcome:#?}");
}

/// Only a provisional response arrived: the failure says so instead of "no answer".
#[tokio::test]
async fn a_provisional_response_alone_is_no_final_answer_and_says_what_came() {
    let (addr, _) =
        udp_peer(|request, _| vec![respond(request, "100 Trying", "").into_bytes()]).await;
    let outcome = options(&options_cfg(addr, "udp")).await;
    match &outcome.failure {
        Some(failure @ Failure::NoFinalAnswer { arrived, .. }) => {
            assert_eq!(arrived, "100 Trying");
            assert!(!failure.to_string().contains("no answer"), "{failure}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(outcome.state, QualifyState::Unreachable);
    assert_eq!(outcome.response, None);
}

#[tokio::test]
async fn a_provisional_response_is_recorded_as_the_first_response() {
    let (addr, _) = udp_peer(|request, _| {
        vec![
            respond(request, "100 Trying", "").into_bytes(),
            respond(request, "200 OK", "").into_bytes(),
        ]
    })
    .await;
    let outcome = options(&options_cfg(addr, "udp")).await;
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    assert_eq!(outcome.response.unwrap().code, 200);
    assert!(outcome.first_response.unwrap() <= outcome.rtt.unwrap());
}

#[tokio::test]
async fn a_status_code_outside_100_to_699_is_a_protocol_failure() {
    let (addr, _) = udp_peer(|request, _| vec![respond(request, "700 Odd", "").into_bytes()]).await;
    let outcome = options(&options_cfg(addr, "udp")).await;
    assert!(protocol(&outcome.failure), "{outcome:#?}");
}

/// A qualify only needs an answer: a 200 without To tag proves the server alive (before, it
/// read Unreachable with the 200 hidden). A registrar must tag, so for REGISTER it stays a
/// protocol failure.
#[tokio::test]
async fn a_final_response_without_to_tag_answers_options_but_not_register() {
    let untagged = |request: &str, _| {
        vec![
            respond(request, "200 OK", "")
                .replace(";tag=hostile", "")
                .into_bytes(),
        ]
    };
    let (addr, _) = udp_peer(untagged).await;
    let outcome = options(&options_cfg(addr, "udp")).await;
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    assert_eq!(outcome.state, QualifyState::Reachable);
    assert_eq!(outcome.response.unwrap().code, 200);

    let (addr, _) = udp_peer(untagged).await;
    let started = Instant::now();
    let outcome = register(&register_cfg(addr)).await;
    match &outcome.failure {
        Some(Failure::Protocol { detail }) => assert!(detail.contains("To tag"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < TIMEOUT / 2);
}

#[tokio::test]
async fn any_final_response_counts_as_an_answer_to_options() {
    let (addr, _) = udp_peer(|request, _| {
        vec![respond(request, "404 Not Here", "Server: hostile/1.0\r\n").into_bytes()]
    })
    .await;
    let outcome = options(&options_cfg(addr, "udp")).await;
    assert_eq!(outcome.failure, None);
    assert_eq!(outcome.state, QualifyState::Reachable);
    let response = outcome.response.unwrap();
    assert_eq!((response.code, response.reason.as_str()), (404, "Not Here"));
    assert_eq!(outcome.server.as_deref(), Some("hostile/1.0"));
}

// ---- authentication ----

/// The digest parameters of an Authorization header, unquoted.
fn auth_param(authorization: &str, name: &str) -> String {
    let start = authorization
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("no {name} in {authorization}"))
        + name.len()
        + 1;
    let rest = &authorization[start..];
    let value = match rest.strip_prefix('"') {
        Some(quoted) => &quoted[..quoted.find('"').unwrap()],
        None => rest.split(',').next().unwrap(),
    };
    value.trim().to_owned()
}

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Checks an answer to a qop=auth challenge as a registrar would (RFC 7616 §3.4.1).
fn answer_is_right(request: &str, hash: fn(&str) -> String) -> bool {
    let auth = header(request, "Authorization");
    let realm = auth_param(auth, "realm");
    let ha1 = hash(&format!("alice:{realm}:{PASSWORD}"));
    let ha2 = hash(&format!("REGISTER:{}", auth_param(auth, "uri")));
    let expected = hash(&format!(
        "{ha1}:{}:{}:{}:auth:{ha2}",
        auth_param(auth, "nonce"),
        auth_param(auth, "nc"),
        auth_param(auth, "cnonce")
    ));
    auth_param(auth, "response") == expected
}

#[tokio::test]
async fn a_sha_256_challenge_is_answered_correctly() {
    let (addr, seen) = udp_peer(|request, _| {
        let status = if !request.contains("Authorization:") {
            "401 Unauthorized"
        } else if answer_is_right(request, sha256_hex) {
            "200 OK"
        } else {
            "403 Wrong Answer"
        };
        vec![respond(
            request,
            status,
            "WWW-Authenticate: Digest realm=\"hostile\", nonce=\"n1\", algorithm=SHA-256, qop=\"auth,auth-int\", opaque=\"op-aque\"\r\nWWW-Authenticate: Digest realm=\"hostile\", nonce=\"n2\", algorithm=MD5, qop=\"auth\"\r\n",
        )
        .into_bytes()]
    })
    .await;
    let outcome = register(&register_cfg(addr)).await;
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    assert_eq!(outcome.auth_algorithm, Some(DigestAlgorithm::Sha256));
    let seen = seen.lock().unwrap();
    let auth = header(&seen[1], "Authorization");
    assert_eq!(auth_param(auth, "algorithm"), "SHA-256");
    assert_eq!(auth_param(auth, "opaque"), "op-aque");
    assert_eq!(auth_param(auth, "nc"), "00000001");
    assert_eq!(auth_param(auth, "qop"), "auth");
    // RFC 3261 §10.2: with a domain of its own, the Request-URI (and so the digest uri) is
    // the domain, not the server the request goes to.
    assert!(
        seen[1].starts_with("REGISTER sip:example.test;transport=udp SIP/2.0\r\n"),
        "{}",
        seen[1]
    );
    assert_eq!(auth_param(auth, "uri"), "sip:example.test;transport=udp");
    // RFC 3261 §10.2: the same Call-ID, a higher CSeq, a new branch.
    assert_eq!(header(&seen[0], "Call-ID"), header(&seen[1], "Call-ID"));
    assert_eq!(header(&seen[1], "CSeq"), "2 REGISTER");
    assert_ne!(header(&seen[0], "Via"), header(&seen[1], "Via"));
}

#[tokio::test]
async fn a_challenge_that_never_ends_is_a_rejection() {
    let (addr, seen) = udp_peer(|request, n| {
        let challenge =
            format!("WWW-Authenticate: Digest realm=\"r\", nonce=\"nonce{n}\", qop=\"auth\"\r\n");
        vec![respond(request, "401 Unauthorized", &challenge).into_bytes()]
    })
    .await;
    let outcome = register(&register_cfg(addr)).await;
    assert_eq!(
        outcome.failure,
        Some(Failure::AuthRejected { code: 401 }),
        "{outcome:#?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn endless_stale_challenges_are_answered_once_then_rejected() {
    let (addr, seen) = udp_peer(|request, n| {
        let challenge = format!(
            "WWW-Authenticate: Digest realm=\"r\", nonce=\"nonce{n}\", qop=\"auth\", stale=true\r\n"
        );
        vec![respond(request, "401 Unauthorized", &challenge).into_bytes()]
    })
    .await;
    let outcome = register(&register_cfg(addr)).await;
    assert_eq!(
        outcome.failure,
        Some(Failure::AuthRejected { code: 401 }),
        "{outcome:#?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_stale_nonce_is_answered_again_and_succeeds() {
    let (addr, seen) = udp_peer(|request, n| {
        let (status, challenge) = match n {
            0 => (
                "401 Unauthorized",
                "WWW-Authenticate: Digest realm=\"r\", nonce=\"old\", qop=\"auth\"\r\n",
            ),
            1 => (
                "401 Unauthorized",
                "WWW-Authenticate: Digest realm=\"r\", nonce=\"new\", qop=\"auth\", stale=TRUE\r\n",
            ),
            _ if answer_is_right(request, md5_hex) => ("200 OK", ""),
            _ => ("403 Wrong", ""),
        };
        vec![respond(request, status, challenge).into_bytes()]
    })
    .await;
    let outcome = register(&register_cfg(addr)).await;
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    let seen = seen.lock().unwrap();
    assert_eq!(
        auth_param(header(&seen[2], "Authorization"), "nonce"),
        "new"
    );
}

#[tokio::test]
async fn a_proxy_challenge_is_answered_with_proxy_authorization() {
    let (addr, _) = udp_peer(|request, _| {
        let answer = if request.contains("Proxy-Authorization:") {
            respond(request, "200 OK", "")
        } else {
            respond(
                request,
                "407 Proxy Authentication Required",
                "Proxy-Authenticate: Digest realm=\"p\", nonce=\"x\"\r\n",
            )
        };
        vec![answer.into_bytes()]
    })
    .await;
    let outcome = register(&register_cfg(addr)).await;
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    assert_eq!(outcome.auth_algorithm, Some(DigestAlgorithm::Md5));
}

#[tokio::test]
async fn a_challenge_without_a_usable_scheme_is_a_protocol_failure() {
    let (addr, _) = udp_peer(|request, _| {
        vec![
            respond(
                request,
                "401 Unauthorized",
                "WWW-Authenticate: Basic realm=\"r\"\r\n",
            )
            .into_bytes(),
        ]
    })
    .await;
    let outcome = register(&register_cfg(addr)).await;
    assert!(protocol(&outcome.failure), "{outcome:#?}");
}

#[tokio::test]
async fn final_codes_map_to_their_failure_classes() {
    let cases: [(&str, Failure); 4] = [
        ("488 Not Acceptable Here", Failure::NotAcceptableHere),
        (
            "503 Service Unavailable",
            Failure::SipStatus {
                code: 503,
                hint: None,
            },
        ),
        ("403 Forbidden", Failure::Forbidden),
        (
            "423 Interval Too Brief",
            Failure::SipStatus {
                code: 423,
                hint: None,
            },
        ),
    ];
    for (status, failure) in cases {
        let (addr, _) =
            udp_peer(move |request, _| vec![respond(request, status, "").into_bytes()]).await;
        let outcome = register(&register_cfg(addr)).await;
        assert_eq!(outcome.failure, Some(failure), "{status}: {outcome:#?}");
        assert_eq!(outcome.response.unwrap().reason, status[4..]);
    }
}

#[tokio::test]
async fn a_403_after_the_answer_is_an_auth_rejection() {
    let (addr, _) = udp_peer(|request, _| {
        let answer = if request.contains("Authorization:") {
            respond(request, "403 Forbidden", "")
        } else {
            respond(
                request,
                "401 Unauthorized",
                "WWW-Authenticate: Digest realm=\"r\", nonce=\"x\"\r\n",
            )
        };
        vec![answer.into_bytes()]
    })
    .await;
    let outcome = register(&register_cfg(addr)).await;
    assert_eq!(
        outcome.failure,
        Some(Failure::AuthRejected { code: 403 }),
        "{outcome:#?}"
    );
}

// ---- outbound proxy, auth user name, domain ----

/// An outbound proxy receives the requests, with a Route naming it (RFC 3261 §8.1.2); the
/// Request-URI, To and From name the AOR domain (§10.2); the digest user name is the auth
/// user name. The registrar's name is never looked up: the proxy is the next hop.
#[tokio::test]
async fn an_outbound_proxy_gets_the_requests_with_a_route_and_the_auth_username() {
    let (proxy, seen) = udp_peer(|request, _| {
        let answer = if request.contains("Authorization:") {
            respond(request, "200 OK", "")
        } else {
            respond(
                request,
                "401 Unauthorized",
                "WWW-Authenticate: Digest realm=\"r\", nonce=\"x\", qop=\"auth\"\r\n",
            )
        };
        vec![answer.into_bytes()]
    })
    .await;
    let mut cfg = register_cfg(proxy);
    cfg.server = "sip:registrar.example.test;transport=udp".into();
    cfg.proxy = Some(format!("sip:{proxy};transport=udp"));
    cfg.auth_username = Some("trunk-7".into());
    let outcome = register(&cfg).await;
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    assert_eq!(outcome.target.unwrap().address, proxy);
    {
        let seen = seen.lock().unwrap();
        assert!(
            seen[0].starts_with("REGISTER sip:example.test;transport=udp SIP/2.0\r\n"),
            "{}",
            seen[0]
        );
        for request in seen.iter() {
            assert_eq!(
                header(request, "Route"),
                format!("<sip:{proxy};transport=udp;lr>")
            );
            assert!(header(request, "To").starts_with("<sip:alice@example.test>"));
        }
        let auth = header(&seen[1], "Authorization");
        assert_eq!(auth_param(auth, "username"), "trunk-7");
        assert_eq!(auth_param(auth, "uri"), "sip:example.test;transport=udp");
    }

    let (proxy, seen) =
        udp_peer(|request, _| vec![respond(request, "200 OK", "").into_bytes()]).await;
    let mut cfg = options_cfg(proxy, "udp");
    cfg.server = "sip:pbx.example.test;transport=udp".into();
    cfg.proxy = Some(format!("sip:{proxy};transport=udp"));
    let outcome = options(&cfg).await;
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    let seen = seen.lock().unwrap();
    assert!(seen[0].starts_with("OPTIONS sip:pbx.example.test;transport=udp SIP/2.0\r\n"));
    assert_eq!(
        header(&seen[0], "Route"),
        format!("<sip:{proxy};transport=udp;lr>")
    );
}
