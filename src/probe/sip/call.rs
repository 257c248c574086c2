//! The test call (issue 9, DESIGN.md §3 `CallPossible` and `MediaQuality`): an INVITE with an
//! SDP offer from the monitoring account, to a number that answers or to a second account the
//! probe registers and answers itself (the hairpin call: out and in through the provider),
//! then RTP both ways ([`crate::probe::media`]) and the hang-up.

use super::digest::DigestAlgorithm;
use super::flow::FlowEntry;
use super::register::plain_user;
use super::{StatusLine, Target, millis, name_addr, uri};
use crate::probe::attempts;
use crate::probe::media::{MediaConfig, MediaReport};
use crate::probe::tls::CaSource;
use crate::probe::{ConfigError, Failure, Outcome};
use crate::secret::Secret;
use serde::Serialize;
use std::time::{Duration, SystemTime};

/// The default `call.ringTimeout`: how long a phone rings before a caller gives up.
pub const DEFAULT_RING_TIMEOUT: Duration = Duration::from_secs(20);

/// The time the hang-up gets after the call (BYE or CANCEL and their answers, the callee's
/// un-REGISTER), whatever the call left of its bounds: as for the un-REGISTER, a slow call must
/// not leave a dialog (and a charge) open. Over UDP it allows the request and three
/// retransmissions (RFC 3261 §17.1.2.2: 0.5 s, 1 s, 2 s).
pub const HANGUP_BUDGET: Duration = super::UNREGISTER_BUDGET;

/// A SIP account and the server that serves it: who calls, and through which server.
#[derive(Debug, Clone)]
pub struct Account {
    /// The server: `sip:`/`sips:` URI, `;transport=udp|tcp|tls`; without a port RFC 3263.
    pub server: String,
    /// The user part of the address of record.
    pub username: String,
    /// The digest user name, when it differs from `username`.
    pub auth_username: Option<String>,
    /// Domain of the address of record; the server's host when `None`.
    pub domain: Option<String>,
    /// An outbound proxy (`sip:`/`sips:` URI), as for REGISTER.
    pub proxy: Option<String>,
    pub password: Secret,
    /// Extra trust anchors (PEM) for TLS.
    pub ca: Option<CaSource>,
}

/// Whom the test call rings.
#[derive(Debug, Clone)]
pub enum Callee {
    /// A SIP URI that answers by itself: an echo service, an IVR, a DID (`call.to`).
    Number(String),
    /// A second account at the same server, which the probe registers, answers and hangs up
    /// itself (`call.callee`): one call proves outgoing and incoming calls.
    Account {
        username: String,
        auth_username: Option<String>,
        password: Secret,
    },
}

/// When the call counts as possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AnswerPolicy {
    /// Only a 2xx answer is success; the media runs after it.
    Required,
    /// Success at the first 180/183, then CANCEL: nothing is charged, no media.
    RingingIsEnough,
}

/// Which address the SDP offer names for our RTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdpAddress {
    /// The local address of the RTP socket.
    Local,
    /// The public address a STUN server maps the RTP socket to (seed 004: a client that only
    /// offers private addresses is unreachable behind NAT). `server` is `host[:port]`.
    StunMapped { server: String },
}

/// One test call.
#[derive(Debug, Clone)]
pub struct CallConfig {
    pub caller: Account,
    pub callee: Callee,
    pub answer: AnswerPolicy,
    /// From the INVITE to the answer, at most ([`DEFAULT_RING_TIMEOUT`]).
    pub ring_timeout: Duration,
    /// RTP after the answer; `None`: signalling only.
    pub media: Option<MediaConfig>,
    pub advertise: SdpAddress,
    /// Bounds what comes before ringing: DNS, connecting, the callee's registration, and the
    /// INVITE until its first 18x.
    pub timeout: Duration,
}

impl CallConfig {
    /// Checks the accounts, the callee and the times before anything is sent (what
    /// [`call`](super::call) refuses with a [`ConfigError`], short of an unreadable CA file).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let caller = &self.caller;
        uri::parse(&caller.server)?;
        uri::parse_proxy(caller.proxy.as_deref())?;
        plain_user("username", &caller.username)?;
        if let Some(auth) = &caller.auth_username {
            plain_user("authUsername", auth)?;
        }
        match &self.callee {
            Callee::Number(to) => {
                name_addr::parse(to).map_err(|reason| ConfigError::new("call.to", reason))?;
            }
            Callee::Account {
                username,
                auth_username,
                ..
            } => {
                plain_user("call.callee.username", username)?;
                if let Some(auth) = auth_username {
                    plain_user("call.callee.authUsername", auth)?;
                }
            }
        }
        if let SdpAddress::StunMapped { server } = &self.advertise {
            crate::probe::stun::parse_server(server)
                .map_err(|reason| ConfigError::new("call.advertise.stun", reason))?;
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be above zero"));
        }
        if self.ring_timeout.is_zero() {
            return Err(ConfigError::new("call.ringTimeout", "must be above zero"));
        }
        if self.media.as_ref().is_some_and(|m| m.duration.is_zero()) {
            return Err(ConfigError::new(
                "call.media.duration",
                "must be above zero",
            ));
        }
        Ok(())
    }

    /// The longest the probe can take: the set-up ([`CallConfig::timeout`]), the ringing, the
    /// media and the hang-up ([`HANGUP_BUDGET`], never more than the timeout).
    pub fn bound(&self) -> Duration {
        let media = self.media.as_ref().map_or(Duration::ZERO, |m| m.duration);
        self.timeout + self.ring_timeout + media + HANGUP_BUDGET.min(self.timeout)
    }
}

/// Which side ended the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Party {
    /// The probe: BYE after the media, or CANCEL (ring timeout, `RingingIsEnough`).
    Caller,
    /// The far end (or the provider in between) sent BYE.
    FarEnd,
}

/// How the call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hangup {
    pub by: Party,
    /// `BYE` or `CANCEL`.
    pub method: String,
    /// The answer to our BYE or CANCEL; `None` when the far end hung up or none came.
    pub response: Option<StatusLine>,
}

/// The result of one test call.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallOutcome {
    pub target: Option<Target>,
    /// The INVITE's final response (after answering a challenge: the answer to that).
    pub response: Option<StatusLine>,
    /// The first 180/183.
    pub ringing: Option<StatusLine>,
    /// Server (or User-Agent) header of the final response.
    pub server: Option<String>,
    /// The digest algorithm used to answer a 401/407, if one came.
    pub auth_algorithm: Option<DigestAlgorithm>,
    /// From the INVITE that was answered (the authenticated one) to its first 18x.
    #[serde(
        rename = "postDialDelaySeconds",
        serialize_with = "crate::probe::secs::option::serialize"
    )]
    pub post_dial_delay: Option<Duration>,
    /// From that INVITE to its 2xx.
    #[serde(
        rename = "setupSeconds",
        serialize_with = "crate::probe::secs::option::serialize"
    )]
    pub setup_time: Option<Duration>,
    /// With the probe's own callee: from that INVITE until it reached the callee.
    #[serde(
        rename = "calleeReachedSeconds",
        serialize_with = "crate::probe::secs::option::serialize"
    )]
    pub callee_reached: Option<Duration>,
    pub hangup: Option<Hangup>,
    /// The RTP of an answered call with `media`.
    pub media: Option<MediaReport>,
    /// The whole probe, DNS and hang-up included.
    #[serde(
        rename = "totalSeconds",
        serialize_with = "crate::probe::secs::serialize"
    )]
    pub total: Duration,
    /// The destinations and addresses that failed before `target` answered.
    pub attempts: Vec<attempts::Attempt>,
    /// Service discovery queries (NAPTR, SRV) that failed and were fallen back from.
    pub dns_fallbacks: Vec<Failure>,
    /// Over TLS: the earliest notAfter of the certificate chain the server presented.
    #[serde(serialize_with = "crate::probe::timestamp::option::serialize")]
    pub cert_not_after: Option<SystemTime>,
    pub failure: Option<Failure>,
    /// The messages exchanged, credentials redacted (`probe -v`).
    #[serde(skip)]
    pub flow: Vec<FlowEntry>,
}

impl std::fmt::Display for Hangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let by = match self.by {
            Party::Caller => "by the probe",
            Party::FarEnd => "by the far end",
        };
        write!(f, "{} {by}", self.method)?;
        match &self.response {
            Some(response) => write!(f, ", answered {response}"),
            None => Ok(()),
        }
    }
}

impl Outcome for CallOutcome {
    fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    fn facts(&self) -> Vec<(&'static str, String)> {
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let mut facts = vec![
            (
                "target",
                or_dash(self.target.as_ref().map(ToString::to_string)),
            ),
            (
                "ringing",
                or_dash(self.ringing.as_ref().map(ToString::to_string)),
            ),
            (
                "response",
                or_dash(self.response.as_ref().map(ToString::to_string)),
            ),
            ("post-dial delay", millis(self.post_dial_delay)),
            ("setup time", millis(self.setup_time)),
        ];
        if self.callee_reached.is_some() {
            facts.push(("callee reached", millis(self.callee_reached)));
        }
        facts.push((
            "hang-up",
            or_dash(self.hangup.as_ref().map(ToString::to_string)),
        ));
        if let Some(media) = &self.media {
            facts.extend(media.facts());
        }
        facts.push(("total", millis(Some(self.total))));
        if let Some(server) = &self.server {
            facts.push(("server", server.clone()));
        }
        facts.extend(crate::probe::tls::expiry_fact(self.cert_not_after));
        facts.extend(attempts::facts(&self.attempts, &self.dns_fallbacks));
        facts
    }
}
