//! The audio of a test call (issue 9, DESIGN.md §3 `MediaQuality`): RTP sent every 20 ms
//! after the answer, received and measured per direction (RFC 3550 loss and interarrival
//! jitter), the round trip, and the listening quality as a MOS from the ITU-T G.107 E-model.
//!
//! Nothing here knows of SIP: the call probe ([`crate::probe::sip`]) negotiates the addresses
//! and the codec, hands them to this module, and keeps its [`MediaReport`].

mod control;
mod datagram;
pub mod emodel;
mod leg;
mod pace;
pub mod receive;
pub mod tone;

pub use leg::{DRAIN, Ignored, Leg, LegReport, PTIME};

use crate::probe::Failure;
use receive::{CLOCK_RATE, Reception};
use rtcp::reception_report::ReceptionReport;
use serde::Serialize;
use std::time::Duration;

/// The one-way delay assumed when neither echo nor RTCP measured a round trip: none, so the
/// MOS then rates the loss and jitter measured and never a guessed delay (what a call on
/// loopback or a LAN has).
pub const UNMEASURED_ONE_WAY_DELAY: Duration = Duration::ZERO;

/// The G.711 codecs the test call offers (RFC 3551 §4.5.14), at 8 kHz, 20 ms per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Codec {
    /// G.711 A-law, static payload type 8; the codec of European networks.
    Pcma,
    /// G.711 µ-law, static payload type 0.
    Pcmu,
}

impl Codec {
    /// The static RTP payload type (RFC 3551 table 4).
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcma => 8,
            Codec::Pcmu => 0,
        }
    }

    /// The codec's name in SDP `a=rtpmap` (RFC 3551).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcma => "PCMA",
            Codec::Pcmu => "PCMU",
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What audio to send once the call is answered.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaConfig {
    /// How long RTP flows (`media.duration`).
    pub duration: Duration,
    /// The codec offered first; the other G.711 codec is offered after it.
    pub codec: Codec,
    /// A MOS below this fails the probe with [`crate::probe::Failure::PoorQuality`].
    pub mos_threshold: Mos,
}

/// A mean opinion score (1.0 to 4.5 for the E-model's MOS-CQE), kept in hundredths so that it
/// is exact, comparable and usable in [`crate::probe::Failure`] (which is `Eq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mos(u16);

impl Mos {
    /// The default `thresholds.mos`: below "satisfied" users in G.107 Annex B (R = 80 is
    /// MOS 4.03; 3.6 is R ≈ 70, "some users dissatisfied").
    pub const DEFAULT_THRESHOLD: Mos = Mos(360);

    /// Rounds to hundredths and clamps to 1.00..=4.50.
    pub fn from_f64(value: f64) -> Mos {
        let value = if value.is_finite() { value } else { 1.0 };
        Mos((value.clamp(1.0, 4.5) * 100.0).round() as u16)
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl std::fmt::Display for Mos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl Serialize for Mos {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

/// Which way audio flows, seen from the caller (the monitoring account). The metric label
/// `direction` uses [`MediaDirection::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum MediaDirection {
    /// What the caller sends, as the far end receives it.
    Outgoing,
    /// What the caller receives from the far end (its callee, or the echo).
    Incoming,
}

impl MediaDirection {
    pub fn label(self) -> &'static str {
        match self {
            MediaDirection::Outgoing => "outgoing",
            MediaDirection::Incoming => "incoming",
        }
    }
}

impl std::fmt::Display for MediaDirection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Who measured a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MeasuredBy {
    /// The probe received the stream itself (the caller, or the check's own callee).
    Probe,
    /// The far end's RTCP receiver reports (RFC 3550 §6.4), for the stream it received from us.
    RtcpReport,
}

/// One direction's RTP, as its receiver saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamStats {
    pub measured_by: MeasuredBy,
    /// Packets the sender sent (known exactly for our own streams).
    pub sent: u32,
    pub received: u32,
    /// Packets that never arrived: for our own streams (the echo, the hairpin's two) what was
    /// sent minus what arrived, for a far end's stream RFC 3550 §6.4.1 / A.3's expected (from
    /// extended sequence numbers) minus received; never below zero.
    pub lost: u32,
    /// `lost` over the packets sent (ours) or expected (A.3), 0.0 to 1.0.
    pub loss_ratio: f64,
    /// RFC 3550 §6.4.1 interarrival jitter.
    #[serde(
        rename = "jitterSeconds",
        serialize_with = "crate::probe::secs::serialize"
    )]
    pub jitter: Duration,
    /// The E-model's MOS for this direction (G.711, its loss, jitter and the one-way delay).
    pub mos: Mos,
}

/// The audio of one test call, both directions.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaReport {
    /// The codec the answer chose.
    pub codec: Codec,
    /// How long RTP was sent.
    #[serde(
        rename = "durationSeconds",
        serialize_with = "crate::probe::secs::serialize"
    )]
    pub duration: Duration,
    /// The caller's audio as the far end received it: measured by the check's own callee, or
    /// read from the far end's RTCP receiver reports; `None` when neither exists (an echo
    /// without RTCP, whose echoed stream then covers both ways in [`MediaReport::incoming`]).
    pub outgoing: Option<StreamStats>,
    /// What the caller received: the callee's audio, or the echo of its own.
    pub incoming: StreamStats,
    /// Round trip: from each packet's sending to its echo's arrival (echo targets), or from
    /// RTCP LSR/DLSR (RFC 3550 §6.4.1) when the far end reports.
    #[serde(
        rename = "roundTripSeconds",
        serialize_with = "crate::probe::secs::option::serialize"
    )]
    pub round_trip: Option<Duration>,
    /// RTCP packets received from the far end.
    pub rtcp_received: u32,
}

impl MediaReport {
    /// The lower MOS of the directions measured: what a user of the line would hear at worst.
    pub fn mos(&self) -> Mos {
        self.outgoing
            .iter()
            .map(|s| s.mos)
            .fold(self.incoming.mos, Mos::min)
    }
}

impl MediaReport {
    /// The report's lines in the probe's human table: per direction what arrived, then the
    /// round trip and the MOS.
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let mut facts = vec![("codec", self.codec.to_string())];
        if let Some(outgoing) = &self.outgoing {
            facts.push(("audio outgoing", outgoing.to_string()));
        }
        facts.push(("audio incoming", self.incoming.to_string()));
        if let Some(rtt) = self.round_trip {
            facts.push((
                "round trip",
                format!("{:.1} ms", rtt.as_secs_f64() * 1000.0),
            ));
        }
        facts.push(("MOS", self.mos().to_string()));
        facts
    }
}

impl MediaReport {
    /// The probe's verdict on the audio: none at all, one way only, or too poor a MOS.
    ///
    /// With an echo target that neither echoes nor sends RTCP, nothing tells which way the
    /// audio got lost, so that is [`Failure::NoAudio`], not one-way audio.
    pub fn failure(&self, threshold: Mos) -> Option<Failure> {
        let incoming = self.incoming.received > 0;
        let outgoing = self.outgoing.as_ref().map(|s| s.received > 0);
        match (outgoing, incoming) {
            (None | Some(false), false) => Some(Failure::NoAudio),
            (Some(false), true) => Some(Failure::OneWayAudio {
                silent: MediaDirection::Outgoing,
            }),
            (Some(true), false) => Some(Failure::OneWayAudio {
                silent: MediaDirection::Incoming,
            }),
            (_, true) => {
                let mos = self.mos();
                (mos < threshold).then_some(Failure::PoorQuality { mos, threshold })
            }
        }
    }
}

/// The media report of a call from its legs: `callee` is the check's own callee leg (the
/// hairpin call), `echo` says the far end echoes our RTP.
///
/// - Hairpin: each direction is measured by the leg that received it; the round trip comes
///   from RTCP between the two legs.
/// - Echo: `incoming` is our stream as it came back (loss and jitter of both ways), the round
///   trip the median over the echoed packets (robust against a few late ones) or else RTCP's;
///   `outgoing` is the far end's RTCP receiver report, if it sends any.
/// - Anything else (an IVR, an announcement): `incoming` is what arrived, `outgoing` its RTCP
///   report, if any.
///
/// The MOS of each direction takes the one-way delay as half the round trip (or
/// [`UNMEASURED_ONE_WAY_DELAY`]) plus the jitter buffer [`emodel::mouth_to_ear`] adds.
pub fn report(
    codec: Codec,
    caller: LegReport,
    callee: Option<LegReport>,
    echo: bool,
) -> MediaReport {
    let duration = caller.sending_time();
    let (outgoing, incoming, round_trip) = match &callee {
        Some(callee) => {
            let round_trip = caller.rtcp_round_trip.or(callee.rtcp_round_trip);
            let one_way = one_way(round_trip);
            (
                Some(measured(
                    &callee.reception,
                    Sender::Us(caller.sent),
                    one_way,
                )),
                measured(&caller.reception, Sender::Us(callee.sent), one_way),
                round_trip,
            )
        }
        None => {
            let round_trip = echo
                .then(|| median(&caller.echo_round_trips))
                .flatten()
                .or(caller.rtcp_round_trip);
            let one_way = one_way(round_trip);
            // An echo that re-originates the audio (its own SSRC) is measured as a far end.
            let sender = if echo && caller.reception.ssrc() == Some(caller.ssrc) {
                Sender::Us(caller.sent)
            } else {
                Sender::FarEnd(caller.far_sent)
            };
            (
                caller
                    .far_report
                    .as_ref()
                    .map(|block| reported(block, &caller, one_way)),
                measured(&caller.reception, sender, one_way),
                round_trip,
            )
        }
    };
    MediaReport {
        codec,
        duration,
        outgoing,
        incoming,
        round_trip,
        rtcp_received: caller.rtcp_received,
    }
}

/// Who sent a stream the probe received, which says how its loss is counted.
enum Sender {
    /// One of our legs, with the packets it sent: loss is what never arrived, including the
    /// first and last packets, which RFC 3550 A.3's count between the first and highest
    /// sequence numbers received cannot see (a stream that stops half-way is half lost).
    Us(u32),
    /// Someone else, with the count from its RTCP SR if it sent one: loss as A.3 counts it.
    FarEnd(Option<u32>),
}

fn measured(reception: &Reception, sender: Sender, one_way: Duration) -> StreamStats {
    let received = reception.received();
    let (sent, lost, expected) = match sender {
        Sender::Us(sent) => (sent, sent.saturating_sub(received), sent),
        Sender::FarEnd(sent) => (
            sent.unwrap_or(reception.expected()),
            reception.lost(),
            reception.expected(),
        ),
    };
    stats(
        MeasuredBy::Probe,
        sent,
        received,
        lost,
        expected,
        reception.jitter(),
        one_way,
    )
}

/// The far end's RTCP reception report block about our stream, as that direction's stats.
fn reported(block: &ReceptionReport, caller: &LegReport, one_way: Duration) -> StreamStats {
    // The far end's extended highest sequence number counts cycles from 0, like ours.
    let expected = block
        .last_sequence_number
        .wrapping_sub(u32::from(caller.first_sequence))
        .wrapping_add(1)
        .min(caller.sent);
    let lost = block.total_lost.min(expected);
    let jitter = Duration::from_secs_f64(f64::from(block.jitter) / f64::from(CLOCK_RATE));
    stats(
        MeasuredBy::RtcpReport,
        caller.sent,
        expected - lost,
        lost,
        expected,
        jitter,
        one_way,
    )
}

fn stats(
    measured_by: MeasuredBy,
    sent: u32,
    received: u32,
    lost: u32,
    expected: u32,
    jitter: Duration,
    one_way: Duration,
) -> StreamStats {
    let loss_ratio = if expected == 0 {
        0.0
    } else {
        f64::from(lost) / f64::from(expected)
    };
    StreamStats {
        measured_by,
        sent,
        received,
        lost,
        loss_ratio,
        jitter,
        mos: emodel::mos(emodel::mouth_to_ear(one_way, jitter), loss_ratio),
    }
}

fn one_way(round_trip: Option<Duration>) -> Duration {
    round_trip.map_or(UNMEASURED_ONE_WAY_DELAY, |rtt| rtt / 2)
}

fn median(samples: &[Duration]) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied()
}

impl std::fmt::Display for StreamStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} packets, {:.1}% lost, jitter {:.1} ms, MOS {}",
            self.received,
            self.sent,
            self.loss_ratio * 100.0,
            self.jitter.as_secs_f64() * 1000.0,
            self.mos
        )?;
        if self.measured_by == MeasuredBy::RtcpReport {
            f.write_str(" (far end's RTCP report)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use receive::Arrival;

    /// A leg that sent `sent` packets and received `received` (sequence numbers of `ssrc`).
    fn leg(ssrc: u32, sent: u32, from: u32, received: &[u16]) -> LegReport {
        let mut reception = Reception::default();
        for (i, &sequence) in received.iter().enumerate() {
            reception.accept(Arrival {
                ssrc: from,
                sequence,
                timestamp: u32::from(sequence) * 160,
                at: PTIME * i as u32,
            });
        }
        LegReport {
            sent,
            send_times: (0..sent).map(|n| PTIME * n).collect(),
            reception,
            ..LegReport::new(ssrc, 0)
        }
    }

    #[test]
    fn an_echo_counts_its_loss_against_what_we_sent() {
        // 10 sent, 0..=7 echoed without 3: 3 lost (one inside, two at the end).
        let mut caller = leg(1, 10, 1, &[0, 1, 2, 4, 5, 6, 7]);
        caller.echo_round_trips = [30, 10, 20, 50, 40].map(Duration::from_millis).to_vec();
        let report = report(Codec::Pcma, caller, None, true);
        assert_eq!(report.duration, Duration::from_millis(200));
        assert_eq!(report.outgoing, None);
        let incoming = &report.incoming;
        assert_eq!(
            (incoming.sent, incoming.received, incoming.lost),
            (10, 7, 3)
        );
        assert!((incoming.loss_ratio - 0.3).abs() < 1e-9);
        assert_eq!(incoming.measured_by, MeasuredBy::Probe);
        // The median round trip; the MOS takes half of it as the one-way delay.
        assert_eq!(report.round_trip, Some(Duration::from_millis(30)));
        let ta = emodel::mouth_to_ear(Duration::from_millis(15), incoming.jitter);
        assert_eq!(incoming.mos, emodel::mos(ta, 0.3));
    }

    #[test]
    fn the_far_ends_receiver_report_is_the_outgoing_direction() {
        let mut caller = leg(1, 50, 2, &(0..50).collect::<Vec<_>>());
        caller.first_sequence = 65530;
        caller.far_report = Some(ReceptionReport {
            ssrc: 1,
            fraction_lost: 0,
            total_lost: 4,
            // 40 of ours seen, across the wrap: 65530 + 39 = 65536 + 33.
            last_sequence_number: (1 << 16) + 33,
            jitter: 160,
            last_sender_report: 0,
            delay: 0,
        });
        caller.far_sent = Some(50);
        let report = report(Codec::Pcmu, caller, None, false);
        let outgoing = report.outgoing.expect("from RTCP");
        assert_eq!(outgoing.measured_by, MeasuredBy::RtcpReport);
        assert_eq!(
            (outgoing.sent, outgoing.received, outgoing.lost),
            (50, 36, 4)
        );
        assert_eq!(outgoing.jitter, Duration::from_millis(20));
        assert_eq!((report.incoming.sent, report.incoming.received), (50, 50));
    }

    #[test]
    fn a_hairpin_call_measures_each_direction_at_its_receiver() {
        let caller = leg(1, 100, 2, &(0..90).collect::<Vec<_>>());
        let mut callee = leg(
            2,
            90,
            1,
            &(0..100).filter(|s| s % 10 != 0).collect::<Vec<_>>(),
        );
        callee.rtcp_round_trip = Some(Duration::from_millis(80));
        let report = report(Codec::Pcma, caller, Some(callee), false);
        let outgoing = report.outgoing.expect("measured by the callee");
        assert_eq!(
            (outgoing.sent, outgoing.received, outgoing.lost),
            (100, 90, 10)
        );
        assert_eq!(outgoing.measured_by, MeasuredBy::Probe);
        assert_eq!((report.incoming.sent, report.incoming.lost), (90, 0));
        assert_eq!(report.round_trip, Some(Duration::from_millis(80)));
        assert!(report.incoming.mos > outgoing.mos);
    }

    fn direction(received: u32, mos: f64) -> StreamStats {
        StreamStats {
            measured_by: MeasuredBy::Probe,
            sent: 250,
            received,
            lost: 250 - received,
            loss_ratio: f64::from(250 - received) / 250.0,
            jitter: Duration::ZERO,
            mos: Mos::from_f64(mos),
        }
    }

    #[test]
    fn failure_table() {
        let threshold = Mos::DEFAULT_THRESHOLD;
        let one_way = |silent| Some(Failure::OneWayAudio { silent });
        let poor = Some(Failure::PoorQuality {
            mos: Mos::from_f64(3.0),
            threshold,
        });
        // (case, outgoing, incoming, failure)
        let table = [
            (
                "echo, nothing back, no RTCP",
                None,
                direction(0, 1.0),
                Some(Failure::NoAudio),
            ),
            (
                "silent both ways",
                Some(direction(0, 1.0)),
                direction(0, 1.0),
                Some(Failure::NoAudio),
            ),
            (
                "far end hears nothing",
                Some(direction(0, 1.0)),
                direction(250, 4.4),
                one_way(MediaDirection::Outgoing),
            ),
            (
                "nothing comes back",
                Some(direction(250, 4.4)),
                direction(0, 1.0),
                one_way(MediaDirection::Incoming),
            ),
            (
                "poor outgoing",
                Some(direction(200, 3.0)),
                direction(250, 4.4),
                poor.clone(),
            ),
            ("poor echo", None, direction(200, 3.0), poor),
            ("good", Some(direction(250, 4.4)), direction(249, 4.3), None),
            ("good echo", None, direction(250, 4.41), None),
        ];
        for (case, outgoing, incoming, failure) in table {
            let report = MediaReport {
                codec: Codec::Pcma,
                duration: Duration::from_secs(5),
                outgoing,
                incoming,
                round_trip: None,
                rtcp_received: 0,
            };
            assert_eq!(report.failure(threshold), failure, "{case}");
        }
    }

    #[test]
    fn mos_is_kept_in_hundredths_and_clamped() {
        assert_eq!(Mos::from_f64(4.4093).to_string(), "4.41");
        assert_eq!(Mos::from_f64(0.2).to_string(), "1.00");
        assert_eq!(Mos::from_f64(7.0).to_string(), "4.50");
        assert_eq!(Mos::from_f64(f64::NAN).to_string(), "1.00");
        assert_eq!(Mos::from_f64(3.05).as_f64(), 3.05);
    }
}
