//! One request/response exchange on a fresh connection: resolve, connect, TLS, request, response
//! head, and (for the final hop) the body. Each phase's time is added to [`HttpPhases`].

use super::auth::BasicAuth;
use super::coding;
use super::outcome::HttpPhases;
use crate::probe::attempts::{self, Attempt};
use crate::probe::dns::Dns;
use crate::probe::{Failure, tls};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONNECTION, HOST, HeaderValue, USER_AGENT,
};
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;
use url::{Position, Url};

/// Largest response head (status line and headers) accepted. Real servers send a few KiB; the
/// limit keeps a hostile one from making us buffer hyper's default of ~400 KiB.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The probe's timeout, around the whole probe, is what ends a connection race; the race's own
/// limit only has to lie beyond it.
const RACE_LIMIT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

const USER_AGENT_VALUE: &str = concat!("voipcheck/", env!("CARGO_PKG_VERSION"));

/// A response whose head has arrived; the body is still on the connection.
pub(super) struct Received {
    pub response: Response<Incoming>,
    pub peer: SocketAddr,
    /// The earliest expiry of the presented chain, for HTTPS.
    pub cert_not_after: Option<SystemTime>,
    /// Drives the connection while the body is read; dropping it aborts the connection task, so
    /// nothing outlives the probe (a slow-dripping peer included).
    _connection: JoinSet<Result<(), hyper::Error>>,
}

/// Sends `GET url` on a new connection and waits for the response head; `tls` is used for an
/// `https` URL. `peer` is set as soon as a connection is attempted; addresses that could not
/// be connected to are added to `attempts`.
pub(super) async fn request(
    dns: &Dns,
    url: &Url,
    auth: Option<&BasicAuth>,
    tls: &TlsClient,
    phases: &mut HttpPhases,
    peer: &mut Option<SocketAddr>,
    attempts: &mut Vec<Attempt>,
) -> Result<Received, Failure> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);

    let started = Instant::now();
    let addresses = dns.lookup_ip(host).await?;
    HttpPhases::add(&mut phases.resolve, started.elapsed());

    let started = Instant::now();
    let (tcp, peer) = connect(url, &addresses, port, peer, attempts).await?;
    HttpPhases::add(&mut phases.connect, started.elapsed());

    let started = Instant::now();
    let (head, connection, cert_not_after) = if url.scheme() == "https" {
        let server_name = tls::server_name(host).map_err(|e| Failure::Protocol {
            detail: e.to_string(),
        })?;
        tls.demand.take();
        let stream = TlsConnector::from(tls.config.clone())
            .connect(server_name, tcp)
            .await
            .map_err(|e| match tls.demand.take() {
                true => client_certificate_required(),
                false => tls::handshake_failure(&e, host),
            })?;
        HttpPhases::add(&mut phases.tls, started.elapsed());
        let demanded = tls.demand.take();
        let not_after = tls::earliest_not_after(stream.get_ref().1);
        let protocol = match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        };
        let started = Instant::now();
        let request = build_request(url, auth, protocol);
        // A server that asked for a certificate and then fails the exchange refused us for
        // having none (TLS 1.3 sends that verdict after the handshake).
        let (head, connection) =
            exchange(stream, request, peer, protocol)
                .await
                .map_err(|e| match (demanded, &e) {
                    (true, Failure::Network { .. } | Failure::Protocol { .. }) => {
                        client_certificate_required()
                    }
                    _ => e,
                })?;
        HttpPhases::add(&mut phases.processing, started.elapsed());
        (head, connection, not_after)
    } else {
        let request = build_request(url, auth, Protocol::Http1);
        let (head, connection) = exchange(tcp, request, peer, Protocol::Http1).await?;
        HttpPhases::add(&mut phases.processing, started.elapsed());
        (head, connection, None)
    };
    Ok(Received {
        response: head,
        peer,
        cert_not_after,
        _connection: connection,
    })
}

fn client_certificate_required() -> Failure {
    Failure::Tls {
        detail: crate::probe::TlsFailure::ClientCertificateRequired,
    }
}

/// The TLS client of an HTTPS probe: its configuration, and whether the server of the latest
/// handshake asked for a client certificate.
pub(super) struct TlsClient {
    pub config: Arc<ClientConfig>,
    pub demand: tls::CertificateDemand,
}

/// Connects to one of the addresses, racing them as RFC 8305 does (see
/// [`crate::probe::attempts`]). `attempted` names the address connected to, else the last one
/// that failed; while the race runs (when the probe's deadline, which bounds it, cuts it
/// short) the first one tried.
async fn connect(
    url: &Url,
    addresses: &[std::net::IpAddr],
    port: u16,
    attempted: &mut Option<SocketAddr>,
    failed: &mut Vec<Attempt>,
) -> Result<(TcpStream, SocketAddr), Failure> {
    let order: Vec<SocketAddr> = attempts::interleave(addresses)
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    *attempted = order.first().copied();
    let open = |addr: SocketAddr| async move {
        TcpStream::connect(addr)
            .await
            .map_err(|e| Failure::from_io(&e, addr))
    };
    let limit = tokio::time::Instant::now() + RACE_LIMIT;
    let (won, lost) = attempts::race(&order, limit, RACE_LIMIT, open).await;
    let target = url[Position::BeforeHost..Position::AfterPort].to_owned();
    let mut last = None;
    for (address, failure) in lost {
        *attempted = Some(address);
        last = Some(failure.clone());
        failed.push(Attempt {
            target: target.clone(),
            address: Some(address),
            failure,
        });
    }
    match won {
        Some((stream, addr)) => {
            *attempted = Some(addr);
            // Small request, latency matters more than packet count.
            let _ = stream.set_nodelay(true);
            Ok((stream, addr))
        }
        None => Err(last.unwrap_or(Failure::Network {
            detail: "no address to connect to".into(),
        })),
    }
}

/// The HTTP version spoken on a connection: HTTP/2 when TLS's ALPN chose `h2` (RFC 9113
/// §3.2), otherwise HTTP/1.1 (no h2c upgrade on plain HTTP: web UIs offer h2 over TLS only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// GET with the codings we decode. HTTP/1.1: origin form with an explicit Host header
/// (hyper's connection-level client adds none) and `Connection: close`, as each hop uses its own
/// connection. HTTP/2: absolute form, from which hyper takes `:scheme` and `:authority`;
/// connection-specific headers are not allowed there (RFC 9113 §8.2.2).
fn build_request(url: &Url, auth: Option<&BasicAuth>, protocol: Protocol) -> Request<Empty<Bytes>> {
    let authority = &url[Position::BeforeHost..Position::AfterPort];
    let builder = match protocol {
        Protocol::Http1 => Request::get(&url[Position::BeforePath..Position::AfterQuery])
            .header(HOST, authority)
            .header(CONNECTION, "close"),
        Protocol::Http2 => Request::get(&url[..Position::AfterQuery]).version(Version::HTTP_2),
    };
    let mut request = builder
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header(ACCEPT, "*/*")
        .header(ACCEPT_ENCODING, coding::ACCEPT_ENCODING)
        .body(Empty::new())
        .expect("a path, query and host taken from a parsed URL are a valid request");
    if let Some(auth) = auth {
        request
            .headers_mut()
            .insert(AUTHORIZATION, auth.header_value());
    }
    request
}

/// `protocol` over `stream` with hyper's connection-level client: sends `request`, returns the
/// response head and the task driving the connection.
async fn exchange<S>(
    stream: S,
    request: Request<Empty<Bytes>>,
    peer: SocketAddr,
    protocol: Protocol,
) -> Result<(Response<Incoming>, JoinSet<Result<(), hyper::Error>>), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    let failed = |e: hyper::Error| hyper_failure(&e, peer);
    let mut driver = JoinSet::new();
    // Errors of the connection reach us through the response or body futures, except where
    // HTTP/2 only reports the request as canceled: then the connection's own error says why.
    let response = match protocol {
        Protocol::Http1 => {
            let mut builder = hyper::client::conn::http1::Builder::new();
            let handshake = builder.max_header_size(MAX_HEADER_BYTES).handshake(io);
            let (mut sender, connection) = handshake.await.map_err(failed)?;
            driver.spawn(connection);
            sender.send_request(request).await
        }
        Protocol::Http2 => {
            let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
            let handshake = builder
                .max_header_list_size(MAX_HEADER_BYTES as u32)
                .handshake(io);
            let (mut sender, connection) = handshake.await.map_err(failed)?;
            driver.spawn(connection);
            sender.send_request(request).await
        }
    };
    match response {
        Ok(response) => Ok((response, driver)),
        Err(e) if e.is_canceled() => match driver.join_next().await {
            Some(Ok(Err(cause))) => Err(failed(cause)),
            _ => Err(failed(e)),
        },
        Err(e) => Err(failed(e)),
    }
}

/// Reads the body up to `limit` bytes; `true` when the body was longer and reading stopped.
pub(super) async fn read_body(
    received: &mut Received,
    limit: usize,
) -> Result<(Vec<u8>, bool), Failure> {
    let body = received.response.body_mut();
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| hyper_failure(&e, received.peer))?;
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers
        };
        let room = limit - data.len();
        if chunk.len() > room {
            data.extend_from_slice(&chunk[..room]);
            return Ok((data, true));
        }
        data.extend_from_slice(&chunk);
    }
    Ok((data, false))
}

/// Classifies a hyper error: malformed or oversized responses and a body cut short are protocol
/// errors of the peer; socket errors keep their socket class.
fn hyper_failure(err: &hyper::Error, peer: SocketAddr) -> Failure {
    // Includes a head over MAX_HEADER_BYTES or with over 100 headers ("message head is too
    // large").
    if err.is_parse() {
        return Failure::Protocol {
            detail: format!("not a valid HTTP/1 response: {err}"),
        };
    }
    if err.is_incomplete_message() {
        return Failure::Protocol {
            detail: "connection closed before a complete response head".into(),
        };
    }
    let io = std::error::Error::source(err).and_then(|s| s.downcast_ref::<std::io::Error>());
    match io {
        Some(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => Failure::Protocol {
            detail: "connection closed before the body was complete (shorter than announced)"
                .into(),
        },
        Some(io) => Failure::from_io(io, peer),
        None => Failure::Protocol {
            detail: err.to_string(),
        },
    }
}

/// `HTTP/1.1`, `HTTP/1.0`, ...
pub(super) fn version_name(version: hyper::Version) -> String {
    format!("{version:?}")
}

/// A header value as text for the outcome: lossy UTF-8, at most `max` characters.
pub(super) fn header_text(value: &HeaderValue, max: usize) -> String {
    String::from_utf8_lossy(value.as_bytes())
        .chars()
        .take(max)
        .collect()
}
