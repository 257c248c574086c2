//! One Binding transaction: over UDP with the retransmissions of RFC 8489 §6.2.1, over TCP or
//! TLS-over-TCP as one framed request and response (§6.2.2). Every wait ends at the caller's
//! [`Deadline`]; every read is bounded by [`MAX_MESSAGE`].

use super::message::{Judged, MAX_MESSAGE, Request, Response, frame_length, judge};
use crate::probe::tls::{self, CaSource};
use crate::probe::{ConfigError, Failure};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use stun_rs::{MESSAGE_HEADER_SIZE, TransactionId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

/// RFC 8489 §6.2.1: initial retransmission timeout, doubled after each transmission.
const INITIAL_RTO: Duration = Duration::from_millis(500);
/// RFC 8489 §6.2.1 `Rc`: transmissions in all.
const MAX_TRANSMISSIONS: u32 = 7;
/// RFC 8489 §6.2.1 `Rm`: after the last transmission, wait this many initial RTOs.
const LAST_WAIT_RTOS: u32 = 16;

/// When waiting ends, and the configured timeout to name in the failure.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadline {
    pub at: Instant,
    pub timeout: Duration,
}

impl Deadline {
    pub fn after(timeout: Duration) -> Self {
        Self {
            at: Instant::now() + timeout,
            timeout,
        }
    }

    pub fn expired(&self) -> Failure {
        Failure::Timeout {
            after: self.timeout,
        }
    }
}

/// The answer to a transaction.
#[derive(Debug)]
pub(super) struct Reply {
    pub response: Response,
    /// Where the answer came from (differs from the server's address after a CHANGE-REQUEST).
    pub from: SocketAddr,
    /// From the first transmission of the request to the answer: retransmissions after a loss
    /// count in, as they do for the phone that waits.
    pub rtt: Duration,
    pub retransmits: u32,
}

/// A UDP socket connected to `server`, so that the kernel reports an ICMP port unreachable as
/// `ConnectionRefused` on the next receive and drops datagrams from anyone else.
pub(super) async fn connected_udp(server: SocketAddr) -> Result<UdpSocket, Failure> {
    let socket = UdpSocket::bind(unspecified(server.ip()))
        .await
        .map_err(|e| Failure::from_io(&e, server))?;
    socket
        .connect(server)
        .await
        .map_err(|e| Failure::from_io(&e, server))?;
    Ok(socket)
}

/// An unconnected UDP socket on the local address the route to `server` uses, for RFC 5780
/// tests whose answers come from the server's other address. Binding the routed address
/// (rather than 0.0.0.0) makes the socket's local address known, to compare with the mapping.
pub(super) async fn unconnected_udp(server: SocketAddr) -> Result<UdpSocket, Failure> {
    let local_ip = connected_udp(server)
        .await?
        .local_addr()
        .map_err(|e| Failure::from_io(&e, server))?
        .ip();
    UdpSocket::bind(SocketAddr::new(local_ip, 0))
        .await
        .map_err(|e| Failure::from_io(&e, server))
}

fn unspecified(like: IpAddr) -> SocketAddr {
    match like {
        IpAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
        IpAddr::V6(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
    }
}

/// A transaction over UDP: sends `request` to `to` at 0, 0.5, 1.5, 3.5 ... s (RFC 8489 §6.2.1)
/// until an answer arrives, the deadline passes, or the last wait of `Rm` RTOs ends.
pub(super) async fn udp(
    socket: &UdpSocket,
    to: SocketAddr,
    request: &Request,
    deadline: &Deadline,
) -> Result<Reply, Failure> {
    let start = Instant::now();
    let mut interval = INITIAL_RTO;
    for transmission in 1..=MAX_TRANSMISSIONS {
        send(socket, to, &request.bytes).await?;
        if transmission == MAX_TRANSMISSIONS {
            interval = INITIAL_RTO * LAST_WAIT_RTOS;
        }
        let wake = deadline.at.min(Instant::now() + interval);
        if let Ok(received) = timeout_at(wake, receive(socket, to, &request.txid)).await {
            let (response, from) = received?;
            return Ok(Reply {
                response,
                from,
                rtt: start.elapsed(),
                retransmits: transmission - 1,
            });
        }
        if Instant::now() >= deadline.at {
            return Err(deadline.expired());
        }
        interval *= 2;
    }
    Err(Failure::Timeout {
        after: start.elapsed(),
    })
}

async fn send(socket: &UdpSocket, to: SocketAddr, bytes: &[u8]) -> Result<(), Failure> {
    let sent = if socket.peer_addr().is_ok() {
        socket.send(bytes).await
    } else {
        socket.send_to(bytes, to).await
    };
    sent.map(drop).map_err(|e| Failure::from_io(&e, to))
}

/// Waits (without limit: callers bound it) for the answer to `txid` on `socket`. Datagrams of
/// other transactions are skipped; anything that is not STUN, or is our answer but malformed,
/// fails at once: the socket is the probe's own, so such a datagram comes from the peer.
pub(super) async fn receive(
    socket: &UdpSocket,
    peer: SocketAddr,
    txid: &TransactionId,
) -> Result<(Response, SocketAddr), Failure> {
    let mut buffer = [0u8; MAX_MESSAGE + 1];
    loop {
        let (size, from) = socket
            .recv_from(&mut buffer)
            .await
            .map_err(|e| Failure::from_io(&e, peer))?;
        if size > MAX_MESSAGE {
            return Err(Failure::Protocol {
                detail: format!("{from}: datagram larger than {MAX_MESSAGE} bytes"),
            });
        }
        match judge(&buffer[..size], txid) {
            Judged::Ignore => continue,
            Judged::Answer(response) => return Ok((response, from)),
            Judged::Broken(detail) => {
                return Err(Failure::Protocol {
                    detail: format!("{from}: {detail}"),
                });
            }
        }
    }
}

/// A TLS server (RFC 8489 §6.2.2, `stuns:`): the name its certificate must carry and the
/// trust anchors to verify it with. STUN has no ALPN identifier of its own, so none is offered.
pub(super) struct TlsPeer {
    name: ServerName<'static>,
    shown: String,
    config: Arc<ClientConfig>,
}

impl TlsPeer {
    pub fn new(host: &str, ca: Option<&CaSource>) -> Result<TlsPeer, Failure> {
        let config_error = |e: ConfigError| Failure::Tls {
            detail: crate::probe::TlsFailure::Handshake {
                detail: e.to_string(),
            },
        };
        Ok(TlsPeer {
            name: tls::server_name(host).map_err(config_error)?,
            shown: host.to_owned(),
            config: tls::client_config(ca, &[]).map_err(config_error)?,
        })
    }
}

/// A transaction over TCP, or over TLS when `tls` is given: connect (and handshake), send
/// `request`, read framed messages until the answer. Returns the local address of the
/// connection with the reply (the mapping is compared to it).
pub(super) async fn tcp(
    server: SocketAddr,
    tls: Option<TlsPeer>,
    request: &Request,
    deadline: &Deadline,
) -> Result<(Reply, SocketAddr), Failure> {
    let exchange = async {
        let io = |e: std::io::Error| Failure::from_io(&e, server);
        let stream = TcpStream::connect(server).await.map_err(io)?;
        let local = stream.local_addr().map_err(io)?;
        let reply = match tls {
            None => stream_exchange(stream, server, request).await?,
            Some(peer) => {
                let stream = tokio_rustls::TlsConnector::from(peer.config)
                    .connect(peer.name, stream)
                    .await
                    .map_err(|e| tls::handshake_failure(&e, &peer.shown))?;
                stream_exchange(stream, server, request).await?
            }
        };
        Ok((reply, local))
    };
    timeout_at(deadline.at, exchange)
        .await
        .map_err(|_| deadline.expired())?
}

/// Sends `request` on a connected stream and reads framed messages until its answer. The
/// round trip is timed from the request, after any handshake.
async fn stream_exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    server: SocketAddr,
    request: &Request,
) -> Result<Reply, Failure> {
    let io = |e: std::io::Error| Failure::from_io(&e, server);
    let start = Instant::now();
    stream.write_all(&request.bytes).await.map_err(io)?;
    loop {
        let frame = read_frame(&mut stream, server).await?;
        match judge(&frame, &request.txid) {
            Judged::Ignore => continue,
            Judged::Answer(response) => {
                return Ok(Reply {
                    response,
                    from: server,
                    rtt: start.elapsed(),
                    retransmits: 0,
                });
            }
            Judged::Broken(detail) => return Err(Failure::Protocol { detail }),
        }
    }
}

/// Reads one STUN message off a stream: the 20-byte header, then the length it announces
/// (bounded by [`MAX_MESSAGE`] before anything is allocated).
async fn read_frame(
    stream: &mut (impl AsyncRead + Unpin),
    server: SocketAddr,
) -> Result<Vec<u8>, Failure> {
    let mut header = [0u8; MESSAGE_HEADER_SIZE];
    match read_full(stream, &mut header).await {
        Ok(0) => {
            return Err(Failure::Network {
                detail: format!("{server}: connection closed before an answer"),
            });
        }
        Ok(n) if n < MESSAGE_HEADER_SIZE => return Err(truncated(n)),
        Ok(_) => {}
        Err(e) => return Err(Failure::from_io(&e, server)),
    }
    let length = frame_length(&header).map_err(|detail| Failure::Protocol { detail })?;
    let mut frame = vec![0u8; length];
    frame[..MESSAGE_HEADER_SIZE].copy_from_slice(&header);
    match read_full(stream, &mut frame[MESSAGE_HEADER_SIZE..]).await {
        Ok(n) if n < length - MESSAGE_HEADER_SIZE => Err(truncated(MESSAGE_HEADER_SIZE + n)),
        Ok(_) => Ok(frame),
        Err(e) => Err(Failure::from_io(&e, server)),
    }
}

fn truncated(got: usize) -> Failure {
    Failure::Protocol {
        detail: format!("connection closed after {got} bytes of a STUN message (truncated)"),
    }
}

/// Fills `buffer` unless the stream ends first; returns how much was read.
async fn read_full(
    stream: &mut (impl AsyncRead + Unpin),
    buffer: &mut [u8],
) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match stream.read(&mut buffer[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
