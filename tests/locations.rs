//! Two locations in one cluster (DESIGN.md §9): two whole operators (`operator::run`) on the
//! in-test API server, `eu-west` aggregating and `office` not (`--aggregate=false`), each
//! probing through its own DNS server, as two networks see the same provider differently:
//! `slow.voipcheck.test` leads to Kamailio from eu-west and to a dead port from office. The
//! control probe (nginx) passes in both.

mod support;

use http::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};
use support::dns::Unbound;
use support::fake_api::{FakeApi, Kind, Logged, Matcher};
use support::kamailio::Kamailio;
use support::nginx::Nginx;
use support::operator::RunningOperator;
use voipcheck::operator::decide::STATUS_REFRESH;

const NS: &str = "telephony";
/// Runs every 5 s (the shortest interval), each probe within 1 s.
const INTERVAL: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(60);

/// The peers and the API server both locations share, and each location's DNS server.
struct Cluster {
    api: FakeApi,
    kamailio: Kamailio,
    nginx: Nginx,
    eu_west_dns: Unbound,
    office_dns: Unbound,
}

impl Cluster {
    fn start() -> Cluster {
        let kamailio = Kamailio::start();
        Cluster {
            api: FakeApi::start(),
            eu_west_dns: Unbound::start(&[("SIP", kamailio.port)]),
            // SIP not given: a port nothing listens on.
            office_dns: Unbound::start(&[]),
            kamailio,
            nginx: Nginx::start(),
        }
    }

    /// The operator of `location`, its own Lease, resolving through `dns`.
    fn location(&self, location: &str, aggregate: bool, dns: &Unbound) -> RunningOperator {
        let location = location.to_owned();
        let nameserver = dns.addr;
        RunningOperator::start_configured(&self.api, NS, &format!("{location}-0"), |config| {
            config.lease.name = format!("voipcheck-{location}");
            config.location = location;
            config.aggregate = aggregate;
            config.nameserver = Some(nameserver);
        })
    }

    fn eu_west(&self) -> RunningOperator {
        self.location("eu-west", true, &self.eu_west_dns)
    }

    fn office(&self) -> RunningOperator {
        self.location("office", false, &self.office_dns)
    }

    /// A Cloud check whose SIP OPTIONS go to `server`, run in `locations` (empty: every one).
    fn check(&self, name: &str, server: &str, locations: &[&str]) -> Value {
        json!({
            "apiVersion": "voipcheck.io/v1alpha1", "kind": "VoipCheck",
            "metadata": { "name": name, "namespace": NS },
            "spec": {
                "target": { "kind": "Cloud", "name": format!("{name}.example") },
                "interval": "5s", "timeout": "1s", "failureThreshold": 1,
                "sip": { "server": server, "options": { "laggedThreshold": "500ms" } },
                "control": { "url": self.nginx.http_url("/").to_string() },
                "locations": locations
            }
        })
    }

    /// Kamailio, reached the same way from both locations.
    fn reachable(&self) -> String {
        format!("sip:backup.voipcheck.test:{}", self.kamailio.port)
    }

    /// Waits until check `name`'s status satisfies `ready`; returns it.
    async fn status_when(&self, name: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        self.api
            .wait_until(what, WAIT, |api| api.status(NS, name).filter(|s| ready(s)))
            .await
    }
}

/// The entry of `location` in `status`.
fn entry<'a>(status: &'a Value, location: &str) -> Option<&'a Value> {
    status["locations"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == location)
}

fn condition<'a>(conditions: &'a Value, type_: &str) -> Option<&'a Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == type_)
}

/// (status, reason) of condition `type_` in `conditions`.
fn verdict(conditions: &Value, type_: &str) -> Option<(String, String)> {
    let c = condition(conditions, type_)?;
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
    ))
}

fn pair(status: &str, reason: &str) -> Option<(String, String)> {
    Some((status.to_owned(), reason.to_owned()))
}

/// Both locations have written an entry of generation 1 with a run, and the aggregate counts
/// both.
fn both_written(status: &Value) -> bool {
    ["eu-west", "office"].iter().all(|l| {
        entry(status, l).is_some_and(|e| e["observedGeneration"] == 1 && e["lastRun"].is_object())
    }) && status["failingLocations"].is_i64()
        && condition(&status["conditions"], "HotlineReportable").is_some()
}

/// The status writes to check `name` so far.
fn status_writes(api: &FakeApi, name: &str) -> Vec<Logged> {
    let path = format!("/voipchecks/{name}/status");
    api.requests_matching(&Matcher::request(Method::PATCH, &path))
}

/// The keys of a JSON object.
fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_locations_write_their_own_entries_and_the_aggregate_weighs_them() {
    let cluster = Cluster::start();
    let api = &cluster.api;
    let reachable = cluster.reachable();
    let stored = api.insert(cluster.check("both-work", &reachable, &[]));
    let uid = stored["metadata"]["uid"].clone();
    api.insert(cluster.check("office-fails", "sip:slow.voipcheck.test", &[]));
    api.insert(cluster.check("both-fail", "sip:primary.voipcheck.test:5060", &[]));
    let eu_west = cluster.eu_west();
    let office = cluster.office();

    // Both working: the top level is their common verdict.
    let status = cluster
        .status_when("both-work", "both entries and the aggregate", both_written)
        .await;
    for location in ["eu-west", "office"] {
        let own = entry(&status, location).unwrap();
        assert_eq!(
            verdict(&own["conditions"], "Ready"),
            pair("True", "Healthy"),
            "{location}"
        );
    }
    assert_eq!(
        verdict(&status["conditions"], "Ready"),
        pair("True", "Healthy")
    );
    assert_eq!(
        verdict(&status["conditions"], "HotlineReportable"),
        pair("False", "Healthy")
    );
    assert_eq!(status["failingLocations"], 0);
    assert_eq!(status["observedGeneration"], 1);
    assert!(status.get("lastRun").is_none(), "{status:#}");

    // Every status write: a location's own entry under its own manager, the top level under
    // the aggregator's; exact bodies.
    let writes = status_writes(api, "both-work");
    let managers: BTreeSet<String> = writes
        .iter()
        .map(|w| w.param("fieldManager").unwrap())
        .collect();
    assert_eq!(
        managers,
        set(&["voipcheck", "voipcheck/eu-west", "voipcheck/office"])
    );
    for write in &writes {
        assert_eq!(write.content_type, "application/apply-patch+yaml");
        assert_eq!(write.param("force").as_deref(), Some("true"));
        let body = &write.body;
        assert_eq!(
            keys(body),
            set(&["apiVersion", "kind", "metadata", "status"]),
            "{body}"
        );
        assert_eq!(body["apiVersion"], "voipcheck.io/v1alpha1");
        assert_eq!(body["kind"], "VoipCheck");
        assert_eq!(body["metadata"], json!({ "uid": uid }));
        let manager = write.param("fieldManager").unwrap();
        match manager.strip_prefix("voipcheck/") {
            Some(location) => {
                let locations = body["status"]["locations"].as_array().unwrap();
                assert_eq!(keys(&body["status"]), set(&["locations"]), "{body}");
                assert_eq!(locations.len(), 1, "{body}");
                assert_eq!(locations[0]["name"], location);
                assert_eq!(
                    keys(&locations[0]),
                    set(&["name", "observedGeneration", "conditions", "lastRun"]),
                    "{body}"
                );
            }
            None => assert_eq!(
                keys(&body["status"]),
                set(&["observedGeneration", "conditions", "failingLocations"]),
                "{body}"
            ),
        }
    }
    // What each wrote last is on the object, word for word.
    let last = |manager: &str| {
        writes
            .iter()
            .rev()
            .find(|w| w.param("fieldManager").as_deref() == Some(manager))
            .unwrap()
            .body["status"]
            .clone()
    };
    let status = api.status(NS, "both-work").unwrap();
    for location in ["eu-west", "office"] {
        assert_eq!(
            &last(&format!("voipcheck/{location}"))["locations"][0],
            entry(&status, location).unwrap()
        );
    }
    let top = last("voipcheck");
    for field in ["observedGeneration", "conditions", "failingLocations"] {
        assert_eq!(top[field], status[field], "{field}");
    }

    // The managers' fields, as the API server records them: each location its entry, the
    // aggregator the top level, and the shard's holder the shard label on the object.
    let object = api.get(Kind::VoipCheck, NS, "both-work").unwrap();
    let managed = object["metadata"]["managedFields"].as_array().unwrap();
    let owned = |manager: &str| {
        let entry = managed
            .iter()
            .find(|m| m["manager"] == manager && m["subresource"] == "status")
            .unwrap();
        assert_eq!(entry["operation"], "Apply");
        keys(&entry["fieldsV1"]["f:status"])
            .into_iter()
            .chain(keys(&entry["fieldsV1"]["f:status"]["f:locations"]))
            .collect::<BTreeSet<String>>()
    };
    assert_eq!(managed.len(), 4, "{managed:#?}");
    let label = managed
        .iter()
        .find(|m| m["manager"] == "voipcheck" && m.get("subresource").is_none())
        .unwrap();
    assert_eq!(
        label["fieldsV1"],
        json!({ "f:metadata": { "f:labels": { "f:voipcheck.io/shard": {} } } })
    );
    assert_eq!(
        owned("voipcheck/office"),
        set(&["f:locations", "k:{\"name\":\"office\"}"])
    );
    assert_eq!(
        owned("voipcheck/eu-west"),
        set(&["f:locations", "k:{\"name\":\"eu-west\"}"])
    );
    assert_eq!(
        owned("voipcheck"),
        set(&["f:conditions", "f:failingLocations", "f:observedGeneration"])
    );

    // Office sees a provider-side failure, eu-west reaches the provider: office's network.
    let status = cluster
        .status_when("office-fails", "office's failure weighed", |s| {
            // An aggregate computed before eu-west's first entry reached the aggregating
            // instance's cache weighs office's failure alone (ProviderOutage, rightly from what
            // it knew); the one to judge weighs both.
            both_written(s)
                && s["failingLocations"] == 1
                && condition(&s["conditions"], "HotlineReportable")
                    .is_some_and(|c| c["reason"] != "ProviderOutage")
        })
        .await;
    let office_entry = entry(&status, "office").unwrap();
    assert_eq!(
        verdict(&office_entry["conditions"], "HotlineReportable"),
        pair("True", "ProviderOutage")
    );
    assert!(office_entry["incident"].is_object(), "{status:#}");
    let reportable = condition(&status["conditions"], "HotlineReportable").unwrap();
    assert_eq!(
        (&reportable["status"], &reportable["reason"]),
        (&json!("False"), &json!("LocalNetworkProblem"))
    );
    let message = reportable["message"].as_str().unwrap();
    assert!(message.contains("office"), "{message}");
    assert!(status.get("incident").is_none(), "{status:#}");
    // The verdict's series come from the aggregating instance only.
    let failing = (
        "voipcheck_status_failing_locations",
        ["name=\"office-fails\""],
    );
    assert_eq!(eu_west.sample(failing.0, &failing.1).await, Some(1.0));
    assert_eq!(office.sample(failing.0, &failing.1).await, None);

    // Both fail: an outage of the provider, the incident naming what each location saw.
    let status = cluster
        .status_when("both-fail", "both failures weighed", |s| {
            both_written(s) && s["failingLocations"] == 2
        })
        .await;
    assert_eq!(
        verdict(&status["conditions"], "HotlineReportable"),
        pair("True", "ProviderOutage")
    );
    let evidence = status["incident"]["evidence"].as_str().unwrap();
    assert!(
        evidence.contains("eu-west") && evidence.contains("office"),
        "{evidence}"
    );
    assert_eq!(status["incident"]["service"], "Cloud");

    // Events: office (not aggregating) publishes its own transitions naming itself; eu-west
    // publishes the top level's.
    let events = api.events(NS);
    let from = |instance: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["reportingInstance"] == instance)
            .map(|e| e["note"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let office_notes = from("office-0");
    assert!(!office_notes.is_empty());
    assert!(
        office_notes
            .iter()
            .all(|n| n.contains(" in location office: ")),
        "{office_notes:#?}"
    );
    let eu_west_notes = from("eu-west-0");
    assert!(!eu_west_notes.is_empty());
    assert!(
        eu_west_notes.iter().all(|n| !n.contains(" in location ")),
        "{eu_west_notes:#?}"
    );
    eu_west.stop().await;
    office.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_for_office_only_is_aggregated_in_eu_west_without_its_entry() {
    let cluster = Cluster::start();
    let api = &cluster.api;
    let reachable = cluster.reachable();
    api.insert(cluster.check("office-only", &reachable, &["office"]));
    let eu_west = cluster.eu_west();
    let office = cluster.office();
    let status = cluster
        .status_when("office-only", "office's entry aggregated", |s| {
            entry(s, "office").is_some_and(|e| e["lastRun"].is_object())
                && condition(&s["conditions"], "HotlineReportable").is_some()
        })
        .await;
    assert_eq!(
        verdict(&status["conditions"], "Ready"),
        pair("True", "Healthy")
    );
    assert_eq!(status["failingLocations"], 0);
    // A few of eu-west's intervals: still no entry of its own, no probe, no write of one.
    tokio::time::sleep(INTERVAL * 2).await;
    assert!(entry(&api.status(NS, "office-only").unwrap(), "eu-west").is_none());
    let managers: BTreeSet<String> = status_writes(api, "office-only")
        .iter()
        .map(|w| w.param("fieldManager").unwrap())
        .collect();
    assert_eq!(managers, set(&["voipcheck", "voipcheck/office"]));
    let series = eu_west
        .sample("voipcheck_probe_success", &["name=\"office-only\""])
        .await;
    assert_eq!(series, None, "eu-west exports no probe of it");

    // The spec moves the check to eu-west: office stops and takes its entry away, eu-west
    // writes its own.
    let mut moved = api.get(Kind::VoipCheck, NS, "office-only").unwrap();
    moved["spec"]["locations"] = json!(["eu-west"]);
    api.replace(moved);
    let status = cluster
        .status_when("office-only", "the check moved to eu-west", |s| {
            // The top level may be written between office's removal and eu-west's entry
            // (Pending: no location has run generation 2 yet); wait for eu-west's view.
            entry(s, "office").is_none()
                && entry(s, "eu-west").is_some_and(|e| e["observedGeneration"] == 2)
                && s["observedGeneration"] == 2
                && verdict(&s["conditions"], "Ready") != pair("Unknown", "Pending")
        })
        .await;
    assert_eq!(
        verdict(&status["conditions"], "Ready"),
        pair("True", "Healthy")
    );
    let removal = status_writes(api, "office-only")
        .into_iter()
        .rfind(|w| w.param("fieldManager").as_deref() == Some("voipcheck/office"))
        .unwrap();
    assert_eq!(
        removal.body["status"],
        json!({}),
        "an empty apply removes office's entry"
    );
    eu_west.stop().await;
    office.stop().await;
}

/// `lastRun.time` `age` ago, in the API's format.
fn ago(age: Duration) -> String {
    let at = SystemTime::now() - age;
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_location_that_stops_writing_is_marked_stale_and_left_out() {
    let cluster = Cluster::start();
    let api = &cluster.api;
    api.insert(cluster.check("office-fails", "sip:slow.voipcheck.test", &[]));
    let eu_west = cluster.eu_west();
    let office = cluster.office();
    cluster
        .status_when("office-fails", "office's failure weighed", |s| {
            // An aggregate computed before eu-west's first entry reached the aggregating
            // instance's cache weighs office's failure alone (ProviderOutage, rightly from what
            // it knew); the one to judge weighs both.
            both_written(s)
                && s["failingLocations"] == 1
                && condition(&s["conditions"], "HotlineReportable")
                    .is_some_and(|c| c["reason"] != "ProviderOutage")
        })
        .await;
    office.stop().await;

    // Office's last write is about to be older than it may be: STATUS_REFRESH + 3 intervals.
    let stale_after = STATUS_REFRESH + 3 * INTERVAL;
    let mut last = entry(&api.status(NS, "office-fails").unwrap(), "office")
        .unwrap()
        .clone();
    last["lastRun"]["time"] = json!(ago(stale_after - Duration::from_secs(4)));
    let checks: kube::Api<voipcheck::api::VoipCheck> = kube::Api::namespaced(api.client(), NS);
    checks
        .patch_status(
            "office-fails",
            &kube::api::PatchParams::apply("voipcheck/office").force(),
            &kube::api::Patch::Apply(json!({
                "apiVersion": "voipcheck.io/v1alpha1", "kind": "VoipCheck",
                "status": { "locations": [last] }
            })),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        entry(&api.status(NS, "office-fails").unwrap(), "office")
            .unwrap()
            .get("stale")
            .is_none(),
        "not stale yet"
    );
    // The aggregator's timer: stale once the time has come; the verdict is eu-west's alone.
    let status = cluster
        .status_when("office-fails", "office marked stale", |s| {
            entry(s, "office").is_some_and(|e| e["stale"] == true)
        })
        .await;
    assert_eq!(status["failingLocations"], 0);
    assert_eq!(
        verdict(&status["conditions"], "HotlineReportable"),
        pair("False", "Healthy")
    );
    let aggregator =
        &api.get(Kind::VoipCheck, NS, "office-fails").unwrap()["metadata"]["managedFields"];
    let aggregator = aggregator
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["manager"] == "voipcheck" && m["subresource"] == "status")
        .unwrap();
    assert_eq!(
        aggregator["fieldsV1"]["f:status"]["f:locations"],
        json!({ "k:{\"name\":\"office\"}": { ".": {}, "f:name": {}, "f:stale": {} } })
    );

    // Office is back: it writes again, the mark goes, its failure counts again.
    let office = cluster.office();
    let status = cluster
        .status_when("office-fails", "office fresh again", |s| {
            entry(s, "office").is_some_and(|e| e.get("stale").is_none())
                && s["failingLocations"] == 1
        })
        .await;
    assert_eq!(
        verdict(&status["conditions"], "HotlineReportable"),
        pair("False", "LocalNetworkProblem")
    );
    eu_west.stop().await;
    office.stop().await;
}

/// An install upgraded from the single-location operator: the object has a top-level status
/// (with `lastRun`) written under field manager `voipcheck` and no `status.locations`. The
/// location continues from it (DESIGN.md §9: a False condition stays False, the incident
/// keeps its `since`), and the aggregator's first write takes `lastRun` back from the top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_install_continues_from_the_legacy_top_level() {
    let cluster = Cluster::start();
    let api = &cluster.api;
    api.insert(cluster.check("both-fail", "sip:primary.voipcheck.test:5060", &["eu-west"]));
    let eu_west = cluster.eu_west();
    let first = cluster
        .status_when("both-fail", "eu-west's outage", |s| {
            entry(s, "eu-west").is_some_and(|e| e["incident"].is_object())
                && s["incident"].is_object()
        })
        .await;
    eu_west.stop().await;
    let before = entry(&first, "eu-west").unwrap().clone();

    // What the operator before status.locations left: the same verdict at the top level,
    // owned by `voipcheck`, and nothing else.
    let mut legacy = api.get(Kind::VoipCheck, NS, "both-fail").unwrap();
    let mut status = before.clone();
    status.as_object_mut().unwrap().remove("name");
    legacy["status"] = status;
    legacy["metadata"]["managedFields"] = json!([{
        "manager": "voipcheck", "operation": "Apply", "subresource": "status",
        "apiVersion": "voipcheck.io/v1alpha1", "time": "2026-01-01T00:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": { "f:status": {
            "f:observedGeneration": {}, "f:conditions": {}, "f:lastRun": {}, "f:incident": {}
        } }
    }]);
    api.replace(legacy);
    let events_before = api.events(NS).len();

    let eu_west = cluster.eu_west();
    let status = cluster
        .status_when(
            "both-fail",
            "eu-west's entry continuing the legacy status",
            |s| {
                entry(s, "eu-west").is_some_and(|e| e["lastRun"] != before["lastRun"])
                    && s.get("lastRun").is_none()
            },
        )
        .await;
    let own = entry(&status, "eu-west").unwrap();
    assert_eq!(status["conditions"], own["conditions"], "{status:#}");
    assert_eq!(own["incident"]["since"], before["incident"]["since"]);
    assert_eq!(status["incident"]["since"], before["incident"]["since"]);
    let reportable = condition(&own["conditions"], "HotlineReportable").unwrap();
    let was = condition(&before["conditions"], "HotlineReportable").unwrap();
    assert_eq!(
        (&reportable["status"], &reportable["lastTransitionTime"]),
        (&was["status"], &was["lastTransitionTime"])
    );
    assert_eq!(
        api.events(NS).len(),
        events_before,
        "no transition, so no Event: {:#?}",
        &api.events(NS)[events_before..]
    );
    eu_west.stop().await;
}
