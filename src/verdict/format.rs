//! How numbers appear in condition messages: short, with units, without float noise, so a
//! message reads the same from run to run when nothing but a timing changed.

use std::time::{Duration, SystemTime};

/// A measured duration: `23.4 ms` below one second, `2s 345ms` above (humantime, whole
/// milliseconds).
pub fn duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        let whole_ms = Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX));
        humantime::format_duration(whole_ms).to_string()
    }
}

/// A point in time as RFC 3339 in UTC, whole seconds.
pub fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Whole days from `now` until `t` (0 when `t` has passed).
pub fn days_until(t: SystemTime, now: SystemTime) -> u64 {
    t.duration_since(now).map_or(0, |d| d.as_secs() / 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_units_and_no_float_noise() {
        assert_eq!(duration(Duration::from_micros(23_456)), "23.5 ms");
        assert_eq!(duration(Duration::from_nanos(2_345_678_901)), "2s 345ms");
        assert_eq!(duration(Duration::from_secs(61)), "1m 1s");
        assert_eq!(duration(Duration::from_secs(3660)), "1h 1m");
    }
}
