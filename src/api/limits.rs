//! The bounds a VoipCheck's fields must keep, read by the CRD schema and by
//! [`crate::api::validate`] alike.
//!
//! Why these numbers: probes more often than every 5 s would hammer a provider's servers (chan_sip
//! itself re-qualifies every 10 s at most); a timeout under 100 ms cannot cover a TLS handshake
//! across the internet; a day is the longest interval or window anyone watching for outages
//! wants. Everything is bounded so the CEL cost estimate stays small and status and metrics
//! stay bounded in size.

use super::duration::GoDuration;
use kube::core::{Message, Rule};

/// An inclusive range a duration field must lie in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    pub min: GoDuration,
    pub max: GoDuration,
}

impl DurationRange {
    const fn new(min: GoDuration, max: GoDuration) -> Self {
        Self { min, max }
    }

    /// Whether `value` lies within the range.
    pub fn contains(&self, value: GoDuration) -> bool {
        (self.min..=self.max).contains(&value)
    }

    /// The CEL rule that holds a duration field to this range.
    pub fn rule(&self) -> Rule {
        Rule {
            rule: format!(
                "duration(self) >= duration('{}') && duration(self) <= duration('{}')",
                self.min, self.max
            ),
            message: Some(Message::Message(self.requirement())),
            ..Rule::default()
        }
    }

    /// "must be between 5s and 24h": for error messages.
    pub fn requirement(&self) -> String {
        format!("must be between {} and {}", self.min, self.max)
    }
}

/// An inclusive range an integer field must lie in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntRange {
    pub min: i32,
    pub max: i32,
}

impl IntRange {
    /// Whether `value` lies within the range.
    pub fn contains(&self, value: i32) -> bool {
        (self.min..=self.max).contains(&value)
    }

    /// "must be between 1 and 100": for error messages.
    pub fn requirement(&self) -> String {
        format!("must be between {} and {}", self.min, self.max)
    }
}

const HOUR: u64 = 3600;

pub const INTERVAL: DurationRange =
    DurationRange::new(GoDuration::from_secs(5), GoDuration::from_secs(24 * HOUR));
pub const TIMEOUT: DurationRange =
    DurationRange::new(GoDuration::from_millis(100), GoDuration::from_secs(300));
pub const LAGGED_THRESHOLD: DurationRange =
    DurationRange::new(GoDuration::from_millis(100), GoDuration::from_secs(30));
pub const ERROR_WINDOW: DurationRange =
    DurationRange::new(GoDuration::from_secs(60), GoDuration::from_secs(24 * HOUR));
pub const KEEPALIVE_INTERVAL: DurationRange =
    DurationRange::new(GoDuration::from_secs(1), GoDuration::from_secs(2 * HOUR));
pub const TLS_EXPIRY_WARNING: DurationRange = DurationRange::new(
    GoDuration::from_secs(HOUR),
    GoDuration::from_secs(8760 * HOUR),
);
/// A phone that rings 3 minutes is not answered; RFC 3261's proxy Timer C is just above.
pub const RING_TIMEOUT: DurationRange =
    DurationRange::new(GoDuration::from_secs(1), GoDuration::from_secs(180));
/// A second gives 50 packets; a minute is plenty for a MOS and keeps a check's run short.
pub const MEDIA_DURATION: DurationRange =
    DurationRange::new(GoDuration::from_secs(1), GoDuration::from_secs(60));
pub const POST_DIAL_DELAY: DurationRange =
    DurationRange::new(GoDuration::from_millis(100), GoDuration::from_secs(60));
/// The E-model's MOS scale (G.107 Annex B: 1.0 to 4.5), in hundredths.
pub const MOS_HUNDREDTHS: IntRange = IntRange { min: 100, max: 450 };

pub const FAILURE_THRESHOLD: IntRange = IntRange { min: 1, max: 100 };
pub const SUCCESS_THRESHOLD: IntRange = IntRange { min: 1, max: 100 };
/// Registration interval in seconds; 60 is Asterisk's default `minexpiry`.
pub const EXPIRES: IntRange = IntRange {
    min: 60,
    max: 86400,
};
/// Final SIP responses that are not success (RFC 3261 §21.3 to §21.6).
pub const SIP_ERROR_CODE: IntRange = IntRange { min: 300, max: 699 };
pub const HTTP_STATUS: IntRange = IntRange { min: 100, max: 599 };
pub const PERCENT: IntRange = IntRange { min: 1, max: 100 };
pub const MIN_RESPONSES: IntRange = IntRange { min: 1, max: 10000 };
/// `spec.report.minLocations`: at most [`MAX_LOCATIONS`].
pub const MIN_LOCATIONS: IntRange = IntRange { min: 1, max: 16 };

/// Kubernetes object names (DNS subdomain) and host names.
pub const MAX_NAME_LENGTH: u32 = 253;
/// A DNS label: probe names end up as metric label values.
pub const MAX_PROBE_NAME_LENGTH: u32 = 63;
pub const MAX_USERNAME_LENGTH: u32 = 128;
pub const MAX_URI_LENGTH: u32 = 2048;
pub const MAX_BODY_MATCH_LENGTH: u32 = 1024;
pub const MAX_REPORT_FIELD_LENGTH: u32 = 256;
pub const MAX_HTTP_PROBES: u32 = 16;
pub const MAX_STATUS_CODES: u32 = 16;
pub const MAX_STUN_SERVERS: u32 = 8;
/// `spec.locations` (and so the entries of `status.locations` a check's own spec asks for).
pub const MAX_LOCATIONS: u32 = 16;
