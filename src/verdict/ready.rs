//! `Ready`: one condition that summarises all others, for `kubectl get` and for alerts that
//! want a single signal per service.

use super::probe::{Blame, Observation};
use super::{ConditionValue, Conditions, failing, listing};
use crate::api::{ConditionStatus, ConditionType, Reason, TargetKind};

/// False as soon as one condition is False (a known failure is worth showing even while other
/// conditions are still pending), with the reason that explains most:
/// - `LocalNetworkProblem` when the control probe fails too;
/// - `ServiceNotResponding` when the web and the SIP side of one cloud both fail on the provider
///   side (seed 002: "the cloud is not started or does not respond"). A wrong password plus a
///   wrong URL is the cloud answering, so configuration failures do not count;
/// - `ProbesFailing` otherwise.
///
/// Else Unknown `Pending` while a condition has no status yet, else True `Healthy`.
pub(super) fn decide(
    target: TargetKind,
    conditions: &Conditions,
    control: Option<&Observation>,
) -> ConditionValue {
    let failing = failing(conditions);
    if !failing.is_empty() {
        let provider_side = |type_: ConditionType| {
            conditions.get(&type_).is_some_and(|t| {
                t.status == ConditionStatus::False && t.blame == Some(Blame::Provider)
            })
        };
        if let Some(control) = control.filter(|c| !c.is_pass()) {
            return ConditionValue::new(
                ConditionType::Ready,
                ConditionStatus::False,
                Reason::LocalNetworkProblem,
                format!(
                    "{} fail, and so does the control probe ({}): check this location's network",
                    listing(&failing),
                    control.detail
                ),
            );
        }
        let sip_down = provider_side(ConditionType::SipRegistered)
            || provider_side(ConditionType::SipReachable);
        if target == TargetKind::Cloud && sip_down && provider_side(ConditionType::WebReachable) {
            return ConditionValue::new(
                ConditionType::Ready,
                ConditionStatus::False,
                Reason::ServiceNotResponding,
                format!(
                    "web and SIP of the cloud both fail: {}; is the cloud started (partner portal)?",
                    listing(&failing)
                ),
            );
        }
        return ConditionValue::new(
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::ProbesFailing,
            format!("failing: {}", listing(&failing)),
        );
    }
    let pending: Vec<&str> = conditions
        .iter()
        .filter(|(_, t)| t.status == ConditionStatus::Unknown)
        .map(|(type_, _)| type_.as_str())
        .collect();
    if !pending.is_empty() {
        return ConditionValue::new(
            ConditionType::Ready,
            ConditionStatus::Unknown,
            Reason::Pending,
            format!("no status yet: {}", pending.join(", ")),
        );
    }
    let notes: Vec<String> = conditions
        .iter()
        .filter(|(type_, t)| !type_.is_plain_success(t.reason))
        .map(|(type_, t)| format!("{type_} ({})", t.reason))
        .collect();
    let message = match notes.is_empty() {
        true => "all probes pass".to_owned(),
        false => format!("all probes pass; note {}", notes.join(", ")),
    };
    ConditionValue::new(
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::Healthy,
        message,
    )
}
