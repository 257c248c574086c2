//! `WebReachable`: all HTTP probes of a check together (cloud web UI, customer center, partner
//! portal, push server; seed 002). The message names each failing URL by its probe name.

use super::format;
use super::probe::{Blame, Observation, observe};
use crate::api::Reason;
use crate::check::{ProbeOutcome, ProbeRun};
use std::time::{Duration, SystemTime};

/// Failing probes decide the reason: the first provider-side failure if there is one (so a 503
/// on one URL is not hidden behind a 404 on another), else the first failure. When all pass,
/// a presented certificate (leaf or intermediate) expiring within `warning` gives `TlsCertificateExpiring`, still True: the
/// pages work today.
pub(super) fn observe_all(runs: &[&ProbeRun], warning: Duration, now: SystemTime) -> Observation {
    let observed: Vec<Observation> = runs.iter().map(|run| observe(run)).collect();
    let failing: Vec<(&Observation, Blame)> = observed
        .iter()
        .filter_map(|o| o.fault.map(|blame| (o, blame)))
        .collect();
    if let Some(&first) = failing.first() {
        let (lead, blame) = failing
            .iter()
            .copied()
            .find(|(_, blame)| *blame == Blame::Provider)
            .unwrap_or(first);
        let detail = join(failing.iter().map(|(o, _)| o.detail.as_str()));
        return Observation::failed(lead.reason, blame, detail);
    }
    let expiring: Vec<Option<SystemTime>> =
        runs.iter().map(|run| expires(run, warning, now)).collect();
    let details: Vec<String> = runs
        .iter()
        .zip(&observed)
        .zip(&expiring)
        .map(|((run, o), not_after)| match not_after {
            Some(not_after) => format!(
                "{}: certificate expires {} (in {} days)",
                run.name,
                format::time(*not_after),
                format::days_until(*not_after, now)
            ),
            None => o.detail.clone(),
        })
        .collect();
    let reason = if expiring.iter().any(Option::is_some) {
        Reason::TlsCertificateExpiring
    } else {
        Reason::Reachable
    };
    let detail = join(details.iter().map(String::as_str));
    Observation::passed(reason, detail)
}

/// The presented chain's earliest notAfter, when it falls within `warning` from `now`.
fn expires(run: &ProbeRun, warning: Duration, now: SystemTime) -> Option<SystemTime> {
    match &run.outcome {
        ProbeOutcome::Http(outcome) => outcome
            .cert_not_after
            .filter(|not_after| *not_after < now + warning),
        _ => None,
    }
}

fn join<'a>(parts: impl Iterator<Item = &'a str>) -> String {
    parts.collect::<Vec<_>>().join("; ")
}
