//! `NatBindingStable`: does the NAT in front of this location keep a UDP binding for as long
//! as the phones' keep-alive interval (seeds 000/001/002)?
//!
//! Seed 000 says the phones send a keep-alive every 60 *seconds* and the NAT must keep its
//! entries >= 61 s; seeds 001/002 say *minutes*. The keep-alive is therefore a spec field, and
//! the message states the measured idle time and the configured keep-alive with their units,
//! never a fixed number (DESIGN.md §3).

use super::format;
use super::probe::{Blame, Observation, describe};
use crate::api::Reason;
use crate::check::{ProbeOutcome, ProbeRun};
use std::time::Duration;

/// The measurement, or why this run made none (no STUN server answered, the probe was
/// cancelled, the measurement itself failed). A run without a measurement says nothing about
/// the NAT, so it leaves the condition as it was.
pub(super) fn observe(run: &ProbeRun, keepalive: Option<Duration>) -> Result<Observation, String> {
    let name = &run.name;
    let outcome = match &run.outcome {
        ProbeOutcome::Stun(outcome) => outcome,
        _ => {
            let why = run.failure().map_or("no STUN result".to_owned(), describe);
            return Err(format!("{name}: not measured: {why}"));
        }
    };
    let Some(result) = &outcome.nat_binding else {
        let why = outcome
            .failure
            .as_ref()
            .map_or("no STUN server answered".to_owned(), describe);
        return Err(format!("{name}: not measured: {why}"));
    };
    let idle = format::duration(result.idle);
    let keepalive = keepalive.unwrap_or(result.idle);
    Ok(if result.survived {
        Observation::passed(
            Reason::Stable,
            format!(
                "{name}: NAT binding survived {idle} idle (keep-alive {})",
                format::duration(keepalive)
            ),
        )
    } else {
        Observation::failed(
            Reason::ExpiresBeforeKeepalive,
            Blame::Local,
            format!(
                "{name}: NAT binding expired within {idle} idle, but the phones send a \
                 keep-alive only every {}: set the NAT (UDP) timeout of the router to at least \
                 {} (keep-alive + 1 s)",
                format::duration(keepalive),
                format::duration(keepalive + Duration::from_secs(1))
            ),
        )
    })
}
