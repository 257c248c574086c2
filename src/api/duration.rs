//! Durations in a VoipCheck: strings like `30s`, `2m`, `500ms`.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

/// What a duration string must look like: one or more `<number><unit>` parts, units `h`, `m`,
/// `s`, `ms`, `us`, `ns`. This is the subset of Go's `time.ParseDuration` format without signs
/// and without `µs`: the format of Kubernetes' `metav1.Duration` and the one CEL's `duration()`
/// reads, so the CRD's validation rules can compare these fields.
pub const PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(h|m|s|ms|us|ns))+$";

static SYNTAX: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(PATTERN).expect("PATTERN is a valid regex"));

/// Longest duration string accepted; keeps the CEL cost estimate of rules using them small.
const MAX_LENGTH: u32 = 32;

/// A non-negative duration that travels as a Go-style duration string (`30s`, `1m30s`, `500ms`).
///
/// Text must match [`PATTERN`] (as the CRD schema demands, so a file read without a cluster
/// gets the same answer); the arithmetic follows Go's `time.ParseDuration`, including its
/// limit (about 292 years). It is done here in integers rather than by
/// `kube::core::Duration`, whose float arithmetic panics on values too large for a
/// `Duration` (`99999999999999999999s`). It serialises in canonical form: the largest unit that
/// represents the value exactly (`90s` stays `90s`, `120s` becomes `2m`), so a value read
/// back is equal to the one written.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        Self(Duration::from_millis(millis))
    }

    /// The value as a standard library duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Self {
        d.0
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDurationError {
    #[error("`{0}` is not a duration like 30s, 2m or 500ms (units h, m, s, ms, us, ns)")]
    Syntax(String),
    /// Longer than Go's `time.Duration` holds (2^63 - 1 ns, about 292 years).
    #[error("`{0}` is too long a duration")]
    TooLong(String),
}

/// Go's `time.Duration` is an int64 of nanoseconds; CEL's `duration()` has the same limit.
const MAX_NANOS: u128 = i64::MAX as u128;

impl FromStr for GoDuration {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_LENGTH as usize || !SYNTAX.is_match(s) {
            return Err(ParseDurationError::Syntax(s.to_owned()));
        }
        let nanos = total_nanos(s).ok_or_else(|| ParseDurationError::TooLong(s.to_owned()))?;
        let secs = u64::try_from(nanos / 1_000_000_000).expect("MAX_NANOS seconds fit in u64");
        let subsec = u32::try_from(nanos % 1_000_000_000).expect("below 10^9");
        Ok(Self(Duration::new(secs, subsec)))
    }
}

/// The nanoseconds of text that matches [`PATTERN`], `None` beyond [`MAX_NANOS`]. Like Go, a
/// fraction is exact to the nanosecond and truncated below it (`1.0000000009s` is 1 s).
fn total_nanos(text: &str) -> Option<u128> {
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let unit_nanos: u128 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" => 1_000,
            _ => 1,
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let mut part = digits(whole)?.checked_mul(unit_nanos)?;
        if !fraction.is_empty() {
            let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
            part = part.checked_add(digits(fraction)?.checked_mul(unit_nanos)? / scale)?;
        }
        total = total.checked_add(part).filter(|t| *t <= MAX_NANOS)?;
        rest = next;
    }
    Some(total)
}

/// A run of ASCII digits as a number; `None` when it does not fit.
fn digits(text: &str) -> Option<u128> {
    text.bytes().try_fold(0u128, |value, digit| {
        value.checked_mul(10)?.checked_add(u128::from(digit - b'0'))
    })
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NANOS_PER_SEC: u128 = 1_000_000_000;
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        let units: [(u128, &str); 6] = [
            (3600 * NANOS_PER_SEC, "h"),
            (60 * NANOS_PER_SEC, "m"),
            (NANOS_PER_SEC, "s"),
            (1_000_000, "ms"),
            (1_000, "us"),
            (1, "ns"),
        ];
        let (size, unit) = units
            .into_iter()
            .find(|(size, _)| nanos.is_multiple_of(*size))
            .expect("every duration is a whole number of nanoseconds");
        write!(f, "{}{unit}", nanos / size)
    }
}

impl fmt::Debug for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GoDuration({self})")
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for GoDuration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // Not `format: duration`: that would mean ISO 8601 (`PT30S`).
        json_schema!({
            "type": "string",
            "pattern": PATTERN,
            "maxLength": MAX_LENGTH,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_duration_strings() {
        for (text, want) in [
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1500)),
            ("1h", Duration::from_secs(3600)),
            ("250us", Duration::from_micros(250)),
            ("0.1s", Duration::from_millis(100)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(text.parse::<GoDuration>(), Ok(GoDuration(want)), "{text}");
        }
    }

    #[test]
    fn refuses_what_go_and_cel_would_not_read() {
        for text in [
            "", "0", "30", "30 s", "30sec", "1d", "PT30S", "-5s", "+5s", ".5s", "5µs",
        ] {
            assert_eq!(
                text.parse::<GoDuration>(),
                Err(ParseDurationError::Syntax(text.into())),
                "{text:?} accepted"
            );
        }
    }

    /// These panicked in `kube::core::Duration`'s float arithmetic, at start and on reload.
    #[test]
    fn refuses_durations_beyond_gos_limit_without_panicking() {
        for text in ["99999999999999999999s", "2562048h", "9223372036854775808ns"] {
            assert_eq!(
                text.parse::<GoDuration>(),
                Err(ParseDurationError::TooLong(text.into())),
                "{text}"
            );
        }
        assert_eq!(
            "9223372036854775807ns".parse::<GoDuration>(),
            Ok(GoDuration(Duration::from_nanos(i64::MAX as u64)))
        );
        assert_eq!(
            "1.0000000009s".parse::<GoDuration>(),
            Ok(GoDuration(Duration::from_secs(1)))
        );
    }

    proptest::proptest! {
        /// No text makes the parser panic; what it accepts reads back as itself.
        #[test]
        fn any_text_parses_or_is_refused(text in "\\PC{0,40}|[0-9.hmsun]{1,32}") {
            if let Ok(d) = text.parse::<GoDuration>() {
                proptest::prop_assert_eq!(d.to_string().parse::<GoDuration>(), Ok(d));
            }
        }
    }

    #[test]
    fn writes_the_largest_exact_unit_and_reads_it_back() {
        for (d, text) in [
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_micros(7), "7us"),
            (Duration::from_nanos(3), "3ns"),
            (Duration::ZERO, "0s"),
        ] {
            let written = GoDuration(d).to_string();
            assert_eq!(written, text);
            assert_eq!(written.parse::<GoDuration>(), Ok(GoDuration(d)));
            assert!(
                SYNTAX.is_match(&written),
                "{written} misses the schema pattern"
            );
        }
    }

    #[test]
    fn travels_as_a_string() {
        let d: GoDuration = serde_json::from_str(r#""10s""#).unwrap();
        assert_eq!(d.get(), Duration::from_secs(10));
        assert_eq!(serde_json::to_string(&d).unwrap(), r#""10s""#);
        assert!(serde_json::from_str::<GoDuration>("10").is_err());
    }
}
