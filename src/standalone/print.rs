//! What `voipcheck run` prints on stdout: one line per condition transition, for people or as
//! JSON lines for a log shipper, and with `--once` one line per probe result.

use crate::check::{CheckId, Plan, PlanError, PlannedProbe, ProbeRun};
use crate::status::Transition;
use crate::verdict::{Blame, Reading};
use serde::Serialize;
use std::time::SystemTime;

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `2026-11-24T05:00:00Z default/lab SipRegistered True→False Timeout: no answer within 2s`;
    /// a new reason with the same status reads `False Healthy→LocalNetworkProblem`, a condition
    /// seen for the first time `True Registered`.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A transition as a JSON line.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TransitionLine<'a> {
    time: String,
    namespace: &'a str,
    name: &'a str,
    condition: &'a str,
    /// Absent for a condition seen for the first time.
    #[serde(skip_serializing_if = "Option::is_none")]
    from_status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from_reason: Option<&'a str>,
    status: &'a str,
    reason: &'a str,
    message: &'a str,
}

/// A probe result of `--once` as a JSON line.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProbeLine<'a> {
    namespace: &'a str,
    name: &'a str,
    probe: &'a str,
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    /// The condition this probe feeds, the reason it would show, and on failure whose
    /// problem it is (`Provider`, `Configuration`, `Local`).
    #[serde(skip_serializing_if = "Option::is_none")]
    condition: Option<&'static str>,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    blame: Option<Blame>,
    duration_seconds: f64,
    /// sip-register: how the un-REGISTER went (`removed`, or why not).
    #[serde(skip_serializing_if = "Option::is_none")]
    unregister: Option<String>,
}

/// Whether a check can run (`--once`, `validate`), as a JSON line.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunnableLine<'a> {
    namespace: &'a str,
    name: &'a str,
    runnable: bool,
    message: String,
}

/// One line for `transition` of check `id` at `time`.
pub fn transition(
    format: Format,
    id: &CheckId,
    transition: &Transition,
    time: SystemTime,
) -> String {
    let time = humantime::format_rfc3339_seconds(time).to_string();
    let (status, reason) = transition.to;
    match format {
        Format::Text => {
            let change = match transition.from {
                Some((from, from_reason)) if from == status => {
                    format!("{status} {from_reason}→{reason}")
                }
                Some((from, _)) => format!("{from}→{status} {reason}"),
                None => format!("{status} {reason}"),
            };
            let mut line = format!("{time} {id} {} {change}", transition.type_);
            if !transition.message.is_empty() {
                line.push_str(": ");
                line.push_str(&transition.message);
            }
            line
        }
        Format::Json => json(&TransitionLine {
            time,
            namespace: &id.namespace,
            name: &id.name,
            condition: transition.type_.as_str(),
            from_status: transition.from.map(|(s, _)| s.as_str()),
            from_reason: transition.from.map(|(_, r)| r.as_str()),
            status: status.as_str(),
            reason: reason.as_str(),
            message: &transition.message,
        }),
    }
}

/// One line for a probe's result in a `--once` run, read as its condition would read it: a
/// probe that answered can still fail its condition (a STUN server mapping only a private
/// address is `StunReachable=False PrivateAddressOnly`).
pub fn probe(format: Format, id: &CheckId, run: &ProbeRun, reading: &Reading) -> String {
    let failure = run.failure();
    let seconds = run.duration.as_secs_f64();
    let failed = !reading.passed;
    let message = failed.then(|| match failure {
        Some(failure) => failure.to_string(),
        None => reading.message.clone(),
    });
    match format {
        Format::Text => match (message, reading.blame) {
            (Some(message), blame) => format!(
                "{id} {} FAILED {}{}{}: {message} (after {seconds:.3}s)",
                run.name,
                reading
                    .condition
                    .map_or(String::new(), |c| format!("{} ", c.as_str())),
                reading.reason.as_str(),
                blame.map_or(String::new(), |b| format!(", {}", b.label())),
            ),
            // A failed un-REGISTER does not fail the probe, but the binding stays: say so.
            (None, _) => match run.unregister().filter(|u| u != "removed") {
                Some(unregister) => format!(
                    "{id} {} OK in {seconds:.3}s (un-REGISTER {unregister})",
                    run.name
                ),
                None => format!("{id} {} OK in {seconds:.3}s", run.name),
            },
        },
        Format::Json => json(&ProbeLine {
            namespace: &id.namespace,
            name: &id.name,
            probe: &run.name,
            success: !failed,
            failure: failure.map(|f| f.class()),
            message,
            condition: reading.condition.map(|c| c.as_str()),
            reason: reading.reason.as_str(),
            blame: reading.blame,
            duration_seconds: seconds,
            unregister: run.unregister(),
        }),
    }
}

/// One line for a check of a `--once` run that cannot run at all.
pub fn not_runnable(format: Format, id: &CheckId, error: &PlanError) -> String {
    runnable(format, id, false, error.to_string())
}

/// One line for `voipcheck validate`: check `id` can run, with these probes.
pub fn valid(format: Format, id: &CheckId, plan: &Plan) -> String {
    let probes: Vec<String> = plan
        .probes
        .iter()
        .map(PlannedProbe::name)
        .chain(plan.control.as_ref().map(|_| "control".to_owned()))
        .collect();
    runnable(format, id, true, format!("probes {}", probes.join(", ")))
}

fn runnable(format: Format, id: &CheckId, runnable: bool, message: String) -> String {
    match format {
        Format::Text if runnable => format!("{id} VALID: {message}"),
        Format::Text => format!("{id} NOT RUNNABLE: {message}"),
        Format::Json => json(&RunnableLine {
            namespace: &id.namespace,
            name: &id.name,
            runnable,
            message,
        }),
    }
}

fn json(line: &impl Serialize) -> String {
    // These structs hold strings, numbers and options only, which always serialize.
    serde_json::to_string(line).expect("a line of strings and numbers serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConditionStatus, ConditionType, Reason};
    use std::time::{Duration, UNIX_EPOCH};

    fn sample() -> (CheckId, Transition, SystemTime) {
        let transition = Transition {
            type_: ConditionType::SipRegistered,
            from: Some((ConditionStatus::True, Reason::Registered)),
            to: (ConditionStatus::False, Reason::Timeout),
            message: "no answer within 2s".into(),
        };
        let time = UNIX_EPOCH + Duration::from_secs(1_795_496_400);
        (CheckId::new("default", "lab"), transition, time)
    }

    #[test]
    fn a_transition_reads_as_a_sentence() {
        let (id, transition, time) = sample();
        assert_eq!(
            super::transition(Format::Text, &id, &transition, time),
            "2026-11-24T05:00:00Z default/lab SipRegistered True→False Timeout: no answer within 2s"
        );
        let first = Transition {
            from: None,
            to: (ConditionStatus::True, Reason::Registered),
            message: String::new(),
            ..transition
        };
        assert_eq!(
            super::transition(Format::Text, &id, &first, time),
            "2026-11-24T05:00:00Z default/lab SipRegistered True Registered"
        );
        let reason_only = Transition {
            type_: ConditionType::HotlineReportable,
            from: Some((ConditionStatus::False, Reason::Healthy)),
            to: (ConditionStatus::False, Reason::LocalNetworkProblem),
            message: "stun failing".into(),
        };
        assert_eq!(
            super::transition(Format::Text, &id, &reason_only, time),
            "2026-11-24T05:00:00Z default/lab HotlineReportable False Healthy→LocalNetworkProblem: \
             stun failing"
        );
    }

    #[test]
    fn a_transition_as_json() {
        let (id, transition, time) = sample();
        let line = super::transition(Format::Json, &id, &transition, time);
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "time": "2026-11-24T05:00:00Z",
                "namespace": "default",
                "name": "lab",
                "condition": "SipRegistered",
                "fromStatus": "True",
                "fromReason": "Registered",
                "status": "False",
                "reason": "Timeout",
                "message": "no answer within 2s"
            })
        );
    }

    /// Issue 8: an un-REGISTER that failed is no failed probe, but the line says so.
    #[test]
    fn a_failed_unregister_shows_on_the_ok_line() {
        use crate::check::{ProbeKind, ProbeOutcome};
        use crate::probe::Failure;
        use crate::probe::sip::{RegisterOutcome, StatusLine, UnregisterOutcome};
        let outcome = RegisterOutcome {
            target: None,
            response: Some(StatusLine {
                code: 200,
                reason: "OK".into(),
            }),
            server: None,
            auth_algorithm: None,
            granted_expires: Some(300),
            unregister: Some(UnregisterOutcome {
                response: None,
                failure: Some(Failure::Timeout {
                    after: Duration::from_secs(3),
                }),
            }),
            first_response: None,
            final_response: None,
            total: Duration::from_millis(20),
            attempts: Vec::new(),
            dns_fallbacks: Vec::new(),
            cert_not_after: None,
            failure: None,
            flow: Vec::new(),
        };
        let run = ProbeRun {
            name: "sip-register".into(),
            kind: ProbeKind::SipRegister,
            outcome: ProbeOutcome::SipRegister(outcome),
            duration: Duration::from_millis(20),
        };
        let id = CheckId::new("default", "lab");
        let reading = crate::verdict::read(&run);
        assert_eq!(
            probe(Format::Text, &id, &run, &reading),
            "default/lab sip-register OK in 0.020s (un-REGISTER failed: no answer within 3s)"
        );
        let line: serde_json::Value =
            serde_json::from_str(&probe(Format::Json, &id, &run, &reading)).unwrap();
        assert_eq!(line["success"], true);
        assert_eq!(line["unregister"], "failed: no answer within 3s");
    }
}
