//! The HTTP probe against hostile or broken peers: tiny TCP servers inside the test that answer
//! with garbage, silence, a drip, an endless head or body, or a body shorter than announced.
//! Each must end in one exact failure class within the probe timeout (plus scheduling margin),
//! without a panic. Redirect edge cases that nginx cannot stage are here too, and the content
//! codings nginx does not produce (deflate, zlib-wrapped and raw; br; a decompression bomb; an
//! unknown coding); gzip from a real nginx is in tests/http.rs.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use voipcheck::probe::dns::Dns;
use voipcheck::probe::http::{self, ContentCoding, HttpConfig, HttpOutcome};
use voipcheck::probe::{DecodingFailure, Failure, TlsFailure};

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
        allow_insecure_basic_auth: true,
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

#[tokio::test]
async fn basic_auth_over_plain_http_is_refused_before_anything_is_sent() {
    let (heads, mut seen) = tokio::sync::mpsc::unbounded_channel::<String>();
    let addr = peer(move |mut s| {
        let heads = heads.clone();
        async move {
            let _ = heads.send(read_request(&mut s).await);
        }
    })
    .await;
    let url = url::Url::parse(&format!("http://monitor:s3cret@{addr}/")).unwrap();
    let cfg = HttpConfig {
        timeout: TIMEOUT,
        ..HttpConfig::new(url)
    };
    let dns = Dns::with_nameserver(([127, 0, 0, 1], 9).into());
    let error = http::probe(&dns, &cfg).await.unwrap_err();
    assert_eq!(error.field, "basicAuth");
    assert!(error.reason.contains("allowInsecureBasicAuth"), "{error}");
    assert!(!error.to_string().contains("s3cret"), "{error}");
    // Nothing reached the server: no connection at all within a generous wait.
    let connection = tokio::time::timeout(Duration::from_millis(300), seen.recv()).await;
    assert!(connection.is_err(), "the server saw {connection:?}");
}

const PAGE: &[u8] = b"<html><title>STARFACE Cloud</title><body>STARFACE login</body></html>\n";

/// Serves `body` with `Content-Encoding: coding` to every request whose `Accept-Encoding` offers
/// it; a request that does not gets a 406, which fails the probe. `zstd`, which the probe does
/// not offer, is sent regardless, as a misconfigured server does.
async fn serve_coded(coding: &'static str, body: Vec<u8>) -> SocketAddr {
    peer(move |mut s| {
        let body = body.clone();
        async move {
            let head = read_request(&mut s).await.to_ascii_lowercase();
            let offered = head
                .lines()
                .find_map(|l| l.strip_prefix("accept-encoding:"))
                .is_some_and(|v| v.split(',').any(|c| c.trim() == coding));
            let response = match offered || coding == "zstd" {
                true => format!(
                    "HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                ),
                false => "HTTP/1.1 406 Not Acceptable\r\nContent-Length: 0\r\n\r\n".into(),
            };
            let _ = s.write_all(response.as_bytes()).await;
            let _ = s.write_all(&body).await;
        }
    })
    .await
}

async fn probe_coded(addr: SocketAddr, max_body_bytes: usize) -> HttpOutcome {
    let cfg = HttpConfig {
        timeout: Duration::from_secs(5),
        body_contains: Some("STARFACE login".into()),
        max_body_bytes,
        ..HttpConfig::new(url::Url::parse(&format!("http://{addr}/")).unwrap())
    };
    let dns = Dns::with_nameserver(([127, 0, 0, 1], 9).into());
    http::probe(&dns, &cfg).await.unwrap()
}

fn flate<W: Write>(
    mut encoder: W,
    finish: impl FnOnce(W) -> std::io::Result<Vec<u8>>,
    data: &[u8],
) -> Vec<u8> {
    encoder.write_all(data).unwrap();
    finish(encoder).unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = brotli::CompressorWriter::new(&mut out, 4096, 9, 22);
    encoder.write_all(data).unwrap();
    drop(encoder);
    out
}

fn assert_decoded(outcome: &HttpOutcome, coding: ContentCoding, encoded: usize) {
    assert!(outcome.failure.is_none(), "{outcome:#?}");
    assert_eq!(outcome.content_encoding, vec![coding]);
    assert_eq!(outcome.body_bytes, PAGE.len());
    assert_eq!(outcome.body_encoded_bytes, encoded);
}

#[tokio::test]
async fn deflate_zlib_wrapped_and_raw_are_decoded() {
    let level = flate2::Compression::default();
    let zlib = flate(
        flate2::write::ZlibEncoder::new(Vec::new(), level),
        |e| e.finish(),
        PAGE,
    );
    let raw = flate(
        flate2::write::DeflateEncoder::new(Vec::new(), level),
        |e| e.finish(),
        PAGE,
    );
    for body in [zlib, raw] {
        let len = body.len();
        let outcome = probe_coded(
            serve_coded("deflate", body).await,
            http::DEFAULT_MAX_BODY_BYTES,
        )
        .await;
        assert_decoded(&outcome, ContentCoding::Deflate, len);
    }
}

#[tokio::test]
async fn brotli_is_decoded() {
    let body = brotli(PAGE);
    let len = body.len();
    let outcome = probe_coded(serve_coded("br", body).await, http::DEFAULT_MAX_BODY_BYTES).await;
    assert_decoded(&outcome, ContentCoding::Br, len);
}

#[tokio::test]
async fn decompression_bomb_fails_and_reads_only_to_the_limit() {
    // 64 MiB of zeros after the page: about 64 KiB of gzip.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(PAGE).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    let started = std::time::Instant::now();
    let outcome = probe_coded(
        serve_coded("gzip", bomb).await,
        http::DEFAULT_MAX_BODY_BYTES,
    )
    .await;
    let Some(Failure::ContentDecoding {
        detail:
            DecodingFailure::Bomb {
                encoded_bytes,
                limit_bytes,
                ..
            },
    }) = &outcome.failure
    else {
        panic!("expected a decompression bomb: {outcome:#?}");
    };
    assert_eq!(*limit_bytes, http::DEFAULT_MAX_BODY_BYTES);
    assert!(
        *encoded_bytes * http::MAX_RATIO < *limit_bytes,
        "{outcome:?}"
    );
    let message = outcome.failure.as_ref().unwrap().to_string();
    assert!(message.contains("decompression bomb"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_long_compressed_page_is_truncated_like_an_uncoded_one() {
    // Text that compresses about 3-fold: a long page, not a bomb.
    let mut page = PAGE.to_vec();
    page.extend((0..400_000u32).flat_map(|i| format!("{i:x} ").into_bytes()));
    let body = brotli(&page);
    let outcome = probe_coded(serve_coded("br", body).await, 64 * 1024).await;
    assert!(outcome.failure.is_none(), "{outcome:#?}");
    assert_eq!(outcome.body_bytes, 64 * 1024);
    assert!(outcome.body_truncated);
}

#[tokio::test]
async fn unknown_coding_fails_with_its_name() {
    let outcome = probe_coded(
        serve_coded("zstd", PAGE.to_vec()).await,
        http::DEFAULT_MAX_BODY_BYTES,
    )
    .await;
    assert_eq!(
        outcome.failure,
        Some(Failure::ContentDecoding {
            detail: DecodingFailure::Unsupported {
                coding: "zstd".into()
            }
        })
    );
}
