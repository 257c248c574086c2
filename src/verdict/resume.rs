//! Continuing a check from the status written on its object (DESIGN.md §9): after a restart or
//! a leader change the history in memory is gone, and starting from an empty one would read a
//! reportable outage as `Pending` for `failureThreshold - 1` runs, remove the incident, resolve
//! the page and open it again with a new `since`.
//!
//! What the status gives back: each probe condition's status, reason and message; a False
//! condition counts as past its failure threshold (it stays False until `successThreshold`
//! passing runs) and keeps the start of its failure (the incident's `since` for the conditions
//! the outage consists of, else the condition's lastTransitionTime). What it cannot give back:
//! the runs counted towards a threshold that was not reached yet, and the final responses of
//! the `SipErrorRate` window; until the window is full again, its written verdict stands.

use super::probe::Blame;
use super::threshold::Tracked;
use super::{Conditions, History};
use crate::api::{ConditionStatus, ConditionType, Reason, VoipCheckStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

impl History {
    /// The history that continues `status`, as the check's `policy` counts.
    pub fn resume(policy: &super::Policy, status: &VoipCheckStatus) -> History {
        let hotline = status
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::HotlineReportable.as_str());
        let since = status
            .incident
            .as_ref()
            .map(|i| SystemTime::from(i.since.0));
        let conditions: Conditions = status
            .conditions
            .iter()
            .filter_map(|c| {
                let type_: ConditionType = c.type_.parse().ok()?;
                if matches!(
                    type_,
                    ConditionType::Ready | ConditionType::HotlineReportable
                ) {
                    return None;
                }
                let tracked = resumed(type_, c, policy, hotline, since)?;
                Some((type_, tracked))
            })
            .collect();
        History {
            answered: answered(policy, &conditions),
            conditions,
            responses: Default::default(),
            resumed_at: status.last_run.as_ref().map(|run| time(&run.time)),
        }
    }

    /// Whether the `SipErrorRate` window is still being filled again after a resume at `now`.
    pub(super) fn rebuilding_window(&self, window: Duration, now: SystemTime) -> bool {
        self.resumed_at
            .is_some_and(|at| now.duration_since(at).map_or(true, |age| age < window))
    }
}

/// Whether the written `CallPossible` shows the destination answered before: True, or False
/// for a reason that is the provider's only after an answer (a 404/480 or an unanswered
/// ringing, blamed on the provider by the written hotline verdict).
fn answered(policy: &super::Policy, conditions: &Conditions) -> Option<String> {
    let call = policy.call.as_ref()?;
    let tracked = conditions.get(&ConditionType::CallPossible)?;
    let answered = match tracked.status {
        ConditionStatus::True => true,
        ConditionStatus::False => {
            tracked.blame == Some(Blame::Provider)
                && matches!(tracked.reason, Reason::Rejected | Reason::NotAnswered)
        }
        ConditionStatus::Unknown => false,
    };
    answered.then(|| call.destination.clone())
}

/// One written condition as the threshold logic tracks it; `None` for a status or reason this
/// version does not know (that condition starts afresh).
fn resumed(
    type_: ConditionType,
    condition: &Condition,
    policy: &super::Policy,
    hotline: Option<&Condition>,
    incident_since: Option<SystemTime>,
) -> Option<Tracked> {
    let status: ConditionStatus = condition.status.parse().ok()?;
    let reason: Reason = condition.reason.parse().ok()?;
    let mut tracked = Tracked::pending(condition.message.clone());
    tracked.status = status;
    tracked.reason = reason;
    match status {
        ConditionStatus::True => tracked.successes = policy.success_threshold,
        ConditionStatus::False => {
            // The hotline verdict lists the conditions it rests on as `Type (Reason)`.
            let listed_by = hotline
                .filter(|h| h.message.contains(&format!("{type_} ({reason})")))
                .and_then(|h| h.reason.parse().ok());
            let blame = blame(type_, reason, listed_by);
            tracked.failures = policy.failure_threshold.max(1);
            tracked.since = match (blame, incident_since) {
                (Blame::Provider, Some(since)) => Some(since),
                _ => Some(time(&condition.last_transition_time)),
            };
            tracked.blame = Some(blame);
        }
        ConditionStatus::Unknown => {}
    }
    Some(tracked)
}

/// Where the cause of a written False condition lies. The hotline verdict that lists the
/// condition (reason `hotline`) says so; otherwise the reason does, where it has one cause (see
/// `probe::cause`): of those with two (`HttpStatus` and `Rejected`: 5xx or 4xx, `DnsFailure`:
/// NXDOMAIN or the resolver), the one that is not reportable.
fn blame(type_: ConditionType, reason: Reason, hotline: Option<Reason>) -> Blame {
    match hotline {
        Some(Reason::ProviderOutage) => return Blame::Provider,
        Some(Reason::ConfigurationProblem) => return Blame::Configuration,
        Some(Reason::LocalNetworkProblem) => return Blame::Local,
        _ => {}
    }
    if matches!(
        type_,
        ConditionType::StunReachable | ConditionType::NatBindingStable
    ) {
        return Blame::Local;
    }
    match reason {
        Reason::Timeout
        | Reason::TransportError
        | Reason::TlsCertificateInvalid
        | Reason::Unreachable
        | Reason::NotBound
        | Reason::FrequentErrorCodes
        | Reason::NoRinging
        | Reason::DroppedEarly => Blame::Provider,
        Reason::Lagged
        | Reason::AddressMismatch
        | Reason::OneWayAudio
        | Reason::NoAudio
        | Reason::Degraded => Blame::Local,
        _ => Blame::Configuration,
    }
}

fn time(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> SystemTime {
    SystemTime::from(t.0).max(UNIX_EPOCH)
}
