//! `SipErrorRate`: seed 002 asks STARFACE Connect customers to look for the error codes 404,
//! 480, 500 and 503 in the SIP log, and to call the hotline when they are found "very often".
//! Here: the share of those codes among the final responses the SIP probes received within a
//! time window.

use super::ErrorCodePolicy;
use super::format;
use super::probe::{Blame, Observation};
use crate::api::Reason;
use crate::check::{ProbeOutcome, RunReport};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

/// The final responses (time, code) received within the window, oldest first. Only final
/// responses count: the 401 challenge inside a REGISTER exchange is part of a normal
/// registration, not an error.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct ResponseWindow {
    seen: VecDeque<(SystemTime, u16)>,
}

impl ResponseWindow {
    /// Adds the final responses of this run's SIP probes (received at `report.started`) and
    /// forgets those older than `window` at `now`.
    pub fn record(&mut self, report: &RunReport, window: Duration, now: SystemTime) {
        let codes = report.probes.iter().filter_map(|run| match &run.outcome {
            ProbeOutcome::SipRegister(outcome) => outcome.response.as_ref(),
            ProbeOutcome::SipOptions(outcome) => outcome.response.as_ref(),
            // A test call's final response: where Connect's 404/480/500/503 actually occur.
            ProbeOutcome::SipCall(outcome) => outcome.response.as_ref(),
            _ => None,
        });
        self.seen
            .extend(codes.map(|status| (report.started, status.code)));
        self.seen
            .retain(|(at, _)| now.duration_since(*at).map_or(true, |age| age < window));
    }

    /// Fewer responses than the policy needs to judge.
    pub fn too_few(&self, policy: &ErrorCodePolicy) -> bool {
        self.seen.len() < policy.min_responses as usize
    }

    /// More than `threshold_percent` of at least `min_responses` responses carry a listed code:
    /// False `FrequentErrorCodes`, provider-side (seed 002: contact the Connect team or the
    /// hotline). Fewer responses than `min_responses` cannot tell, so the condition stays True.
    pub fn observe(&self, policy: &ErrorCodePolicy) -> Observation {
        let total = self.seen.len();
        let window = format::duration(policy.window);
        if self.too_few(policy) {
            return Observation::passed(
                Reason::WithinThreshold,
                format!(
                    "{total} final responses in {window}, fewer than the {} needed to judge",
                    policy.min_responses
                ),
            );
        }
        let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
        for (_, code) in &self.seen {
            if policy.codes.contains(code) {
                *counts.entry(*code).or_default() += 1;
            }
        }
        let errors: usize = counts.values().sum();
        if errors * 100 > usize::from(policy.threshold_percent) * total {
            let mut by_count: Vec<(u16, usize)> = counts.into_iter().collect();
            by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let listed: Vec<String> = by_count
                .iter()
                .map(|(code, n)| format!("{code} x{n}"))
                .collect();
            Observation::failed(
                Reason::FrequentErrorCodes,
                Blame::Provider,
                format!(
                    "{} of {total} final responses in {window} (more than {}%)",
                    listed.join(", "),
                    policy.threshold_percent
                ),
            )
        } else {
            let codes: Vec<String> = policy.codes.iter().map(u16::to_string).collect();
            Observation::passed(
                Reason::WithinThreshold,
                format!(
                    "{errors} of {total} final responses in {window} were {} (at most {}%)",
                    codes.join("/"),
                    policy.threshold_percent
                ),
            )
        }
    }
}
