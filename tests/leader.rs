//! Leading under faults, against the in-test API server (`support::fake_api`): whole operators
//! (`operator::run`) with short Lease timings, probing real loopback peers, while the Lease and
//! the API misbehave. What is asserted is what a person on call relies on: probing goes on, the
//! verdict and its incident survive a takeover, no two replicas write, no Lease is overwritten.

mod support;

use http::Method;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::{Value, json};
use std::time::Duration;
use support::fake_api::{FakeApi, Fault, Kind, Matcher};
use support::nginx::Nginx;
use support::operator::{
    LEASE_NAME as LEASE, LEASE_NAMESPACE as LEASE_NS, RunningOperator, sample,
};
use voipcheck::operator::leader::LeaseTimings;
use voipcheck::operator::lease::{Attempt, LeaseLock};

const NS: &str = "telephony";
const WAIT: Duration = Duration::from_secs(30);

/// Short enough for tests, in the production proportions (15 s / 10 s / 2 s).
const TIMINGS: LeaseTimings = LeaseTimings {
    duration: Duration::from_secs(3),
    renew_deadline: Duration::from_secs(2),
    retry: Duration::from_millis(400),
};

/// Replica `identity` on the fake API, with the short [`TIMINGS`].
fn replica(api: &FakeApi, identity: &str) -> RunningOperator {
    RunningOperator::start(api, NS, identity, TIMINGS)
}

fn holder(api: &FakeApi) -> Option<String> {
    api.lease(LEASE_NS, LEASE)?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_owned)
}

async fn wait_for_holder(api: &FakeApi, identity: &str) {
    api.wait_until(&format!("{identity} holds the Lease"), WAIT, |api| {
        (holder(api).as_deref() == Some(identity)).then_some(())
    })
    .await;
}

/// A Portal check of `url`: every 5 s, failing after `failure_threshold` runs.
fn web_check(name: &str, url: &str, failure_threshold: u32) -> Value {
    json!({
        "apiVersion": "voipcheck.io/v1alpha1", "kind": "VoipCheck",
        "metadata": { "name": name, "namespace": NS },
        "spec": {
            "target": { "kind": "Portal", "name": name },
            "interval": "5s",
            "timeout": "1s",
            "failureThreshold": failure_threshold,
            "http": [ { "name": "ui", "url": url } ]
        }
    })
}

/// A URL on a loopback port nobody listens on: connection refused, a provider-side failure.
fn dead_url() -> String {
    format!("http://127.0.0.1:{}/", support::free_port())
}

fn status_writes(api: &FakeApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.method == Method::PATCH && r.path.ends_with("/status"))
        .count()
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} in {status}"))
}

/// Replica `a` leading, its Portal check of nginx (failing after one run) written once.
async fn leading_on_a_portal() -> (FakeApi, Nginx, RunningOperator) {
    let api = FakeApi::start();
    let nginx = Nginx::start();
    api.insert(web_check("portal", nginx.http_url("/").as_str(), 1));
    let replica = replica(&api, "a");
    wait_for_holder(&api, "a").await;
    api.wait_until("the first status", WAIT, |api| api.status(NS, "portal"))
        .await;
    (api, nginx, replica)
}

/// Runs started so far on a replica (one observation of `schedule_lag_seconds` per run).
async fn runs(replica: &RunningOperator) -> f64 {
    replica
        .sample("voipcheck_schedule_lag_seconds_count", &[])
        .await
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_renewal_never_overwrites_the_new_holder() {
    let api = FakeApi::start();
    let leases: Api<Lease> = Api::namespaced(api.client(), LEASE_NS);
    let mut a = LeaseLock::new(leases.clone(), LEASE, "a", TIMINGS.duration);
    let mut b = LeaseLock::new(leases, LEASE, "b", TIMINGS.duration);
    assert_eq!(a.try_acquire_or_renew().await, Attempt::Held);
    let created_version =
        api.lease(LEASE_NS, LEASE).unwrap()["metadata"]["resourceVersion"].clone();
    assert_eq!(b.try_acquire_or_renew().await, Attempt::HeldBy("a".into()));
    // a stops renewing (hung, partitioned); b takes over once a's record is older than the
    // lease duration by b's clock.
    tokio::time::sleep(TIMINGS.duration + Duration::from_millis(300)).await;
    assert_eq!(b.try_acquire_or_renew().await, Attempt::Held);
    assert_eq!(holder(&api).as_deref(), Some("b"));
    // a's renewal, based on the version it last wrote, arrives now: refused, and a learns who
    // holds the Lease instead of taking it back.
    assert_eq!(a.try_acquire_or_renew().await, Attempt::HeldBy("b".into()));
    assert_eq!(holder(&api).as_deref(), Some("b"));
    // a created the Lease (POST); its one PUT is the late renewal, on the version it wrote.
    let late: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::PUT && r.body["spec"]["holderIdentity"] == "a")
        .collect();
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0].body["metadata"]["resourceVersion"], created_version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_renewal_neither_steps_down_nor_drops_the_checks_series() {
    let api = FakeApi::start();
    let nginx = Nginx::start();
    api.insert(web_check("portal", nginx.http_url("/").as_str(), 3));
    let replica = replica(&api, "a");
    wait_for_holder(&api, "a").await;
    let series = ["name=\"portal\"", "probe=\"http:ui\""];
    let deadline = tokio::time::Instant::now() + WAIT;
    while replica
        .sample("voipcheck_probe_success", &series)
        .await
        .is_none()
    {
        assert!(tokio::time::Instant::now() < deadline, "never probed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One renewal answered 500, as during an API server upgrade.
    let renewals = Matcher::request(Method::PUT, "/leases/");
    api.inject_times(renewals.clone(), Fault::Status(500), 1);
    let failed_at = api.requests_matching(&renewals).len();
    api.wait_until("the failed renewal", WAIT, |api| {
        (api.requests_matching(&renewals).len() > failed_at + 1).then_some(())
    })
    .await;
    // Nothing flaps for a whole lease duration: still the leader, the series stay.
    let watch_until = tokio::time::Instant::now() + TIMINGS.duration;
    while tokio::time::Instant::now() < watch_until {
        let text = replica.metrics().await;
        assert_eq!(sample(&text, "voipcheck_leader", &[]), Some(1.0), "{text}");
        assert_eq!(sample(&text, "voipcheck_probe_success", &series), Some(1.0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lease_errors = replica
        .sample("voipcheck_reconcile_errors_total", &["category=\"lease\""])
        .await;
    assert_eq!(lease_errors, Some(1.0));
    assert_eq!(holder(&api).as_deref(), Some("a"));
    replica.stop().await;
    assert_eq!(holder(&api), None, "released on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_writing_in_time_and_keeps_probing() {
    let (api, nginx, replica) = leading_on_a_portal().await;

    // Every renewal hangs from now on.
    let fault = api.inject(Matcher::request(Method::PUT, "/leases/"), Fault::Hang);
    let hung_at = tokio::time::Instant::now();
    // Past the renew deadline the replica no longer leads; before the Lease could expire.
    loop {
        let leader = replica.sample("voipcheck_leader", &[]).await;
        if leader == Some(0.0) {
            break;
        }
        assert!(hung_at.elapsed() < TIMINGS.duration, "still leading");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(hung_at.elapsed() >= TIMINGS.renew_deadline - TIMINGS.retry);
    let writes = status_writes(&api);
    let before = runs(&replica).await;
    // The web UI goes down meanwhile: the isolated replica still sees it, writes nothing.
    drop(nginx);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(runs(&replica).await >= before + 2.0, "probing stopped");
    let down = replica
        .sample(
            "voipcheck_condition",
            &[
                "name=\"portal\"",
                "type=\"WebReachable\"",
                "status=\"False\"",
            ],
        )
        .await;
    assert_eq!(down, Some(1.0), "the outage is on /metrics");
    assert_eq!(
        status_writes(&api),
        writes,
        "an isolated replica writes no status"
    );

    // The API answers again and nobody else took the Lease: leading (and writing) resumes,
    // with the outage the replica saw while isolated.
    api.clear_fault(fault);
    api.wait_until("the outage written", WAIT, |api| {
        let status = api.status(NS, "portal")?;
        (condition(&status, "WebReachable")["status"] == "False").then_some(())
    })
    .await;
    assert_eq!(replica.sample("voipcheck_leader", &[]).await, Some(1.0));
    replica.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_does_not_stop_probing() {
    let (api, _nginx, replica) = leading_on_a_portal().await;

    api.refuse_connections().await;
    tokio::time::sleep(TIMINGS.duration).await;
    let before = runs(&replica).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(
        runs(&replica).await >= before + 2.0,
        "nothing probed while the API is down"
    );
    assert_eq!(replica.sample("voipcheck_leader", &[]).await, Some(0.0));
    api.accept_connections();
    wait_for_holder(&api, "a").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while replica.sample("voipcheck_leader", &[]).await != Some(1.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never leading again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    replica.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_during_a_reportable_outage_keeps_the_verdict_and_its_since() {
    let api = FakeApi::start();
    api.insert(web_check("portal", &dead_url(), 2));
    let a = replica(&api, "a");
    wait_for_holder(&api, "a").await;
    let reportable = api
        .wait_until("a reportable outage", WAIT, |api| {
            let status = api.status(NS, "portal")?;
            let hotline = condition(&status, "HotlineReportable");
            (hotline["status"] == "True").then(|| status.clone())
        })
        .await;
    let since = reportable["incident"]["since"].clone();
    assert!(since.is_string(), "{reportable}");
    let b = replica(&api, "b");
    // b is ready (a standby) before a goes: a rolling update.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events_before = api.events(NS).len();
    a.stop().await;
    wait_for_holder(&api, "b").await;
    let writes = status_writes(&api);
    // b's first runs: the outage goes on, and b writes its status.
    api.wait_until("b writes", WAIT, |api| {
        (status_writes(api) > writes).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let status = api.status(NS, "portal").unwrap();
    let hotline = condition(&status, "HotlineReportable");
    assert_eq!(
        (&hotline["status"], &hotline["reason"]),
        (&json!("True"), &json!("ProviderOutage")),
        "{status:#}"
    );
    assert_eq!(
        hotline["lastTransitionTime"],
        condition(&reportable, "HotlineReportable")["lastTransitionTime"]
    );
    assert_eq!(status["incident"]["since"], since, "{status:#}");
    let web = condition(&status, "WebReachable");
    assert_eq!(web["status"], "False");
    // No Event: nothing changed for the person watching.
    let new_events: Vec<Value> = api.events(NS).into_iter().skip(events_before).collect();
    assert!(new_events.is_empty(), "{new_events:#?}");
    assert!(api.get(Kind::VoipCheck, NS, "portal").is_some());
    b.stop().await;
}
