//! What an HTTP probe saw: the facts of the final response, per-phase timings and the failure.

use super::ContentCoding;
use crate::probe::attempts::{self, Attempt};
use crate::probe::{Failure, Outcome, secs, timestamp};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// Time spent in each phase, named as blackbox_exporter names them (its
/// `probe_http_duration_seconds{phase}`), and summed over all redirect hops as it does. A phase
/// is `None` when no hop reached it (e.g. `tls` on plain HTTP, or everything after a refused
/// connection).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpPhases {
    /// Name resolution (near zero for an IP literal).
    #[serde(rename = "resolveSeconds", serialize_with = "secs::option::serialize")]
    pub resolve: Option<Duration>,
    /// TCP connection setup (all addresses tried, until one accepted).
    #[serde(rename = "connectSeconds", serialize_with = "secs::option::serialize")]
    pub connect: Option<Duration>,
    /// TLS handshake, including certificate verification.
    #[serde(rename = "tlsSeconds", serialize_with = "secs::option::serialize")]
    pub tls: Option<Duration>,
    /// From the connection being ready to the complete response head (request sent, server
    /// working): blackbox_exporter's "processing".
    #[serde(
        rename = "processingSeconds",
        serialize_with = "secs::option::serialize"
    )]
    pub processing: Option<Duration>,
    /// Reading the body of the final response (up to the body limit).
    #[serde(rename = "transferSeconds", serialize_with = "secs::option::serialize")]
    pub transfer: Option<Duration>,
}

impl HttpPhases {
    /// The phases in order with their blackbox_exporter names (the `phase` metric label).
    pub fn named(&self) -> [(&'static str, Option<Duration>); 5] {
        [
            ("resolve", self.resolve),
            ("connect", self.connect),
            ("tls", self.tls),
            ("processing", self.processing),
            ("transfer", self.transfer),
        ]
    }

    /// Adds `d` to one phase (redirect hops accumulate).
    pub(super) fn add(phase: &mut Option<Duration>, d: Duration) {
        *phase = Some(phase.unwrap_or_default() + d);
    }
}

/// The result of one HTTP probe. URLs in it never carry userinfo.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpOutcome {
    /// The configured URL, without credentials.
    pub url: String,
    /// The URL of the last request made (after redirects), without credentials.
    pub final_url: String,
    /// The address of the last connection attempted.
    pub peer: Option<SocketAddr>,
    /// Addresses whose connection failed (over all hops), in the order they failed; the
    /// connection to `peer` may still have been made after them.
    pub attempts: Vec<Attempt>,
    /// Redirects followed.
    pub redirects: u8,
    /// Status of the final response.
    pub status: Option<u16>,
    /// `HTTP/1.1`, `HTTP/1.0`, or `HTTP/2.0` when TLS's ALPN chose h2.
    pub http_version: Option<String>,
    /// The final response's `Server` header (lossy UTF-8, at most 200 characters).
    pub server: Option<String>,
    pub phases: HttpPhases,
    /// Wall time of the whole probe, all hops.
    #[serde(rename = "durationSeconds", serialize_with = "secs::serialize")]
    pub duration: Duration,
    /// The earliest notAfter of the certificates the final hop's server presented (leaf and
    /// intermediates), when it was HTTPS (as blackbox_exporter takes the final response's TLS
    /// state for `probe_ssl_earliest_cert_expiry`).
    #[serde(serialize_with = "timestamp::option::serialize")]
    pub cert_not_after: Option<SystemTime>,
    /// The final response's content codings, in the order the server applied them (empty for
    /// an uncoded body).
    pub content_encoding: Vec<ContentCoding>,
    /// Body bytes received, as sent (at most the configured limit).
    pub body_encoded_bytes: usize,
    /// Body bytes after decoding the content codings (at most the configured limit): what the
    /// body checks match.
    pub body_bytes: usize,
    /// The body was longer than the limit; reading stopped there and only that prefix was matched.
    pub body_truncated: bool,
    pub failure: Option<Failure>,
}

impl HttpOutcome {
    pub(super) fn new(url: String) -> Self {
        HttpOutcome {
            final_url: url.clone(),
            url,
            peer: None,
            attempts: Vec::new(),
            redirects: 0,
            status: None,
            http_version: None,
            server: None,
            phases: HttpPhases::default(),
            duration: Duration::ZERO,
            cert_not_after: None,
            content_encoding: Vec::new(),
            body_encoded_bytes: 0,
            body_bytes: 0,
            body_truncated: false,
            failure: None,
        }
    }

    /// A new request to `url`: what the previous hop's response said no longer describes the
    /// final one (e.g. when this hop's connection fails).
    pub(super) fn start_hop(&mut self, url: String) {
        self.final_url = url;
        self.status = None;
        self.http_version = None;
        self.server = None;
        self.cert_not_after = None;
        self.content_encoding.clear();
    }
}

impl Outcome for HttpOutcome {
    fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    fn facts(&self) -> Vec<(&'static str, String)> {
        let mut facts = vec![("url", self.final_url.clone())];
        if self.redirects > 0 {
            facts.push(("redirects followed", self.redirects.to_string()));
        }
        if let Some(peer) = self.peer {
            facts.push(("peer", peer.to_string()));
        }
        facts.extend(attempts::facts(&self.attempts, &[]));
        if let Some(code) = self.status {
            let reason = hyper::StatusCode::from_u16(code)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            facts.push(("status", format!("{code} {reason}").trim_end().to_owned()));
        }
        if let Some(version) = &self.http_version {
            facts.push(("version", version.clone()));
        }
        if let Some(server) = &self.server {
            facts.push(("server", server.clone()));
        }
        for (name, phase) in self.phases.named() {
            if let Some(d) = phase {
                facts.push((name, millis(d)));
            }
        }
        facts.push(("total", millis(self.duration)));
        facts.extend(crate::probe::tls::expiry_fact(self.cert_not_after));
        if self.status.is_some() {
            let truncated = if self.body_truncated {
                " (stopped at the limit)"
            } else {
                ""
            };
            let coded = match self.content_encoding.as_slice() {
                [] => String::new(),
                codings => {
                    let names: Vec<String> = codings.iter().map(|c| c.to_string()).collect();
                    format!(
                        ", {} decoded from {} bytes",
                        names.join(", "),
                        self.body_encoded_bytes
                    )
                }
            };
            facts.push((
                "body",
                format!("{} bytes{coded}{truncated}", self.body_bytes),
            ));
        }
        facts
    }
}

fn millis(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}
