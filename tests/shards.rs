//! Replicas sharing the checks by shard Leases, and holding them under faults, against the
//! in-test API server (`support::fake_api`): whole operators (`operator::run`, each on a
//! runtime of its own so that a kill ends it at once) with short Lease timings, probing real
//! loopback peers. What is asserted is what a person on call relies on: every check probed by
//! exactly one replica, never by two at once while shards move; probing goes on; the verdict
//! and its incident survive a takeover; no replica writes a shard it does not hold; no Lease
//! is overwritten.

mod support;

use http::Method;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::fake_api::{FakeApi, Fault, Kind, Matcher};
use support::nginx::Nginx;
use support::operator::{
    LEASE_NAMESPACE as LEASE_NS, RunningOperator, member_lease, sample, shard_lease,
};
use tokio::time::Instant;
use voipcheck::check::CheckId;
use voipcheck::operator::leader::LeaseTimings;
use voipcheck::operator::lease::{Attempt, LeaseLock};
use voipcheck::operator::shards::{SHARD_LABEL, SHARDS, selector, shard_of, unsharded_selector};

const NS: &str = "telephony";
const WAIT: Duration = Duration::from_secs(30);
/// The checks' interval.
const INTERVAL: Duration = Duration::from_secs(5);

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

/// Who holds each shard's Lease.
fn holders(api: &FakeApi) -> Vec<Option<String>> {
    (0..SHARDS)
        .map(|n| {
            api.lease(LEASE_NS, &shard_lease(n))?["spec"]["holderIdentity"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// How many shards each replica holds.
fn split(api: &FakeApi) -> BTreeMap<String, usize> {
    let mut split = BTreeMap::new();
    for holder in holders(api).into_iter().flatten() {
        *split.entry(holder).or_default() += 1;
    }
    split
}

/// Waits until the shards are held as `wanted` says (identity, count), and returns when.
async fn wait_for_split(api: &FakeApi, wanted: &[(&str, usize)]) -> Instant {
    let wanted: BTreeMap<String, usize> = wanted.iter().map(|(i, n)| ((*i).into(), *n)).collect();
    api.wait_until(&format!("the shards held as {wanted:?}"), WAIT, |api| {
        (split(api) == wanted).then_some(())
    })
    .await;
    Instant::now()
}

/// A Portal check of `url`: every 5 s, failing after `failure_threshold` runs.
fn web_check(name: &str, url: &str, failure_threshold: u32) -> Value {
    json!({
        "apiVersion": "voipcheck.io/v1alpha1", "kind": "VoipCheck",
        "metadata": { "name": name, "namespace": NS },
        "spec": {
            "target": { "kind": "Portal", "name": name },
            "interval": format!("{}s", INTERVAL.as_secs()),
            "timeout": "1s",
            "failureThreshold": failure_threshold,
            "http": [ { "name": "ui", "url": url } ]
        }
    })
}

/// `count` checks `portal-<i>` of `url`; their shards by name.
fn insert_checks(
    api: &FakeApi,
    count: usize,
    url: &str,
    threshold: u32,
) -> BTreeMap<String, usize> {
    (0..count)
        .map(|i| {
            let name = format!("portal-{i}");
            let object = api.insert(web_check(&name, url, threshold));
            let uid = object["metadata"]["uid"].as_str().map(str::to_owned);
            let shard = shard_of(uid.as_deref(), &CheckId::new(NS, &name));
            (name, shard)
        })
        .collect()
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

/// The top-level condition `type_` (the verdict across locations); `null` until written.
fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

/// The last run in this location's entry of `status`.
fn last_run(status: &Value) -> &Value {
    status["locations"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["name"] == support::operator::LOCATION))
        .map_or(&Value::Null, |entry| &entry["lastRun"])
}

/// Runs started so far on a replica (one observation of `schedule_lag_seconds` per run).
async fn runs(replica: &RunningOperator) -> f64 {
    replica
        .sample("voipcheck_schedule_lag_seconds_count", &[])
        .await
        .unwrap_or(0.0)
}

/// The last run of each check a replica probes, from its `/metrics`.
fn last_runs(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with("voipcheck_last_run_timestamp_seconds{"))
        .filter_map(|l| {
            let name = l.split("name=\"").nth(1)?.split('"').next()?;
            Some((name.to_owned(), l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// Every run seen of every check, by replica: `/metrics` of all replicas read over and over.
#[derive(Default)]
struct Runs {
    /// check → replica → the times of its runs.
    seen: BTreeMap<String, BTreeMap<String, BTreeSet<u64>>>,
}

impl Runs {
    /// Reads every replica's `/metrics` once.
    async fn look(&mut self, replicas: &[(&str, &RunningOperator)]) {
        for (identity, replica) in replicas {
            for (check, time) in last_runs(&replica.metrics().await) {
                let at = (time * 1000.0) as u64;
                self.seen
                    .entry(check)
                    .or_default()
                    .entry((*identity).to_owned())
                    .or_default()
                    .insert(at);
            }
        }
    }

    /// Looks every 100 ms for `period`.
    async fn watch(&mut self, replicas: &[(&str, &RunningOperator)], period: Duration) {
        let until = Instant::now() + period;
        while Instant::now() < until {
            self.look(replicas).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The checks that one replica ran between two runs of another (both probing it at once).
    fn overlaps(&self) -> Vec<String> {
        let mut overlaps = Vec::new();
        for (check, by_replica) in &self.seen {
            for (a, a_runs) in by_replica {
                let (Some(first), Some(last)) = (a_runs.first(), a_runs.last()) else {
                    continue;
                };
                for (b, b_runs) in by_replica {
                    if a != b && b_runs.iter().any(|t| first < t && t < last) {
                        overlaps.push(format!("{check}: {a} {a_runs:?}, {b} {b_runs:?}"));
                    }
                }
            }
        }
        overlaps
    }

    /// Which replicas ran `check`.
    fn probers(&self, check: &str) -> Vec<String> {
        self.seen
            .get(check)
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Replica `a` holding every shard, its Portal check of nginx (failing after one run) written
/// once.
async fn holding_a_portal() -> (FakeApi, Nginx, RunningOperator) {
    let api = FakeApi::start();
    let nginx = Nginx::start();
    api.insert(web_check("portal", nginx.http_url("/").as_str(), 1));
    let replica = replica(&api, "a");
    wait_for_split(&api, &[("a", SHARDS)]).await;
    api.wait_until("the first status", WAIT, |api| api.status(NS, "portal"))
        .await;
    (api, nginx, replica)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_hold_four_shards_each_and_every_check_is_probed_by_exactly_one() {
    let api = FakeApi::start();
    let nginx = Nginx::start();
    let shards = insert_checks(&api, 24, nginx.http_url("/").as_str(), 3);
    let (a, b, c) = (replica(&api, "a"), replica(&api, "b"), replica(&api, "c"));
    wait_for_split(&api, &[("a", 4), ("b", 4), ("c", 4)]).await;
    let replicas = [("a", &a), ("b", &b), ("c", &c)];
    // Settled: what ran before the split (a alone took every shard first) is past.
    tokio::time::sleep(INTERVAL).await;
    let mut runs = Runs::default();
    runs.watch(&replicas, INTERVAL * 2).await;
    let holders = holders(&api);
    for (check, shard) in &shards {
        let holder = holders[*shard].clone().unwrap();
        assert_eq!(runs.probers(check), [holder], "{check} (shard {shard})");
    }
    for (_, replica) in replicas {
        let text = replica.metrics().await;
        assert_eq!(sample(&text, "voipcheck_shards", &[]), Some(SHARDS as f64));
        assert_eq!(
            sample(&text, "voipcheck_shards_held", &[]),
            Some(4.0),
            "{text}"
        );
        assert_eq!(sample(&text, "voipcheck_leader", &[]), Some(1.0));
    }
    for identity in ["a", "b", "c"] {
        let member = api.lease(LEASE_NS, &member_lease(identity)).unwrap();
        assert_eq!(member["spec"]["holderIdentity"], identity);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_shards_move_after_the_lease_duration_with_their_verdicts_intact() {
    let api = FakeApi::start();
    let shards = insert_checks(&api, 24, &dead_url(), 1);
    let (a, b, c) = (replica(&api, "a"), replica(&api, "b"), replica(&api, "c"));
    wait_for_split(&api, &[("a", 4), ("b", 4), ("c", 4)]).await;
    let reportable = |api: &FakeApi| -> Option<BTreeMap<String, Value>> {
        shards
            .keys()
            .map(|name| {
                let status = api.status(NS, name)?;
                let hotline = condition(&status, "HotlineReportable");
                (hotline["status"] == "True").then(|| (name.clone(), status.clone()))
            })
            .collect()
    };
    let before = api
        .wait_until("every check reportable", WAIT, reportable)
        .await;
    // A transition's Events follow its status write: wait for the last of them.
    api.wait_until("every check's HotlineReportable Event", WAIT, |api| {
        let events = api.events(NS);
        shards
            .keys()
            .all(|name| {
                events.iter().any(|e| {
                    e["regarding"]["name"] == name.as_str() && e["action"] == "HotlineReportable"
                })
            })
            .then_some(())
    })
    .await;
    let c_shards: Vec<usize> = (0..SHARDS)
        .filter(|n| holders(&api)[*n].as_deref() == Some("c"))
        .collect();
    let events_before = api.events(NS).len();

    c.kill();
    let killed = Instant::now();
    let killed_at = SystemTime::now();
    let moved = wait_for_split(&api, &[("a", 6), ("b", 6)]).await;
    // A Lease expires its duration after the others saw its last renewal, which was up to
    // one retry before the kill.
    let takeover = moved - killed;
    assert!(
        takeover >= TIMINGS.duration - TIMINGS.retry
            && takeover <= TIMINGS.duration + TIMINGS.retry * 3,
        "taken over after {takeover:?}"
    );
    // Each moved check runs again on its new holder, which writes its status.
    let replicas = [("a", &a), ("b", &b)];
    let mut runs = Runs::default();
    runs.watch(&replicas, INTERVAL + Duration::from_secs(1))
        .await;
    for (name, shard) in &shards {
        assert_eq!(runs.probers(name).len(), 1, "{name} (shard {shard})");
    }
    // A moved check runs on its slot, one interval after its last run; one whose slot passed
    // before the take catches up within a quarter interval of it, not up to an interval later.
    let due = (killed_at + INTERVAL).max(killed_at + takeover + INTERVAL / 4);
    let slack = Duration::from_millis(1500);
    for name in shards
        .keys()
        .filter(|name| c_shards.contains(&shards[*name]))
    {
        let first = runs.seen[name].values().flatten().min().copied().unwrap();
        let first = UNIX_EPOCH + Duration::from_millis(first);
        assert!(
            first <= due + slack,
            "{name}: ran again {:?} after the kill, due by {:?}",
            first.duration_since(killed_at),
            due.duration_since(killed_at)
        );
    }
    let after = reportable(&api).expect("still reportable");
    for (name, status) in &after {
        let was = &before[name];
        for type_ in ["HotlineReportable", "WebReachable", "Ready"] {
            assert_eq!(
                condition(status, type_),
                condition(was, type_),
                "{name} {type_}"
            );
        }
        assert_eq!(
            status["incident"]["since"], was["incident"]["since"],
            "{name}"
        );
        if c_shards.contains(&shards[name]) {
            assert!(last_run(status).is_object(), "{name}: {status}");
            assert_ne!(last_run(status), last_run(was), "{name} never ran again");
        }
    }
    // No Event: nothing changed for the person watching.
    let new_events: Vec<Value> = api.events(NS).into_iter().skip(events_before).collect();
    assert!(new_events.is_empty(), "{new_events:#?}");

    // The killed replica's member Lease is deleted once long gone, on the version read.
    let member = member_lease("c");
    api.wait_until("c's member Lease deleted", WAIT, |api| {
        api.lease(LEASE_NS, &member).is_none().then_some(())
    })
    .await;
    let deletes = api.requests_matching(&Matcher::request(Method::DELETE, &member));
    assert!(!deletes.is_empty());
    for delete in deletes {
        let version = &delete.body["preconditions"]["resourceVersion"];
        assert!(version.is_string(), "{:?}", delete.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_replica_takes_its_share_and_no_check_is_probed_by_two_at_once() {
    let api = FakeApi::start();
    let nginx = Nginx::start();
    let shards = insert_checks(&api, 24, nginx.http_url("/").as_str(), 3);
    let (a, b, c) = (replica(&api, "a"), replica(&api, "b"), replica(&api, "c"));
    wait_for_split(&api, &[("a", 4), ("b", 4), ("c", 4)]).await;
    tokio::time::sleep(INTERVAL).await;
    let mut runs = Runs::default();
    runs.watch(&[("a", &a), ("b", &b), ("c", &c)], INTERVAL)
        .await;

    let d = replica(&api, "d");
    let replicas = [("a", &a), ("b", &b), ("c", &c), ("d", &d)];
    let until = Instant::now() + WAIT;
    while split(&api).get("d") != Some(&3) {
        assert!(
            Instant::now() < until,
            "d never took its share: {:?}",
            split(&api)
        );
        runs.look(&replicas).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    runs.watch(&replicas, INTERVAL * 2).await;
    assert_eq!(
        split(&api),
        BTreeMap::from([
            ("a".into(), 3),
            ("b".into(), 3),
            ("c".into(), 3),
            ("d".into(), 3)
        ])
    );
    assert_eq!(runs.overlaps(), Vec::<String>::new());
    let holders = holders(&api);
    let moved: Vec<&String> = shards
        .iter()
        .filter(|(_, shard)| holders[**shard].as_deref() == Some("d"))
        .map(|(name, _)| name)
        .collect();
    assert!(!moved.is_empty(), "no check moved to d");
    for name in moved {
        assert!(runs.probers(name).contains(&"d".to_owned()), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_hands_its_shards_over_at_once() {
    let api = FakeApi::start();
    let (a, b) = (replica(&api, "a"), replica(&api, "b"));
    wait_for_split(&api, &[("a", 6), ("b", 6)]).await;
    let stopping = Instant::now();
    a.stop().await;
    assert!(api.lease(LEASE_NS, &member_lease("a")).is_none());
    wait_for_split(&api, &[("b", SHARDS)]).await;
    assert!(
        stopping.elapsed() < TIMINGS.duration,
        "taken over after {:?}: not before the Leases expired",
        stopping.elapsed()
    );
    // Published at the end of the look that took them.
    let deadline = Instant::now() + TIMINGS.retry * 2;
    while b.sample("voipcheck_shards_held", &[]).await != Some(SHARDS as f64) {
        assert!(
            Instant::now() < deadline,
            "voipcheck_shards_held not updated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.stop().await;
    assert_eq!(split(&api), BTreeMap::new(), "released on shutdown");
}

/// The Secrets read so far (GETs by name).
fn secrets_read(api: &FakeApi) -> BTreeSet<String> {
    let prefix = format!("/api/v1/namespaces/{NS}/secrets/");
    api.requests()
        .into_iter()
        .filter(|r| r.method == Method::GET && !r.is_watch())
        .filter_map(|r| r.path.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

/// Waits until each of `checks` has its top-level `Ready` condition.
async fn wait_for_ready_condition(api: &FakeApi, checks: &[&String]) {
    api.wait_until("a Ready condition on each check", WAIT, |api| {
        checks
            .iter()
            .all(|name| {
                api.status(NS, name)
                    .is_some_and(|s| !condition(&s, "Ready").is_null())
            })
            .then_some(())
    })
    .await;
}

/// A replica builds entries only for the checks of the shards it holds: it reads no Secret of
/// another replica's checks (at 30,000 checks over 3 replicas it would read every Secret of
/// the other 20,000 at start), and reads those of a shard once it takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reads_the_secrets_of_its_shards_checks_only_and_those_of_a_shard_it_takes() {
    let api = FakeApi::start();
    // Each check reads a Secret of its own (absent: the check is CredentialsMissing).
    let shards: BTreeMap<String, usize> = (0..24)
        .map(|i| {
            let name = format!("portal-{i}");
            let mut check = web_check(&name, "https://127.0.0.1:1/", 3);
            check["spec"]["http"][0]["basicAuthSecretRef"] =
                json!({ "name": format!("auth-{name}") });
            let uid = api.insert(check)["metadata"]["uid"]
                .as_str()
                .map(str::to_owned);
            let shard = shard_of(uid.as_deref(), &CheckId::new(NS, &name));
            (name, shard)
        })
        .collect();
    // Another replica holds every shard but that of portal-0, and renews for an hour.
    let own = shards["portal-0"];
    let leases: Api<Lease> = Api::namespaced(api.client(), LEASE_NS);
    for n in (0..SHARDS).filter(|n| *n != own) {
        let mut other = LeaseLock::new(
            leases.clone(),
            &shard_lease(n),
            "other",
            Duration::from_secs(3600),
        );
        assert_eq!(other.try_acquire_or_renew().await, Attempt::Held);
    }
    let _replica = replica(&api, "a");
    wait_for_split(&api, &[("a", 1), ("other", SHARDS - 1)]).await;
    let (mine, others): (Vec<&String>, Vec<&String>) =
        shards.keys().partition(|name| shards[*name] == own);
    wait_for_ready_condition(&api, &mine).await;
    let secret_of = |names: &[&String]| -> BTreeSet<String> {
        names.iter().map(|name| format!("auth-{name}")).collect()
    };
    assert_eq!(secrets_read(&api), secret_of(&mine));
    for name in &others {
        assert!(api.status(NS, name).is_none(), "{name} is not a's to write");
    }

    // The other replica's Leases go: a takes every shard and builds their checks' entries.
    for n in (0..SHARDS).filter(|n| *n != own) {
        api.delete(Kind::Lease, LEASE_NS, &shard_lease(n));
    }
    wait_for_split(&api, &[("a", SHARDS)]).await;
    wait_for_ready_condition(&api, &others).await;
    let all: Vec<&String> = shards.keys().collect();
    assert_eq!(secrets_read(&api), secret_of(&all));
    let ready = condition(&api.status(NS, others[0]).unwrap(), "Ready").clone();
    assert_eq!(ready["reason"], "CredentialsMissing", "{ready}");
}

/// The shard label of check `name`, if it has one.
fn shard_label(api: &FakeApi, name: &str) -> Option<String> {
    let check = api.get(Kind::VoipCheck, NS, name)?;
    check["metadata"]["labels"][SHARD_LABEL]
        .as_str()
        .map(str::to_owned)
}

/// Waits until each check of `shards` carries the label of its shard.
async fn wait_for_labels(api: &FakeApi, shards: &BTreeMap<String, usize>) {
    api.wait_until("every check labelled with its shard", WAIT, |api| {
        shards
            .iter()
            .all(|(name, shard)| shard_label(api, name) == Some(shard.to_string()))
            .then_some(())
    })
    .await;
}

/// The label writes: server-side applies on the object itself, not its status.
fn label_writes(api: &FakeApi) -> Vec<support::fake_api::Logged> {
    let prefix = format!("/apis/voipcheck.io/v1alpha1/namespaces/{NS}/voipchecks/");
    api.requests()
        .into_iter()
        .filter(|r| r.method == Method::PATCH && r.path.starts_with(&prefix))
        .filter(|r| !r.path.ends_with("/status"))
        .collect()
}

/// The label selectors of the VoipCheck lists and watches replica `identity` sent (`None`: a
/// request without).
fn check_selectors(api: &FakeApi, identity: &str) -> BTreeSet<Option<String>> {
    let path = format!("/apis/voipcheck.io/v1alpha1/namespaces/{NS}/voipchecks");
    api.requests()
        .into_iter()
        .filter(|r| r.method == Method::GET && r.path == path && r.client == identity)
        .map(|r| r.param("labelSelector"))
        .collect()
}

/// A replica caches only the checks of the shards it holds: each check carries its shard as a
/// label, written by the holder with server-side apply, and a replica lists and watches one
/// label selector per shard it holds (plus the checks not labelled yet), never every check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_labels_each_check_with_its_shard_and_a_replica_watches_only_its_shards() {
    let api = FakeApi::start();
    let nginx = Nginx::start();
    let shards = insert_checks(&api, 24, nginx.http_url("/").as_str(), 3);
    let a = replica(&api, "a");
    wait_for_split(&api, &[("a", SHARDS)]).await;
    wait_for_labels(&api, &shards).await;
    for write in label_writes(&api) {
        let name = write.path.rsplit('/').next().unwrap();
        let check = api.get(Kind::VoipCheck, NS, name).unwrap();
        assert_eq!(write.param("fieldManager").as_deref(), Some("voipcheck"));
        assert_eq!(write.param("force").as_deref(), Some("true"));
        assert_eq!(write.content_type, "application/apply-patch+yaml");
        assert_eq!(
            write.body,
            json!({
                "apiVersion": "voipcheck.io/v1alpha1", "kind": "VoipCheck",
                "metadata": {
                    "name": name,
                    "uid": check["metadata"]["uid"],
                    "labels": { SHARD_LABEL: shards[name].to_string() }
                }
            })
        );
        assert_eq!(
            check["metadata"]["generation"], 1,
            "a label is no spec change"
        );
        let managers = check["metadata"]["managedFields"].as_array().unwrap();
        let label = managers
            .iter()
            .find(|m| m["manager"] == "voipcheck" && m.get("subresource").is_none())
            .unwrap_or_else(|| panic!("no label manager: {managers:#?}"));
        assert_eq!(label["operation"], "Apply");
        assert_eq!(
            label["fieldsV1"],
            json!({ "f:metadata": { "f:labels": { format!("f:{SHARD_LABEL}"): {} } } })
        );
    }
    let mut selectors: BTreeSet<Option<String>> = (0..SHARDS).map(|n| Some(selector(n))).collect();
    selectors.insert(Some(unsharded_selector()));
    // The labels and the watches are written by two tasks: the watches may come later.
    api.wait_until("a's watches", WAIT, |api| {
        (check_selectors(api, "a") == selectors).then_some(())
    })
    .await;

    // b joins: it lists and watches the six shards it takes, and the checks not labelled yet.
    let b = replica(&api, "b");
    wait_for_split(&api, &[("a", 6), ("b", 6)]).await;
    let mut selectors: BTreeSet<Option<String>> = holders(&api)
        .iter()
        .enumerate()
        .filter(|(_, holder)| holder.as_deref() == Some("b"))
        .map(|(n, _)| Some(selector(n)))
        .collect();
    selectors.insert(Some(unsharded_selector()));
    api.wait_until("b's watches", WAIT, |api| {
        (check_selectors(api, "b") == selectors).then_some(())
    })
    .await;
    let by_b: Vec<_> = label_writes(&api)
        .into_iter()
        .filter(|w| w.client == "b")
        .collect();
    assert!(by_b.is_empty(), "labelled already: {by_b:?}");

    // A check created now is labelled by its shard's holder and probed by it alone.
    let object = api.insert(web_check("late", nginx.http_url("/").as_str(), 3));
    let uid = object["metadata"]["uid"].as_str().map(str::to_owned);
    let late = shard_of(uid.as_deref(), &CheckId::new(NS, "late"));
    wait_for_labels(&api, &[("late".to_owned(), late)].into()).await;
    api.wait_until("late's first status", WAIT, |api| api.status(NS, "late"))
        .await;
    let mut runs = Runs::default();
    runs.watch(&[("a", &a), ("b", &b)], INTERVAL + Duration::from_secs(1))
        .await;
    let holder = holders(&api)[late].clone().unwrap();
    assert_eq!(runs.probers("late"), [holder]);
}

/// A label naming the wrong shard (copied from another check's manifest) or no shard at all
/// would leave a check in no replica's watch, or in one that does not run it: the holder of
/// the shard it names, or of its uid's shard, writes the right one and the check runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_shard_label_is_corrected_and_the_check_runs() {
    let api = FakeApi::start();
    let nginx = Nginx::start();
    let mut shards = BTreeMap::new();
    for (name, label) in [
        ("copied", None),
        ("garbage", Some("x")),
        ("padded", Some("03")),
    ] {
        let mut check = web_check(name, nginx.http_url("/").as_str(), 3);
        let object = api.insert(check.clone());
        let uid = object["metadata"]["uid"].as_str().map(str::to_owned);
        let shard = shard_of(uid.as_deref(), &CheckId::new(NS, name));
        let label = label.map_or(((shard + 5) % SHARDS).to_string(), str::to_owned);
        check["metadata"] = object["metadata"].clone();
        check["metadata"]["labels"] = json!({ SHARD_LABEL: label, "team": "voice" });
        api.replace(check);
        shards.insert(name.to_owned(), shard);
    }
    let _a = replica(&api, "a");
    wait_for_labels(&api, &shards).await;
    wait_for_ready_condition(&api, &shards.keys().collect::<Vec<_>>()).await;
    for name in shards.keys() {
        let labels = &api.get(Kind::VoipCheck, NS, name).unwrap()["metadata"]["labels"];
        assert_eq!(labels["team"], "voice", "other labels stay: {labels}");
    }
}

/// Without RBAC for the label (an old ClusterRole), a check is in no replica's watch: the
/// failed write is counted with its reason and retried, and once allowed the check runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_label_write_is_counted_and_retried_until_the_check_runs() {
    let api = FakeApi::start();
    let nginx = Nginx::start();
    let prefix = format!("/apis/voipcheck.io/v1alpha1/namespaces/{NS}/voipchecks/");
    let refused = api.inject(
        Matcher::when(move |r| {
            r.method == Method::PATCH && r.path.starts_with(&prefix) && !r.path.ends_with("/status")
        }),
        Fault::Status(403),
    );
    let shards = insert_checks(&api, 1, nginx.http_url("/").as_str(), 3);
    let a = replica(&api, "a");
    wait_for_split(&api, &[("a", SHARDS)]).await;
    let failures = ["kind=\"label\"", "category=\"rejected\""];
    let deadline = Instant::now() + WAIT;
    while a
        .sample("voipcheck_api_write_failures_total", &failures)
        .await
        .is_none_or(|n| n < 1.0)
    {
        assert!(Instant::now() < deadline, "{}", a.metrics().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        api.status(NS, "portal-0").is_none(),
        "not run while unlabelled"
    );
    api.clear_fault(refused);
    wait_for_labels(&api, &shards).await;
    api.wait_until("the first status", WAIT, |api| api.status(NS, "portal-0"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_renewal_never_overwrites_the_new_holder() {
    let api = FakeApi::start();
    let leases: Api<Lease> = Api::namespaced(api.client(), LEASE_NS);
    let lease = shard_lease(0);
    let holder = |api: &FakeApi| -> Option<String> {
        api.lease(LEASE_NS, &lease)?["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_owned)
    };
    let mut a = LeaseLock::new(leases.clone(), &lease, "a", TIMINGS.duration);
    let mut b = LeaseLock::new(leases, &lease, "b", TIMINGS.duration);
    assert_eq!(a.try_acquire_or_renew().await, Attempt::Held);
    let created_version =
        api.lease(LEASE_NS, &lease).unwrap()["metadata"]["resourceVersion"].clone();
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
async fn a_failed_renewal_neither_gives_up_a_shard_nor_drops_the_checks_series() {
    let api = FakeApi::start();
    let nginx = Nginx::start();
    api.insert(web_check("portal", nginx.http_url("/").as_str(), 3));
    let replica = replica(&api, "a");
    wait_for_split(&api, &[("a", SHARDS)]).await;
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
    // Nothing flaps for a whole lease duration: every shard still held, the series stay.
    let watch_until = tokio::time::Instant::now() + TIMINGS.duration;
    while tokio::time::Instant::now() < watch_until {
        let text = replica.metrics().await;
        assert_eq!(sample(&text, "voipcheck_leader", &[]), Some(1.0), "{text}");
        let held = sample(&text, "voipcheck_shards_held", &[]);
        assert_eq!(held, Some(SHARDS as f64), "{text}");
        assert_eq!(sample(&text, "voipcheck_probe_success", &series), Some(1.0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lease_errors = replica
        .sample("voipcheck_reconcile_errors_total", &["category=\"lease\""])
        .await;
    assert_eq!(lease_errors, Some(1.0));
    assert_eq!(split(&api), BTreeMap::from([("a".into(), SHARDS)]));
    replica.stop().await;
    assert_eq!(split(&api), BTreeMap::new(), "released on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_renew_stops_writing_in_time_and_keeps_probing() {
    let (api, nginx, replica) = holding_a_portal().await;

    // Every renewal hangs from now on.
    let fault = api.inject(Matcher::request(Method::PUT, "/leases/"), Fault::Hang);
    let hung_at = tokio::time::Instant::now();
    // Past the renew deadline the replica holds no shard it may write; before the Leases
    // could expire.
    loop {
        let leader = replica.sample("voipcheck_leader", &[]).await;
        if leader == Some(0.0) {
            break;
        }
        assert!(hung_at.elapsed() < TIMINGS.duration, "still writing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(hung_at.elapsed() >= TIMINGS.renew_deadline - TIMINGS.retry);
    assert_eq!(
        replica.sample("voipcheck_shards_held", &[]).await,
        Some(0.0)
    );
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

    // The API answers again and nobody else took the shards: writing resumes, with the outage
    // the replica saw while isolated.
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
    let (api, _nginx, replica) = holding_a_portal().await;

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
    wait_for_split(&api, &[("a", SHARDS)]).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while replica.sample("voipcheck_shards_held", &[]).await != Some(SHARDS as f64) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never writing again"
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
    wait_for_split(&api, &[("a", SHARDS)]).await;
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
    // b is ready and holds half the shards before a goes: a rolling update.
    wait_for_split(&api, &[("a", 6), ("b", 6)]).await;
    let events_before = api.events(NS).len();
    a.stop().await;
    wait_for_split(&api, &[("b", SHARDS)]).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_renewals_hang_stops_writing_and_stops_probing_once_its_shards_moved() {
    let api = FakeApi::start();
    let nginx = Nginx::start();
    insert_checks(&api, 12, nginx.http_url("/").as_str(), 3);
    let (a, b) = (replica(&api, "a"), replica(&api, "b"));
    wait_for_split(&api, &[("a", 6), ("b", 6)]).await;

    // b's Lease writes (its shards' renewals, its member Lease's) hang from now on.
    let b_writes = Matcher::when(|r| {
        r.method == Method::PUT
            && r.path.contains("/leases/")
            && r.body["spec"]["holderIdentity"] == "b"
    });
    api.inject(b_writes, Fault::Hang);
    let hung_at = Instant::now();
    // b stops writing before its Leases can expire...
    loop {
        let held = b.sample("voipcheck_shards_held", &[]).await;
        if held == Some(0.0) {
            break;
        }
        assert!(hung_at.elapsed() < TIMINGS.duration, "b still writing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(split(&api).get("b"), Some(&6), "b's Leases taken too early");
    // ...a takes them once they expired, and b, seeing the new holder, stops probing them.
    wait_for_split(&api, &[("a", SHARDS)]).await;
    assert!(hung_at.elapsed() >= TIMINGS.duration);
    let deadline = Instant::now() + WAIT;
    while b.sample("voipcheck_checks", &[]).await != Some(0.0) {
        assert!(Instant::now() < deadline, "b still probing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(a.sample("voipcheck_checks", &[]).await, Some(12.0));
    assert_eq!(a.sample("voipcheck_shards_held", &[]).await, Some(12.0));
}
