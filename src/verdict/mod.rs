//! What the probe results mean: pure functions from a check's history and its latest run to
//! conditions and the hotline verdict (DESIGN.md §3). No I/O, no clocks: `now` is an argument,
//! so every row of the hotline table is a plain test case.
//!
//! A run is read in three steps:
//! 1. each probe run becomes an observation of its condition: reason, message, and on failure
//!    where the cause lies (provider, configuration, this location) — `probe`, `web`,
//!    `nat`, `error_rate`;
//! 2. thresholds turn observations into condition statuses: `failureThreshold` consecutive
//!    failed runs before False, `successThreshold` passed runs before True again —
//!    `threshold`;
//! 3. `Ready` and `HotlineReportable` summarise the conditions, the control probe deciding
//!    whether failures can be trusted — `control`, `ready`, `hotline`.
//!
//! That is one location's verdict. With several, each location's own is written to its entry
//! of `status.locations`, and `locations` decides the verdict across them.

mod call;
mod control;
mod error_rate;
mod format;
mod hotline;
mod locations;
mod nat;
mod probe;
mod ready;
mod resume;
mod threshold;
mod web;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;

pub use locations::{Across, Aggregate, aggregate};
pub use probe::{Blame, Reading, probe_reason, read, read_control};

use crate::api::TargetKind;
use crate::api::{ConditionStatus, ConditionType, Reason};
use crate::check::{PlanError, ProbeKind, RunReport};
use error_rate::ResponseWindow;
use litemap::LiteMap;
use std::time::{Duration, SystemTime};
use threshold::{Thresholds, Tracked};

/// The parts of a spec the verdict depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub target: TargetKind,
    /// Consecutive failed runs before a condition turns False.
    pub failure_threshold: u32,
    /// Consecutive successful runs before a False condition turns True again.
    pub success_threshold: u32,
    pub error_codes: Option<ErrorCodePolicy>,
    /// The phones' keep-alive interval, when the NAT binding is measured.
    pub keepalive: Option<Duration>,
    /// A certificate expiring sooner than this makes `WebReachable` report
    /// `TlsCertificateExpiring` (still True: the page works today).
    pub cert_expiry_warning: Duration,
    /// The test call, when the check makes one.
    pub call: Option<CallPolicy>,
}

/// `CallPossible` and `MediaQuality`: what the verdict needs of `sip.call`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallPolicy {
    /// Whom the call rings (`call.to`, or `callee:<username>`): a destination that answered
    /// before is remembered by it, so a changed number starts without that memory.
    pub destination: String,
    /// `thresholds.postDialDelay`: a slower ringing is `SlowPostDialDelay`.
    pub post_dial_delay: Duration,
    /// Whether the call measures audio (`call.media`); only then is there a `MediaQuality`.
    pub media: bool,
}

impl CallPolicy {
    /// The default `thresholds.postDialDelay`.
    pub const DEFAULT_POST_DIAL_DELAY: Duration = Duration::from_secs(5);
}

/// `SipErrorRate`: Connect error codes seen "very often" (seed 002).
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorCodePolicy {
    pub codes: Vec<u16>,
    pub window: Duration,
    pub threshold_percent: u8,
    pub min_responses: u32,
}

/// What the verdict remembers between runs of one check.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Every probe condition of the latest run, with its counters and failure start.
    conditions: Conditions,
    /// Final SIP responses within the `SipErrorRate` window.
    responses: ResponseWindow,
    /// When the last run of a written status took place, for a history resumed from it
    /// ([`History::resume`]): the window holds nothing from before.
    resumed_at: Option<SystemTime>,
    /// The test call's destination ([`CallPolicy::destination`]) once a call to it went
    /// through: a 404/480 or an unanswered ringing from then on is the provider's, not a wrong
    /// number (see `call`).
    answered: Option<String>,
}

/// The probe conditions (all but `Ready` and `HotlineReportable`), in `ConditionType` order.
/// A sorted vector, not a BTreeMap: each check's history holds one for as long as the check
/// runs, with 2 to 6 conditions, and a BTreeMap's node has room for 11 (~860 bytes a check).
type Conditions = LiteMap<ConditionType, Tracked>;

/// One condition as the verdict decides it; lastTransitionTime and observedGeneration are added
/// when the status is written (see `crate::status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionValue {
    pub type_: ConditionType,
    pub status: ConditionStatus,
    pub reason: Reason,
    pub message: String,
}

impl ConditionValue {
    pub fn new(
        type_: ConditionType,
        status: ConditionStatus,
        reason: Reason,
        message: String,
    ) -> Self {
        ConditionValue {
            type_,
            status,
            reason,
            message,
        }
    }
}

/// The conditions after a run, and the incident while `HotlineReportable` is True.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub conditions: Vec<ConditionValue>,
    pub incident: Option<IncidentEvidence>,
}

impl Verdict {
    /// The condition of that type, if the verdict includes it.
    pub fn condition(&self, type_: ConditionType) -> Option<&ConditionValue> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Whether `HotlineReportable` is True.
    pub fn is_reportable(&self) -> bool {
        self.condition(ConditionType::HotlineReportable)
            .is_some_and(|c| c.status == ConditionStatus::True)
    }

    /// Whether this location sees a failure on the provider's side: the locations the verdict
    /// across them counts in `failingLocations`.
    pub fn sees_provider_side_failure(&self) -> bool {
        let of = |type_| self.condition(type_).map(|c| (c.status, c.reason));
        locations::provider_side(
            of(ConditionType::Ready),
            of(ConditionType::HotlineReportable),
        )
    }
}

/// What an outage report needs beyond the spec (DESIGN.md §3, seed 002).
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentEvidence {
    pub since: SystemTime,
    /// Codes, timings and failing probes in one short line.
    pub evidence: String,
}

/// Folds one run into the history and decides all conditions.
///
/// The conditions are `Ready`, one per configured probe family (SIP REGISTER, SIP OPTIONS, the
/// error-code window when `policy.error_codes` is set, HTTP, STUN, and the NAT binding when
/// `policy.keepalive` is set or the run measured it), and `HotlineReportable`, in
/// `ConditionType` order with `Ready` first. Which probes are configured is read from the
/// report: every planned probe is in it (one cancelled at the timeout as `Cancelled`).
pub fn evaluate(
    policy: &Policy,
    history: &History,
    report: &RunReport,
    now: SystemTime,
) -> (History, Verdict) {
    let at = report.started;
    let thresholds = Thresholds::new(policy.failure_threshold, policy.success_threshold);
    let mut conditions = Conditions::new();
    let mut fold = |type_: ConditionType, seen: probe::Observation, th: Thresholds| {
        let tracked = Tracked::step(history.conditions.get(&type_), seen, th, at);
        conditions.insert(type_, tracked);
    };
    let first = |kind: ProbeKind| report.probes.iter().find(|run| run.kind == kind);

    for kind in [ProbeKind::SipRegister, ProbeKind::SipOptions] {
        if let Some(run) = first(kind) {
            fold(probe::condition_of(kind), probe::observe(run), thresholds);
        }
    }
    let mut responses = ResponseWindow::default();
    let mut written_error_rate = None;
    if let Some(codes) = &policy.error_codes {
        responses = history.responses.clone();
        responses.record(report, codes.window, now);
        // Resumed from a written status: until the window could hold enough responses again,
        // too few of them cannot overturn the written verdict.
        if history.rebuilding_window(codes.window, now) && responses.too_few(codes) {
            written_error_rate = history.conditions.get(&ConditionType::SipErrorRate);
        }
        // The window with its minimum of responses already smooths over single runs.
        fold(
            ConditionType::SipErrorRate,
            responses.observe(codes),
            Thresholds::NONE,
        );
    }
    let web: Vec<_> = report
        .probes
        .iter()
        .filter(|run| run.kind == ProbeKind::Http)
        .collect();
    if !web.is_empty() {
        let seen = web::observe_all(&web, policy.cert_expiry_warning, now);
        fold(ConditionType::WebReachable, seen, thresholds);
    }
    let call_run = first(ProbeKind::SipCall);
    let mut answered = history.answered.clone();
    if let Some(run) = call_run {
        let call_policy = policy.call.as_ref();
        let destination = call_policy.map(|c| c.destination.clone());
        let context = call::Context {
            answered_before: answered.is_some() && answered == destination,
            post_dial_delay: call_policy
                .map_or(CallPolicy::DEFAULT_POST_DIAL_DELAY, |c| c.post_dial_delay),
        };
        let seen = call::observe(run, context);
        if seen.is_pass() {
            answered = destination;
        }
        fold(ConditionType::CallPossible, seen, thresholds);
    }
    let mut unmeasured = None;
    if let Some(run) = first(ProbeKind::Stun) {
        fold(
            ConditionType::StunReachable,
            probe::observe(run),
            thresholds,
        );
        match nat::observe(run, policy.keepalive) {
            Ok(seen) => fold(ConditionType::NatBindingStable, seen, thresholds),
            Err(why) if policy.keepalive.is_some() => unmeasured = Some(why),
            Err(_) => {}
        }
    }
    if let Some(written) = written_error_rate {
        conditions.insert(ConditionType::SipErrorRate, written.clone());
    }
    if let Some(why) = unmeasured {
        let type_ = ConditionType::NatBindingStable;
        conditions.insert(type_, kept(history, type_, Tracked::pending(why)));
    }
    // After STUN and NAT: whether this location is fine decides whose missing audio it is.
    if let Some(run) = call_run.filter(|_| policy.call.as_ref().is_some_and(|c| c.media)) {
        let type_ = ConditionType::MediaQuality;
        let tracked = match call::observe_media(run) {
            Ok(seen) => {
                let seen = call::blame_media_path(seen, &conditions);
                Tracked::step(history.conditions.get(&type_), seen, thresholds, at)
            }
            Err(why) => kept(history, type_, Tracked::not_measured(why)),
        };
        conditions.insert(type_, tracked);
    }

    let control = report.control.as_ref().map(control::observe);
    let ready = ready::decide(policy.target, &conditions, control.as_ref());
    let (reportable, incident) = hotline::decide(policy.target, &conditions, control.as_ref(), at);
    let verdict = Verdict {
        conditions: std::iter::once(ready)
            .chain(conditions.iter().map(|(type_, t)| {
                ConditionValue::new(*type_, t.status, t.reason, t.message.clone())
            }))
            .chain(std::iter::once(reportable))
            .collect(),
        incident,
    };
    (
        History {
            conditions: compact(conditions),
            responses,
            resumed_at: history.resumed_at,
            answered,
        },
        verdict,
    )
}

/// `conditions` without room to spare: the history keeps them until the next run.
fn compact(conditions: Conditions) -> Conditions {
    let mut sorted = conditions.into_tuple_vec();
    sorted.shrink_to_fit();
    LiteMap::from_sorted_store_unchecked(sorted)
}

/// A condition the latest run could not measure (the NAT binding of a run whose STUN failed,
/// the audio of a call that did not connect): a measured status stays, as the last measurement
/// still stands and a failed call is `CallPossible`'s to show, so one failed run neither hides a
/// known problem nor turns `Ready` Unknown; never measured, it is `otherwise`.
fn kept(history: &History, type_: ConditionType, otherwise: Tracked) -> Tracked {
    match history.conditions.get(&type_) {
        Some(measured) if measured.status != ConditionStatus::Unknown => measured.clone(),
        _ => otherwise,
    }
}

/// The verdict for a check that cannot run: `Ready=False` with `CredentialsMissing`,
/// `InvalidSpec` or `TargetNotAllowed` and the error's message (which names the field, never a
/// value). Nothing was probed, so there is nothing to report: `HotlineReportable=False` with
/// `ConfigurationProblem`.
pub fn not_runnable(error: &PlanError) -> Verdict {
    let reason = match error {
        PlanError::CredentialsMissing { .. } => Reason::CredentialsMissing,
        PlanError::InvalidSpec(_) => Reason::InvalidSpec,
        PlanError::TargetNotAllowed { .. } => Reason::TargetNotAllowed,
    };
    Verdict {
        conditions: vec![
            ConditionValue::new(
                ConditionType::Ready,
                ConditionStatus::False,
                reason,
                error.to_string(),
            ),
            ConditionValue::new(
                ConditionType::HotlineReportable,
                ConditionStatus::False,
                Reason::ConfigurationProblem,
                format!("the check cannot run: {error}"),
            ),
        ],
        incident: None,
    }
}

/// The False conditions, in order.
fn failing(conditions: &Conditions) -> Vec<(ConditionType, &Tracked)> {
    conditions
        .iter()
        .filter(|(_, t)| t.status == ConditionStatus::False)
        .map(|(type_, t)| (*type_, t))
        .collect()
}

/// `SipRegistered (Timeout), WebReachable (HttpStatus)`.
fn listing(conditions: &[(ConditionType, &Tracked)]) -> String {
    conditions
        .iter()
        .map(|(type_, t)| format!("{type_} ({})", t.reason))
        .collect::<Vec<_>>()
        .join(", ")
}
