//! SIP probes (issue 2, DESIGN.md §3): REGISTER with digest authentication (`SipRegistered`),
//! an OPTIONS qualify with Asterisk chan_sip's semantics (`SipReachable`), and the test call
//! (issue 9: `CallPossible`, `MediaQuality`).
//!
//! The pieces, bottom up: [`uri`] reads the configured server URI, [`resolve`] turns it into
//! the destinations to try (RFC 3263), [`session`] tries each destination and address in turn
//! until one answers, [`transport`] carries messages over UDP, TCP or TLS
//! with bounded reads, [`message`] builds requests, reads responses and requests and answers
//! them with rsip, [`name_addr`] reads To, From and Contact (IPv6 included), [`transaction`]
//! runs RFC 3261 client transactions (retransmission, response matching) and records the
//! [`flow`] of messages, [`digest`] computes answers to challenges and [`auth`] keeps them
//! across requests. [`register`] and [`options`] are two probes; the test call
//! ([`caller`], its types in [`call`]) adds the INVITE transaction ([`invite`]), the dialog
//! ([`dialog`]) and the SDP offer/answer ([`sdp`]).

mod auth;
mod call;
mod callee;
mod caller;
mod dialog;
mod digest;
mod flow;
mod invite;
mod message;
mod name_addr;
mod options;
mod register;
mod resolve;
mod sdp;
mod session;
mod transaction;
mod transport;
mod uri;

pub use call::{
    Account, AnswerPolicy, CallConfig, CallOutcome, Callee, DEFAULT_RING_TIMEOUT, HANGUP_BUDGET,
    Hangup, Party, SdpAddress,
};
pub use caller::call;
pub use digest::DigestAlgorithm;
pub use flow::{Direction, FlowEntry};
pub use options::{DEFAULT_LAGGED_THRESHOLD, OptionsConfig, OptionsOutcome, QualifyState, options};
pub use register::{
    DEFAULT_EXPIRES, RegisterConfig, RegisterOutcome, UNREGISTER_BUDGET, UnregisterOutcome,
    register,
};
pub use transport::Transport;

use serde::Serialize;
use std::net::SocketAddr;

/// Where a probe sent its requests: one destination of RFC 3263 resolution and its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub transport: Transport,
    /// The destination as resolution named it, `host:port`: an SRV target or the URI's host.
    /// The same text as an [`Attempt`](crate::probe::attempts::Attempt)'s `target`.
    pub name: String,
    pub address: SocketAddr,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name == self.address.to_string() {
            write!(f, "{} {}", self.transport, self.address)
        } else {
            write!(f, "{} {} ({})", self.transport, self.name, self.address)
        }
    }
}

/// A final SIP response as the peer sent it: the code and the reason phrase of its status line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusLine {
    pub code: u16,
    pub reason: String,
}

impl std::fmt::Display for StatusLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}

/// Formats an optional duration for the human table.
fn millis(d: Option<std::time::Duration>) -> String {
    d.map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "-".into())
}
