//! The OPTIONS qualify (DESIGN.md §3, `SipReachable`), judged as Asterisk chan_sip's `qualify`
//! judges a peer (seeds 000/002 name its states): answered within `maxms` is reachable, answered
//! later is LAGGED, no answer within twice `maxms` is UNREACHABLE. Any final response counts as
//! an answer, as in chan_sip: a 404 still proves the server is alive, and so does a final
//! response without To tag (RFC 3261 §8.2.6.2 asks for one, but a qualify only needs an answer).

use super::flow::{Flow, FlowEntry};
use super::message::{Dialogue, RequestSpec};
use super::transport::Connection;
use super::{StatusLine, Target, millis, session, transaction, uri};
use crate::probe::attempts::{self, Attempt};
use crate::probe::dns::Dns;
use crate::probe::tls::CaSource;
use crate::probe::{ConfigError, Failure, Outcome};
use rsip::prelude::*;
use serde::Serialize;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// chan_sip's default `qualify` threshold (`maxms`).
pub const DEFAULT_LAGGED_THRESHOLD: Duration = Duration::from_secs(2);

/// What to qualify.
#[derive(Debug, Clone)]
pub struct OptionsConfig {
    /// `sip:`/`sips:` URI, optionally with a user (`sip:lagged@pbx`), `;transport=udp|tcp|tls`
    /// and a port; without a port RFC 3263 chooses.
    pub server: String,
    /// An outbound proxy (`sip:`/`sips:` URI): the OPTIONS goes there, with a Route header
    /// naming it, instead of to `server`.
    pub proxy: Option<String>,
    /// chan_sip's `maxms`: slower answers are LAGGED ([`DEFAULT_LAGGED_THRESHOLD`]).
    pub lagged_threshold: Duration,
    /// Bounds the whole probe, DNS included. The wait for the answer is at most twice the
    /// threshold, so a timeout above that only leaves room for DNS and connecting.
    pub timeout: Duration,
    /// Extra trust anchors (PEM) for TLS, e.g. a private PBX CA.
    pub ca: Option<CaSource>,
}

/// chan_sip's peer states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum QualifyState {
    /// Answered within the threshold.
    Reachable,
    /// Answered, but later than the threshold.
    Lagged,
    /// No answer within twice the threshold (or no way to send one).
    Unreachable,
}

/// The result of one qualify.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OptionsOutcome {
    pub target: Option<Target>,
    pub state: QualifyState,
    /// The final response, whatever its code.
    pub response: Option<StatusLine>,
    /// Server (or User-Agent) header of the response.
    pub server: Option<String>,
    /// From sending the request to the final response.
    #[serde(
        rename = "rttSeconds",
        serialize_with = "crate::probe::secs::option::serialize"
    )]
    pub rtt: Option<Duration>,
    /// From sending the request to the first response, provisional or final.
    #[serde(
        rename = "firstResponseSeconds",
        serialize_with = "crate::probe::secs::option::serialize"
    )]
    pub first_response: Option<Duration>,
    #[serde(
        rename = "laggedThresholdSeconds",
        serialize_with = "crate::probe::secs::serialize"
    )]
    pub lagged_threshold: Duration,
    /// The destinations and addresses that failed before `target` answered (or, when none
    /// did, all that were tried), in the order tried.
    pub attempts: Vec<Attempt>,
    /// Service discovery queries (NAPTR, SRV) that failed and were fallen back from.
    pub dns_fallbacks: Vec<Failure>,
    /// Over TLS: the earliest notAfter of the certificate chain the answering server presented
    /// (leaf and intermediates, as blackbox_exporter's `probe_ssl_earliest_cert_expiry`).
    #[serde(serialize_with = "crate::probe::timestamp::option::serialize")]
    pub cert_not_after: Option<SystemTime>,
    /// `Lagged` for a late answer, `Timeout` for none; transport and DNS failures as they came.
    pub failure: Option<Failure>,
    /// The messages exchanged (`probe -v`).
    #[serde(skip)]
    pub flow: Vec<FlowEntry>,
}

impl OptionsConfig {
    /// Checks the server URI before anything is sent (what [`options`] refuses with a
    /// [`ConfigError`], short of an unreadable CA file).
    pub fn validate(&self) -> Result<(), ConfigError> {
        uri::parse(&self.server)?;
        uri::parse_proxy(self.proxy.as_deref())?;
        Ok(())
    }
}

/// Sends one OPTIONS to `cfg.server` and classifies the answer. `Err` only for bad input.
pub async fn options(dns: &Dns, cfg: &OptionsConfig) -> Result<OptionsOutcome, ConfigError> {
    cfg.validate()?;
    let server = uri::parse(&cfg.server)?;
    let proxy = uri::parse_proxy(cfg.proxy.as_deref())?;
    let threshold = cfg.lagged_threshold;
    let started = Instant::now();
    let deadline = started + cfg.timeout;
    let mut outcome = OptionsOutcome {
        target: None,
        state: QualifyState::Unreachable,
        response: None,
        server: None,
        rtt: None,
        first_response: None,
        lagged_threshold: threshold,
        attempts: Vec::new(),
        dns_fallbacks: Vec::new(),
        failure: None,
        cert_not_after: None,
        flow: Vec::new(),
    };
    let mut qualify = Qualify {
        request_uri: server.request_uri(),
        route: proxy.as_ref().map(uri::ServerUri::loose_route),
        // chan_sip gives up on a qualify after twice maxms.
        wait: (threshold * 2).min(cfg.timeout),
        flow: Flow::new(started),
    };
    // With an outbound proxy, the proxy's destinations are tried as the server's would be.
    let next_hop = proxy.as_ref().unwrap_or(&server);
    let ca = cfg.ca.as_ref();
    let tried = session::each(dns, next_hop, ca, deadline, cfg.timeout, &mut qualify).await?;
    outcome.target = tried.target;
    outcome.attempts = tried.attempts;
    outcome.dns_fallbacks = tried.dns_fallbacks;
    outcome.cert_not_after = tried.cert_not_after;
    outcome.flow = qualify.flow.entries;
    match tried.result {
        Ok(exchange) => {
            let rtt = exchange.final_response;
            outcome.response = Some(StatusLine {
                code: exchange.reply.code,
                reason: exchange.reply.reason.clone(),
            });
            outcome.server = exchange.reply.server();
            outcome.rtt = Some(rtt);
            outcome.first_response = Some(exchange.first_response);
            if rtt <= threshold {
                outcome.state = QualifyState::Reachable;
            } else {
                outcome.state = QualifyState::Lagged;
                outcome.failure = Some(Failure::Lagged { rtt, threshold });
            }
        }
        Err(failure) => outcome.failure = Some(failure),
    }
    Ok(outcome)
}

/// One OPTIONS transaction on a destination's connection; `flow` keeps the messages of every
/// destination tried.
struct Qualify {
    request_uri: String,
    /// `Route: <proxy;lr>` when an outbound proxy is used.
    route: Option<String>,
    wait: Duration,
    flow: Flow,
}

impl session::Exchange for Qualify {
    type Output = transaction::Exchange;

    async fn on(
        &mut self,
        mut conn: Connection,
        until: Instant,
    ) -> Result<transaction::Exchange, Failure> {
        let mut dialogue = Dialogue::new(conn.local_addr(), conn.transport());
        // An IPv6 host in a URI is in brackets (RFC 3261 §25.1).
        let from = match conn.local_addr().ip() {
            std::net::IpAddr::V4(ip) => format!("sip:voipcheck@{ip}"),
            std::net::IpAddr::V6(ip) => format!("sip:voipcheck@[{ip}]"),
        };
        let mut extra: Vec<rsip::Header> = Vec::new();
        if let Some(route) = &self.route {
            extra.push(rsip::headers::Route::new(route.clone()).into());
        }
        extra.push(rsip::headers::Accept::new("application/sdp").into());
        let request = dialogue.request(RequestSpec {
            method: rsip::Method::Options,
            request_uri: &self.request_uri,
            from: &from,
            to: &self.request_uri,
            to_tag: None,
            extra,
            body: None,
        });
        let answer_deadline = until.min(Instant::now() + self.wait);
        let flow = &mut self.flow;
        transaction::run(&mut conn, &request, answer_deadline, self.wait, flow).await
    }
}

impl Outcome for OptionsOutcome {
    fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    fn facts(&self) -> Vec<(&'static str, String)> {
        let mut facts = vec![
            (
                "target",
                self.target
                    .as_ref()
                    .map_or_else(|| "-".into(), ToString::to_string),
            ),
            ("state", format!("{:?}", self.state)),
            (
                "response",
                self.response
                    .as_ref()
                    .map_or_else(|| "-".into(), ToString::to_string),
            ),
            ("rtt", millis(self.rtt)),
            ("lagged threshold", millis(Some(self.lagged_threshold))),
        ];
        if let Some(server) = &self.server {
            facts.push(("server", server.clone()));
        }
        facts.extend(crate::probe::tls::expiry_fact(self.cert_not_after));
        facts.extend(attempts::facts(&self.attempts, &self.dns_fallbacks));
        facts
    }
}
