//! The HTTP probe against hostile or broken peers: tiny TCP servers inside the test that answer
//! with garbage, silence, a drip, an endless head or body, or a body shorter than announced.
//! Each must end in one exact failure class within the probe timeout (plus scheduling margin),
//! without a panic. Redirect edge cases that nginx cannot stage are here too.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use voipcheck::probe::dns::Dns;
use voipcheck::probe::http::{self, HttpConfig, HttpOutcome};
use voipcheck::probe::{Failure, TlsFailure};

const TIMEOUT: Duration = Duration::from_secs(1);
/// Allowed lateness after the deadline: timer granularity and a busy two-core test machine.
const MARGIN: Duration = Duration::from_millis(300);

/// Serves every connection on a fresh loopback port with `behaviour`.
async fn peer<F, Fut>(behaviour: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(behaviour(stream));
        }
    });
    addr
}

/// Reads the request head (up to 64 KiB), as a server would before answering, and returns it.
async fn read_request(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Runs the probe against `addr` and returns the outcome and how long it took.
async fn probe(scheme: &str, addr: SocketAddr) -> (HttpOutcome, Duration) {
    let url = url::Url::parse(&format!("{scheme}://{addr}/")).unwrap();
    let cfg = HttpConfig {
        timeout: TIMEOUT,
        ..HttpConfig::new(url)
    };
    let dns = Dns::with_nameserver(([127, 0, 0, 1], 9).into());
    let started = Instant::now();
    let outcome = http::probe(&dns, &cfg).await.unwrap();
    (outcome, started.elapsed())
}

fn protocol_detail(outcome: &HttpOutcome) -> &str {
    match &outcome.failure {
        Some(Failure::Protocol { detail }) => detail,
        other => panic!("expected a protocol failure, got {other:?}"),
    }
}

fn assert_timed_out(outcome: &HttpOutcome, elapsed: Duration) {
    assert_eq!(outcome.failure, Some(Failure::Timeout { after: TIMEOUT }));
    assert!(
        elapsed >= TIMEOUT && elapsed < TIMEOUT + MARGIN,
        "timed out after {elapsed:?}"
    );
}

#[tokio::test]
async fn garbage_instead_of_http_is_a_protocol_error() {
    let addr = peer(|mut s| async move {
        read_request(&mut s).await;
        let _ = s
            .write_all(b"\x16\x03\x01garbage \xff\xfe not HTTP at all\r\n\r\n")
            .await;
    })
    .await;
    let (outcome, elapsed) = probe("http", addr).await;
    assert!(protocol_detail(&outcome).contains("not a valid HTTP/1 response"));
    assert!(elapsed < TIMEOUT);
    assert_eq!(outcome.status, None);
}

#[tokio::test]
async fn closing_without_an_answer_is_a_protocol_error() {
    let addr = peer(|mut s| async move {
        read_request(&mut s).await;
    })
    .await;
    let (outcome, elapsed) = probe("http", addr).await;
    assert!(protocol_detail(&outcome).contains("before a complete response head"));
    assert!(elapsed < TIMEOUT);
}

#[tokio::test]
async fn silence_times_out_at_the_deadline() {
    let addr = peer(|mut s| async move {
        read_request(&mut s).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
    let (outcome, elapsed) = probe("http", addr).await;
    assert_timed_out(&outcome, elapsed);
    assert!(outcome.phases.connect.is_some());
    assert_eq!(outcome.phases.processing, None);
}

#[tokio::test]
async fn unfinished_head_times_out_at_the_deadline() {
    let addr = peer(|mut s| async move {
        read_request(&mut s).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nServer: half\r\n").await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
    let (outcome, elapsed) = probe("http", addr).await;
    assert_timed_out(&outcome, elapsed);
    assert_eq!(outcome.status, None);
}

#[tokio::test]
async fn slow_drip_body_times_out_at_the_deadline() {
    let addr = peer(|mut s| async move {
        read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            .await;
        for _ in 0..1000 {
            if s.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let (outcome, elapsed) = probe("http", addr).await;
    assert_timed_out(&outcome, elapsed);
    assert_eq!(
        outcome.status,
        Some(200),
        "the head arrived before the deadline"
    );
    assert_eq!(outcome.phases.transfer, None);
}

#[tokio::test]
async fn huge_header_block_is_a_protocol_error() {
    let addr = peer(|mut s| async move {
        read_request(&mut s).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n").await;
        // 80 headers of 1.6 KB: fewer than hyper's 100-header limit and under its default
        // ~400 KiB buffer, so only the probe's own 64 KiB head limit stops it.
        let line = format!("X-Filler: {}\r\n", "a".repeat(1600));
        for _ in 0..80 {
            if s.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await;
    let (outcome, elapsed) = probe("http", addr).await;
    assert!(
        protocol_detail(&outcome).contains("too large"),
        "{outcome:?}"
    );
    assert!(elapsed < TIMEOUT);
}

#[tokio::test]
async fn too_many_headers_is_a_protocol_error() {
    let addr = peer(|mut s| async move {
        read_request(&mut s).await;
        let mut head = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..500 {
            head.push_str(&format!("X-H{i}: {i}\r\n"));
        }
        head.push_str("Content-Length: 0\r\n\r\n");
        let _ = s.write_all(head.as_bytes()).await;
    })
    .await;
    let (outcome, _) = probe("http", addr).await;
    assert!(
        protocol_detail(&outcome).contains("too large"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn content_length_lie_is_a_protocol_error() {
    let addr = peer(|mut s| async move {
        read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly this")
            .await;
    })
    .await;
    let (outcome, elapsed) = probe("http", addr).await;
    assert!(
        protocol_detail(&outcome).contains("shorter than announced"),
        "{outcome:?}"
    );
    assert!(elapsed < TIMEOUT);
    assert_eq!(outcome.status, Some(200));
}

#[tokio::test]
async fn endless_body_is_read_only_up_to_the_limit() {
    let addr = peer(|mut s| async move {
        read_request(&mut s).await;
        // No Content-Length: the body runs until the connection closes, which it never does.
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
        let chunk = vec![b'z'; 64 * 1024];
        while s.write_all(&chunk).await.is_ok() {}
    })
    .await;
    let (outcome, elapsed) = probe("http", addr).await;
    assert_eq!(outcome.failure, None, "{outcome:?}");
    assert_eq!(outcome.body_bytes, http::DEFAULT_MAX_BODY_BYTES);
    assert!(outcome.body_truncated);
    assert!(elapsed < TIMEOUT);
}

#[tokio::test]
async fn unusable_redirect_location_is_a_protocol_error() {
    let addr = peer(|mut s| async move {
        read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 302 Found\r\nLocation: gopher://x/\r\nContent-Length: 0\r\n\r\n")
            .await;
    })
    .await;
    let (outcome, _) = probe("http", addr).await;
    assert!(
        protocol_detail(&outcome).contains("unusable Location"),
        "{outcome:?}"
    );
    assert_eq!(outcome.redirects, 0);
}

#[tokio::test]
async fn garbage_instead_of_tls_is_a_handshake_failure() {
    let addr = peer(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\nplain text")
            .await;
    })
    .await;
    let (outcome, elapsed) = probe("https", addr).await;
    assert!(
        matches!(
            outcome.failure,
            Some(Failure::Tls {
                detail: TlsFailure::Handshake { .. }
            })
        ),
        "{outcome:?}"
    );
    assert!(elapsed < TIMEOUT);
}

#[tokio::test]
async fn silent_tls_peer_times_out_in_the_handshake() {
    let addr = peer(|s| async move {
        let _held_open = s;
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
    let (outcome, elapsed) = probe("https", addr).await;
    assert_timed_out(&outcome, elapsed);
    assert_eq!(outcome.phases.tls, None);
}

#[tokio::test]
async fn failed_hop_after_a_redirect_reports_no_stale_response() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let addr = peer(move |mut s| async move {
        read_request(&mut s).await;
        let answer = format!(
            "HTTP/1.1 302 Found\r\nServer: first\r\nLocation: http://{closed}/\r\nContent-Length: 0\r\n\r\n"
        );
        let _ = s.write_all(answer.as_bytes()).await;
    })
    .await;
    let (outcome, _) = probe("http", addr).await;
    assert_eq!(
        outcome.failure,
        Some(Failure::ConnectRefused {
            peer: closed.to_string()
        })
    );
    assert_eq!(outcome.redirects, 1);
    assert_eq!(outcome.final_url, format!("http://{closed}/"));
    assert_eq!((outcome.status, outcome.server), (None, None));
}

#[tokio::test]
async fn credentials_are_not_sent_to_another_origin() {
    let (heads, mut seen) = tokio::sync::mpsc::unbounded_channel::<(&str, String)>();
    let other_heads = heads.clone();
    let other = peer(move |mut s| {
        let heads = other_heads.clone();
        async move {
            let _ = heads.send(("other", read_request(&mut s).await));
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    })
    .await;
    let first = peer(move |mut s| {
        let heads = heads.clone();
        async move {
            let _ = heads.send(("first", read_request(&mut s).await));
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{other}/next\r\nContent-Length: 0\r\n\r\n"
            );
            let _ = s.write_all(answer.as_bytes()).await;
        }
    })
    .await;
    let url = url::Url::parse(&format!("http://monitor:s3cret@{first}/")).unwrap();
    let cfg = HttpConfig {
        timeout: TIMEOUT,
        ..HttpConfig::new(url)
    };
    let dns = Dns::with_nameserver(([127, 0, 0, 1], 9).into());
    let outcome = http::probe(&dns, &cfg).await.unwrap();
    assert_eq!(outcome.failure, None, "{outcome:?}");
    assert_eq!(outcome.final_url, format!("http://{other}/next"));

    let (name, head) = seen.recv().await.unwrap();
    assert_eq!(name, "first");
    assert!(
        head.contains("authorization: Basic bW9uaXRvcjpzM2NyZXQ=\r\n"),
        "{head}"
    );
    let (name, head) = seen.recv().await.unwrap();
    assert_eq!(name, "other");
    assert!(
        !head.to_ascii_lowercase().contains("authorization"),
        "{head}"
    );
}
