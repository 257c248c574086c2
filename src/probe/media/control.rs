//! RTCP (RFC 3550 §6) for a leg: the compound report it sends every second (a sender report
//! with a reception report block about what it receives, the mandatory SDES CNAME, and BYE at
//! the end), and what it reads from the far end's reports, with the `rtcp` crate.

use bytes::Bytes;
use rtcp::goodbye::Goodbye;
use rtcp::packet::Packet;
use rtcp::receiver_report::ReceiverReport;
use rtcp::reception_report::ReceptionReport;
use rtcp::sender_report::SenderReport;
use rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use webrtc_util::marshal::Unmarshal;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// The wall clock as a 64-bit NTP timestamp (RFC 3550 §4), for the SR's NTP field.
pub fn ntp_now() -> u64 {
    let since_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since_unix.as_secs() + NTP_UNIX_OFFSET;
    let fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// The middle 32 bits of an NTP timestamp: the LSR field and §6.4.1's arrival time A.
pub fn compact(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// What a leg reports about itself in one compound RTCP packet.
pub struct Outgoing<'a> {
    pub ssrc: u32,
    pub cname: &'a str,
    pub rtp_time: u32,
    pub packet_count: u32,
    pub octet_count: u32,
    pub block: Option<ReceptionReport>,
    /// The last report of the leg: BYE follows (§6.6).
    pub last: bool,
}

/// The compound packet: SR, SDES CNAME, and BYE for the last one (§6.1).
pub fn compound(report: Outgoing<'_>, ntp_time: u64) -> Option<Bytes> {
    let mut packets: Vec<Box<dyn Packet + Send + Sync>> = vec![
        Box::new(SenderReport {
            ssrc: report.ssrc,
            ntp_time,
            rtp_time: report.rtp_time,
            packet_count: report.packet_count,
            octet_count: report.octet_count,
            reports: report.block.into_iter().collect(),
            profile_extensions: Bytes::new(),
        }),
        Box::new(SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: report.ssrc,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: Bytes::copy_from_slice(report.cname.as_bytes()),
                }],
            }],
        }),
    ];
    if report.last {
        packets.push(Box::new(Goodbye {
            sources: vec![report.ssrc],
            reason: Bytes::new(),
        }));
    }
    rtcp::packet::marshal(&packets).ok()
}

/// What one RTCP datagram from the far end said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heard {
    /// A sender report: its SSRC, the compact NTP time (for our LSR) and its packet count.
    pub sender_report: Option<SenderReportSeen>,
    /// The far end's reception report block about our stream.
    pub about_us: Option<ReceptionReport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReportSeen {
    pub ssrc: u32,
    pub compact_ntp: u32,
    pub packet_count: u32,
}

/// Reads a datagram from the RTCP port; `None` if it is not RTCP or only our own reports
/// (an echo service reflecting our RTCP).
///
/// The compound packet is split here and only SR and RR go to the `rtcp` crate: its parsers
/// of other packet types (0.17: payload-specific feedback, PT 206) panic on some malformed
/// input, and a leg has no use for them.
pub fn read(datagram: &[u8], own_ssrc: u32) -> Option<Heard> {
    let mut heard = Heard::default();
    let mut from_far_end = false;
    let mut rest = datagram;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let (packet, after) = split_packet(rest)?;
        rest = after;
        let (ssrc, blocks) = match packet[1] {
            SENDER_REPORT => {
                let sr = SenderReport::unmarshal(&mut &packet[..]).ok()?;
                if sr.ssrc != own_ssrc {
                    heard.sender_report = Some(SenderReportSeen {
                        ssrc: sr.ssrc,
                        compact_ntp: compact(sr.ntp_time),
                        packet_count: sr.packet_count,
                    });
                }
                (sr.ssrc, sr.reports)
            }
            RECEIVER_REPORT => {
                let rr = ReceiverReport::unmarshal(&mut &packet[..]).ok()?;
                (rr.ssrc, rr.reports)
            }
            _ => continue,
        };
        if ssrc == own_ssrc {
            continue;
        }
        from_far_end = true;
        if let Some(block) = blocks.into_iter().find(|b| b.ssrc == own_ssrc) {
            heard.about_us = Some(block);
        }
    }
    from_far_end.then_some(heard)
}

const SENDER_REPORT: u8 = 200;
const RECEIVER_REPORT: u8 = 201;

/// The first RTCP packet of a compound one (§6.4.1: version 2, the length in 32-bit words
/// minus one) and what follows it; `None` if the header does not fit the datagram.
fn split_packet(datagram: &[u8]) -> Option<(&[u8], &[u8])> {
    let header = datagram.get(..4)?;
    if header[0] >> 6 != 2 {
        return None;
    }
    let length = 4 * (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1);
    (length <= datagram.len()).then(|| datagram.split_at(length))
}

/// RFC 3550 §6.4.1: the round trip from a report block, A − LSR − DLSR, with A the arrival
/// time; `None` without an SR echoed (LSR 0) or for a negative result (a clock step).
pub fn round_trip(block: &ReceptionReport, arrival_compact: u32) -> Option<Duration> {
    if block.last_sender_report == 0 {
        return None;
    }
    let units = arrival_compact
        .wrapping_sub(block.last_sender_report)
        .wrapping_sub(block.delay);
    // More than half the 16.16 range is a negative difference.
    (units < 1 << 31).then(|| Duration::from_secs_f64(f64::from(units) / 65536.0))
}

/// The DLSR field: the delay since the far end's last SR arrived, in 1/65536 s.
pub fn dlsr(since: Duration) -> u32 {
    (since.as_secs_f64() * 65536.0).min(f64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block(ssrc: u32) -> ReceptionReport {
        ReceptionReport {
            ssrc,
            fraction_lost: 25,
            total_lost: 3,
            last_sequence_number: 70_000,
            jitter: 80,
            last_sender_report: 0x1234_0000,
            delay: 0x0000_8000,
        }
    }

    fn report(ssrc: u32, block: Option<ReceptionReport>, last: bool) -> Bytes {
        compound(
            Outgoing {
                ssrc,
                cname: "probe@voipcheck",
                rtp_time: 160,
                packet_count: 50,
                octet_count: 8000,
                block,
                last,
            },
            0x0000_1234_5678_0000,
        )
        .expect("marshals")
    }

    #[test]
    fn a_far_end_report_is_read_back() {
        let datagram = report(7, Some(block(1)), true);
        let heard = read(&datagram, 1).expect("RTCP from the far end");
        assert_eq!(
            heard.sender_report,
            Some(SenderReportSeen {
                ssrc: 7,
                compact_ntp: 0x1234_5678,
                packet_count: 50
            })
        );
        assert_eq!(heard.about_us, Some(block(1)));
        // A block about someone else is no report about us.
        let heard = read(&report(7, Some(block(9)), false), 1).expect("RTCP");
        assert_eq!(heard.about_us, None);
    }

    #[test]
    fn our_own_reflected_reports_and_garbage_are_not_heard() {
        assert_eq!(read(&report(1, Some(block(7)), false), 1), None);
        for garbage in [
            &b""[..],
            b"\x80",
            b"hello, world",
            &[0x80, 200, 0, 100, 1, 2, 3, 4],
        ] {
            assert_eq!(read(garbage, 1), None, "{garbage:?}");
        }
    }

    #[test]
    fn the_rtcp_crate_panics_on_a_malformed_feedback_packet() {
        // Why `read` parses SR and RR only: remove the split once this stops panicking.
        let mut datagram = vec![0x84, 206, 0, 7];
        datagram.extend([0; 28]);
        let parsed = std::panic::catch_unwind(|| rtcp::packet::unmarshal(&mut &datagram[..]));
        assert!(parsed.is_err());
        assert_eq!(read(&datagram, 1), None);
    }

    #[test]
    fn round_trip_from_lsr_and_dlsr() {
        // A = LSR + DLSR + 1.5 s: the round trip is 1.5 s.
        let b = block(1);
        let arrival = b.last_sender_report + b.delay + 0x0001_8000;
        assert_eq!(round_trip(&b, arrival), Some(Duration::from_millis(1500)));
        assert_eq!(round_trip(&b, b.last_sender_report), None);
        let no_sr = ReceptionReport {
            last_sender_report: 0,
            ..b
        };
        assert_eq!(round_trip(&no_sr, arrival), None);
        assert_eq!(dlsr(Duration::from_millis(500)), 0x8000);
    }

    #[test]
    fn ntp_time_is_after_1900_by_the_unix_offset() {
        let seconds = ntp_now() >> 32;
        assert!(seconds > NTP_UNIX_OFFSET + 1_700_000_000);
        assert_eq!(compact(0xAAAA_BBBB_CCCC_DDDD), 0xBBBB_CCCC);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn any_datagram_is_read_without_panic(
            count in 0u8..32,
            kind in 192u8..=210,
            words in proptest::collection::vec(any::<u32>(), 0..24),
        ) {
            // A header whose length field matches the words, so the packet parsers run.
            let mut datagram = vec![0x80 | count, kind];
            datagram.extend_from_slice(&(words.len() as u16).to_be_bytes());
            for word in words {
                datagram.extend_from_slice(&word.to_be_bytes());
            }
            read(&datagram, 1);
        }
    }
}
