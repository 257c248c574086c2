//! `HotlineReportable`: would the vendor's outage hotline accept a report (seed 002)? Only for
//! a failure that persisted (the condition is False, i.e. past `failureThreshold`), on the
//! provider's side, seen while an independent control probe passes, of a provider service.
//!
//! When several answers apply, the first of these wins:
//!
//! 1. nothing is False: `Healthy` (`NotAProviderService` for `target.kind: Other`);
//! 2. `LocalNetworkProblem` when the control probe fails: it tells us this location cannot
//!    trust any of its observations, so no other reading of them holds (seed 002: "is the URL
//!    reachable from another location?");
//! 3. `ProviderOutage` (True) when a provider-side condition is False on a provider service:
//!    an outage is reportable even if, say, the NAT binding is also too short, since the two are
//!    independent and the outage is what the person paged must act on;
//! 4. `ConfigurationProblem`: the server answered and refused the setup (credentials, ACLs,
//!    4xx, NXDOMAIN); definite, and fixable by whoever reads the condition;
//! 5. `LocalNetworkProblem` for failures of this location's network without a failing control
//!    probe (resolver, NAT, STUN, LAGGED);
//! 6. `NotAProviderService`: only provider-side failures, of a target the hotline does not
//!    take reports for.

use super::probe::{Blame, Observation};
use super::threshold::Tracked;
use super::{ConditionValue, Conditions, IncidentEvidence, failing, listing};
use crate::api::{ConditionStatus, ConditionType, Reason, TargetKind};
use std::time::SystemTime;

/// The condition, and the incident while it is True; `at` is when this run started.
pub(super) fn decide(
    target: TargetKind,
    conditions: &Conditions,
    control: Option<&Observation>,
    at: SystemTime,
) -> (ConditionValue, Option<IncidentEvidence>) {
    let failing = failing(conditions);
    let blamed = |blame: Blame| -> Vec<(ConditionType, &Tracked)> {
        failing
            .iter()
            .copied()
            .filter(|(_, t)| t.blame == Some(blame))
            .collect()
    };
    let (provider, configuration, local) = (
        blamed(Blame::Provider),
        blamed(Blame::Configuration),
        blamed(Blame::Local),
    );
    let not_reportable = |reason, message| {
        (
            ConditionValue::new(
                ConditionType::HotlineReportable,
                ConditionStatus::False,
                reason,
                message,
            ),
            None,
        )
    };

    if failing.is_empty() {
        return match target.is_provider_service() {
            true => not_reportable(Reason::Healthy, "no condition is False".to_owned()),
            false => not_reportable(Reason::NotAProviderService, not_a_provider_service(target)),
        };
    }
    if let Some(control) = control.filter(|c| !c.is_pass()) {
        return not_reportable(
            Reason::LocalNetworkProblem,
            format!(
                "the control probe fails too ({}): this location's network is the likely cause \
                 of {}",
                control.detail,
                listing(&failing)
            ),
        );
    }
    if !provider.is_empty() && target.is_provider_service() {
        // A failing control probe returned above: one that is there passes.
        let control_passes = control.is_some();
        let message = format!(
            "provider-side failure of {}; {}",
            listing(&provider),
            match control_passes {
                true => "the control probe passes",
                false => "no control probe configured",
            }
        );
        // The hotline asks whether the service fails from elsewhere too (seed 002); a passing
        // control probe is this location's answer.
        let mut evidence = evidence(&provider);
        if control_passes {
            evidence.push_str("; control probe passes");
        }
        let incident = IncidentEvidence {
            since: provider
                .iter()
                .filter_map(|(_, t)| t.since)
                .min()
                .unwrap_or(at),
            evidence,
        };
        return (
            ConditionValue::new(
                ConditionType::HotlineReportable,
                ConditionStatus::True,
                Reason::ProviderOutage,
                message,
            ),
            Some(incident),
        );
    }
    if !configuration.is_empty() {
        return not_reportable(
            Reason::ConfigurationProblem,
            format!(
                "caused by configuration, not reportable: {}",
                listing(&configuration)
            ),
        );
    }
    if !local.is_empty() {
        return not_reportable(
            Reason::LocalNetworkProblem,
            format!(
                "this location's network, not reportable: {}",
                listing(&local)
            ),
        );
    }
    not_reportable(Reason::NotAProviderService, not_a_provider_service(target))
}

fn not_a_provider_service(target: TargetKind) -> String {
    format!("target kind {target:?} is not a provider service the hotline takes reports for")
}

/// What failed, with codes and timings, and for how many runs: the failing conditions'
/// messages (which start with the probe's name and never hold a credential or URL).
fn evidence(provider: &[(ConditionType, &Tracked)]) -> String {
    provider
        .iter()
        .map(|(_, t)| match t.failures {
            0 => format!("{} (recovering)", t.detail),
            1 => t.detail.clone(),
            n => format!("{} ({n} runs)", t.detail),
        })
        .collect::<Vec<_>>()
        .join("; ")
}
