//! The SIP messages of one probe run as a compact flow, like sngrep's call flow: when, which
//! way, the first line and the headers a person debugging a registration looks at. Printed by
//! `voipcheck probe sip-register -v`; never part of a status or a metric.
//!
//! Credentials never get in: the digest `response`, `nonce` and `cnonce` of Authorization and
//! of challenges are replaced before a line is kept, so no copy of them exists to leak.

use super::{message, name_addr};
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// The headers shown for each message (others are left out to keep the flow readable).
const SHOWN: [&str; 12] = [
    "To",
    "Contact",
    "Expires",
    "Min-Expires",
    "Retry-After",
    "Route",
    "Server",
    "WWW-Authenticate",
    "Proxy-Authenticate",
    "Authorization",
    "Proxy-Authorization",
    "Warning",
];

/// Digest parameters replaced by `…` wherever they appear.
const REDACTED: [&str; 3] = ["response", "nonce", "cnonce"];

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Sent,
    Received,
}

/// One message of the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowEntry {
    /// Since the probe started.
    #[serde(rename = "atSeconds", serialize_with = "crate::probe::secs::serialize")]
    pub at: Duration,
    pub direction: Direction,
    /// The request or status line.
    pub first_line: String,
    /// The [`SHOWN`] headers present, as `Name: value`, credentials redacted.
    pub headers: Vec<String>,
}

/// The messages of one run, in the order they went and came.
#[derive(Debug, Clone)]
pub(super) struct Flow {
    started: Instant,
    pub entries: Vec<FlowEntry>,
}

/// A flow grows by a handful of messages per run; a peer flooding us with responses that are
/// not ours must not make it grow without end.
const MAX_ENTRIES: usize = 64;

impl Flow {
    pub fn new(started: Instant) -> Self {
        Flow {
            started,
            entries: Vec::new(),
        }
    }

    pub fn record(&mut self, direction: Direction, bytes: &[u8]) {
        if self.entries.len() >= MAX_ENTRIES {
            return;
        }
        let unfolded = message::unfold(bytes);
        let head_end = unfolded
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(unfolded.len());
        let head = String::from_utf8_lossy(&unfolded[..head_end]);
        let mut lines = head.split("\r\n");
        let first_line = shorten(lines.next().unwrap_or_default());
        let mut headers: Vec<String> = lines
            .filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                let name = message::full_header_name(name.trim());
                let shown = SHOWN.iter().find(|s| s.eq_ignore_ascii_case(name))?;
                Some(format!("{shown}: {}", shorten(&redact(value.trim()))))
            })
            .collect();
        // Of an SDP body, where the media goes: the connection address and the audio stream.
        let body = String::from_utf8_lossy(unfolded.get(head_end + 4..).unwrap_or_default());
        headers.extend(
            body.lines()
                .filter(|line| line.starts_with("c=") || line.starts_with("m="))
                .take(4)
                .map(|line| format!("SDP: {}", shorten(line.trim()))),
        );
        self.entries.push(FlowEntry {
            at: Instant::now().saturating_duration_since(self.started),
            direction,
            first_line,
            headers,
        });
    }
}

/// `value` with the digest parameters of [`REDACTED`] replaced, quoted or not.
fn redact(value: &str) -> String {
    name_addr::split_outside_quotes(value, ',')
        .into_iter()
        .map(|part| {
            let Some((name, _)) = part.split_once('=') else {
                return part.to_owned();
            };
            // `Digest nonce="x"`: the scheme stands before the first parameter.
            let param = name.trim().rsplit(' ').next().unwrap_or_default();
            if REDACTED.iter().any(|r| r.eq_ignore_ascii_case(param)) {
                format!("{name}=\"…\"")
            } else {
                part.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A peer's line cut to a length worth printing.
fn shorten(text: &str) -> String {
    let cut = text.floor_char_boundary(200);
    if cut < text.len() {
        format!("{}…", &text[..cut])
    } else {
        text.to_owned()
    }
}

impl std::fmt::Display for FlowEntry {
    /// `   12.3 ms  →  REGISTER sip:pbx SIP/2.0`, then one indented line per header.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let arrow = match self.direction {
            Direction::Sent => "→",
            Direction::Received => "←",
        };
        let ms = self.at.as_secs_f64() * 1000.0;
        write!(f, "{ms:9.1} ms  {arrow}  {}", self.first_line)?;
        for header in &self.headers {
            write!(f, "\n{:17}{header}", "")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_line_and_key_headers_and_redacts_digest_secrets() {
        let mut flow = Flow::new(Instant::now());
        flow.record(
            Direction::Sent,
            b"REGISTER sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nAuthorization: Digest username=\"alice\", realm=\"r\", nonce=\"N0NCE\", uri=\"sip:pbx\", response=\"0123abcd\", cnonce=\"CN\", nc=00000001\r\nExpires: 60\r\n\r\n",
        );
        flow.record(
            Direction::Received,
            b"SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"r\",\r\n nonce=\"N0NCE2\", qop=\"auth\"\r\nm: <sip:a@[::1]:5>\r\nl: 0\r\n\r\n",
        );
        let text: Vec<String> = flow.entries.iter().map(ToString::to_string).collect();
        let text = text.join("\n");
        for secret in ["N0NCE", "0123abcd", "CN\""] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("→  REGISTER sip:pbx SIP/2.0"), "{text}");
        assert!(text.contains("username=\"alice\""), "{text}");
        assert!(text.contains("Expires: 60"), "{text}");
        assert!(text.contains("←  SIP/2.0 401 Unauthorized"), "{text}");
        assert!(text.contains("qop=\"auth\""), "{text}");
        assert!(text.contains("Contact: <sip:a@[::1]:5>"), "{text}");
        assert!(!text.contains("Via"), "{text}");
    }
}
