//! From a verdict to the `status` written on the VoipCheck: Kubernetes condition conventions
//! (lastTransitionTime changes only on a real transition, observedGeneration on each
//! condition), `lastRun`, `incident`, and the list of transitions that become Events and the
//! lines `voipcheck run` prints. Pure.

use crate::api::{ConditionStatus, ConditionType, Reason};
use crate::api::{Incident, LastRun, ProbeResult, VoipCheckSpec, VoipCheckStatus};
use crate::check::{ProbeRun, RunReport};
use crate::verdict::{ConditionValue, Verdict, probe_reason};
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
    spec: Option<&VoipCheckSpec>,
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
        let (condition, transition) =
            written_condition(before(value.type_), value, time(now), generation);
        conditions.push(condition);
        transitions.extend(transition);
    }
    let last_run = match run {
        Some(run) => Some(last_run(run)),
        None => previous.and_then(|p| p.last_run.clone()),
    };
    let incident = verdict
        .incident
        .as_ref()
        .zip(spec)
        .map(|(i, spec)| Incident::new(spec, time(i.since), i.evidence.clone()));
    let status = VoipCheckStatus {
        observed_generation: generation,
        conditions,
        last_run,
        incident,
        ..VoipCheckStatus::default()
    };
    (status, transitions)
}

/// `value` as written after `old` (the condition of that type as written before, if any):
/// `lastTransitionTime` stays while the status stays, and is `changed_at` when it changes;
/// the message is [`bounded`]. Also the [`Transition`] when status or reason changed.
///
/// [`next_status`] passes the run's `now` as `changed_at`; the verdict across locations
/// passes the time the locations' own conditions changed.
pub fn written_condition(
    old: Option<&Condition>,
    value: &ConditionValue,
    changed_at: Time,
    generation: Option<i64>,
) -> (Condition, Option<Transition>) {
    let message = bounded(&value.message);
    let last_transition_time = match old {
        Some(c) if c.status == value.status.as_str() => c.last_transition_time.clone(),
        _ => changed_at,
    };
    let from = old.and_then(|c| Some((c.status.parse().ok()?, c.reason.parse().ok()?)));
    let transition = (from != Some((value.status, value.reason))).then(|| Transition {
        type_: value.type_,
        from,
        to: (value.status, value.reason),
        message: message.clone(),
    });
    let condition = Condition {
        type_: value.type_.as_str().to_owned(),
        status: value.status.as_str().to_owned(),
        reason: value.reason.as_str().to_owned(),
        message,
        last_transition_time,
        observed_generation: generation,
    };
    (condition, transition)
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
        unregister: run.unregister(),
    }
}

/// `t` in whole seconds, as `metav1.Time` is serialised.
pub fn time(t: SystemTime) -> Time {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConditionStatus::{False, True};
    use crate::api::TargetKind::Cloud;
    use crate::check::ProbeKind;
    use crate::probe::Failure;
    use crate::verdict::fixtures::*;
    use crate::verdict::{Policy, not_runnable};

    fn spec() -> VoipCheckSpec {
        serde_json::from_value(serde_json::json!({
            "target": { "kind": "Cloud", "name": "maxmuster.starface-cloud.com" },
            "sip": { "server": "sip:maxmuster.starface-cloud.com", "options": {} },
            "report": { "cloudName": "maxmuster", "contact": "NOC +49 721 000" }
        }))
        .unwrap()
    }

    /// Runs a check and writes each verdict as the next status, as the status writer does.
    struct Written {
        check: Check,
        status: Option<VoipCheckStatus>,
        generation: Option<i64>,
    }

    impl Written {
        fn new(policy: Policy) -> Self {
            Written {
                check: Check::new(policy),
                status: None,
                generation: Some(1),
            }
        }

        fn run(&mut self, build: impl Fn(Run) -> Run) -> Vec<Transition> {
            let now = self.check.now();
            let (report, verdict) = self.check.run_report(build);
            self.write(&verdict, Some(&report), now)
        }

        fn write(
            &mut self,
            verdict: &Verdict,
            run: Option<&RunReport>,
            now: SystemTime,
        ) -> Vec<Transition> {
            let (status, transitions) = next_status(
                self.status.as_ref(),
                Some(&spec()),
                verdict,
                run,
                self.generation,
                now,
            );
            self.status = Some(status);
            transitions
        }

        fn condition(&self, type_: ConditionType) -> &Condition {
            let status = self.status.as_ref().expect("written");
            status
                .conditions
                .iter()
                .find(|c| c.type_ == type_.as_str())
                .unwrap_or_else(|| panic!("no {type_}"))
        }

        fn status(&self) -> &VoipCheckStatus {
            self.status.as_ref().expect("written")
        }
    }

    fn kube_time(t: SystemTime) -> Time {
        time(t)
    }

    #[test]
    fn first_status_has_every_condition_with_generation_and_transitions_from_none() {
        let mut written = Written::new(Policy::test(Cloud));
        let transitions = written.run(|r| r.registered().web_ok("web-ui"));
        let types: Vec<&str> = written
            .status()
            .conditions
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(
            types,
            [
                "Ready",
                "SipRegistered",
                "WebReachable",
                "HotlineReportable"
            ]
        );
        let ready = written.condition(ConditionType::Ready);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Healthy")
        );
        assert_eq!(ready.last_transition_time, kube_time(at(0)));
        assert_eq!(ready.observed_generation, Some(1));
        assert_eq!(written.status().observed_generation, Some(1));
        assert_eq!(transitions.len(), 4);
        assert!(transitions.iter().all(|t| t.from.is_none()));
        assert_eq!(
            transitions[1],
            Transition {
                type_: ConditionType::SipRegistered,
                from: None,
                to: (True, Reason::Registered),
                message: "sip-register: 200 OK after 23.0 ms".into(),
            }
        );
    }

    #[test]
    fn last_transition_time_stays_while_the_status_stays() {
        let mut written = Written::new(Policy::test(Cloud));
        written.run(|r| r.register_fails(timeout()));
        let transitions = written.run(|r| r.register_fails(Failure::AuthRejected { code: 401 }));
        let registered = written.condition(ConditionType::SipRegistered);
        assert_eq!(registered.reason, "AuthRejected");
        assert_eq!(
            registered.last_transition_time,
            kube_time(at(0)),
            "same status, new reason: Kubernetes keeps lastTransitionTime"
        );
        let types: Vec<ConditionType> = transitions.iter().map(|t| t.type_).collect();
        assert_eq!(
            types,
            [
                ConditionType::SipRegistered,
                ConditionType::HotlineReportable
            ],
            "a new reason is news: Timeout -> AuthRejected, ProviderOutage -> ConfigurationProblem"
        );
        assert_eq!(transitions[0].from, Some((False, Reason::Timeout)));
        assert_eq!(transitions[0].to, (False, Reason::AuthRejected));
    }

    #[test]
    fn last_transition_time_moves_when_the_status_changes() {
        let mut written = Written::new(Policy::test(Cloud));
        written.run(|r| r.registered());
        written.run(|r| r.registered());
        let transitions = written.run(|r| r.register_fails(timeout()));
        let registered = written.condition(ConditionType::SipRegistered);
        assert_eq!(registered.last_transition_time, kube_time(at(60)));
        let ready = written.condition(ConditionType::Ready);
        assert_eq!(ready.last_transition_time, kube_time(at(60)));
        let changed: Vec<_> = transitions
            .iter()
            .map(|t| (t.type_, t.from, t.to))
            .collect();
        assert_eq!(
            changed,
            [
                (
                    ConditionType::Ready,
                    Some((True, Reason::Healthy)),
                    (False, Reason::ProbesFailing)
                ),
                (
                    ConditionType::SipRegistered,
                    Some((True, Reason::Registered)),
                    (False, Reason::Timeout)
                ),
                (
                    ConditionType::HotlineReportable,
                    Some((False, Reason::Healthy)),
                    (True, Reason::ProviderOutage)
                ),
            ]
        );
    }

    #[test]
    fn a_message_change_alone_is_no_transition() {
        let mut written = Written::new(Policy::test(Cloud).failure_threshold(3));
        written.run(|r| r.registered());
        let transitions = written.run(|r| r.register_fails(timeout()));
        assert_eq!(
            written.condition(ConditionType::SipRegistered).message,
            "sip-register: no answer within 10s (1 of 3 failed runs before False)"
        );
        assert_eq!(transitions, []);
    }

    #[test]
    fn observed_generation_follows_the_spec_generation() {
        let mut written = Written::new(Policy::test(Cloud));
        written.run(|r| r.registered());
        written.generation = Some(7);
        written.run(|r| r.registered());
        assert_eq!(written.status().observed_generation, Some(7));
        assert!(
            written
                .status()
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(7))
        );
    }

    #[test]
    fn last_run_lists_each_probe_and_the_control_with_its_reason() {
        let mut written = Written::new(Policy::test(Cloud));
        written.run(|r| {
            r.registered()
                .lagged(Duration::from_secs(3))
                .cancelled("http:web-ui", ProbeKind::Http)
                .control_ok()
        });
        let last_run = written.status().last_run.clone().unwrap();
        assert_eq!(last_run.time, kube_time(at(0)));
        let probes: Vec<_> = last_run
            .probes
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.success,
                    p.reason.as_str(),
                    p.duration_seconds,
                )
            })
            .collect();
        assert_eq!(
            probes,
            [
                ("sip-register", true, "Registered", 0.023),
                ("sip-options", false, "Lagged", 0.023),
                ("http:web-ui", false, "Timeout", 0.023),
                ("control", true, "Reachable", 0.023),
            ]
        );
    }

    #[test]
    fn a_check_that_cannot_run_keeps_the_last_run_and_drops_probe_conditions() {
        let mut written = Written::new(Policy::test(Cloud));
        written.run(|r| r.registered());
        let last_run = written.status().last_run.clone();
        let error = crate::check::PlanError::CredentialsMissing {
            field: "spec.sip.register.credentialsSecretRef".into(),
            secret: "maxmuster-sip".into(),
            key: None,
        };
        let transitions = written.write(&not_runnable(&error), None, at(45));
        assert_eq!(written.status().last_run, last_run);
        let types: Vec<&str> = written
            .status()
            .conditions
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(types, ["Ready", "HotlineReportable"]);
        let ready = written.condition(ConditionType::Ready);
        assert_eq!(ready.reason, "CredentialsMissing");
        assert_eq!(
            ready.message,
            "spec.sip.register.credentialsSecretRef: Secret maxmuster-sip not found"
        );
        assert_eq!(ready.last_transition_time, kube_time(at(45)));
        assert_eq!(transitions.len(), 2);
    }

    #[test]
    fn incident_while_reportable_with_the_spec_report() {
        let mut written = Written::new(Policy::test(Cloud).failure_threshold(2));
        written.run(|r| r.register_fails(timeout()));
        assert_eq!(written.status().incident, None);
        written.run(|r| r.register_fails(timeout()));
        let incident = serde_json::to_value(written.status().incident.as_ref().unwrap()).unwrap();
        assert_eq!(
            incident,
            serde_json::json!({
                "service": "Cloud",
                "name": "maxmuster.starface-cloud.com",
                "cloudName": "maxmuster",
                "contact": "NOC +49 721 000",
                "since": "2023-11-14T22:13:20Z",
                "evidence": "sip-register: no answer within 10s (2 runs)"
            })
        );
        written.run(|r| r.registered());
        assert_eq!(written.status().incident, None, "gone after recovery");
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = "ä".repeat(MAX_MESSAGE_BYTES);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_MESSAGE_BYTES, "{}", cut.len());
        assert!(cut.ends_with("ä…"));
        assert_eq!(bounded("short"), "short");
    }

    #[test]
    fn a_reason_this_version_does_not_know_is_a_transition_from_none() {
        let mut written = Written::new(Policy::test(Cloud));
        written.run(|r| r.registered());
        let mut previous = written.status().clone();
        previous.conditions[1].reason = "SomethingNewer".into();
        written.status = Some(previous);
        let transitions = written.run(|r| r.registered());
        assert_eq!(transitions.len(), 1);
        assert_eq!(transitions[0].type_, ConditionType::SipRegistered);
        assert_eq!(transitions[0].from, None);
        assert_eq!(
            written
                .condition(ConditionType::SipRegistered)
                .last_transition_time,
            kube_time(at(0)),
            "the status did not change"
        );
    }

    #[test]
    fn status_reads_back_equal_after_a_json_round_trip() {
        let mut written = Written::new(Policy::test(Cloud));
        written.check.pause(Duration::from_millis(987));
        written.run(|r| r.registered().web_ok("web-ui"));
        let json = serde_json::to_string(written.status()).unwrap();
        let read: VoipCheckStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(&read, written.status());
    }

    /// A new leader or a restarted operator: the history in memory is gone, the written
    /// status is what it continues from.
    fn resume(written: &mut Written) {
        let status = written.status().clone();
        written.check.history = crate::verdict::History::resume(&written.check.policy, &status);
    }

    fn provider_outage() -> Policy {
        Policy::test(Cloud)
            .failure_threshold(3)
            .success_threshold(2)
    }

    #[test]
    fn a_reportable_outage_resumed_from_its_status_stays_reportable_with_the_same_since() {
        let mut written = Written::new(provider_outage());
        written.run(|r| r.registered().web_ok("web-ui"));
        let outage_start = written.check.now();
        for _ in 0..3 {
            written.run(|r| r.register_fails(timeout()).web_ok("web-ui"));
        }
        let reportable = written.condition(ConditionType::HotlineReportable).clone();
        assert_eq!(reportable.status, "True");
        let since = written.status().incident.clone().unwrap().since;
        assert_eq!(since, kube_time(outage_start));

        // Without the written status, the outage would start over: Pending, not reportable.
        let mut forgetful = Written::new(provider_outage());
        forgetful.status = written.status.clone();
        forgetful
            .check
            .pause(written.check.now().duration_since(at(0)).unwrap());
        let transitions = forgetful.run(|r| r.register_fails(timeout()).web_ok("web-ui"));
        assert!(!transitions.is_empty(), "the bug this guards against");

        resume(&mut written);
        let transitions = written.run(|r| r.register_fails(timeout()).web_ok("web-ui"));
        assert_eq!(
            transitions,
            [],
            "no Event for a transition that did not happen"
        );
        assert_eq!(
            written.condition(ConditionType::HotlineReportable),
            &Condition {
                message: written
                    .condition(ConditionType::HotlineReportable)
                    .message
                    .clone(),
                ..reportable
            }
        );
        assert_eq!(written.status().incident.as_ref().unwrap().since, since);

        // One passing run is not enough to recover (successThreshold 2): still reportable.
        let transitions = written.run(|r| r.registered().web_ok("web-ui"));
        assert_eq!(transitions, []);
        assert_eq!(
            written.condition(ConditionType::SipRegistered).status,
            "False"
        );
        let transitions = written.run(|r| r.registered().web_ok("web-ui"));
        let changed: Vec<_> = transitions.iter().map(|t| (t.type_, t.to)).collect();
        assert!(
            changed.contains(&(ConditionType::HotlineReportable, (False, Reason::Healthy))),
            "{changed:?}"
        );
    }

    #[test]
    fn a_resumed_failure_keeps_its_blame_even_where_the_reason_has_two() {
        // 503 from the web UI is the provider's; 404 is configuration. Both read HttpStatus.
        for (code, reportable) in [(503, "True"), (404, "False")] {
            let mut written = Written::new(Policy::test(Cloud).success_threshold(3));
            written.run(|r| {
                r.registered()
                    .web_fails("web-ui", Failure::HttpStatus { code })
            });
            let before = written.condition(ConditionType::HotlineReportable).clone();
            assert_eq!(before.status, reportable, "{code}");
            resume(&mut written);
            // A passing run starts the recovery: status, reason and blame stay as written.
            let transitions = written.run(|r| r.registered().web_ok("web-ui"));
            assert_eq!(transitions, [], "{code}");
            let after = written.condition(ConditionType::HotlineReportable);
            assert_eq!(
                (&after.status, &after.reason),
                (&before.status, &before.reason)
            );
        }
    }

    /// A 404 of a destination that answered before is the provider's; after a restart the
    /// written status must keep that memory, or the next 404 would read as a wrong number.
    #[test]
    fn a_resumed_call_outage_remembers_the_destination_answered_before() {
        let not_found = || Failure::SipStatus {
            code: 404,
            hint: None,
        };
        for answered_first in [true, false] {
            let mut written = Written::new(Policy::test(Cloud).call(false));
            if answered_first {
                written.run(|r| {
                    r.registered()
                        .call_answered(Duration::from_millis(80), None)
                });
            }
            written.run(|r| r.registered().call_fails(not_found()));
            resume(&mut written);
            let transitions = written.run(|r| r.registered().call_fails(not_found()));
            assert_eq!(transitions, [], "answered first: {answered_first}");
            let reportable = written.condition(ConditionType::HotlineReportable);
            let expected = match answered_first {
                true => ("True", "ProviderOutage"),
                false => ("False", "ConfigurationProblem"),
            };
            assert_eq!(
                (reportable.status.as_str(), reportable.reason.as_str()),
                expected
            );
        }
    }

    #[test]
    fn a_resumed_error_rate_verdict_stands_until_its_window_can_judge_again() {
        let window = Duration::from_secs(600);
        let policy = Policy::test(Cloud).error_codes(window);
        let mut written = Written::new(policy);
        for _ in 0..10 {
            written.run(|r| {
                r.register_fails(Failure::SipStatus {
                    code: 503,
                    hint: None,
                })
            });
        }
        let rate = written.condition(ConditionType::SipErrorRate).clone();
        assert_eq!(
            (rate.status.as_str(), rate.reason.as_str()),
            ("False", "FrequentErrorCodes")
        );

        resume(&mut written);
        // One response in the new window is too few to judge: the written verdict stands...
        let transitions = written.run(|r| r.registered());
        assert!(
            transitions
                .iter()
                .all(|t| t.type_ != ConditionType::SipErrorRate),
            "{transitions:?}"
        );
        assert_eq!(
            written.condition(ConditionType::SipErrorRate).status,
            "False"
        );
        // ... until a whole window has passed since the resume.
        written.check.pause(window);
        written.run(|r| r.registered());
        assert_eq!(
            written.condition(ConditionType::SipErrorRate).status,
            "True"
        );
    }
}
