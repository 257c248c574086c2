//! Carrying SIP messages over UDP, TCP and TLS, with every read bounded in size.
//!
//! Over UDP one datagram is one message. Over TCP and TLS, messages are framed by their
//! Content-Length (RFC 3261 §18.3); the framing is hand-written here because rsip parses a
//! complete message but does not find where one ends in a byte stream. Every message, datagram
//! or framed, is at most [`MAX_MESSAGE`] bytes: a peer that sends more gets a
//! [`Failure::Protocol`], and the buffer never grows past that size plus one read.
//! Reads have no timeout of their own: the transaction bounds them by the probe's deadline.

use super::message;
use crate::probe::{Failure, tls};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The largest SIP message accepted: 64 KiB, the most a UDP datagram carries.
pub(super) const MAX_MESSAGE: usize = 64 * 1024;

/// How much a stream read asks for at once.
const READ_CHUNK: usize = 8 * 1024;

/// A SIP transport (RFC 3261 §18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// The port used when the URI and DNS name none (RFC 3261 §19.1.2).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Udp | Transport::Tcp => 5060,
            Transport::Tls => 5061,
        }
    }

    /// The value of a URI's `;transport=` parameter.
    pub(super) fn param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// Retransmissions are needed only where the transport itself does not deliver reliably
    /// (RFC 3261 §17.1.2.2).
    pub(super) fn is_reliable(self) -> bool {
        self != Transport::Udp
    }
}

impl std::fmt::Display for Transport {
    /// The name in a Via header's sent-protocol (`SIP/2.0/UDP`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        })
    }
}

/// How to reach the peer; TLS carries what the handshake needs, so a TLS dial without a client
/// configuration cannot be expressed.
#[derive(Clone)]
pub(super) enum Dial {
    Udp,
    Tcp,
    Tls {
        config: Arc<ClientConfig>,
        /// The name the certificate must match: the URI's host (RFC 5922 §4).
        name: ServerName<'static>,
    },
}

/// An open connection (or, for UDP, a connected socket) to one peer.
pub(super) struct Connection {
    io: Io,
    local: SocketAddr,
    peer: SocketAddr,
    transport: Transport,
    /// Over TLS: the earliest end of validity in the certificate chain the server presented.
    cert_not_after: Option<SystemTime>,
}

enum Io {
    /// A connected UDP socket, so an ICMP port unreachable surfaces as `ConnectionRefused`.
    Datagram(UdpSocket),
    Stream {
        stream: Stream,
        /// Bytes received but not yet returned as a message.
        pending: Vec<u8>,
    },
}

enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection {
    /// Opens a connection to `peer`. Socket errors become [`Failure::ConnectRefused`] or
    /// [`Failure::Network`], TLS errors [`Failure::Tls`]. Not bounded in time here: callers
    /// bound it by the probe's deadline.
    pub async fn open(peer: SocketAddr, dial: Dial) -> Result<Connection, Failure> {
        let io_failure = |e: std::io::Error| Failure::from_io(&e, peer);
        let mut cert_not_after = None;
        let (io, transport) = match dial {
            Dial::Udp => {
                let any: SocketAddr = if peer.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let socket = UdpSocket::bind(any).await.map_err(io_failure)?;
                socket.connect(peer).await.map_err(io_failure)?;
                (Io::Datagram(socket), Transport::Udp)
            }
            Dial::Tcp => {
                let tcp = TcpStream::connect(peer).await.map_err(io_failure)?;
                tcp.set_nodelay(true).map_err(io_failure)?;
                (Io::stream(Stream::Tcp(tcp)), Transport::Tcp)
            }
            Dial::Tls { config, name } => {
                let tcp = TcpStream::connect(peer).await.map_err(io_failure)?;
                tcp.set_nodelay(true).map_err(io_failure)?;
                let shown = format!("{}", name.to_str());
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| tls::handshake_failure(&e, &shown))?;
                cert_not_after = tls::earliest_not_after(tls.get_ref().1);
                (Io::stream(Stream::Tls(Box::new(tls))), Transport::Tls)
            }
        };
        let local = match &io {
            Io::Datagram(socket) => socket.local_addr(),
            Io::Stream {
                stream: Stream::Tcp(tcp),
                ..
            } => tcp.local_addr(),
            Io::Stream {
                stream: Stream::Tls(tls),
                ..
            } => tls.get_ref().0.local_addr(),
        }
        .map_err(io_failure)?;
        Ok(Connection {
            io,
            local,
            peer,
            transport,
            cert_not_after,
        })
    }

    /// Over TLS, when the earliest certificate of the server's chain stops being valid.
    pub fn cert_not_after(&self) -> Option<SystemTime> {
        self.cert_not_after
    }

    /// Our address as the peer should see it in Via and Contact.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &[u8]) -> Result<(), Failure> {
        let result = match &mut self.io {
            Io::Datagram(socket) => socket.send(message).await.map(drop),
            Io::Stream {
                stream: Stream::Tcp(tcp),
                ..
            } => tcp.write_all(message).await,
            Io::Stream {
                stream: Stream::Tls(tls),
                ..
            } => match tls.write_all(message).await {
                Ok(()) => tls.flush().await,
                Err(e) => Err(e),
            },
        };
        result.map_err(|e| self.io_failure(&e))
    }

    /// Receives the next message: a datagram, or one Content-Length framed message from the
    /// stream. Cancel-safe: bytes read before a cancellation stay for the next call.
    pub async fn recv(&mut self) -> Result<Vec<u8>, Failure> {
        let peer = self.peer;
        match &mut self.io {
            Io::Datagram(socket) => loop {
                // A probe waits here for most of its time, and on the day a server stops
                // answering thousands wait at once: the 64 KiB a datagram may take is
                // allocated only once one is there to read, and the message keeps its own size.
                socket
                    .readable()
                    .await
                    .map_err(|e| Failure::from_io(&e, peer))?;
                // One more byte than allowed, to tell a maximal datagram from a cut one.
                let mut buf = vec![0u8; MAX_MESSAGE + 1];
                match socket.try_recv(&mut buf) {
                    Ok(n) if n > MAX_MESSAGE => return Err(too_large()),
                    Ok(n) => return Ok(buf[..n].to_vec()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(Failure::from_io(&e, peer)),
                }
            },
            Io::Stream { stream, pending } => match stream {
                Stream::Tcp(tcp) => next_framed(tcp, pending).await,
                Stream::Tls(tls) => next_framed(tls.as_mut(), pending).await,
            },
        }
    }

    fn io_failure(&self, err: &std::io::Error) -> Failure {
        Failure::from_io(err, self.peer)
    }
}

impl Io {
    fn stream(stream: Stream) -> Io {
        Io::Stream {
            stream,
            pending: Vec::new(),
        }
    }
}

fn too_large() -> Failure {
    Failure::Protocol {
        detail: format!("message larger than {} KiB", MAX_MESSAGE / 1024),
    }
}

/// Reads until `pending` holds one complete message, and returns it.
async fn next_framed<R: AsyncRead + Unpin>(
    reader: &mut R,
    pending: &mut Vec<u8>,
) -> Result<Vec<u8>, Failure> {
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        // CRLF keep-alives between messages (RFC 5626 §3.5.1) are not messages.
        let blank = pending
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        pending.drain(..blank);
        // Every SIP message starts with `SIP/2.0` or a method name: anything else is not SIP,
        // and waiting for a header end in it would only run into the timeout.
        if pending.first().is_some_and(|b| !b.is_ascii_uppercase()) {
            return Err(Failure::Protocol {
                detail: "the peer sent something that is not SIP".into(),
            });
        }
        if let Some(length) = framed_length(pending)?
            && pending.len() >= length
        {
            return Ok(pending.drain(..length).collect());
        }
        let n = reader
            .read(&mut chunk)
            .await
            .map_err(|e| Failure::Network {
                detail: format!("reading the response: {e}"),
            })?;
        if n == 0 {
            return Err(if pending.is_empty() {
                Failure::Network {
                    detail: "connection closed by the peer before a response".into(),
                }
            } else {
                Failure::Protocol {
                    detail: format!(
                        "connection closed in the middle of a message ({} bytes received)",
                        pending.len()
                    ),
                }
            });
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// The total length of the message at the start of `buf` once its headers are complete;
/// `None` while they are not. Fails when the message cannot fit [`MAX_MESSAGE`] or has no
/// usable Content-Length (mandatory over streams, RFC 3261 §18.3).
fn framed_length(buf: &[u8]) -> Result<Option<usize>, Failure> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_MESSAGE {
            Err(too_large())
        } else {
            Ok(None)
        };
    };
    let head = &buf[..end];
    let body = content_length(head)?;
    let total = end
        .checked_add(4)
        .and_then(|n| n.checked_add(body))
        .filter(|n| *n <= MAX_MESSAGE)
        .ok_or_else(too_large)?;
    Ok(Some(total))
}

/// The value of the Content-Length header (or its compact form `l`, RFC 3261 §7.3.3), also
/// when folded onto a continuation line (§7.3.1).
fn content_length(head: &[u8]) -> Result<usize, Failure> {
    let protocol = |detail: &str| Failure::Protocol {
        detail: detail.to_owned(),
    };
    let head = message::unfold(head);
    let text = std::str::from_utf8(&head).map_err(|_| protocol("headers are not UTF-8"))?;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            return value
                .trim()
                .parse()
                .map_err(|_| protocol("Content-Length is not a number"));
        }
    }
    Err(protocol("no Content-Length on a stream transport"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8]) -> Vec<Result<Vec<u8>, Failure>> {
        let mut reader = input;
        let mut pending = Vec::new();
        let mut out = Vec::new();
        loop {
            let next = next_framed(&mut reader, &mut pending).await;
            let end = next.is_err();
            out.push(next);
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn splits_a_stream_by_content_length_and_skips_keepalives() {
        let input = b"\r\n\r\nSIP/2.0 200 OK\r\nContent-Length:\r\n 3\r\n\r\nabcSIP/2.0 100 Trying\r\nl: 0\r\n\r\n";
        let got = frames(input).await;
        assert_eq!(
            got[0].as_deref().unwrap(),
            b"SIP/2.0 200 OK\r\nContent-Length:\r\n 3\r\n\r\nabc"
        );
        assert_eq!(
            got[1].as_deref().unwrap(),
            b"SIP/2.0 100 Trying\r\nl: 0\r\n\r\n"
        );
        assert!(matches!(got[2], Err(Failure::Network { .. })));
    }

    #[tokio::test]
    async fn a_cut_message_or_a_missing_length_is_a_protocol_failure() {
        let cut = frames(b"SIP/2.0 200 OK\r\nContent-Length: 10\r\n\r\nabc").await;
        assert!(matches!(cut[0], Err(Failure::Protocol { .. })));
        let headers_cut = frames(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP").await;
        assert!(matches!(headers_cut[0], Err(Failure::Protocol { .. })));
        let no_length = frames(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n").await;
        assert!(matches!(no_length[0], Err(Failure::Protocol { .. })));
        let binary = frames(b"\x16\x03\x01").await;
        assert!(matches!(binary[0], Err(Failure::Protocol { .. })));
    }

    #[tokio::test]
    async fn refuses_messages_over_the_limit_before_reading_them() {
        let huge = format!("SIP/2.0 200 OK\r\nContent-Length: {}\r\n\r\n", 1 << 20);
        assert_eq!(frames(huge.as_bytes()).await[0], Err(too_large()));
        let endless_headers = vec![b'A'; MAX_MESSAGE + 10];
        assert_eq!(frames(&endless_headers).await[0], Err(too_large()));
    }
}
