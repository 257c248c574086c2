//! The whole operator (`operator::run`) against the in-test API server (`support::fake_api`):
//! watches with resourceVersions, relists after 410, server-side apply of the status, Leases;
//! the probes run for real against nginx. Each test is a fault the controller must survive.

mod support;

use http::Method;
use serde_json::{Value, json};
use std::time::Duration;
use support::fake_api::{FakeApi, Fault, Kind, Matcher};
use support::nginx::Nginx;
use support::operator::{RunningOperator, sample};
use voipcheck::operator::SecretAccess;

const NS: &str = "telephony";
/// Longer than a first run (somewhere in the first 5 s interval) plus its 2 s timeout.
const WAIT: Duration = Duration::from_secs(15);

/// A web check of `url`, every 5 s.
fn web_check(name: &str, url: &str) -> Value {
    json!({
        "apiVersion": "voipcheck.io/v1alpha1", "kind": "VoipCheck",
        "metadata": { "name": name, "namespace": NS },
        "spec": {
            "target": { "kind": "Portal", "name": name },
            "interval": "5s", "timeout": "2s",
            "http": [ { "name": "ui", "url": url } ]
        }
    })
}

/// A SIP trunk check whose REGISTER password is in Secret `secret` (its plan reads it).
fn trunk_check(name: &str, secret: &str) -> Value {
    json!({
        "apiVersion": "voipcheck.io/v1alpha1", "kind": "VoipCheck",
        "metadata": { "name": name, "namespace": NS },
        "spec": {
            "target": { "kind": "ConnectTrunk", "name": name },
            "interval": "5s", "timeout": "2s",
            "sip": {
                "server": "sip:127.0.0.1:9",
                "register": { "username": "monitor", "credentialsSecretRef": { "name": secret, "key": "password" } }
            }
        }
    })
}

/// A check written under an older schema: `interval` as a number of seconds.
fn bad_check(name: &str, url: &str) -> Value {
    let mut check = web_check(name, url);
    check["spec"]["interval"] = json!(30);
    check
}

/// The operator running against `api`, watching [`NS`], with the production Lease timings.
fn operator(api: &FakeApi) -> RunningOperator {
    RunningOperator::start(api, NS, "test-0", Default::default())
}

/// Asserts that `metric` with `labels` has the value `expected`.
fn assert_sample(metrics: &str, metric: &str, labels: &[&str], expected: f64) {
    assert_eq!(
        sample(metrics, metric, labels),
        Some(expected),
        "{metric} {labels:?} in {metrics}"
    );
}

/// Whether check `name` has been probed: the operator's location (`test`) wrote its entry
/// with a `lastRun`, and the top level from it.
fn probed(api: &FakeApi, name: &str) -> bool {
    api.status(NS, name).is_some_and(|s| {
        s["locations"][0]["name"] == "test"
            && s["locations"][0].get("lastRun").is_some()
            && s.get("conditions").is_some()
    })
}

/// The status the bad object must carry: Ready=False InvalidSpec naming the field, the verdict
/// that it cannot run, nothing probed; the location's entry says the same (without a spec
/// there is nothing to weigh locations by: the top level is that entry).
fn assert_invalid_spec_status(api: &FakeApi, name: &str, generation: i64) {
    let mut status = api.status(NS, name).expect("a status on the bad object");
    let mut entry = status["locations"][0].clone();
    for conditions in [&mut status["conditions"], &mut entry["conditions"]] {
        for condition in conditions.as_array_mut().unwrap() {
            assert!(condition["lastTransitionTime"].is_string(), "{condition}");
            condition["lastTransitionTime"] = json!("<time>");
        }
    }
    assert_eq!(
        entry,
        json!({
            "name": "test",
            "observedGeneration": generation,
            "conditions": status["conditions"]
        })
    );
    status.as_object_mut().unwrap().remove("locations");
    let why = "spec.interval: invalid type: integer, expected a string";
    assert_eq!(
        status,
        json!({
            "observedGeneration": generation,
            "conditions": [
                {
                    "type": "Ready", "status": "False", "reason": "InvalidSpec", "message": why,
                    "observedGeneration": generation, "lastTransitionTime": "<time>"
                },
                {
                    "type": "HotlineReportable", "status": "False", "reason": "ConfigurationProblem",
                    "message": format!("the check cannot run: {why}"),
                    "observedGeneration": generation, "lastTransitionTime": "<time>"
                }
            ]
        })
    );
}

/// Item 3: before, the one bad object failed the list of its scope: nothing was probed and
/// /readyz never turned ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_object_among_five_is_reported_on_itself_and_the_others_are_probed() {
    let nginx = Nginx::start();
    let url = nginx.http_url("/").to_string();
    let api = FakeApi::start();
    let good = ["a", "b", "c", "d"];
    for name in good {
        api.insert(web_check(name, &url));
    }
    let bad = api.insert(bad_check("old", &url));
    let operator = operator(&api);

    operator.wait_ready().await;
    api.wait_until("four checks probed", WAIT, |api| {
        good.iter().all(|name| probed(api, name)).then_some(())
    })
    .await;
    api.wait_until("the bad object's status", WAIT, |api| api.status(NS, "old"))
        .await;
    assert_invalid_spec_status(&api, "old", 1);
    // Written for that object: its uid is the apply's precondition.
    let apply = api
        .wait_for_request(
            &Matcher::request(Method::PATCH, "/voipchecks/old/status"),
            WAIT,
        )
        .await;
    assert_eq!(apply.body["metadata"]["uid"], bad["metadata"]["uid"]);
    api.wait_until(
        "a Warning Event InvalidSpec on the bad object",
        WAIT,
        |api| {
            api.events(NS)
                .into_iter()
                .find(|e| e["regarding"]["name"] == "old" && e["reason"] == "InvalidSpec")
        },
    )
    .await;
    let metrics = operator.metrics().await;
    assert_sample(&metrics, "voipcheck_invalid_objects", &[], 1.0);
    assert_sample(
        &metrics,
        "voipcheck_reconcile_errors_total",
        &["category=\"invalid_object\""],
        1.0,
    );

    // Fixed by its owner: a new generation, reconciled and probed like the others.
    api.replace(web_check("old", &url));
    // The top level is the aggregator's own write, which may land after the entry's: wait for
    // it too, not only for the run.
    api.wait_until("the fixed object probed and Ready", WAIT, |api| {
        let ready = api.status(NS, "old")?["conditions"][0].clone();
        (probed(api, "old") && ready["type"] == "Ready" && ready["status"] == "True").then_some(())
    })
    .await;
    let metrics = operator.metrics().await;
    assert_sample(&metrics, "voipcheck_invalid_objects", &[], 0.0);

    // One that goes bad on the open watch is reported at once, and its old spec is no longer
    // probed (the last run stays in its entry's `lastRun`).
    api.replace(bad_check("b", &url));
    let ready = api
        .wait_until("b reported invalid", WAIT, |api| {
            let status = api.status(NS, "b")?;
            let ready = status["conditions"][0].clone();
            (ready["reason"] == "InvalidSpec" && status["observedGeneration"] == 2).then_some(ready)
        })
        .await;
    assert_eq!(
        ready["message"],
        "spec.interval: invalid type: integer, expected a string"
    );
    let metrics = operator.metrics().await;
    assert_sample(&metrics, "voipcheck_invalid_objects", &[], 1.0);
    assert_sample(
        &metrics,
        "voipcheck_condition",
        &["name=\"b\"", "type=\"Ready\"", "reason=\"InvalidSpec\""],
        1.0,
    );
    assert!(
        !metrics.contains("name=\"b\",namespace=\"telephony\",probe="),
        "{metrics}"
    );
    operator.stop().await;
}

/// Item 3 after a relist: before, the list after a 410 failed on the bad object again and
/// again, so the cache froze: a check created meanwhile was never probed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_relist_a_bad_object_freezes_nothing() {
    let nginx = Nginx::start();
    let url = nginx.http_url("/").to_string();
    let api = FakeApi::start_with_bookmarks(Duration::from_millis(200));
    api.insert(web_check("a", &url));
    api.insert(web_check("gone", &url));
    let operator = operator(&api);
    operator.wait_ready().await;
    api.wait_until("the first checks probed", WAIT, |api| {
        (probed(api, "a") && probed(api, "gone")).then_some(())
    })
    .await;

    // While the watch is down, one object goes bad and one is deleted; the history is
    // compacted, so the watch must relist.
    api.drop_watches();
    api.compact();
    api.delete(Kind::VoipCheck, NS, "gone");
    api.replace(bad_check("a", &url));
    api.insert(web_check("new", &url));
    api.wait_until("the check created after the relist probed", WAIT, |api| {
        probed(api, "new").then_some(())
    })
    .await;
    api.wait_until("the bad object's InvalidSpec status", WAIT, |api| {
        let reason = api.status(NS, "a")?["conditions"][0]["reason"].clone();
        (reason == "InvalidSpec").then_some(())
    })
    .await;
    let status = api.status(NS, "a").unwrap();
    assert_eq!(status["observedGeneration"], 2, "{status:#}");
    assert_eq!(
        status["conditions"][0]["message"],
        "spec.interval: invalid type: integer, expected a string"
    );
    let metrics = operator.metrics().await;
    assert_sample(&metrics, "voipcheck_invalid_objects", &[], 1.0);
    // The deleted check is no longer probed (its series are gone).
    assert!(!metrics.contains("name=\"gone\""), "{metrics}");
    assert_sample(&metrics, "voipcheck_checks", &[], 2.0);
    operator.stop().await;
}

/// Item 5: before, a check deleted while its Secret was being read was upserted once the read
/// returned, a zombie probed and alerting with no object behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_deleted_while_its_secret_is_read_is_not_scheduled_again() {
    let api = FakeApi::start();
    api.insert(trunk_check("trunk", "trunk-sip"));
    let secret_read = Matcher::request(Method::GET, "/secrets/trunk-sip");
    let hang = api.inject(secret_read.clone(), Fault::Hang);
    let operator = operator(&api);
    api.wait_for_request(&secret_read, WAIT).await;
    operator.wait_ready().await;
    api.wait_until("holding the shards", WAIT, |api| {
        let lease = api.lease("ops", &support::operator::shard_lease(0))?;
        (lease["spec"]["holderIdentity"] == "test-0").then_some(())
    })
    .await;

    api.delete(Kind::VoipCheck, NS, "trunk");
    // The deletion reaches the operator's cache, then the read returns (404: no such Secret).
    tokio::time::sleep(Duration::from_millis(500)).await;
    api.clear_fault(hang);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = operator.metrics().await;
    assert!(!metrics.contains("name=\"trunk\""), "{metrics}");
    assert_sample(&metrics, "voipcheck_checks", &[], 0.0);
    operator.stop().await;
}

/// Item 5: before, every check was reconciled at once (after a relist: a Secret GET per check,
/// thousands in one burst); now at most `controller::CONCURRENCY` at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciles_are_bounded_in_concurrency() {
    let api = FakeApi::start();
    for i in 0..40 {
        api.insert(trunk_check(&format!("trunk-{i}"), &format!("sip-{i}")));
    }
    let secret_reads = Matcher::when(|r| r.method == Method::GET && r.path.contains("/secrets/"));
    api.inject(secret_reads.clone(), Fault::Hang);
    let operator = operator(&api);
    api.wait_until("16 Secret reads", WAIT, |api| {
        (api.requests_matching(&secret_reads).len() >= 16).then_some(())
    })
    .await;
    // All of them hang: no reconcile finishes, so no further one may start.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        api.requests_matching(&secret_reads).len(),
        usize::from(voipcheck::operator::controller::CONCURRENCY)
    );
    api.clear_faults();
    api.wait_until("every check's Secret read", WAIT, |api| {
        (api.requests_matching(&secret_reads).len() == 40).then_some(())
    })
    .await;
    operator.stop().await;
}

/// Issue 8: Kubernetes RBAC cannot grant a metadata-only list, so the operator's `list` on
/// Secrets let it read every Secret's data in scope. With `--secret-access get` it needs `get`
/// only: it never lists or watches a Secret (here the API answers those 403, as RBAC would)
/// and still reads the one its check references.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_get_only_secret_access_secrets_are_never_listed_or_watched() {
    let api = FakeApi::start();
    let listing_secrets =
        Matcher::when(|r| r.method == Method::GET && r.path.ends_with("/secrets"));
    api.inject(listing_secrets.clone(), Fault::Status(403));
    api.insert(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "trunk-sip", "namespace": NS },
        "data": { "password": "c2VjcmV0" }
    }));
    api.insert(trunk_check("trunk", "trunk-sip"));
    let operator =
        RunningOperator::start_with(&api, NS, "test-0", Default::default(), SecretAccess::Get);
    operator.wait_ready().await;
    api.wait_until("the trunk probed", WAIT, |api| {
        probed(api, "trunk").then_some(())
    })
    .await;
    let status = api.status(NS, "trunk").unwrap();
    assert!(
        !status.to_string().contains("CredentialsMissing"),
        "{status:#}"
    );
    assert!(
        !api.requests_matching(&Matcher::request(Method::GET, "/secrets/trunk-sip"))
            .is_empty(),
        "the referenced Secret was not read"
    );
    assert_eq!(
        api.requests_matching(&listing_secrets).len(),
        0,
        "Secrets were listed or watched"
    );
    operator.stop().await;
}
