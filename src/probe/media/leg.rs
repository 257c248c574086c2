//! One RTP endpoint of a test call: a socket pair (RTP on an even port, RTCP on the next, RFC
//! 3550 §11) that sends the test tone every 20 ms and measures what comes back.

use super::MediaConfig;
use super::control::{self, Outgoing};
use super::datagram::{self, Inbound, MAX_DATAGRAM};
use super::pace::Pacer;
use super::receive::{Accepted, Arrival, CLOCK_RATE, Reception};
use super::tone::{self, FRAME_SAMPLES};
use bytes::Bytes;
use rtcp::reception_report::ReceptionReport;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep_until};
use webrtc_util::marshal::Marshal;

/// One G.711 packet's audio: 20 ms (RFC 3551 §4.5.14's default packetization).
pub const PTIME: Duration = Duration::from_millis(20);
/// How long a leg keeps listening once it has sent its last packet and nothing more arrives:
/// the far end's last packets (an echo's, a callee that started later) are still counted.
pub const DRAIN: Duration = Duration::from_millis(200);
/// One report a second: RFC 3550 §6.2's 5 s minimum would leave a seconds-long test call
/// without any report; at ~100 bytes a second the bandwidth does not matter.
const RTCP_INTERVAL: Duration = Duration::from_secs(1);
/// Binding tries for an even port with a free odd port after it.
const BIND_TRIES: usize = 64;

/// An RTP/RTCP socket pair, bound and not yet used.
#[derive(Debug)]
pub struct Leg {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    pacer: Pacer,
}

/// What arrived and was not measured as audio, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ignored {
    /// Datagrams at the RTP port that are not RTP version 2 or shorter than their header.
    pub malformed: u32,
    /// Datagrams longer than [`MAX_DATAGRAM`] (on either port).
    pub oversized: u32,
    /// RTCP sent to the RTP port.
    pub rtcp_on_rtp_port: u32,
    /// Datagrams at the RTCP port that are not RTCP from the far end.
    pub rtcp_not_understood: u32,
    /// Socket errors while receiving (e.g. an ICMP error reported on the socket).
    pub receive_errors: u32,
    /// Packets the socket refused to send.
    pub send_errors: u32,
}

/// What one leg sent and received.
#[derive(Debug, Clone, PartialEq)]
pub struct LegReport {
    /// Our stream's SSRC (random, RFC 3550 §8).
    pub ssrc: u32,
    /// Our first sequence number (random, §5.1).
    pub first_sequence: u16,
    /// RTP packets sent.
    pub sent: u32,
    /// When each packet went out, since the leg started (index = packet number); packet `n`
    /// was due at `n × 20 ms`.
    pub send_times: Vec<Duration>,
    /// The stream received (the far end's, or our own echoed).
    pub reception: Reception,
    /// For each packet of our own stream that came back: from its sending to its arrival.
    pub echo_round_trips: Vec<Duration>,
    /// The far end's latest RTCP reception report block about our stream.
    pub far_report: Option<ReceptionReport>,
    /// The far end's packet count from its latest RTCP sender report.
    pub far_sent: Option<u32>,
    /// The latest round trip from RTCP LSR/DLSR (§6.4.1).
    pub rtcp_round_trip: Option<Duration>,
    /// RTCP packets received from the far end.
    pub rtcp_received: u32,
    pub ignored: Ignored,
}

impl LegReport {
    /// A report of nothing sent or received yet, for a stream with this SSRC and first
    /// sequence number.
    pub(crate) fn new(ssrc: u32, first_sequence: u16) -> LegReport {
        LegReport {
            ssrc,
            first_sequence,
            sent: 0,
            send_times: Vec::new(),
            reception: Reception::default(),
            echo_round_trips: Vec::new(),
            far_report: None,
            far_sent: None,
            rtcp_round_trip: None,
            rtcp_received: 0,
            ignored: Ignored::default(),
        }
    }

    /// How long RTP was sent: from the first packet to the end of the last one's 20 ms.
    pub fn sending_time(&self) -> Duration {
        self.send_times.last().map_or(Duration::ZERO, |&last| {
            last.saturating_sub(self.send_times[0]) + PTIME
        })
    }
}

impl Leg {
    /// Binds RTP on an even port of `ip` and RTCP on the odd port after it (RFC 3550 §11).
    /// Needs a Tokio runtime.
    pub fn bind(ip: IpAddr) -> io::Result<Leg> {
        for _ in 0..BIND_TRIES {
            let rtp = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
            let port = rtp.local_addr()?.port();
            if port % 2 != 0 || port == u16::MAX {
                continue;
            }
            let rtcp = match std::net::UdpSocket::bind(SocketAddr::new(ip, port + 1)) {
                Ok(rtcp) => rtcp,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            };
            rtp.set_nonblocking(true)?;
            rtcp.set_nonblocking(true)?;
            return Ok(Leg {
                rtp: UdpSocket::from_std(rtp)?,
                rtcp: UdpSocket::from_std(rtcp)?,
                pacer: Pacer::new()?,
            });
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no free even/odd UDP port pair for RTP and RTCP",
        ))
    }

    /// The RTP address (the SDP's `c=` and `m=` port, unless STUN maps it).
    pub fn local_addr(&self) -> SocketAddr {
        self.rtp
            .local_addr()
            .expect("a bound UDP socket has an address")
    }

    /// The RTP socket, for a STUN binding request from the very port the SDP advertises.
    pub fn socket(&self) -> &UdpSocket {
        &self.rtp
    }

    /// Sends `cfg.duration` of RTP to `remote` (RTCP to its port + 1), starting at once: the
    /// first packets open NAT pinholes and let a symmetric-RTP SBC latch onto our address, and
    /// everything is received on the socket it is sent from. Receives meanwhile and for
    /// [`DRAIN`] after the last packet (while packets keep arriving); stops at `until` at
    /// the latest.
    pub async fn run(mut self, remote: SocketAddr, cfg: &MediaConfig, until: Instant) -> LegReport {
        let packets = packets_for(cfg.duration);
        let mut run = Run::new(cfg, self.pacer.start(PTIME));
        let rtcp_remote = remote
            .port()
            .checked_add(1)
            .map(|port| SocketAddr::new(remote.ip(), port));
        let mut rtp_buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut rtcp_buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut next_rtcp = run.start + RTCP_INTERVAL;
        let mut last_activity = run.start;
        loop {
            let sending = run.report.sent < packets;
            let next_send = run.start + PTIME * run.report.sent;
            let stop = if sending {
                until
            } else {
                until.min(last_activity + DRAIN)
            };
            tokio::select! {
                biased;
                _ = sleep_until(stop) => break,
                ticked = self.pacer.tick(), if sending => {
                    if ticked.is_err() {
                        sleep_until(next_send).await;
                    }
                    // Every packet now due: one, or more after a stall (the schedule holds).
                    while run.report.sent < packets
                        && run.start + PTIME * run.report.sent <= Instant::now()
                    {
                        run.send_rtp(&self.rtp, remote).await;
                    }
                    last_activity = Instant::now();
                    if run.report.sent == packets {
                        self.pacer.stop();
                        run.send_rtcp(&self.rtcp, rtcp_remote, true).await;
                    }
                }
                _ = sleep_until(next_rtcp), if sending => {
                    run.send_rtcp(&self.rtcp, rtcp_remote, false).await;
                    next_rtcp += RTCP_INTERVAL;
                }
                received = self.rtp.recv_from(&mut rtp_buf) => {
                    if run.on_rtp(received.map(|(n, _)| &rtp_buf[..n])) {
                        last_activity = Instant::now();
                    }
                }
                received = self.rtcp.recv_from(&mut rtcp_buf) => {
                    run.on_rtcp(received.map(|(n, _)| &rtcp_buf[..n]));
                }
            }
        }
        run.report
    }
}

/// Packets for a duration: one per started 20 ms.
fn packets_for(duration: Duration) -> u32 {
    let ptime = PTIME.as_nanos();
    u32::try_from(duration.as_nanos().div_ceil(ptime)).unwrap_or(u32::MAX)
}

/// A running leg's state.
struct Run {
    start: Instant,
    codec: super::Codec,
    first_timestamp: u32,
    cname: String,
    /// The far end's latest SR: its compact NTP time and when it arrived (for LSR/DLSR).
    last_sr: Option<(u32, Instant)>,
    report: LegReport,
}

impl Run {
    fn new(cfg: &MediaConfig, start: Instant) -> Run {
        Run {
            start,
            codec: cfg.codec,
            first_timestamp: rand::random(),
            // RFC 7022: a random CNAME per stream, nothing about the host.
            cname: format!("{:016x}@voipcheck", rand::random::<u64>()),
            last_sr: None,
            report: LegReport::new(rand::random(), rand::random()),
        }
    }

    async fn send_rtp(&mut self, socket: &UdpSocket, remote: SocketAddr) {
        let n = self.report.sent;
        let packet = rtp::packet::Packet {
            header: rtp::header::Header {
                version: 2,
                // §5.1 / RFC 3551 §4.1: the marker starts a talkspurt, here the only one.
                marker: n == 0,
                payload_type: self.codec.payload_type(),
                sequence_number: self.report.first_sequence.wrapping_add(n as u16),
                timestamp: self
                    .first_timestamp
                    .wrapping_add(n.wrapping_mul(FRAME_SAMPLES as u32)),
                ssrc: self.report.ssrc,
                ..Default::default()
            },
            payload: Bytes::from_static(tone::frame(self.codec, n)),
        };
        let sent = match packet.marshal() {
            Ok(bytes) => socket.send_to(&bytes, remote).await.is_ok(),
            Err(_) => false,
        };
        if !sent {
            self.report.ignored.send_errors += 1;
        }
        self.report.send_times.push(self.start.elapsed());
        self.report.sent += 1;
    }

    async fn send_rtcp(&mut self, socket: &UdpSocket, remote: Option<SocketAddr>, last: bool) {
        let Some(remote) = remote else {
            return;
        };
        let elapsed = self.start.elapsed();
        let (lsr, dlsr) = self.last_sr.map_or((0, 0), |(compact, at)| {
            (compact, control::dlsr(at.elapsed()))
        });
        let outgoing = Outgoing {
            ssrc: self.report.ssrc,
            cname: &self.cname,
            rtp_time: self
                .first_timestamp
                .wrapping_add((elapsed.as_secs_f64() * f64::from(CLOCK_RATE)) as u32),
            packet_count: self.report.sent,
            octet_count: self.report.sent.wrapping_mul(FRAME_SAMPLES as u32),
            block: self.report.reception.report_block(lsr, dlsr),
            last,
        };
        let sent = match control::compound(outgoing, control::ntp_now()) {
            Some(bytes) => socket.send_to(&bytes, remote).await.is_ok(),
            None => false,
        };
        if !sent {
            self.report.ignored.send_errors += 1;
        }
    }

    /// One datagram (or error) from the RTP port; true if it was RTP of the measured stream.
    fn on_rtp(&mut self, received: io::Result<&[u8]>) -> bool {
        let at = self.start.elapsed();
        let ignored = &mut self.report.ignored;
        let header = match received {
            Err(_) => {
                ignored.receive_errors += 1;
                return false;
            }
            Ok(datagram) if datagram.len() > MAX_DATAGRAM => {
                ignored.oversized += 1;
                return false;
            }
            Ok(datagram) => match datagram::classify(datagram) {
                Inbound::Rtp(header) => header,
                Inbound::Rtcp => {
                    ignored.rtcp_on_rtp_port += 1;
                    return false;
                }
                Inbound::Malformed => {
                    ignored.malformed += 1;
                    return false;
                }
            },
        };
        let accepted = self.report.reception.accept(Arrival {
            ssrc: header.ssrc,
            sequence: header.sequence_number,
            timestamp: header.timestamp,
            at,
        });
        if header.ssrc == self.report.ssrc
            && accepted == Accepted::Counted
            && let Some(sent_at) = self.sent_at(header.sequence_number)
        {
            self.report
                .echo_round_trips
                .push(at.saturating_sub(sent_at));
        }
        matches!(accepted, Accepted::Counted | Accepted::Probation)
    }

    /// When our packet with this sequence number went out: the latest one sent with it (the
    /// numbers repeat every 65536 packets, 21 minutes).
    fn sent_at(&self, sequence: u16) -> Option<Duration> {
        let times = &self.report.send_times;
        let mut index = usize::from(sequence.wrapping_sub(self.report.first_sequence));
        if index >= times.len() {
            return None;
        }
        while index + (1 << 16) < times.len() {
            index += 1 << 16;
        }
        Some(times[index])
    }

    /// One datagram (or error) from the RTCP port.
    fn on_rtcp(&mut self, received: io::Result<&[u8]>) {
        let ignored = &mut self.report.ignored;
        let heard = match received {
            Err(_) => {
                ignored.receive_errors += 1;
                return;
            }
            Ok(datagram) if datagram.len() > MAX_DATAGRAM => {
                ignored.oversized += 1;
                return;
            }
            Ok(datagram) => match control::read(datagram, self.report.ssrc) {
                Some(heard) => heard,
                None => {
                    ignored.rtcp_not_understood += 1;
                    return;
                }
            },
        };
        let arrival = control::compact(control::ntp_now());
        self.report.rtcp_received += 1;
        if let Some(sr) = heard.sender_report {
            self.last_sr = Some((sr.compact_ntp, Instant::now()));
            self.report.far_sent = Some(sr.packet_count);
        }
        if let Some(block) = heard.about_us {
            if let Some(rtt) = control::round_trip(&block, arrival) {
                self.report.rtcp_round_trip = Some(rtt);
            }
            self.report.far_report = Some(block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_per_duration() {
        for (ms, packets) in [(0, 0), (1, 1), (20, 1), (21, 2), (1000, 50), (5000, 250)] {
            assert_eq!(packets_for(Duration::from_millis(ms)), packets, "{ms} ms");
        }
    }

    #[tokio::test]
    async fn binds_an_even_rtp_port_with_rtcp_after_it() {
        for ip in ["127.0.0.1", "::1"] {
            let leg = Leg::bind(ip.parse().expect("an IP")).expect("binds");
            let rtp = leg.local_addr();
            assert_eq!(rtp.port() % 2, 0, "{rtp}");
            let rtcp = leg.rtcp.local_addr().expect("bound");
            assert_eq!((rtcp.ip(), rtcp.port()), (rtp.ip(), rtp.port() + 1));
            assert_eq!(leg.socket().local_addr().expect("bound"), rtp);
        }
    }
}
