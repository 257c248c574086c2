//! The in-test API server (`support::fake_api`) through kube's own client and watcher: the
//! behaviour the operator's tests rely on is the real API server's.

mod support;

use futures::{StreamExt, TryStreamExt};
use http::Method;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::core::{PartialObjectMeta, WatchEvent};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};
use std::time::Duration;
use support::fake_api::{FakeApi, Fault, Kind, Matcher};
use tokio::sync::mpsc;
use voipcheck::api::VoipCheck;

const NS: &str = "telephony";
const WAIT: Duration = Duration::from_secs(5);

fn voipcheck(name: &str) -> Value {
    json!({
        "apiVersion": "voipcheck.io/v1alpha1", "kind": "VoipCheck",
        "metadata": { "name": name, "namespace": NS },
        "spec": { "target": { "kind": "Cloud", "name": name }, "http": [ { "name": "ui", "url": "http://127.0.0.1:9/" } ] }
    })
}

fn secret(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": name, "namespace": NS },
        "data": { "password": "aHVudGVyMg==" }
    })
}

/// What kube's watcher reported, reduced to comparable words.
fn describe(event: &watcher::Event<VoipCheck>) -> String {
    match event {
        watcher::Event::Init => "Init".into(),
        watcher::Event::InitApply(o) => format!("InitApply {}", o.name_any()),
        watcher::Event::InitDone => "InitDone".into(),
        watcher::Event::Apply(o) => format!("Apply {}", o.name_any()),
        watcher::Event::Delete(o) => format!("Delete {}", o.name_any()),
    }
}

/// Drives kube's watcher in a task (it only lists and watches while polled) and hands over
/// what it reports, described.
fn follow(
    stream: impl futures::Stream<Item = Result<watcher::Event<VoipCheck>, watcher::Error>>
    + Send
    + 'static,
) -> mpsc::UnboundedReceiver<Result<String, String>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if tx
                .send(item.as_ref().map(describe).map_err(|e| e.to_string()))
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

async fn next_events(
    events: &mut mpsc::UnboundedReceiver<Result<String, String>>,
    count: usize,
) -> Vec<Result<String, String>> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let item = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no watcher event within {WAIT:?} after {seen:?}"))
            .expect("the watcher goes on");
        seen.push(item);
    }
    seen
}

/// The lists (not watches) the API saw, each as the value of its query `param` and whether it
/// continued a page.
fn list_pages(api: &FakeApi, param: &str) -> Vec<(Option<String>, bool)> {
    api.requests()
        .into_iter()
        .filter(|r| r.method == Method::GET && !r.is_watch())
        .map(|r| (r.param(param), r.param("continue").is_some()))
        .collect()
}

#[tokio::test]
async fn kube_watcher_lists_watches_resumes_after_bookmarks_and_relists_after_410() {
    let api = FakeApi::start_with_bookmarks(Duration::from_millis(100));
    api.insert(voipcheck("a"));
    api.insert(voipcheck("b"));
    let checks: Api<VoipCheck> = Api::namespaced(api.client(), NS);
    let mut stream = follow(watcher(checks, watcher::Config::default()));

    let ok = |s: &str| Ok(s.to_owned());
    assert_eq!(
        next_events(&mut stream, 4).await,
        [
            ok("Init"),
            ok("InitApply a"),
            ok("InitApply b"),
            ok("InitDone")
        ]
    );
    api.insert(voipcheck("c"));
    assert_eq!(next_events(&mut stream, 1).await, [ok("Apply c")]);

    // A change elsewhere moves the global resourceVersion; a bookmark carries it to the watch,
    // so after the watch drops, kube resumes from there instead of the last object's version.
    let elsewhere = api.insert(secret("unrelated"));
    let revision = elsewhere["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.clear_log();
    api.drop_watches();
    let rewatch = api
        .wait_for_request(&Matcher::when(|r| r.is_watch()), WAIT)
        .await;
    assert_eq!(rewatch.param("resourceVersion"), Some(revision));
    assert_eq!(
        rewatch.param("allowWatchBookmarks").as_deref(),
        Some("true")
    );
    assert_eq!(
        rewatch.path,
        format!("/apis/voipcheck.io/v1alpha1/namespaces/{NS}/voipchecks")
    );

    // Compaction: the open watch gets ERROR 410, kube relists (no Delete for "b": only absence).
    api.delete(Kind::VoipCheck, NS, "a");
    assert_eq!(next_events(&mut stream, 1).await, [ok("Delete a")]);
    api.compact();
    let relisted = next_events(&mut stream, 5).await;
    assert!(
        matches!(&relisted[0], Err(e) if e.contains("too old resource version") && e.contains("Expired")),
        "{relisted:?}"
    );
    assert_eq!(
        relisted[1..],
        [
            ok("Init"),
            ok("InitApply b"),
            ok("InitApply c"),
            ok("InitDone")
        ]
    );
    // And the relisted watcher follows changes again.
    api.insert(voipcheck("d"));
    assert_eq!(next_events(&mut stream, 1).await, [ok("Apply d")]);
}

#[tokio::test]
async fn lists_come_in_pages_of_the_limit_and_kubes_watcher_reads_them_all() {
    let api = FakeApi::start();
    for name in ["a", "b", "c", "d", "e"] {
        api.insert(voipcheck(name));
    }
    let checks: Api<VoipCheck> = Api::namespaced(api.client(), NS);
    let first = checks.list(&ListParams::default().limit(2)).await.unwrap();
    let names = |list: &kube::core::ObjectList<VoipCheck>| {
        list.items.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    };
    assert_eq!(names(&first), ["a", "b"]);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().expect("a continue token");
    // Changed between the pages: the next page has its new version, the list keeps the first
    // page's resourceVersion (the watch after it sees the change again).
    api.insert(voipcheck("bb"));
    let second = checks
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&second), ["bb", "c"]);
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    let last = checks
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(second.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(names(&last), ["d", "e"]);
    assert_eq!(last.metadata.continue_, None);
    assert_eq!(last.metadata.remaining_item_count, None);

    api.clear_log();
    let mut stream = follow(watcher(
        checks.clone(),
        watcher::Config::default().page_size(2),
    ));
    let ok = |s: &str| Ok(s.to_owned());
    assert_eq!(
        next_events(&mut stream, 8).await,
        [
            "Init",
            "InitApply a",
            "InitApply b",
            "InitApply bb",
            "InitApply c",
            "InitApply d",
            "InitApply e",
            "InitDone"
        ]
        .map(ok)
    );
    let pages = list_pages(&api, "limit");
    assert_eq!(
        pages,
        [
            (Some("2".into()), false),
            (Some("2".into()), true),
            (Some("2".into()), true)
        ]
    );

    api.compact();
    let expired = checks
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap_err();
    assert!(
        matches!(&expired, kube::Error::Api(s) if s.code == 410 && s.reason == "Expired"),
        "{expired:?}"
    );
}

#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_is_told_410_in_the_stream() {
    let api = FakeApi::start();
    let first = api.insert(voipcheck("a"));
    api.insert(voipcheck("b"));
    api.compact();
    let checks: Api<VoipCheck> = Api::namespaced(api.client(), NS);
    let from = first["metadata"]["resourceVersion"].as_str().unwrap();
    let mut events = checks
        .watch(&Default::default(), from)
        .await
        .expect("HTTP 200, as the API server answers")
        .boxed();
    match events.try_next().await.unwrap() {
        Some(kube::core::WatchEvent::Error(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("{other:?}"),
    }
    assert!(events.try_next().await.unwrap().is_none());
}

#[tokio::test]
async fn secret_metadata_is_listed_and_watched_without_the_data() {
    let api = FakeApi::start();
    api.insert(secret("sip"));
    let secrets: Api<PartialObjectMeta<Secret>> = Api::namespaced(api.client(), NS);
    let mut stream = watcher(secrets, watcher::Config::default())
        .touched_objects()
        .boxed();
    let listed = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(listed.name_any(), "sip");
    api.insert(secret("web"));
    let watched = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(watched.name_any(), "web");
    let requests = api.requests();
    let list = requests.iter().find(|r| !r.is_watch()).unwrap();
    assert!(
        list.accept.contains("as=PartialObjectMetadataList"),
        "{}",
        list.accept
    );
    assert!(
        requests
            .iter()
            .any(|r| r.is_watch() && r.accept.contains("as=PartialObjectMetadata"))
    );
    // Full reads still get the data.
    let full: Api<Secret> = Api::namespaced(api.client(), NS);
    assert!(
        full.get("sip")
            .await
            .unwrap()
            .data
            .unwrap()
            .contains_key("password")
    );
}

#[tokio::test]
async fn status_apply_keeps_the_generation_and_honours_the_uid_precondition() {
    let api = FakeApi::start();
    let stored = api.insert(voipcheck("a"));
    let uid = stored["metadata"]["uid"].as_str().unwrap().to_owned();
    let checks: Api<VoipCheck> = Api::namespaced(api.client(), NS);
    let params = PatchParams::apply("voipcheck").force();
    let apply = |uid: &str, generation: i64| {
        Patch::Apply(json!({
            "apiVersion": "voipcheck.io/v1alpha1", "kind": "VoipCheck",
            "metadata": { "uid": uid },
            "status": { "observedGeneration": generation }
        }))
    };

    let written = checks
        .patch_status("a", &params, &apply(&uid, 1))
        .await
        .unwrap();
    assert_eq!(written.status.unwrap().observed_generation, Some(1));
    assert_eq!(
        written.metadata.generation,
        Some(1),
        "a status write keeps the generation"
    );
    assert_ne!(
        written.metadata.resource_version,
        stored["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_owned)
    );
    let apply_log = api.requests().pop().unwrap();
    assert_eq!(apply_log.content_type, "application/apply-patch+yaml");
    assert_eq!(
        apply_log.param("fieldManager").as_deref(),
        Some("voipcheck")
    );
    assert_eq!(apply_log.param("force").as_deref(), Some("true"));

    // The same name, another object: the uid in the body refuses the write.
    api.recreate(voipcheck("a"));
    let refused = checks
        .patch_status("a", &params, &apply(&uid, 2))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 409),
        "{refused}"
    );
    assert_eq!(api.status(NS, "a"), None);
    // A missing object is 404, not created.
    let missing = checks
        .patch_status("gone", &params, &apply(&uid, 2))
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, kube::Error::Api(s) if s.code == 404),
        "{missing}"
    );

    // A spec change bumps the generation; the status stays.
    let mut edited = voipcheck("a");
    edited["spec"]["interval"] = json!("10s");
    api.replace(edited.clone());
    let new_uid = api.get(Kind::VoipCheck, NS, "a").unwrap()["metadata"]["uid"].clone();
    checks
        .patch_status("a", &params, &apply(new_uid.as_str().unwrap(), 2))
        .await
        .unwrap();
    let object = checks
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "interval": "20s" }, "status": null })),
        )
        .await
        .unwrap();
    assert_eq!(object.metadata.generation, Some(3));
    assert_eq!(object.status.unwrap().observed_generation, Some(2));
}

/// A location's entry of `status.locations`, as its operator applies it.
fn entry(location: &str, ready: &str) -> Value {
    json!({
        "name": location,
        "observedGeneration": 1,
        "conditions": [ {
            "type": "Ready", "status": ready, "reason": "Healthy", "message": "all probes pass",
            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1
        } ],
        "lastRun": { "time": "2026-01-01T00:00:00Z", "probes": [] }
    })
}

/// The body of a status apply.
fn status_body(status: Value) -> Patch<Value> {
    Patch::Apply(json!({
        "apiVersion": "voipcheck.io/v1alpha1", "kind": "VoipCheck", "status": status
    }))
}

/// A forced server-side apply of `status` to VoipCheck `a` by field manager `manager`.
async fn apply_as(checks: &Api<VoipCheck>, manager: &str, status: Value) {
    let params = PatchParams::apply(manager).force();
    checks
        .patch_status("a", &params, &status_body(status))
        .await
        .unwrap_or_else(|e| panic!("{manager}: {e}"));
}

/// Asserts that `error` is the API server's 409 Conflict of an apply, with `message`.
fn assert_conflict(error: &kube::Error, message: &str) {
    match error {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
            assert_eq!(s.message, message);
        }
        other => panic!("{other}"),
    }
}

/// The `managedFields` entry of `manager` on VoipCheck `name`.
fn managed(api: &FakeApi, name: &str, manager: &str) -> Option<Value> {
    let object = api.get(Kind::VoipCheck, NS, name)?;
    object["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager)
        .cloned()
}

/// The names of the entries of `status.locations`.
fn locations(api: &FakeApi, name: &str) -> Vec<String> {
    api.status(NS, name).map_or_else(Vec::new, |status| {
        status["locations"]
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|l| l["name"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    })
}

#[tokio::test]
async fn two_managers_apply_their_own_list_map_entries_and_neither_removes_the_other() {
    let api = FakeApi::start();
    api.insert(voipcheck("a"));
    let checks: Api<VoipCheck> = Api::namespaced(api.client(), NS);
    apply_as(
        &checks,
        "voipcheck/eu-west",
        json!({ "locations": [entry("eu-west", "True")] }),
    )
    .await;
    apply_as(
        &checks,
        "voipcheck/office",
        json!({ "locations": [entry("office", "True")] }),
    )
    .await;
    // eu-west's next apply changes its own entry only.
    apply_as(
        &checks,
        "voipcheck/eu-west",
        json!({ "locations": [entry("eu-west", "False")] }),
    )
    .await;
    let status = api.status(NS, "a").unwrap();
    assert_eq!(
        status["locations"],
        json!([entry("eu-west", "False"), entry("office", "True")])
    );

    // Ownership in the API server's format: the element, its key and every leaf it set.
    let office = managed(&api, "a", "voipcheck/office").unwrap();
    assert_eq!(office["operation"], "Apply");
    assert_eq!(office["subresource"], "status");
    assert_eq!(office["apiVersion"], "voipcheck.io/v1alpha1");
    assert_eq!(office["fieldsType"], "FieldsV1");
    assert!(office["time"].is_string());
    assert_eq!(
        office["fieldsV1"],
        json!({ "f:status": { "f:locations": { "k:{\"name\":\"office\"}": {
            ".": {}, "f:name": {}, "f:observedGeneration": {},
            "f:conditions": { "k:{\"type\":\"Ready\"}": {
                ".": {}, "f:type": {}, "f:status": {}, "f:reason": {}, "f:message": {},
                "f:lastTransitionTime": {}, "f:observedGeneration": {}
            } },
            "f:lastRun": { "f:time": {}, "f:probes": {} }
        } } } })
    );
    let object = api.get(Kind::VoipCheck, NS, "a").unwrap();
    assert_eq!(
        object["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(object["metadata"]["generation"], 1);
}

#[tokio::test]
async fn a_field_the_manager_no_longer_sends_is_removed_and_an_empty_status_removes_its_entry() {
    let api = FakeApi::start();
    api.insert(voipcheck("a"));
    let checks: Api<VoipCheck> = Api::namespaced(api.client(), NS);
    let eu_west = PatchParams::apply("voipcheck/eu-west").force();
    let mut failing = entry("eu-west", "False");
    failing["incident"] = json!({ "service": "Cloud", "name": "a", "since": "2026-01-01T00:00:00Z", "evidence": "timeout" });
    checks
        .patch_status(
            "a",
            &eu_west,
            &status_body(json!({ "locations": [failing] })),
        )
        .await
        .unwrap();
    apply_as(
        &checks,
        "voipcheck/office",
        json!({ "locations": [entry("office", "True")] }),
    )
    .await;
    assert!(
        api.status(NS, "a").unwrap()["locations"][0]
            .get("incident")
            .is_some()
    );

    // The next apply without the incident: gone; the rest of the entry stays.
    checks
        .patch_status(
            "a",
            &eu_west,
            &status_body(json!({ "locations": [entry("eu-west", "True")] })),
        )
        .await
        .unwrap();
    assert_eq!(
        api.status(NS, "a").unwrap()["locations"][0],
        entry("eu-west", "True")
    );
    let owned = &managed(&api, "a", "voipcheck/eu-west").unwrap()["fieldsV1"];
    assert!(
        owned
            .pointer("/f:status/f:locations/k:{\"name\":\"eu-west\"}/f:incident")
            .is_none(),
        "{owned}"
    );

    // The check no longer runs in eu-west: an apply of an empty status takes its entry away.
    checks
        .patch_status("a", &eu_west, &status_body(json!({})))
        .await
        .unwrap();
    assert_eq!(locations(&api, "a"), ["office"]);
    assert_eq!(managed(&api, "a", "voipcheck/eu-west"), None);
}

#[tokio::test]
async fn a_field_co_owned_in_another_managers_entry_goes_when_its_manager_stops_sending_it() {
    let api = FakeApi::start();
    api.insert(voipcheck("a"));
    let checks: Api<VoipCheck> = Api::namespaced(api.client(), NS);
    let office = PatchParams::apply("voipcheck/office").force();
    let aggregator = PatchParams::apply("voipcheck").force();
    checks
        .patch_status(
            "a",
            &office,
            &status_body(json!({ "locations": [entry("office", "True")] })),
        )
        .await
        .unwrap();
    // The aggregator marks office stale (its own field in office's entry) beside the top level.
    let top = json!({ "observedGeneration": 1, "failingLocations": 0 });
    let mut stale = top.clone();
    stale["locations"] = json!([{ "name": "office", "stale": true }]);
    checks
        .patch_status("a", &aggregator, &status_body(stale))
        .await
        .unwrap();
    let mut marked = entry("office", "True");
    marked["stale"] = json!(true);
    assert_eq!(api.status(NS, "a").unwrap()["locations"], json!([marked]));

    // office writes again (not sending stale): the aggregator's field stays until it drops it.
    checks
        .patch_status(
            "a",
            &office,
            &status_body(json!({ "locations": [entry("office", "False")] })),
        )
        .await
        .unwrap();
    assert_eq!(api.status(NS, "a").unwrap()["locations"][0]["stale"], true);
    checks
        .patch_status("a", &aggregator, &status_body(top.clone()))
        .await
        .unwrap();
    let status = api.status(NS, "a").unwrap();
    assert_eq!(status["locations"], json!([entry("office", "False")]));
    assert_eq!(status["failingLocations"], 0);
    assert_eq!(
        managed(&api, "a", "voipcheck").unwrap()["fieldsV1"],
        json!({ "f:status": { "f:observedGeneration": {}, "f:failingLocations": {} } })
    );
}

#[tokio::test]
async fn an_apply_without_force_conflicts_on_another_managers_value_and_force_takes_it() {
    let api = FakeApi::start();
    api.insert(voipcheck("a"));
    let checks: Api<VoipCheck> = Api::namespaced(api.client(), NS);
    apply_as(
        &checks,
        "voipcheck/office",
        json!({ "locations": [entry("office", "True")] }),
    )
    .await;
    let intruder = |generation: i64| {
        status_body(
            json!({ "locations": [ { "name": "office", "observedGeneration": generation } ] }),
        )
    };

    let refused = checks
        .patch_status("a", &PatchParams::apply("intruder"), &intruder(2))
        .await
        .unwrap_err();
    assert_conflict(
        &refused,
        "Apply failed with 1 conflict: conflict with \"voipcheck/office\" with subresource \"status\": .status.locations[name=\"office\"].observedGeneration",
    );
    assert_eq!(
        api.status(NS, "a").unwrap()["locations"][0]["observedGeneration"],
        1
    );
    assert_eq!(managed(&api, "a", "intruder"), None);

    // The same value is shared ownership, not a conflict.
    checks
        .patch_status("a", &PatchParams::apply("intruder"), &intruder(1))
        .await
        .unwrap();
    // With force the field changes hands.
    checks
        .patch_status("a", &PatchParams::apply("intruder").force(), &intruder(3))
        .await
        .unwrap();
    assert_eq!(
        api.status(NS, "a").unwrap()["locations"][0]["observedGeneration"],
        3
    );
    let office = &managed(&api, "a", "voipcheck/office").unwrap()["fieldsV1"];
    let element = &office["f:status"]["f:locations"]["k:{\"name\":\"office\"}"];
    assert!(element.get("f:observedGeneration").is_none(), "{office}");
    assert!(element.get("f:conditions").is_some(), "{office}");
}

#[tokio::test]
async fn an_apply_to_the_object_creates_it_merges_the_spec_and_leaves_the_status_alone() {
    let api = FakeApi::start();
    let checks: Api<VoipCheck> = Api::namespaced(api.client(), NS);
    let kubectl = PatchParams::apply("kubectl").force();
    let mut manifest = voipcheck("a");
    manifest["spec"]["interval"] = json!("10s");
    checks
        .patch("a", &kubectl, &Patch::Apply(manifest))
        .await
        .unwrap();
    apply_as(&checks, "voipcheck", json!({ "observedGeneration": 1 })).await;
    // The next apply no longer sets the interval: removed, the generation bumped, the status kept.
    checks
        .patch("a", &kubectl, &Patch::Apply(voipcheck("a")))
        .await
        .unwrap();
    let object = api.get(Kind::VoipCheck, NS, "a").unwrap();
    assert!(object["spec"].get("interval").is_none(), "{object}");
    assert_eq!(object["metadata"]["generation"], 2);
    assert_eq!(object["status"], json!({ "observedGeneration": 1 }));
    let owned = &managed(&api, "a", "kubectl").unwrap();
    assert!(owned.get("subresource").is_none());
    assert!(
        owned["fieldsV1"]["f:spec"]["f:http"]["k:{\"name\":\"ui\"}"]["f:url"].is_object(),
        "spec.http is a list-map by name: {owned}"
    );
}

#[tokio::test]
async fn a_lease_replace_with_a_stale_resource_version_conflicts() {
    let api = FakeApi::start();
    let leases: Api<Lease> = Api::namespaced(api.client(), "ops");
    let mut lease: Lease = serde_json::from_value(json!({
        "metadata": { "name": "voipcheck" },
        "spec": { "holderIdentity": "a", "leaseDurationSeconds": 15 }
    }))
    .unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    assert!(created.uid().is_some());
    lease.metadata = created.metadata.clone();
    lease.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let taken = leases
        .replace("voipcheck", &PostParams::default(), &lease)
        .await
        .unwrap();
    assert_eq!(
        api.lease("ops", "voipcheck").unwrap()["spec"]["holderIdentity"],
        "b"
    );

    // A late renewal by "a", still carrying the version it read: refused.
    let mut late = created.clone();
    late.spec.as_mut().unwrap().renew_time = None;
    let refused = leases
        .replace("voipcheck", &PostParams::default(), &late)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"),
        "{refused}"
    );
    assert_eq!(
        api.lease("ops", "voipcheck").unwrap()["spec"]["holderIdentity"],
        "b"
    );

    // A merge patch with the current version applies; with the old one it conflicts too.
    let patch = |rv: &str, holder: &str| {
        Patch::Merge(
            json!({ "metadata": { "resourceVersion": rv }, "spec": { "holderIdentity": holder } }),
        )
    };
    let current = taken.resource_version().unwrap();
    leases
        .patch("voipcheck", &PatchParams::default(), &patch(&current, "c"))
        .await
        .unwrap();
    let stale = leases
        .patch("voipcheck", &PatchParams::default(), &patch(&current, "d"))
        .await
        .unwrap_err();
    assert!(
        matches!(&stale, kube::Error::Api(s) if s.code == 409),
        "{stale}"
    );
    assert_eq!(
        api.lease("ops", "voipcheck").unwrap()["spec"]["holderIdentity"],
        "c"
    );
}

#[tokio::test]
async fn events_are_created_and_their_series_patched() {
    let api = FakeApi::start();
    let stored = api.insert(voipcheck("a"));
    let check: VoipCheck = serde_json::from_value(stored).unwrap();
    let recorder = Recorder::new(
        api.client(),
        Reporter {
            controller: "voipcheck".into(),
            instance: Some("test-0".into()),
        },
    );
    let event = Event {
        type_: EventType::Warning,
        reason: "Timeout".into(),
        note: Some("no answer".into()),
        action: "SipRegistered".into(),
        secondary: None,
    };
    let reference = check.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let events = api.events(NS);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["reason"], "Timeout");
    assert_eq!(events[0]["regarding"]["uid"], json!(check.uid()));
    assert_eq!(events[0]["series"]["count"], 2);
}

#[tokio::test]
async fn faults_hang_throttle_fail_and_refuse() {
    let api = FakeApi::start();
    api.insert(secret("sip"));
    let secrets: Api<Secret> = Api::namespaced(api.client(), NS);

    // Hang until cleared, then served.
    let hang = api.inject(Matcher::request(Method::GET, "/secrets/sip"), Fault::Hang);
    let reading = tokio::spawn({
        let secrets = secrets.clone();
        async move { secrets.get("sip").await }
    });
    api.wait_for_request(&Matcher::request(Method::GET, "/secrets/sip"), WAIT)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!reading.is_finished());
    api.clear_fault(hang);
    assert_eq!(reading.await.unwrap().unwrap().name_any(), "sip");

    // A status code, N times.
    api.inject_times(
        Matcher::request(Method::GET, "/secrets/sip"),
        Fault::Status(500),
        1,
    );
    let failed = secrets.get("sip").await.unwrap_err();
    assert!(
        matches!(&failed, kube::Error::Api(s) if s.code == 500),
        "{failed}"
    );
    assert!(secrets.get("sip").await.is_ok());

    // 429 with Retry-After: kube's client waits as told and retries.
    api.clear_log();
    api.inject_times(
        Matcher::request(Method::GET, "/secrets/sip"),
        Fault::Throttle {
            retry_after_seconds: 1,
        },
        1,
    );
    let started = std::time::Instant::now();
    assert!(secrets.get("sip").await.is_ok());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(api.requests().len(), 2);

    // Refused connections, then back on the same port.
    api.refuse_connections().await;
    assert!(tokio::net::TcpStream::connect(api.addr()).await.is_err());
    assert!(secrets.get("sip").await.is_err());
    api.accept_connections();
    assert!(secrets.get("sip").await.is_ok());
}

const SHARD: &str = "voipcheck.io/shard";
/// The operator's selector for the checks no shard has labelled yet.
const UNLABELLED: &str = "voipcheck.io/shard notin (0,1,2,3,4,5,6,7,8,9,10,11)";

/// VoipCheck `name` in `namespace` with `labels`.
fn labelled_in(namespace: &str, name: &str, labels: Value) -> Value {
    let mut check = voipcheck(name);
    check["metadata"]["namespace"] = json!(namespace);
    check["metadata"]["labels"] = labels;
    check
}

fn labelled(name: &str, labels: Value) -> Value {
    labelled_in(NS, name, labels)
}

fn names<K: Resource>(items: &[K]) -> Vec<String> {
    items
        .iter()
        .map(|o| o.meta().name.clone().unwrap())
        .collect()
}

/// The names of the VoipChecks `checks` lists with label selector `selector`.
async fn selected(checks: &Api<VoipCheck>, selector: &str) -> Vec<String> {
    let list = checks
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector:?}: {e}"));
    names(&list.items)
}

#[tokio::test]
async fn a_label_selector_lists_the_matching_objects_in_each_form() {
    let api = FakeApi::start();
    api.insert(labelled("a", json!({ SHARD: "3", "app": "web" })));
    api.insert(labelled("b", json!({ SHARD: "4" })));
    api.insert(labelled("c", json!({ SHARD: "12" })));
    api.insert(voipcheck("d"));
    api.insert(labelled("e", json!({ "app": "web" })));
    api.insert(labelled_in("other", "f", json!({ SHARD: "3" })));
    let checks: Api<VoipCheck> = Api::namespaced(api.client(), NS);
    for (selector, expected) in [
        ("voipcheck.io/shard=3", &["a"][..]),
        ("voipcheck.io/shard==3", &["a"]),
        // `!=` and `notin` also match the objects without the key.
        ("voipcheck.io/shard!=3", &["b", "c", "d", "e"]),
        ("voipcheck.io/shard in (3,4)", &["a", "b"]),
        (UNLABELLED, &["c", "d", "e"]),
        ("voipcheck.io/shard", &["a", "b", "c"]),
        ("!voipcheck.io/shard", &["d", "e"]),
        // Every requirement must hold; whitespace around any token.
        ("  voipcheck.io/shard in ( 3 ,4 ) ,app = web ", &["a"]),
        ("app,voipcheck.io/shard!=3", &["e"]),
        ("voipcheck.io/shard=5", &[]),
        ("", &["a", "b", "c", "d", "e"]),
    ] {
        assert_eq!(selected(&checks, selector).await, expected, "{selector:?}");
    }

    // Across namespaces (in namespace order, as etcd's keys), as metadata only, and for other
    // kinds alike.
    let everywhere: Api<VoipCheck> = Api::all(api.client());
    assert_eq!(
        selected(&everywhere, "voipcheck.io/shard=3").await,
        ["f", "a"]
    );
    let metadata = checks
        .list_metadata(&ListParams::default().labels(UNLABELLED))
        .await
        .unwrap();
    assert_eq!(names(&metadata.items), ["c", "d", "e"]);
    let mut sip = secret("sip");
    sip["metadata"]["labels"] = json!({ SHARD: "3" });
    api.insert(sip);
    api.insert(secret("web"));
    let secrets: Api<Secret> = Api::namespaced(api.client(), NS);
    let list = secrets
        .list(&ListParams::default().labels("voipcheck.io/shard=3"))
        .await
        .unwrap();
    assert_eq!(names(&list.items), ["sip"]);
}

#[tokio::test]
async fn a_selected_list_comes_in_pages_of_matching_objects_without_a_remaining_count() {
    let api = FakeApi::start();
    for (name, shard) in [
        ("a", "3"),
        ("b", "4"),
        ("c", "3"),
        ("d", "3"),
        ("e", "4"),
        ("f", "3"),
    ] {
        api.insert(labelled(name, json!({ SHARD: shard })));
    }
    let checks: Api<VoipCheck> = Api::namespaced(api.client(), NS);
    let page = |token: Option<String>| {
        let mut params = ListParams::default()
            .labels("voipcheck.io/shard=3")
            .limit(2);
        if let Some(token) = token {
            params = params.continue_token(&token);
        }
        let checks = checks.clone();
        async move { checks.list(&params).await.unwrap() }
    };
    let first = page(None).await;
    assert_eq!(names(&first.items), ["a", "c"]);
    assert_eq!(first.metadata.remaining_item_count, None);
    let second = page(first.metadata.continue_.clone()).await;
    assert_eq!(names(&second.items), ["d", "f"]);
    assert_eq!(second.metadata.continue_, None);
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    // Unfiltered, the page counts what is left.
    let all = checks.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(all.metadata.remaining_item_count, Some(4));

    // kube's watcher pages with the selector on every page.
    api.clear_log();
    let mut stream = follow(watcher(
        checks.clone(),
        watcher::Config::default()
            .labels("voipcheck.io/shard=3")
            .page_size(2),
    ));
    let ok = |s: &str| Ok(s.to_owned());
    assert_eq!(
        next_events(&mut stream, 6).await,
        [
            "Init",
            "InitApply a",
            "InitApply c",
            "InitApply d",
            "InitApply f",
            "InitDone"
        ]
        .map(ok)
    );
    let pages = list_pages(&api, "labelSelector");
    let selector = Some("voipcheck.io/shard=3".to_owned());
    assert_eq!(pages, [(selector.clone(), false), (selector.clone(), true)]);
}

/// A watch event reduced to comparable words: type, name, the shard label, resourceVersion.
fn seen<K: Resource>(event: WatchEvent<K>) -> String {
    let (type_, object) = match event {
        WatchEvent::Added(o) => ("ADDED", o),
        WatchEvent::Modified(o) => ("MODIFIED", o),
        WatchEvent::Deleted(o) => ("DELETED", o),
        other => panic!("unexpected {other:?}"),
    };
    let meta = object.meta();
    let shard = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(SHARD))
        .map_or("-", String::as_str);
    format!(
        "{type_} {} shard={shard} rv={}",
        meta.name.as_deref().unwrap(),
        meta.resource_version.as_deref().unwrap()
    )
}

/// The next `count` events of a raw watch, described.
async fn next_seen<K: Resource>(
    events: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
    count: usize,
) -> Vec<String> {
    let mut described = Vec::new();
    while described.len() < count {
        let event = tokio::time::timeout(WAIT, events.try_next())
            .await
            .unwrap_or_else(|_| panic!("no watch event within {WAIT:?} after {described:?}"))
            .unwrap()
            .expect("the watch goes on");
        described.push(seen(event));
    }
    described
}

/// The resourceVersion of a stored (or just deleted) object.
fn rv(object: &Value) -> String {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Merges `labels` into VoipCheck `name`'s labels (a `null` removes one); returns the stored
/// object.
async fn relabel(checks: &Api<VoipCheck>, name: &str, labels: Value) -> Value {
    let patched = checks
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": labels } })),
        )
        .await
        .unwrap();
    serde_json::to_value(patched).unwrap()
}

/// Sets VoipCheck `name`'s interval: a change to the spec only.
async fn respec(checks: &Api<VoipCheck>, name: &str, interval: &str) -> Value {
    let patched = checks
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "interval": interval } })),
        )
        .await
        .unwrap();
    serde_json::to_value(patched).unwrap()
}

#[tokio::test]
async fn a_selected_watch_sees_an_object_added_by_its_label_modified_while_it_keeps_it_and_deleted_when_it_changes()
 {
    let api = FakeApi::start();
    api.insert(voipcheck("a"));
    api.insert(labelled("b", json!({ SHARD: "4" })));
    let checks: Api<VoipCheck> = Api::namespaced(api.client(), NS);
    let from = api.resource_version().to_string();
    let params = WatchParams::default().labels("voipcheck.io/shard=3");
    let mut events = checks.watch(&params, &from).await.unwrap().boxed();
    let mut metadata = checks.watch_metadata(&params, &from).await.unwrap().boxed();

    // Never matching: b changes, d comes and goes.
    respec(&checks, "b", "10s").await;
    api.insert(voipcheck("d"));
    relabel(&checks, "d", json!({ SHARD: "5" })).await;
    api.delete(Kind::VoipCheck, NS, "d");
    // a gets the label, changes while it keeps it, moves to shard 4, changes there.
    let into_3 = relabel(&checks, "a", json!({ SHARD: "3" })).await;
    let respecced = respec(&checks, "a", "10s").await;
    let moved = relabel(&checks, "a", json!({ SHARD: "4" })).await;
    respec(&checks, "a", "20s").await;
    // c is created in shard 3 and deleted; then b is labelled into it.
    let c = api.insert(labelled("c", json!({ SHARD: "3" })));
    let c_deleted = api.delete(Kind::VoipCheck, NS, "c").unwrap();
    let b = relabel(&checks, "b", json!({ SHARD: "3" })).await;

    let expected = [
        format!("ADDED a shard=3 rv={}", rv(&into_3)),
        format!("MODIFIED a shard=3 rv={}", rv(&respecced)),
        // Labelled out: the previous object (shard 3) at the change's resourceVersion.
        format!("DELETED a shard=3 rv={}", rv(&moved)),
        format!("ADDED c shard=3 rv={}", rv(&c)),
        format!("DELETED c shard=3 rv={}", rv(&c_deleted)),
        format!("ADDED b shard=3 rv={}", rv(&b)),
    ];
    assert_eq!(next_seen(&mut events, 6).await, expected);
    assert_eq!(next_seen(&mut metadata, 6).await, expected);

    // Labelled out with a spec change in the same write: the DELETED object is the one before
    // the write, whole.
    let moved = checks
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": { "labels": { SHARD: "4" } }, "spec": { "interval": "30s" }
            })),
        )
        .await
        .unwrap();
    let gone = tokio::time::timeout(WAIT, events.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let WatchEvent::Deleted(gone) = gone else {
        panic!("{gone:?}")
    };
    let gone = serde_json::to_value(gone).unwrap();
    let mut before = serde_json::to_value(&b).unwrap();
    before["metadata"]["resourceVersion"] = json!(moved.resource_version());
    assert_eq!(gone, before);
    assert_eq!(gone["spec"]["interval"], "10s");

    // And the changes in between were nothing: the next event is the next matching change.
    respec(&checks, "b", "40s").await;
    let e = api.insert(labelled("e", json!({ SHARD: "3" })));
    assert_eq!(
        next_seen(&mut events, 1).await,
        [format!("ADDED e shard=3 rv={}", rv(&e))]
    );
}

#[tokio::test]
async fn a_selected_watch_without_a_resource_version_starts_with_the_matching_objects_only() {
    let api = FakeApi::start();
    let a = api.insert(labelled("a", json!({ SHARD: "3" })));
    api.insert(labelled("b", json!({ SHARD: "4" })));
    let c = api.insert(voipcheck("c"));
    api.insert(labelled_in("other", "d", json!({ SHARD: "3" })));
    let checks: Api<VoipCheck> = Api::namespaced(api.client(), NS);

    let shard_3 = WatchParams::default().labels("voipcheck.io/shard=3");
    let mut events = checks.watch(&shard_3, "0").await.unwrap().boxed();
    let mut metadata = checks.watch_metadata(&shard_3, "0").await.unwrap().boxed();
    let mut unlabelled = checks
        .watch(&WatchParams::default().labels(UNLABELLED), "0")
        .await
        .unwrap()
        .boxed();
    let added_a = format!("ADDED a shard=3 rv={}", rv(&a));
    assert_eq!(next_seen(&mut events, 1).await, [added_a.as_str()]);
    assert_eq!(next_seen(&mut metadata, 1).await, [added_a]);
    assert_eq!(
        next_seen(&mut unlabelled, 1).await,
        [format!("ADDED c shard=- rv={}", rv(&c))]
    );

    // The unlabelled check taken into shard 3: gone from one watch, added to the other.
    let taken = relabel(&checks, "c", json!({ SHARD: "3" })).await;
    assert_eq!(
        next_seen(&mut unlabelled, 1).await,
        [format!("DELETED c shard=- rv={}", rv(&taken))]
    );
    assert_eq!(
        next_seen(&mut events, 1).await,
        [format!("ADDED c shard=3 rv={}", rv(&taken))]
    );

    // kube's watcher lists and watches with the selector as the operator will.
    api.insert(voipcheck("e"));
    let mut stream = follow(watcher(
        checks.clone(),
        watcher::Config::default().labels(UNLABELLED),
    ));
    let ok = |s: &str| Ok(s.to_owned());
    assert_eq!(
        next_events(&mut stream, 3).await,
        ["Init", "InitApply e", "InitDone"].map(ok)
    );
    relabel(&checks, "e", json!({ SHARD: "7" })).await;
    api.insert(voipcheck("f"));
    assert_eq!(
        next_events(&mut stream, 2).await,
        ["Delete e", "Apply f"].map(ok)
    );
}

#[tokio::test]
async fn an_unparsable_label_selector_is_400_bad_request_on_list_and_watch() {
    let api = FakeApi::start();
    api.insert(labelled("a", json!({ SHARD: "3" })));
    let checks: Api<VoipCheck> = Api::namespaced(api.client(), NS);
    let bad_request = |result: kube::Error, selector: &str| match result {
        kube::Error::Api(status) => {
            assert_eq!(
                (status.code, status.reason.as_str()),
                (400, "BadRequest"),
                "{selector:?}"
            );
            status.message
        }
        other => panic!("{selector:?}: {other}"),
    };
    let requirement = "unable to parse requirement: ";
    for (selector, message) in [
        (
            "voipcheck.io/shard in 3",
            format!("{requirement}found '3' expected: '('"),
        ),
        (
            "voipcheck.io/shard in (3,4",
            format!("{requirement}found '', expected: ',' or ')'"),
        ),
        (
            "voipcheck.io/shard in (3 4)",
            format!("{requirement}found '4', expected: ',' or ')'"),
        ),
        (
            "voipcheck.io/shard 3",
            format!("{requirement}found '3', expected: in, notin, =, ==, !="),
        ),
        (
            "voipcheck.io/shard>3",
            format!(
                "{requirement}found '>': the fake API does not serve the numeric operators gt and lt"
            ),
        ),
        (
            "voipcheck.io/shard=3,",
            "found '', expected: identifier after ','".to_owned(),
        ),
        (
            "voipcheck.io/shard=3 4",
            "found '4', expected: ',' or 'end of string'".to_owned(),
        ),
        (
            "!voipcheck.io/shard=3",
            "found '=', expected: ',' or 'end of string'".to_owned(),
        ),
        (
            "=3",
            "found '=', expected: !, identifier, or 'end of string'".to_owned(),
        ),
    ] {
        let listed = checks
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap_err();
        assert_eq!(bad_request(listed, selector), message);
        let watched = checks
            .watch(&WatchParams::default().labels(selector), "0")
            .await
            .err()
            .unwrap_or_else(|| panic!("{selector:?}: a watch"));
        assert_eq!(bad_request(watched, selector), message);
    }
    // Keys must be qualified names, values label values.
    for (selector, start) in [
        (
            "Voipcheck.io/shard=3",
            "invalid label key \"Voipcheck.io/shard\"",
        ),
        (
            "voipcheck.io/shard/x",
            "invalid label key \"voipcheck.io/shard/x\"",
        ),
        ("voipcheck.io/shard=-3", "invalid label value: \"-3\""),
        (
            "voipcheck.io/shard notin (3,_)",
            "invalid label value: \"_\"",
        ),
    ] {
        let listed = checks
            .list_metadata(&ListParams::default().labels(selector))
            .await
            .unwrap_err();
        let message = bad_request(listed, selector);
        assert!(
            message.starts_with(&format!("{requirement}{start}")),
            "{selector:?}: {message}"
        );
    }
    // Empty values are values: no key `voipcheck.io/shard` is "", so nothing matches.
    for selector in ["voipcheck.io/shard=", "voipcheck.io/shard in ()"] {
        assert_eq!(selected(&checks, selector).await, Vec::<String>::new());
    }
    assert_eq!(selected(&checks, "voipcheck.io/shard in (,3)").await, ["a"]);
}

/// The operator's apply of a check's shard label: the label only, on the object.
fn shard_label(name: &str, shard: &str) -> Patch<Value> {
    Patch::Apply(json!({
        "apiVersion": "voipcheck.io/v1alpha1", "kind": "VoipCheck",
        "metadata": { "name": name, "labels": { SHARD: shard } }
    }))
}

/// The `managedFields` entry of `manager` for the object (not `/status`) of VoipCheck `name`.
fn managed_object(api: &FakeApi, name: &str, manager: &str) -> Option<Value> {
    let object = api.get(Kind::VoipCheck, NS, name)?;
    object["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e.get("subresource").is_none())
        .cloned()
}

#[tokio::test]
async fn an_apply_of_only_a_label_sets_it_keeps_everything_else_and_again_changes_nothing() {
    let api = FakeApi::start();
    let mut check = labelled("x", json!({ "app": "web" }));
    check["status"] = json!({ "observedGeneration": 1, "failingLocations": 0 });
    api.insert(check);
    let checks: Api<VoipCheck> = Api::namespaced(api.client(), NS);
    // Another manager owns a label, the operator already owns fields of the status.
    let mut manifest = labelled("x", json!({ "team": "voice" }));
    manifest["spec"]["interval"] = json!("10s");
    checks
        .patch("x", &PatchParams::apply("kubectl"), &Patch::Apply(manifest))
        .await
        .unwrap();
    checks
        .patch_status(
            "x",
            &PatchParams::apply("voipcheck").force(),
            &status_body(json!({ "locations": [entry("office", "True")] })),
        )
        .await
        .unwrap();
    let before = api.get(Kind::VoipCheck, NS, "x").unwrap();
    let from = rv(&before);
    let mut shard_3 = checks
        .watch(
            &WatchParams::default().labels("voipcheck.io/shard=3"),
            &from,
        )
        .await
        .unwrap()
        .boxed();

    let operator = PatchParams::apply("voipcheck").force();
    checks
        .patch("x", &operator, &shard_label("x", "3"))
        .await
        .unwrap();
    let after = api.get(Kind::VoipCheck, NS, "x").unwrap();
    assert_eq!(
        after["metadata"]["labels"],
        json!({ "app": "web", "team": "voice", SHARD: "3" })
    );
    assert_eq!(
        after["metadata"]["generation"],
        before["metadata"]["generation"]
    );
    assert_eq!(after["spec"], before["spec"]);
    assert_eq!(after["status"], before["status"]);
    assert_ne!(rv(&after), from);
    let owned = managed_object(&api, "x", "voipcheck").expect("an entry for the object");
    assert_eq!(owned["operation"], "Apply");
    assert_eq!(owned["apiVersion"], "voipcheck.io/v1alpha1");
    assert_eq!(owned["fieldsType"], "FieldsV1");
    assert_eq!(
        owned["fieldsV1"],
        json!({ "f:metadata": { "f:labels": { "f:voipcheck.io/shard": {} } } })
    );
    // The other entries are as they were: kubectl's, and the operator's for /status.
    let others = |object: &Value| -> Vec<Value> {
        object["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| !(e["manager"] == "voipcheck" && e.get("subresource").is_none()))
            .cloned()
            .collect()
    };
    assert_eq!(others(&after), others(&before));
    assert_eq!(others(&after).len(), 2);

    // Again: nothing changes, no resourceVersion, no event.
    let again = checks
        .patch("x", &operator, &shard_label("x", "3"))
        .await
        .unwrap();
    assert_eq!(again.resource_version(), Some(rv(&after)));
    assert_eq!(api.get(Kind::VoipCheck, NS, "x").unwrap(), after);
    let y = api.insert(labelled("y", json!({ SHARD: "3" })));
    assert_eq!(
        next_seen(&mut shard_3, 2).await,
        [
            format!("ADDED x shard=3 rv={}", rv(&after)),
            format!("ADDED y shard=3 rv={}", rv(&y))
        ]
    );
}

#[tokio::test]
async fn an_apply_of_a_label_another_manager_set_otherwise_conflicts_unless_forced() {
    let api = FakeApi::start();
    api.insert(voipcheck("x"));
    let checks: Api<VoipCheck> = Api::namespaced(api.client(), NS);
    checks
        .patch("x", &PatchParams::apply("sharder"), &shard_label("x", "5"))
        .await
        .unwrap();

    let refused = checks
        .patch(
            "x",
            &PatchParams::apply("voipcheck"),
            &shard_label("x", "3"),
        )
        .await
        .unwrap_err();
    assert_conflict(
        &refused,
        "Apply failed with 1 conflict: conflict with \"sharder\": .metadata.labels.voipcheck.io/shard",
    );
    let object = api.get(Kind::VoipCheck, NS, "x").unwrap();
    assert_eq!(object["metadata"]["labels"], json!({ SHARD: "5" }));
    assert_eq!(managed_object(&api, "x", "voipcheck"), None);

    // Forced, the label changes hands: sharder owned nothing else, its entry goes.
    checks
        .patch(
            "x",
            &PatchParams::apply("voipcheck").force(),
            &shard_label("x", "3"),
        )
        .await
        .unwrap();
    let object = api.get(Kind::VoipCheck, NS, "x").unwrap();
    assert_eq!(object["metadata"]["labels"], json!({ SHARD: "3" }));
    assert_eq!(managed_object(&api, "x", "sharder"), None);
    assert_eq!(
        managed_object(&api, "x", "voipcheck").unwrap()["fieldsV1"],
        json!({ "f:metadata": { "f:labels": { "f:voipcheck.io/shard": {} } } })
    );
    assert_eq!(object["metadata"]["generation"], 1);
}
