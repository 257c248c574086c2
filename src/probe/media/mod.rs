//! The audio of a test call (issue 9, DESIGN.md §3 `MediaQuality`): RTP sent every 20 ms
//! after the answer, received and measured per direction (RFC 3550 loss and interarrival
//! jitter), the round trip, and the listening quality as a MOS from the ITU-T G.107 E-model.
//!
//! Nothing here knows of SIP: the call probe ([`crate::probe::sip`]) negotiates the addresses
//! and the codec, hands them to this module, and keeps its [`MediaReport`].

use serde::Serialize;
use std::time::Duration;

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
    /// RFC 3550 §6.4.1 / A.3: expected (from extended sequence numbers) minus received,
    /// never below zero.
    pub lost: u32,
    /// `lost / expected`, 0.0 to 1.0.
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

    #[test]
    fn mos_is_kept_in_hundredths_and_clamped() {
        assert_eq!(Mos::from_f64(4.4093).to_string(), "4.41");
        assert_eq!(Mos::from_f64(0.2).to_string(), "1.00");
        assert_eq!(Mos::from_f64(7.0).to_string(), "4.50");
        assert_eq!(Mos::from_f64(f64::NAN).to_string(), "1.00");
        assert_eq!(Mos::from_f64(3.05).as_f64(), 3.05);
    }
}
