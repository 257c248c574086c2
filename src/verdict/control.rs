//! The control probe read as what it is asked (seed 002: "is the URL reachable from another
//! location?"): does this location reach the internet at all? Any HTTP response, whatever its
//! status, and any STUN Binding answer, whatever address it maps, say yes. Only a failure to
//! get an answer (DNS, connection, TLS, timeout) says no, and only then are this location's
//! other failures put down to its network (`LocalNetworkProblem`).
//!
//! Reading the control like a service probe would let a control page answering 404 turn a real
//! provider outage into `LocalNetworkProblem`, so that nothing pages.

use super::probe::{Blame, Observation, describe};
use crate::api::Reason;
use crate::check::{ProbeOutcome, ProbeRun};
use crate::probe::stun::ServerAnswer;

/// The control run as an observation: passed when an answer arrived, else failed with the
/// blame on this location.
pub(super) fn observe(run: &ProbeRun) -> Observation {
    let name = &run.name;
    if let Some(answer) = answer(&run.outcome) {
        return Observation::passed(
            Reason::Reachable,
            format!("{name}: {answer}: this location reaches the internet"),
        );
    }
    match run.failure() {
        Some(failure) => Observation::failed(
            Reason::TransportError,
            Blame::Local,
            format!("{name}: {}", describe(failure)),
        ),
        None => Observation::passed(Reason::Reachable, format!("{name}: passed")),
    }
}

/// The answer the control got, in words, if it got one.
fn answer(outcome: &ProbeOutcome) -> Option<String> {
    match outcome {
        ProbeOutcome::Http(http) => http.status.map(|code| format!("HTTP {code}")),
        ProbeOutcome::Stun(stun) => stun.servers.iter().find_map(|server| match &server.answer {
            ServerAnswer::Binding(binding) => Some(format!("mapped {}", binding.mapped.ip())),
            ServerAnswer::Failure(_) => None,
        }),
        _ => None,
    }
}
