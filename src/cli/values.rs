//! Parsers for command-line values: the same functions and bounds that validate a VoipCheck
//! (`voipcheck::api`), so a probe run by hand refuses what the CRD refuses, with the same words.
//! clap reports their errors with the flag's name and exits with status 2.

use std::time::Duration;
use url::Url;
use voipcheck::api::{self, limits};
use voipcheck::probe::media::Mos;

/// `--timeout`: as `spec.timeout`.
pub fn timeout(text: &str) -> Result<Duration, String> {
    api::parse_duration(text, limits::TIMEOUT)
}

/// `--lagged-threshold`: as `spec.sip.options.laggedThreshold`.
pub fn lagged_threshold(text: &str) -> Result<Duration, String> {
    api::parse_duration(text, limits::LAGGED_THRESHOLD)
}

/// `--nat-binding`: as `spec.stun.natBinding.keepaliveInterval`.
pub fn keepalive_interval(text: &str) -> Result<Duration, String> {
    api::parse_duration(text, limits::KEEPALIVE_INTERVAL)
}

/// `--ring-timeout`: as `spec.sip.call.ringTimeout`.
pub fn ring_timeout(text: &str) -> Result<Duration, String> {
    api::parse_duration(text, limits::RING_TIMEOUT)
}

/// `--media-duration`: as `spec.sip.call.media.duration`.
pub fn media_duration(text: &str) -> Result<Duration, String> {
    api::parse_duration(text, limits::MEDIA_DURATION)
}

/// `--min-mos`: as `spec.sip.call.thresholds.mos`.
pub fn mos(text: &str) -> Result<Mos, String> {
    api::parse_mos(text)
}

/// `--advertise-stun`: a STUN server as `host[:port]`, as `spec.control.stunServer`.
pub fn host_port(text: &str) -> Result<String, String> {
    api::check_host_port(text).map(|()| text.to_owned())
}

/// `--expires`: as `spec.sip.register.expires`.
pub fn expires(text: &str) -> Result<u32, String> {
    let value = api::parse_int(text, limits::EXPIRES)?;
    Ok(u32::try_from(value).expect("EXPIRES is positive"))
}

/// `--expect-status`: as `spec.http[].expectStatus[]`.
pub fn http_status(text: &str) -> Result<u16, String> {
    let value = api::parse_int(text, limits::HTTP_STATUS)?;
    Ok(u16::try_from(value).expect("HTTP_STATUS fits in u16"))
}

/// A SIP server URI: as `spec.sip.server`.
pub fn sip_server(text: &str) -> Result<String, String> {
    api::check_sip_uri(text).map(|()| text.to_owned())
}

/// `--username`: as `spec.sip.register.username`.
pub fn sip_user(text: &str) -> Result<String, String> {
    api::check_sip_user(text).map(|()| text.to_owned())
}

/// A STUN server: as `spec.stun.servers[]`.
pub fn stun_server(text: &str) -> Result<String, String> {
    api::check_stun_server(text).map(|()| text.to_owned())
}

/// An HTTP URL: as `spec.http[].url`, so without credentials, which `ps` and shell history
/// would show.
pub fn http_url(text: &str) -> Result<Url, String> {
    api::parse_http_url(text)
}

/// `--body-contains`: as `spec.http[].bodyContains`.
pub fn body_text(text: &str) -> Result<String, String> {
    let max = limits::MAX_BODY_MATCH_LENGTH as usize;
    if text.is_empty() || text.len() > max {
        return Err(format!("must be 1 to {max} characters"));
    }
    Ok(text.to_owned())
}

/// `--max-body-bytes`: 1 byte to 64 MiB, since the body is held in memory while it is checked.
pub fn body_bytes(text: &str) -> Result<usize, String> {
    const MAX: usize = 64 << 20;
    match text.parse::<usize>() {
        Ok(n @ 1..=MAX) => Ok(n),
        _ => Err(format!("must be a number from 1 to {MAX}")),
    }
}

/// `--body-regex`: as `spec.http[].bodyRegex`.
pub fn body_regex(text: &str) -> Result<regex::Regex, String> {
    body_text(text)?;
    api::compile_body_regex(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `voipcheck probe` accepted before although the CRD refuses it (issue 8).
    #[test]
    fn refuses_what_the_crd_refuses() {
        assert!(timeout("0s").is_err());
        assert!(timeout("500000000000y").is_err());
        assert!(timeout("99999999999999999999s").is_err());
        assert!(expires("0").is_err());
        assert!(http_status("999").is_err());
        assert!(sip_server("tel:+4930123456").is_err());
        assert!(sip_server("sip:100:secret@pbx.example.com").is_err());
        assert!(http_url("https://user:secret@portal.example.com/").is_err());
        assert!(stun_server("stun.example.com:0").is_err());
        assert!(sip_user("100@pbx").is_err());
        assert_eq!(timeout("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(expires("300"), Ok(300));
        assert_eq!(http_status("204"), Ok(204));
    }
}
