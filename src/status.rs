//! From a verdict to the `status` written on the VoipCheck: Kubernetes condition conventions
//! (lastTransitionTime changes only on a real transition, observedGeneration on each
//! condition), `lastRun`, `incident`, and the list of transitions that become Events and the
//! lines `voipcheck run` prints. Pure.

use crate::api::{ConditionStatus, ConditionType, Reason};
use crate::api::{Incident, LastRun, ProbeResult, VoipCheckSpec, VoipCheckStatus};
use crate::check::{ProbeRun, RunReport};
use crate::verdict::{Verdict, probe_reason};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest condition message written. Messages are short by design; this bounds the rare long
/// one (many failing URLs) so the status, and an Event built from a transition (whose note the
/// API server limits to 1 kB), stay valid.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// A condition that changed status or reason.
///
/// Kubernetes moves `lastTransitionTime` only when the status changes; a new reason with the
/// same status (SipRegistered False `Timeout` -> False `AuthRejected`) is still news for the
/// person watching Events and `voipcheck run`, so it is a transition here. A message change
/// alone (new timings) is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub type_: ConditionType,
    /// `None` for a condition seen for the first time (or whose previous reason this version
    /// does not know).
    pub from: Option<(ConditionStatus, Reason)>,
    pub to: (ConditionStatus, Reason),
    pub message: String,
}

/// The next status and what changed since `previous`.
///
/// Conditions appear in the verdict's order (`Ready` first, then `ConditionType` order);
/// conditions the verdict no longer includes (a probe removed from the spec) are dropped.
/// `lastRun` comes from `run`, or stays as it was when there was no run (a check that cannot
/// run). Times are whole seconds, as the API server stores them, so a status read back
/// compares equal to the one written.
pub fn next_status(
    previous: Option<&VoipCheckStatus>,
    spec: &VoipCheckSpec,
    verdict: &Verdict,
    run: Option<&RunReport>,
    generation: Option<i64>,
    now: SystemTime,
) -> (VoipCheckStatus, Vec<Transition>) {
    let before = |type_: ConditionType| {
        previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == type_.as_str()))
    };
    let mut conditions = Vec::with_capacity(verdict.conditions.len());
    let mut transitions = Vec::new();
    for value in &verdict.conditions {
        let message = bounded(&value.message);
        let old = before(value.type_);
        let status_unchanged = old.is_some_and(|c| c.status == value.status.as_str());
        let last_transition_time = match old {
            Some(c) if status_unchanged => c.last_transition_time.clone(),
            _ => time(now),
        };
        let from = old.and_then(|c| Some((parse_status(&c.status)?, c.reason.parse().ok()?)));
        if from != Some((value.status, value.reason)) {
            transitions.push(Transition {
                type_: value.type_,
                from,
                to: (value.status, value.reason),
                message: message.clone(),
            });
        }
        conditions.push(Condition {
            type_: value.type_.as_str().to_owned(),
            status: value.status.as_str().to_owned(),
            reason: value.reason.as_str().to_owned(),
            message,
            last_transition_time,
            observed_generation: generation,
        });
    }
    let last_run = match run {
        Some(run) => Some(last_run(run)),
        None => previous.and_then(|p| p.last_run.clone()),
    };
    let incident = verdict
        .incident
        .as_ref()
        .map(|i| Incident::new(spec, time(i.since), i.evidence.clone()));
    let status = VoipCheckStatus {
        observed_generation: generation,
        conditions,
        last_run,
        incident,
    };
    (status, transitions)
}

/// The run's probes in report order, the control probe last (named `control`).
fn last_run(run: &RunReport) -> LastRun {
    LastRun {
        time: time(run.started),
        probes: run
            .probes
            .iter()
            .chain(run.control.as_ref())
            .map(probe_result)
            .collect(),
    }
}

fn probe_result(run: &ProbeRun) -> ProbeResult {
    ProbeResult {
        name: run.name.clone(),
        success: run.failure().is_none(),
        reason: probe_reason(run).as_str().to_owned(),
        // Milliseconds are what a person reads; more digits are noise in the status.
        duration_seconds: run.duration.as_millis() as f64 / 1000.0,
    }
}

fn parse_status(status: &str) -> Option<ConditionStatus> {
    [
        ConditionStatus::True,
        ConditionStatus::False,
        ConditionStatus::Unknown,
    ]
    .into_iter()
    .find(|s| s.as_str() == status)
}

/// `t` in whole seconds, as `metav1.Time` is serialised.
fn time(t: SystemTime) -> Time {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    Time(Timestamp::from_second(secs).unwrap_or(Timestamp::MAX))
}

/// `message`, cut at a character boundary to at most [`MAX_MESSAGE_BYTES`] with an ellipsis.
fn bounded(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_owned();
    }
    let ellipsis = "…";
    let mut end = MAX_MESSAGE_BYTES - ellipsis.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &message[..end])
}
