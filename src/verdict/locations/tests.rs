//! The verdict across locations, rule by rule (see the module documentation). Each location's
//! entry is what that location writes: its own runs through [`super::super::evaluate`] and
//! [`crate::status::next_status`], so the rows read as the situations they cover.

use super::*;
use crate::api::ConditionStatus::{False, True, Unknown};
use crate::api::ConditionType::{HotlineReportable, Ready, SipRegistered, WebReachable};
use crate::api::TargetKind::{self, Cloud, Other};
use crate::check::RunReport;
use crate::probe::Failure;
use crate::status::next_status;
use crate::verdict::Policy;
use crate::verdict::fixtures::*;

/// What the operator passes: its 300 s status refresh plus three 30 s intervals.
const STALE_AFTER: Duration = Duration::from_secs(390);

fn spec(target: TargetKind, locations: &[&str], min_locations: Option<i32>) -> VoipCheckSpec {
    serde_json::from_value(serde_json::json!({
        "target": { "kind": target, "name": "maxmuster.starface-cloud.com" },
        "sip": { "server": "sip:maxmuster.starface-cloud.com", "options": {} },
        "http": [{ "name": "web-ui", "url": "https://maxmuster.starface-cloud.com/" }],
        "locations": locations,
        "report": { "cloudName": "maxmuster", "minLocations": min_locations }
    }))
    .unwrap()
}

fn cloud() -> VoipCheckSpec {
    spec(Cloud, &[], None)
}

/// One location running the check, writing each verdict to its entry as its writer does.
struct Location {
    name: &'static str,
    check: Check,
    written: Option<VoipCheckStatus>,
}

impl Location {
    fn new(name: &'static str) -> Self {
        Location::with(name, Policy::test(Cloud))
    }

    fn with(name: &'static str, policy: Policy) -> Self {
        Location {
            name,
            check: Check::new(policy),
            written: None,
        }
    }

    /// One run, written.
    fn run(mut self, build: impl Fn(Run) -> Run) -> Self {
        self.step(build);
        self
    }

    fn step(&mut self, build: impl Fn(Run) -> Run) {
        let now = self.check.now();
        let (report, verdict): (RunReport, _) = self.check.run_report(build);
        let target = self.check.policy.target;
        let (status, _) = next_status(
            self.written.as_ref(),
            Some(&spec(target, &[], None)),
            &verdict,
            Some(&report),
            Some(1),
            now,
        );
        self.written = Some(status);
    }

    /// Lets time pass without runs (the location stopped writing, or started later).
    fn idle(mut self, idle: Duration) -> Self {
        self.check.pause(idle);
        self
    }

    fn entry(&self) -> LocationStatus {
        let written = self.written.clone().unwrap_or_default();
        LocationStatus {
            name: self.name.to_owned(),
            observed_generation: written.observed_generation,
            conditions: written.conditions,
            last_run: written.last_run,
            incident: written.incident,
            stale: None,
        }
    }
}

fn works(r: Run) -> Run {
    r.registered().web_ok("web-ui").control_ok()
}

/// The cloud neither registers nor serves its web UI, the control probe passes.
fn down(r: Run) -> Run {
    r.register_fails(timeout())
        .web_fails("web-ui", timeout())
        .control_ok()
}

/// Everything fails here, the control probe too: this location's network.
fn cut_off(r: Run) -> Run {
    r.register_fails(timeout())
        .web_fails("web-ui", timeout())
        .control_fails(timeout())
}

/// The verdict at `now` from these locations' entries, with nothing written before.
fn across(spec: &VoipCheckSpec, locations: &[&Location], now: SystemTime) -> Aggregate {
    let entries: Vec<LocationStatus> = locations.iter().map(|l| l.entry()).collect();
    aggregate(&Across {
        spec,
        generation: Some(1),
        entries: &entries,
        previous: None,
        now,
        stale_after: STALE_AFTER,
    })
}

trait Top {
    fn of(&self, type_: ConditionType) -> (&str, &str);
    fn message(&self, type_: ConditionType) -> &str;
}

impl Top for Aggregate {
    fn of(&self, type_: ConditionType) -> (&str, &str) {
        let c = self
            .condition(type_)
            .unwrap_or_else(|| panic!("no {type_} in {self:#?}"));
        (c.status.as_str(), c.reason.as_str())
    }

    fn message(&self, type_: ConditionType) -> &str {
        &self.condition(type_).expect("condition").message
    }
}

#[test]
fn every_location_works_healthy() {
    let office = Location::new("office").run(works);
    let eu_west = Location::new("eu-west").run(works);
    let top = across(&cloud(), &[&office, &eu_west], at(10));
    assert_eq!(top.of(Ready), ("True", "Healthy"));
    assert_eq!(top.of(HotlineReportable), ("False", "Healthy"));
    assert_eq!(top.of(SipRegistered), ("True", "Registered"));
    assert_eq!(top.failing_locations, 0);
    assert_eq!(top.incident, None);
    assert_eq!(top.stale, Vec::<String>::new());
}

#[test]
fn failing_from_one_location_while_another_works_is_that_locations_network() {
    let office = Location::new("office").run(down);
    let eu_west = Location::new("eu-west").run(works);
    assert_eq!(
        office.entry().conditions.last().unwrap().reason,
        "ProviderOutage",
        "the office alone would report it"
    );
    let top = across(&cloud(), &[&office, &eu_west], at(10));
    assert_eq!(top.of(HotlineReportable), ("False", "LocalNetworkProblem"));
    assert_eq!(
        top.message(HotlineReportable),
        "provider-side failure seen from office while the service works from eu-west: \
         reachable from another location, so office's network, not the provider's outage"
    );
    assert_eq!(top.of(Ready), ("False", "LocalNetworkProblem"));
    assert_eq!(
        top.message(Ready),
        "fails from office (False ServiceNotResponding) and works from eu-west: the network \
         of office is the likely cause"
    );
    assert_eq!(top.incident, None);
    assert_eq!(top.failing_locations, 1);
    assert_eq!(top.of(SipRegistered), ("False", "Timeout"));
    assert_eq!(
        top.message(SipRegistered),
        "eu-west: True Registered; office: False Timeout (sip-register: no answer within 10s)"
    );
}

#[test]
fn failing_from_every_location_is_reportable_with_each_locations_evidence() {
    let office = Location::new("office").run(down).run(down);
    // eu-west sees it one run later.
    let eu_west = Location::new("eu-west").run(works).run(down);
    let top = across(&cloud(), &[&office, &eu_west], at(40));
    assert_eq!(top.of(HotlineReportable), ("True", "ProviderOutage"));
    assert_eq!(
        top.message(HotlineReportable),
        "provider-side failure seen from 2 locations (eu-west, office); no location reaches \
         the service"
    );
    assert_eq!(top.of(Ready), ("False", "ServiceNotResponding"));
    assert_eq!(top.failing_locations, 2);
    let incident = top.incident.as_ref().expect("an incident while reportable");
    assert_eq!(incident.since, time(at(0)), "the office saw it first");
    assert_eq!(incident.cloud_name.as_deref(), Some("maxmuster"));
    assert_eq!(
        incident.evidence,
        "eu-west: sip-register: no answer within 10s; http:web-ui: no answer within 10s; control \
         probe passes; office: sip-register: no answer within 10s (2 runs); http:web-ui: no \
         answer within 10s (2 runs); control probe passes"
    );
}

#[test]
fn fewer_failing_locations_than_min_locations_are_not_reportable_yet() {
    let office = Location::new("office").run(down);
    let eu_west = Location::new("eu-west").run(cut_off);
    let two = spec(Cloud, &[], Some(2));
    let top = across(&two, &[&office, &eu_west], at(10));
    assert_eq!(top.of(HotlineReportable), ("False", "TooFewLocations"));
    assert_eq!(
        top.message(HotlineReportable),
        "seen from 1 location (office); spec.report.minLocations is 2"
    );
    assert_eq!(top.incident, None);
    assert_eq!(top.failing_locations, 1);

    // With minLocations 1 the same entries are reportable: eu-west's own network fails, so it
    // neither confirms nor contradicts the office.
    let top = across(&cloud(), &[&office, &eu_west], at(10));
    assert_eq!(top.of(HotlineReportable), ("True", "ProviderOutage"));
    assert_eq!(
        top.incident.unwrap().evidence,
        "eu-west: False LocalNetworkProblem; office: sip-register: no answer within 10s; \
         http:web-ui: no answer within 10s; control probe passes"
    );
}

#[test]
fn min_locations_reached_is_reportable() {
    let office = Location::new("office").run(down);
    let eu_west = Location::new("eu-west").run(down);
    let top = across(&spec(Cloud, &[], Some(2)), &[&office, &eu_west], at(10));
    assert_eq!(top.of(HotlineReportable), ("True", "ProviderOutage"));
    assert_eq!(top.failing_locations, 2);
    assert!(top.is_reportable());
}

#[test]
fn one_location_is_the_top_level_word_for_word() {
    // A sequence with every kind of change: recovery, outage, configuration, local network.
    let runs: [fn(Run) -> Run; 8] = [
        works,
        down,
        down,
        |r| {
            r.register_fails(Failure::AuthRejected { code: 403 })
                .web_ok("web-ui")
        },
        cut_off,
        works,
        |r| r.registered().web_fails("web-ui", http_status(503)),
        |r| r.registered().web_fails("web-ui", http_status(503)),
    ];
    let spec = cloud();
    let mut office = Location::with("office", Policy::test(Cloud).failure_threshold(2));
    let mut top: Option<Aggregate> = None;
    for (n, run) in runs.into_iter().enumerate() {
        office.step(run);
        let entry = office.entry();
        let previous = top.as_ref().map(|t| VoipCheckStatus {
            conditions: t.conditions.clone(),
            ..VoipCheckStatus::default()
        });
        let next = aggregate(&Across {
            spec: &spec,
            generation: Some(1),
            entries: std::slice::from_ref(&entry),
            previous: previous.as_ref(),
            now: office.check.now() + Duration::from_secs(2),
            stale_after: STALE_AFTER,
        });
        assert_eq!(next.conditions, entry.conditions, "run {n}");
        assert_eq!(next.incident, entry.incident, "run {n}");
        assert_eq!(next.observed_generation, entry.observed_generation);
        let failing = i32::from(entry.incident.is_some());
        assert_eq!(next.failing_locations, failing, "run {n}");
        top = Some(next);
    }
    assert!(top.unwrap().incident.is_some(), "the last run is an outage");
}

#[test]
fn a_location_that_stopped_writing_is_left_out_and_listed_as_stale() {
    // eu-west worked, then stopped writing; the office has seen an outage since.
    let eu_west = Location::new("eu-west").run(works);
    let office = Location::new("office")
        .idle(Duration::from_secs(600))
        .run(down);
    let now = at(610);
    let top = across(&cloud(), &[&office, &eu_west], now);
    assert_eq!(top.stale, ["eu-west"]);
    assert_eq!(top.of(HotlineReportable), ("True", "ProviderOutage"));
    assert_eq!(
        top.conditions,
        office.entry().conditions,
        "the office alone decides"
    );
    assert_eq!(top.failing_locations, 1);

    // Just within the bound, eu-west still counts: not reportable.
    let top = across(&cloud(), &[&office, &eu_west], at(0) + STALE_AFTER);
    assert_eq!(top.stale, Vec::<String>::new());
    assert_eq!(top.of(HotlineReportable), ("False", "LocalNetworkProblem"));
}

#[test]
fn only_stale_locations_know_nothing() {
    let office = Location::new("office").run(down);
    let eu_west = Location::new("eu-west").run(works);
    let top = across(&cloud(), &[&office, &eu_west], at(1000));
    assert_eq!(top.stale, ["eu-west", "office"]);
    assert_eq!(top.of(Ready), ("Unknown", "LocationsStale"));
    assert_eq!(top.of(HotlineReportable), ("Unknown", "LocationsStale"));
    assert_eq!(
        top.message(Ready),
        "no location has written within 6m 30s: eu-west (last run 2023-11-14T22:13:20Z), \
         office (last run 2023-11-14T22:13:20Z)"
    );
    assert_eq!(
        top.conditions.len(),
        2,
        "the probes' conditions are not known"
    );
    assert_eq!(top.incident, None);
    assert_eq!(top.failing_locations, 0);
}

#[test]
fn no_entry_at_all_is_pending() {
    let top = across(&cloud(), &[], at(0));
    assert_eq!(top.of(Ready), ("Unknown", "Pending"));
    assert_eq!(top.conditions.len(), 1);
    assert_eq!(top.observed_generation, Some(1));
    assert_eq!(top.stale, Vec::<String>::new());
}

#[test]
fn entries_of_locations_the_spec_does_not_select_do_not_count() {
    let office = Location::new("office").run(down);
    let eu_west = Location::new("eu-west").run(works);
    let only_office = spec(Cloud, &["office"], None);
    let top = across(&only_office, &[&office, &eu_west], at(10));
    assert_eq!(top.of(HotlineReportable), ("True", "ProviderOutage"));
    assert_eq!(top.conditions, office.entry().conditions);

    // A location left out neither counts nor becomes stale: it is not asked to write.
    let top = across(&only_office, &[&office, &eu_west], at(10) + STALE_AFTER * 2);
    assert_eq!(top.stale, ["office"]);
}

#[test]
fn configuration_in_one_location_is_configuration_even_where_another_works() {
    let office = Location::new("office").run(|r| {
        r.register_fails(Failure::AuthRejected { code: 401 })
            .web_ok("web-ui")
    });
    let eu_west = Location::new("eu-west").run(works);
    let top = across(&cloud(), &[&office, &eu_west], at(10));
    assert_eq!(top.of(HotlineReportable), ("False", "ConfigurationProblem"));
    assert!(
        top.message(HotlineReportable)
            .starts_with("office: caused by configuration"),
        "{}",
        top.message(HotlineReportable)
    );
    assert_eq!(top.of(Ready), ("False", "ProbesFailing"));
    assert_eq!(top.of(SipRegistered), ("False", "AuthRejected"));
    assert_eq!(top.failing_locations, 0);
}

#[test]
fn a_local_network_problem_and_a_working_location_is_that_locations_network() {
    let office = Location::new("office").run(cut_off);
    let eu_west = Location::new("eu-west").run(works);
    let top = across(&cloud(), &[&office, &eu_west], at(10));
    assert_eq!(top.of(HotlineReportable), ("False", "LocalNetworkProblem"));
    assert_eq!(top.of(Ready), ("False", "LocalNetworkProblem"));
    assert_eq!(top.failing_locations, 0);
}

#[test]
fn a_location_whose_control_fails_does_not_hide_the_reason_of_one_whose_control_passes() {
    // "eu-west" sorts before "office": its LocalNetworkProblem would be the first False Ready.
    let eu_west = Location::new("eu-west").run(cut_off);
    let office = Location::new("office").run(|r| {
        r.register_fails(Failure::AuthRejected { code: 401 })
            .web_ok("web-ui")
            .control_ok()
    });
    let top = across(&cloud(), &[&office, &eu_west], at(10));
    assert_eq!(top.of(Ready), ("False", "ProbesFailing"));
    assert_eq!(top.of(SipRegistered), ("False", "AuthRejected"));
    assert_eq!(
        top.message(Ready),
        "eu-west: False LocalNetworkProblem (SipRegistered (Timeout), WebReachable (Timeout) \
         fail, and so does the control probe (control: no answer within 10s): check this \
         location's network); office: False ProbesFailing (failing: SipRegistered \
         (AuthRejected))"
    );

    // Only untrusted failures: their reason stands.
    let office = Location::new("office").run(works);
    let top = across(&cloud(), &[&office, &eu_west], at(10));
    assert_eq!(top.of(Ready), ("False", "LocalNetworkProblem"));
}

#[test]
fn not_a_provider_service_fails_everywhere_and_is_not_reportable() {
    let office = Location::with("office", Policy::test(Other)).run(down);
    let eu_west = Location::with("eu-west", Policy::test(Other)).run(down);
    let top = across(&spec(Other, &[], None), &[&office, &eu_west], at(10));
    assert_eq!(top.of(HotlineReportable), ("False", "NotAProviderService"));
    assert_eq!(top.failing_locations, 2);
    assert_eq!(top.incident, None);
}

#[test]
fn a_noteworthy_success_is_not_lost_behind_a_plain_one() {
    let office = Location::new("office").run(works);
    let expiring = at(0) + Duration::from_secs(3 * 86_400);
    let eu_west =
        Location::new("eu-west").run(|r| r.registered().web_cert("web-ui", expiring).control_ok());
    let top = across(&cloud(), &[&office, &eu_west], at(10));
    assert_eq!(top.of(WebReachable), ("True", "TlsCertificateExpiring"));
}

#[test]
fn what_this_version_does_not_know_is_left_out_without_failing() {
    let mut entry = Location::new("office").run(works).entry();
    entry.conditions[1].reason = "SomethingNewer".into();
    entry.conditions.push(Condition {
        type_: "FutureCondition".into(),
        status: "Maybe".into(),
        ..entry.conditions[0].clone()
    });
    let spec = cloud();
    let top = aggregate(&Across {
        spec: &spec,
        generation: Some(1),
        entries: &[entry],
        previous: None,
        now: at(10),
        stale_after: STALE_AFTER,
    });
    let types: Vec<&str> = top.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["Ready", "WebReachable", "HotlineReportable"]);
}

/// The aggregator's sequence of writes: each aggregate written as the next `previous`.
struct Written {
    spec: VoipCheckSpec,
    status: Option<VoipCheckStatus>,
}

impl Written {
    fn aggregate(&mut self, locations: &[&Location], now: SystemTime) -> Vec<Transition> {
        let entries: Vec<LocationStatus> = locations.iter().map(|l| l.entry()).collect();
        let top = aggregate(&Across {
            spec: &self.spec,
            generation: Some(1),
            entries: &entries,
            previous: self.status.as_ref(),
            now,
            stale_after: STALE_AFTER,
        });
        self.status = Some(VoipCheckStatus {
            conditions: top.conditions,
            ..VoipCheckStatus::default()
        });
        top.transitions
    }

    fn since(&self, type_: ConditionType) -> Time {
        let status = self.status.as_ref().expect("written");
        let c = status.conditions.iter().find(|c| c.type_ == type_.as_str());
        c.expect("condition").last_transition_time.clone()
    }
}

#[test]
fn last_transition_time_is_when_the_locations_changed_and_stays_while_the_status_stays() {
    let mut written = Written {
        spec: cloud(),
        status: None,
    };
    let mut office = Location::new("office").run(works);
    let mut eu_west = Location::new("eu-west").run(works);
    written.aggregate(&[&office, &eu_west], at(5));
    assert_eq!(
        written.since(Ready),
        time(at(0)),
        "when the locations saw it"
    );

    // The office fails at 30 s, aggregated at 45 s: the top level changed at 30 s.
    office = office.run(down);
    eu_west = eu_west.run(works);
    let transitions = written.aggregate(&[&office, &eu_west], at(45));
    assert_eq!(written.since(Ready), time(at(30)));
    let changed: Vec<_> = transitions
        .iter()
        .map(|t| (t.type_, t.from, t.to))
        .collect();
    assert!(
        changed.contains(&(
            HotlineReportable,
            Some((False, Reason::Healthy)),
            (False, Reason::LocalNetworkProblem)
        )),
        "{changed:?}"
    );
    assert!(changed.contains(&(
        Ready,
        Some((True, Reason::Healthy)),
        (False, Reason::LocalNetworkProblem)
    )));

    // eu-west fails too at 60 s: Ready stays False since 30 s, HotlineReportable turns True.
    office = office.run(down);
    eu_west = eu_west.run(down);
    let transitions = written.aggregate(&[&office, &eu_west], at(61));
    assert_eq!(written.since(Ready), time(at(30)), "still False since 30 s");
    assert_eq!(written.since(HotlineReportable), time(at(60)));
    assert!(
        transitions
            .iter()
            .any(|t| t.type_ == HotlineReportable && t.to == (True, Reason::ProviderOutage))
    );

    // Nothing new: no transition, no time moves.
    assert_eq!(written.aggregate(&[&office, &eu_west], at(75)), []);
    assert_eq!(written.since(HotlineReportable), time(at(60)));
}

#[test]
fn a_change_because_a_location_went_stale_dates_from_when_it_did() {
    let mut written = Written {
        spec: cloud(),
        status: None,
    };
    let mut office = Location::new("office").run(works).run(down);
    let eu_west = Location::new("eu-west").run(works).run(works);
    written.aggregate(&[&office, &eu_west], at(31));
    assert_eq!(
        written
            .status
            .as_ref()
            .unwrap()
            .conditions
            .last()
            .unwrap()
            .reason,
        "LocalNetworkProblem"
    );
    // eu-west stops writing after its run at 30 s; the office keeps failing (since 30 s).
    for _ in 0..18 {
        office = office.run(down);
    }
    let transitions = written.aggregate(&[&office, &eu_west], at(600));
    assert!(
        transitions
            .iter()
            .any(|t| t.type_ == HotlineReportable && t.to == (True, Reason::ProviderOutage)),
        "{transitions:?}"
    );
    assert_eq!(
        written.since(HotlineReportable),
        time(at(30) + STALE_AFTER),
        "reportable since eu-west's view went stale, not since the office saw the failure"
    );

    // Only stale entries: unknown since the last of them went stale.
    let transitions = written.aggregate(&[&office, &eu_west], at(2000));
    assert!(
        transitions
            .iter()
            .any(|t| t.to == (Unknown, Reason::LocationsStale))
    );
    assert_eq!(written.since(Ready), time(at(570) + STALE_AFTER));
}
