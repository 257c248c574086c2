//! `CallPossible` and `MediaQuality`: what a test call means (issue 9, seeds 002 and 004).
//!
//! The call probe reports what happened (the final response, ringing, timings, the audio);
//! here that becomes the two conditions and whose problem a failure is:
//! - 5xx, timeouts and a call that did not ring are the provider's;
//! - 404 Not Found and 480 Temporarily Unavailable, and a call that rang and was never
//!   answered, depend on the destination's past: one that answered before and now does not is
//!   the provider's fault (its routing or media gateway), one that never answered is a wrong
//!   number (configuration). The memory is [`super::History`]'s `answered`;
//! - 403 (seed 002: the daily limit reached) and 488 (seed 004: an ACL or codec) are
//!   configuration;
//! - one-way or no audio is this location's network (NAT, firewall, ALG: seed 004), unless the
//!   STUN conditions show the location is fine (a public address, a NAT binding that is not
//!   too short): then it is the provider's media path. Poor quality is a ticket, never an
//!   outage: the hotline's criterion is "no audio", not "bad audio".

use super::format;
use super::probe::{Blame, Observation, cause, describe};
use super::{CallPolicy, Conditions};
use crate::api::{ConditionStatus, ConditionType, Reason};
use crate::check::{ProbeOutcome, ProbeRun};
use crate::probe::Failure;
use crate::probe::media::MediaReport;
use crate::probe::sip::CallOutcome;
use std::time::Duration;

/// What the verdict knows beyond the run: the threshold and the destination's past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Context {
    /// Whether this destination answered (or rang, for `RingingIsEnough`) an earlier call.
    pub answered_before: bool,
    /// `thresholds.postDialDelay`.
    pub post_dial_delay: Duration,
}

impl Context {
    /// A run read on its own (`voipcheck probe`, `run --once`): no past, the default threshold.
    pub fn alone() -> Self {
        Context {
            answered_before: false,
            post_dial_delay: CallPolicy::DEFAULT_POST_DIAL_DELAY,
        }
    }
}

/// `CallPossible` from one call run. A call whose audio failed was still possible: that is
/// `MediaQuality`'s to say.
pub(super) fn observe(run: &ProbeRun, context: Context) -> Observation {
    let name = &run.name;
    let outcome = match &run.outcome {
        ProbeOutcome::SipCall(outcome) => outcome,
        _ => {
            let failure = run.failure().cloned().unwrap_or(Failure::Timeout {
                after: run.duration,
            });
            return failed(name, &failure, None, context);
        }
    };
    match &outcome.failure {
        Some(failure) if !is_media_failure(failure) => {
            failed(name, failure, Some(outcome), context)
        }
        _ => passed(name, outcome, context),
    }
}

fn passed(name: &str, outcome: &CallOutcome, context: Context) -> Observation {
    let answered = outcome.response.as_ref().filter(|r| r.code < 300);
    let (reason, what) = match (answered, &outcome.ringing) {
        (Some(response), _) => (Reason::Answered, response.to_string()),
        (None, Some(ringing)) => (Reason::Ringing, format!("{ringing}, ringing is enough")),
        (None, None) => (Reason::Answered, "answered".to_owned()),
    };
    let detail = format!("{name}: {what}{}", timings(outcome));
    match outcome.post_dial_delay {
        Some(delay) if delay > context.post_dial_delay => Observation::passed(
            Reason::SlowPostDialDelay,
            format!(
                "{detail}; the post-dial delay is above the {} threshold",
                format::duration(context.post_dial_delay)
            ),
        ),
        _ => Observation::passed(reason, detail),
    }
}

fn failed(
    name: &str,
    failure: &Failure,
    outcome: Option<&CallOutcome>,
    context: Context,
) -> Observation {
    let (reason, blame) = cause(ConditionType::CallPossible, failure);
    let depends_on_the_past = matches!(
        failure,
        Failure::SipStatus {
            code: 404 | 480,
            ..
        } | Failure::NotAnswered { .. }
    );
    let (blame, note) = match (depends_on_the_past, context.answered_before) {
        (true, true) => (Blame::Provider, "; this destination answered before"),
        (true, false) => (
            Blame::Configuration,
            "; this destination never answered: is the number right?",
        ),
        (false, _) => (blame, ""),
    };
    let response = outcome
        .and_then(|o| o.response.as_ref())
        .filter(|r| r.code >= 300)
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let timings = outcome.map(timings).unwrap_or_default();
    Observation::failed(
        reason,
        blame,
        format!("{name}: {}{response}{timings}{note}", describe(failure)),
    )
}

/// `, post-dial delay 80.0 ms, setup 1s 2ms`: the call's timings that were measured.
fn timings(outcome: &CallOutcome) -> String {
    let measured = [
        ("post-dial delay", outcome.post_dial_delay),
        ("setup", outcome.setup_time),
        ("callee reached", outcome.callee_reached),
    ];
    measured
        .iter()
        .filter_map(|(what, d)| d.map(|d| format!(", {what} {}", format::duration(d))))
        .collect()
}

/// The failure classes of the audio, which leave the call itself possible.
fn is_media_failure(failure: &Failure) -> bool {
    matches!(
        failure,
        Failure::OneWayAudio { .. } | Failure::NoAudio | Failure::PoorQuality { .. }
    )
}

/// `MediaQuality` from one call run: `Err` says why no audio was measured (the call failed
/// before or without media), which the condition shows as Unknown `NotMeasured`.
pub(super) fn observe_media(run: &ProbeRun) -> Result<Observation, String> {
    let name = &run.name;
    let outcome = match &run.outcome {
        ProbeOutcome::SipCall(outcome) => outcome,
        _ => {
            let why = run.failure().map_or("no call result".to_owned(), describe);
            return Err(format!("{name}: no audio measured: {why}"));
        }
    };
    let media = match (&outcome.media, &outcome.failure) {
        (Some(media), None) => media,
        (Some(media), Some(failure)) if is_media_failure(failure) => media,
        (_, Some(failure)) => {
            return Err(format!("{name}: no audio measured: {}", describe(failure)));
        }
        (None, None) => return Err(format!("{name}: no audio measured: the call had no media")),
    };
    let figures = figures(media);
    Ok(match &outcome.failure {
        Some(Failure::OneWayAudio { silent }) => Observation::failed(
            Reason::OneWayAudio,
            Blame::Local,
            format!("{name}: one-way audio, no RTP {silent}; {figures}"),
        ),
        Some(Failure::NoAudio) => Observation::failed(
            Reason::NoAudio,
            Blame::Local,
            format!("{name}: no audio, no RTP in either direction; {figures}"),
        ),
        Some(Failure::PoorQuality { mos, threshold }) => Observation::failed(
            Reason::Degraded,
            Blame::Local,
            format!("{name}: MOS {mos} below the {threshold} threshold; {figures}"),
        ),
        _ => Observation::passed(
            Reason::Good,
            format!("{name}: MOS {}; {figures}", media.mos()),
        ),
    })
}

/// Per direction what arrived, and the round trip: `outgoing 250 of 250 packets, 0.0% lost,
/// jitter 0.3 ms, MOS 4.41; incoming …; round trip 41.0 ms`.
fn figures(media: &MediaReport) -> String {
    let mut parts = Vec::new();
    if let Some(outgoing) = &media.outgoing {
        parts.push(format!("outgoing {outgoing}"));
    }
    parts.push(format!("incoming {}", media.incoming));
    if let Some(rtt) = media.round_trip {
        parts.push(format!("round trip {}", format::duration(rtt)));
    }
    parts.join("; ")
}

/// One-way or no audio is the provider's media path when this location is shown to be fine:
/// STUN maps a public address (candidates are not private-only) and the NAT binding is not
/// known to be too short. Otherwise it stays this location's (seed 004).
pub(super) fn blame_media_path(seen: Observation, conditions: &Conditions) -> Observation {
    let public = conditions
        .get(&ConditionType::StunReachable)
        .is_some_and(|t| t.status == ConditionStatus::True && t.reason == Reason::PublicAddress);
    let nat_ok = conditions
        .get(&ConditionType::NatBindingStable)
        .is_none_or(|t| t.status != ConditionStatus::False);
    let no_audio = matches!(seen.reason, Reason::OneWayAudio | Reason::NoAudio);
    if !(no_audio && public && nat_ok) {
        return seen;
    }
    Observation::failed(
        seen.reason,
        Blame::Provider,
        format!(
            "{}; this location maps a public address and keeps its NAT binding: the \
             provider's media path",
            seen.detail
        ),
    )
}
