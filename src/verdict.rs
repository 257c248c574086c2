//! What the probe results mean: pure functions from a check's history and its latest run to
//! conditions and the hotline verdict (DESIGN.md §3). No I/O, no clocks: `now` is an argument,
//! so every row of the hotline table is a plain test case.

use crate::api::TargetKind;
use crate::api::{ConditionStatus, ConditionType, Reason};
use crate::check::{PlanError, RunReport};
use std::time::{Duration, SystemTime};

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
    // SKELETON: consecutive failures/successes per condition, SIP response codes in the window,
    // the outage start.
}

/// One condition as the verdict decides it; lastTransitionTime and observedGeneration are added
/// when the status is written (see `crate::status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionValue {
    pub type_: ConditionType,
    pub status: ConditionStatus,
    pub reason: Reason,
    pub message: String,
}

/// The conditions after a run, and the incident while `HotlineReportable` is True.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub conditions: Vec<ConditionValue>,
    pub incident: Option<IncidentEvidence>,
}

/// What an outage report needs beyond the spec (DESIGN.md §3, seed 002).
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentEvidence {
    pub since: SystemTime,
    /// Codes, timings and failing probes in one short line.
    pub evidence: String,
}

/// Folds one run into the history and decides all conditions.
pub fn evaluate(
    policy: &Policy,
    history: &History,
    report: &RunReport,
    now: SystemTime,
) -> (History, Verdict) {
    let _ = (policy, history, report, now);
    todo!("SKELETON")
}

/// The verdict for a check that cannot run: `Ready=False` with `CredentialsMissing`,
/// `InvalidSpec` or `TargetNotAllowed` and the error's message.
pub fn not_runnable(error: &PlanError) -> Verdict {
    let _ = error;
    todo!("SKELETON")
}
