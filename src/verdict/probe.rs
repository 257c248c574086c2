//! One probe run read as the condition it feeds sees it: the condition's reason, a short
//! message, and on failure where its cause lies ([`Blame`]), which the hotline verdict needs.
//!
//! The probes report what they saw (`Failure` classes, codes, addresses); this is the one place
//! that decides what each of those means (DESIGN.md §2: "the verdict module decides what the
//! outcome *means*; the probes don't").

use super::format;
use crate::api::{ConditionType, Reason};
use crate::check::{ProbeKind, ProbeOutcome, ProbeRun};
use crate::probe::attempts::{self, Attempt};
use crate::probe::stun::{AddressClass, ServerAnswer, StunOutcome};
use crate::probe::{DnsErrorKind, Failure};

/// Where the cause of a failure lies, as the hotline (seed 002) sorts failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Blame {
    /// The provider's service does not answer or answers with a server error: timeouts, 5xx,
    /// refused connections, an invalid certificate. Reportable.
    Provider,
    /// The service answered, and the answer says the setup is wrong: credentials, ACLs (seed
    /// 004: 403/488), 4xx, a name that does not exist. Seed 002: failures "caused by
    /// configuration" are not reportable.
    Configuration,
    /// This location's network: the resolver, the NAT in front of the probe, STUN. Not
    /// reportable (seed 002 asks to rule out local causes first).
    Local,
}

impl Blame {
    /// Whose problem it is, in two words: `provider`, `configuration`, `this location`.
    pub fn label(self) -> &'static str {
        match self {
            Blame::Provider => "provider",
            Blame::Configuration => "configuration",
            Blame::Local => "this location",
        }
    }

    /// Whose problem it is, in the words a person on the phone with the hotline needs.
    pub fn explain(self) -> &'static str {
        match self {
            Blame::Provider => {
                "the provider's: its service does not answer or fails (reportable to the \
                 hotline once it persists and the control probe passes)"
            }
            Blame::Configuration => {
                "the configuration's: the service answered and refuses this setup (account, \
                 ACL, URL, expectation); not reportable"
            }
            Blame::Local => {
                "this location's: its network, NAT or resolver; not reportable (seed 002: \
                 try from another location first)"
            }
        }
    }
}

/// One probe run as the check's condition would read it, for `voipcheck probe` and `run
/// --once`: the condition and reason `status.conditions` would show (before thresholds) and,
/// on failure, whose problem it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// `None` for the control probe, which feeds no condition of its own (its failure makes the
    /// others' `LocalNetworkProblem`).
    pub condition: Option<ConditionType>,
    pub reason: Reason,
    /// `None` when the run passed.
    pub blame: Option<Blame>,
    /// The condition's message, e.g. `sip-register: no answer within 10s`.
    pub message: String,
    /// Whether the run passed: the probe itself succeeded (for the control probe: got any
    /// answer) and its condition would be met.
    pub passed: bool,
}

/// Reads one run as its condition would. A test call whose audio failed is read as
/// `MediaQuality`, the condition that failure belongs to (the call itself was possible).
pub fn read(run: &ProbeRun) -> Reading {
    if run.kind == ProbeKind::SipCall
        && let Ok(media) = super::call::observe_media(run)
        && !media.is_pass()
    {
        return Reading::of(Some(ConditionType::MediaQuality), media, false);
    }
    let observation = observe(run);
    let passed = observation.is_pass() && run.failure().is_none();
    Reading::of(Some(condition_of(run.kind)), observation, passed)
}

/// Reads a control probe's run: any answer passes (see `control`), a 404 included.
pub fn read_control(run: &ProbeRun) -> Reading {
    let observation = super::control::observe(run);
    let passed = observation.is_pass();
    Reading::of(None, observation, passed)
}

impl Reading {
    fn of(condition: Option<ConditionType>, observation: Observation, passed: bool) -> Self {
        Reading {
            condition,
            reason: observation.reason,
            blame: observation.fault,
            message: observation.detail,
            passed,
        }
    }
}

/// What one run says about one condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Observation {
    pub reason: Reason,
    /// The message, starting with the probe's name, e.g. `sip-register: no answer within 10s`.
    pub detail: String,
    /// `None` when the run passed.
    pub fault: Option<Blame>,
}

impl Observation {
    pub fn passed(reason: Reason, detail: String) -> Self {
        Observation {
            reason,
            detail,
            fault: None,
        }
    }

    pub fn failed(reason: Reason, blame: Blame, detail: String) -> Self {
        Observation {
            reason,
            detail,
            fault: Some(blame),
        }
    }

    pub fn is_pass(&self) -> bool {
        self.fault.is_none()
    }
}

/// The condition a probe feeds.
pub(super) fn condition_of(kind: ProbeKind) -> ConditionType {
    match kind {
        ProbeKind::SipRegister => ConditionType::SipRegistered,
        ProbeKind::SipOptions => ConditionType::SipReachable,
        ProbeKind::SipCall => ConditionType::CallPossible,
        ProbeKind::Http => ConditionType::WebReachable,
        ProbeKind::Stun => ConditionType::StunReachable,
    }
}

/// Reads one run. For an HTTP probe this leaves out the certificate expiry warning, which
/// depends on the policy and the clock (see `web`).
pub(super) fn observe(run: &ProbeRun) -> Observation {
    let name = &run.name;
    let condition = condition_of(run.kind);
    if run.kind == ProbeKind::SipCall {
        return super::call::observe(run, super::call::Context::alone());
    }
    match &run.outcome {
        ProbeOutcome::Stun(outcome) => stun(name, outcome),
        _ => match run.failure() {
            Some(failure) => from_failure(condition, name, failure),
            None => match backup_serving(run) {
                Some(detail) => Observation::passed(Reason::BackupServing, detail),
                None => Observation::passed(condition.reasons()[0], success_detail(run)),
            },
        },
    }
}

/// A failure as `condition` reads it.
pub(super) fn from_failure(condition: ConditionType, name: &str, failure: &Failure) -> Observation {
    let (reason, blame) = cause(condition, failure);
    Observation::failed(reason, blame, format!("{name}: {}", describe(failure)))
}

/// The reason and blame of a failure, for one condition.
pub(super) fn cause(condition: ConditionType, failure: &Failure) -> (Reason, Blame) {
    use Blame::*;
    let (reason, blame) = match failure {
        // The dead server's own failure says why.
        Failure::StunServerFailed { cause: inner, .. } => return cause(condition, inner),
        // The callee's own registration failed: its cause says whose problem that is.
        Failure::CalleeNotRegistered { cause: inner } => (
            Reason::CalleeNotRegistered,
            cause(ConditionType::SipRegistered, inner).1,
        ),
        // NXDOMAIN of the configured name is configuration (issue 3); so is a name without
        // records. A resolver that fails, refuses or gives no answer is this location's
        // resolver.
        Failure::DnsFailure { kind, .. } => match kind {
            DnsErrorKind::NxDomain | DnsErrorKind::NoRecords => (Reason::DnsFailure, Configuration),
            DnsErrorKind::ServFail
            | DnsErrorKind::Refused
            | DnsErrorKind::Timeout
            | DnsErrorKind::ResolverFailed => (Reason::DnsFailure, Local),
        },
        Failure::Timeout { .. } => (Reason::Timeout, Provider),
        Failure::ConnectRefused { .. }
        | Failure::Network { .. }
        | Failure::Protocol { .. }
        | Failure::ContentDecoding { .. } => (Reason::TransportError, Provider),
        Failure::Tls { .. } => (Reason::TlsCertificateInvalid, Provider),
        Failure::AuthRejected { .. } => (Reason::AuthRejected, Configuration),
        Failure::Forbidden => (Reason::Forbidden, Configuration),
        Failure::NotAcceptableHere => (Reason::NotAcceptableHere, Configuration),
        Failure::SipStatus { code, .. } => (Reason::Rejected, sip_status_blame(*code)),
        // The registrar accepted the credentials (so they are right) and still holds no binding
        // for us: calls to the line cannot reach it, and only the provider can change that.
        Failure::NotBound { .. } => (Reason::NotBound, Provider),
        Failure::NoFinalAnswer { .. } => (Reason::Timeout, Provider),
        // The INVITE got no further than 100 Trying: the provider's proxy or gateway.
        Failure::NoRinging { .. } => (Reason::NoRinging, Provider),
        // Rang, never answered: the provider's, if the destination answered before (see
        // `call`, which knows the past); read alone, the number is what to check.
        Failure::NotAnswered { .. } => (Reason::NotAnswered, Configuration),
        Failure::DroppedEarly { .. } => (Reason::DroppedEarly, Provider),
        // No common codec or no SDP: the same setup question as a 488 (seed 004).
        Failure::MediaNotNegotiated { .. } => (Reason::MediaNotNegotiated, Configuration),
        // Seed 004: NAT, firewall, ALG at this location, unless its STUN conditions show
        // otherwise (see `call`).
        Failure::OneWayAudio { .. } => (Reason::OneWayAudio, Local),
        Failure::NoAudio => (Reason::NoAudio, Local),
        Failure::PoorQuality { .. } => (Reason::Degraded, Local),
        Failure::HttpStatus { code } if (500..600).contains(code) => (Reason::HttpStatus, Provider),
        Failure::HttpStatus { .. } => (Reason::HttpStatus, Configuration),
        // The page answers, with other content than the check expects: the expectation or the
        // URL is what to look at first.
        Failure::BodyMismatch { .. } => (Reason::BodyMismatch, Configuration),
        // Seeds 000/002: LAGGED in the PBX log "is usually a NAT problem" at the customer.
        Failure::Lagged { .. } => (Reason::Lagged, Local),
        // Seed 004: two public IPs at the customer.
        Failure::AddressMismatch { .. } => (Reason::AddressMismatch, Local),
        // The server refuses plain Binding requests (e.g. 401: it wants credentials): the
        // configured server is not a plain STUN server.
        Failure::StunError { .. } => (Reason::TransportError, Configuration),
        // The operator's allow-list, not the provider, stopped the probe.
        Failure::TargetNotAllowed { .. } => (Reason::TransportError, Configuration),
    };
    let (reason, blame) = match condition {
        // chan_sip's vocabulary: no reply is UNREACHABLE, whether it timed out or was refused.
        ConditionType::SipReachable => match failure {
            Failure::Timeout { .. }
            | Failure::NoFinalAnswer { .. }
            | Failure::ConnectRefused { .. }
            | Failure::Network { .. } => (Reason::Unreachable, Provider),
            _ => (reason, blame),
        },
        // STUN servers are not the provider's service (seed 004 uses third-party ones): not
        // reaching one points at this location's firewall.
        ConditionType::StunReachable | ConditionType::NatBindingStable if blame == Provider => {
            (reason, Local)
        }
        _ => (reason, blame),
    };
    // A failure class this probe never returns (e.g. HttpStatus from a SIP probe) reads as a
    // transport error rather than as a reason the condition does not document.
    if condition.reasons().contains(&reason) {
        (reason, blame)
    } else {
        (Reason::TransportError, blame)
    }
}

/// A final SIP error response to REGISTER. 5xx is the server failing; 408 Request Timeout and
/// 480 Temporarily Unavailable say the service behind the proxy does not answer. Every other
/// code (4xx, 3xx, 6xx) is the server deliberately refusing this request: configuration.
fn sip_status_blame(code: u16) -> Blame {
    match code {
        408 | 480 | 500..=599 => Blame::Provider,
        _ => Blame::Configuration,
    }
}

/// The failure in words. Measured durations are formatted here, not by the failure's Display
/// (which prints humantime down to the nanosecond).
pub(super) fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Timeout { after } => format!("no answer within {}", format::duration(*after)),
        Failure::Lagged { rtt, threshold } => format!(
            "answered after {}, slower than the {} threshold (LAGGED)",
            format::duration(*rtt),
            format::duration(*threshold)
        ),
        Failure::HttpStatus { code } => format!("HTTP {code}"),
        Failure::SipStatus { code, hint } => match hint {
            Some(hint) => format!("final response {code}, {hint}"),
            None => format!("final response {code}"),
        },
        Failure::NoFinalAnswer { after, arrived } => format!(
            "no final answer within {}; before that the server sent {arrived}",
            format::duration(*after)
        ),
        Failure::StunServerFailed {
            server,
            answered,
            of,
            cause,
        } => format!(
            "STUN server {server} failed ({answered} of {of} answered): {}",
            describe(cause)
        ),
        other => other.to_string(),
    }
}

/// For a SIP probe that passed on a later RFC 3263 target than the first: what served and
/// which targets failed before. Another address of the answering target (IPv4 after IPv6) is
/// Happy Eyeballs doing its job, not a backup.
fn backup_serving(run: &ProbeRun) -> Option<String> {
    let (target, attempts) = match &run.outcome {
        ProbeOutcome::SipRegister(o) => (o.target.as_ref()?, &o.attempts),
        ProbeOutcome::SipOptions(o) => (o.target.as_ref()?, &o.attempts),
        _ => return None,
    };
    let failed: Vec<Attempt> = attempts
        .iter()
        .filter(|a| a.target != target.name)
        .cloned()
        .collect();
    if failed.is_empty() {
        return None;
    }
    Some(format!(
        "{}; served by the backup {}, the primary failed: {}",
        success_detail(run),
        target.name,
        attempts::listing(&failed)
    ))
}

fn success_detail(run: &ProbeRun) -> String {
    let name = &run.name;
    match &run.outcome {
        ProbeOutcome::SipRegister(o) => match (&o.response, o.final_response) {
            (Some(response), Some(after)) => {
                format!("{name}: {response} after {}", format::duration(after))
            }
            _ => format!("{name}: registered"),
        },
        ProbeOutcome::SipOptions(o) => match (&o.response, o.rtt) {
            (Some(response), Some(rtt)) => format!(
                "{name}: {response} after {}, within the {} threshold",
                format::duration(rtt),
                format::duration(o.lagged_threshold)
            ),
            _ => format!("{name}: answered"),
        },
        ProbeOutcome::Http(o) => match o.status {
            Some(code) => format!("{name}: HTTP {code} after {}", format::duration(o.duration)),
            None => format!("{name}: answered"),
        },
        ProbeOutcome::SipCall(_) | ProbeOutcome::Stun(_) | ProbeOutcome::Cancelled(_) => {
            format!("{name}: passed")
        }
    }
}

/// `StunReachable` from the servers' answers. A failure of the NAT measurements (which ran
/// after the Bindings) does not make the servers unreachable, so the Bindings decide unless the
/// servers disagree.
fn stun(name: &str, outcome: &StunOutcome) -> Observation {
    let condition = ConditionType::StunReachable;
    if let Some(failure @ (Failure::AddressMismatch { .. } | Failure::StunServerFailed { .. })) =
        &outcome.failure
    {
        return from_failure(condition, name, failure);
    }
    let bindings: Vec<_> = outcome
        .servers
        .iter()
        .filter_map(|s| match &s.answer {
            ServerAnswer::Binding(b) => Some(b),
            ServerAnswer::Failure(_) => None,
        })
        .collect();
    let answered = format!(
        "{} of {} servers answered",
        bindings.len(),
        outcome.servers.len()
    );
    if let Some(public) = outcome.public_address() {
        return Observation::passed(
            Reason::PublicAddress,
            format!("{name}: public address {public} ({answered})"),
        );
    }
    if !bindings.is_empty() {
        let seen: Vec<String> = bindings
            .iter()
            .map(|b| match b.class {
                AddressClass::Private(kind) => format!("{} {kind:?}", b.mapped.ip()),
                AddressClass::Public => b.mapped.ip().to_string(),
            })
            .collect();
        return Observation::failed(
            Reason::PrivateAddressOnly,
            Blame::Local,
            format!(
                "{name}: only private addresses mapped ({}); clients would offer only private \
                 candidates (seed 004)",
                seen.join(", ")
            ),
        );
    }
    match &outcome.failure {
        Some(failure) => from_failure(condition, name, failure),
        None => Observation::failed(
            Reason::Timeout,
            Blame::Local,
            format!("{name}: no STUN server answered"),
        ),
    }
}

/// The reason `status.lastRun` shows for a probe: the one its condition takes from this run
/// alone (before thresholds), e.g. `Registered`, `Timeout`, `PrivateAddressOnly`.
pub fn probe_reason(run: &ProbeRun) -> Reason {
    observe(run).reason
}
