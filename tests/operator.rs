//! The controller through kube's mock client (the ApiServerVerifier pattern of kube-rs'
//! controller-rs): every request the operator makes is asserted — method, path and body — and
//! answered by the test, while the probes run for real against the lab's Kamailio and nginx.

mod support;

use base64::Engine as _;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use support::kamailio::Kamailio;
use support::nginx::Nginx;
use support::operator::sample;
use tower_test::mock::{Handle, SendResponse};
use voipcheck::api::{ConditionStatus, ConditionType, Reason, VoipCheck, VoipCheckStatus};
use voipcheck::check::{AllowList, CheckId};
use voipcheck::metrics::Metrics;
use voipcheck::operator::SecretAccess;
use voipcheck::operator::cache::Checks;
use voipcheck::operator::controller::{self, Context};
use voipcheck::operator::engine::Engine;
use voipcheck::operator::leader::Leadership;
use voipcheck::operator::shards::{Gate, SHARDS};
use voipcheck::operator::writer::{Part, StatusWriter, Writers, Writing};
use voipcheck::probe::dns::Dns;
use voipcheck::schedule::{Outbox, StatusUpdate};
use voipcheck::status::Transition;

const NS: &str = "telephony";
const NAME: &str = "lab";
const UID: &str = "6a1f2c3d-0000-4000-8000-000000000001";
const GENERATION: i64 = 2;
const SECRET: &str = "lab-sip";
/// Longer than the first run's jitter (at most one interval) plus the probes' timeout.
const WAIT: Duration = Duration::from_secs(30);

/// The status apply of field manager `manager`.
fn status_path_of(manager: &str) -> String {
    let manager: String = url::form_urlencoded::byte_serialize(manager.as_bytes()).collect();
    format!(
        "/apis/voipcheck.io/v1alpha1/namespaces/{NS}/voipchecks/{NAME}/status?&force=true&fieldManager={manager}"
    )
}

/// The top level's apply: the verdict across locations.
fn status_path() -> String {
    status_path_of("voipcheck")
}

/// The apply of location `test`'s entry.
fn entry_path() -> String {
    status_path_of("voipcheck/test")
}

fn secret_path() -> String {
    format!("/api/v1/namespaces/{NS}/secrets/{SECRET}")
}

fn events_path() -> String {
    format!("/apis/events.k8s.io/v1/namespaces/{NS}/events?")
}

// ---------------------------------------------------------------------------------------------
// The API server side.

/// The test's end of the mock client: each request, asserted and answered in turn.
struct ApiServer(Handle<Request<Body>, Response<Body>>);

/// One request the operator made, with the means to answer it.
struct Call {
    method: Method,
    uri: String,
    body: Value,
    respond: SendResponse<Response<Body>>,
}

impl ApiServer {
    async fn next(&mut self) -> Call {
        let (request, respond) = tokio::time::timeout(WAIT, self.0.next_request())
            .await
            .expect("the operator made no further request")
            .expect("the client is gone");
        let method = request.method().clone();
        let uri = request.uri().to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Call {
            method,
            uri,
            body,
            respond,
        }
    }

    /// Asserts that no request arrives for `quiet`.
    async fn silent(&mut self, quiet: Duration) {
        if let Ok(Some((request, _))) = tokio::time::timeout(quiet, self.0.next_request()).await {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }

    /// Answers the reconcile's Secret read: 404, or the Secret with the lab's password.
    async fn secret_read(&mut self, exists: bool) {
        let call = self.next().await;
        call.expect(Method::GET, &secret_path());
        if exists {
            let password = base64::engine::general_purpose::STANDARD.encode("alice-secret");
            call.reply(
                StatusCode::OK,
                json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": { "name": SECRET, "namespace": NS },
                    "data": { "password": password }
                }),
            );
        } else {
            call.reply(
                StatusCode::NOT_FOUND,
                json!({
                    "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                    "message": format!("secrets \"{SECRET}\" not found"),
                    "reason": "NotFound", "details": { "name": SECRET, "kind": "secrets" },
                    "code": 404
                }),
            );
        }
    }

    /// The status writer's server-side apply: asserted, answered, and its `status` returned.
    async fn status_write(&mut self) -> Value {
        let call = self.next().await;
        call.expect(Method::PATCH, &status_path());
        call.answer_status()
    }

    /// What a run of the one-location install writes: location `test`'s entry and the top
    /// level (two writers: in either order), then the top level's Events, one per change since
    /// `before` (the top level written last). All asserted and answered.
    async fn run_written(&mut self, before: &Value) -> Written {
        let (mut entry, mut top, mut events) = (None, None, Vec::new());
        while entry.is_none()
            || top
                .as_ref()
                .is_none_or(|t| events.len() < changed(before, t).len())
        {
            let call = self.next().await;
            if call.uri == entry_path() {
                assert!(entry.is_none(), "a second entry write");
                entry = Some(call.answer_status());
            } else if call.uri == status_path() {
                assert!(top.is_none(), "a second top-level write");
                top = Some(call.answer_status());
            } else {
                assert!(
                    top.is_some(),
                    "an Event before its status: {} {}",
                    call.method,
                    call.uri
                );
                events.push(call.answer_event());
            }
        }
        let entry = entry.unwrap();
        let top = top.unwrap();
        // The entry is the location's own view, the top level the same verdict (one location).
        let locations = entry["locations"].as_array().expect("an entry");
        assert_eq!(entry.as_object().unwrap().len(), 1, "{entry:#}");
        assert_eq!(locations.len(), 1, "{entry:#}");
        let own = locations[0].clone();
        assert_eq!(own["name"], "test");
        assert_eq!(own["conditions"], top["conditions"], "{own:#} {top:#}");
        assert_eq!(own["observedGeneration"], top["observedGeneration"]);
        assert_eq!(own.get("incident"), top.get("incident"));
        assert!(top.get("lastRun").is_none(), "{top:#}");
        Written { own, top, events }
    }

    /// The Events published after a status write, answered; returned as (action, type, reason,
    /// note) in arrival order.
    async fn events(&mut self, count: usize) -> Vec<(String, String, String, String)> {
        let mut events = Vec::new();
        for _ in 0..count {
            let call = self.next().await;
            events.push(call.answer_event());
        }
        events
    }
}

/// One run's writes: location `test`'s entry and the top level, and the Events as (action,
/// type, reason, note).
struct Written {
    own: Value,
    top: Value,
    events: Vec<(String, String, String, String)>,
}

impl Call {
    /// A status apply (asserted), answered with the object; its `status` returned.
    fn answer_status(self) -> Value {
        assert_eq!(self.method, Method::PATCH);
        assert_eq!(self.body["apiVersion"], "voipcheck.io/v1alpha1");
        assert_eq!(self.body["kind"], "VoipCheck");
        assert_eq!(self.body["metadata"], json!({ "uid": UID }));
        let status = self.body["status"].clone();
        let mut object = serde_json::to_value(lab_check(json!({}))).unwrap();
        object["status"] = status.clone();
        self.reply(StatusCode::OK, object);
        status
    }

    /// An Event's creation (asserted), answered; as (action, type, reason, note).
    fn answer_event(self) -> (String, String, String, String) {
        self.expect(Method::POST, &events_path());
        let event = self.body.clone();
        assert_eq!(
            event["regarding"],
            json!({
                "apiVersion": "voipcheck.io/v1alpha1", "kind": "VoipCheck",
                "name": NAME, "namespace": NS, "uid": UID
            })
        );
        assert_eq!(event["reportingController"], "voipcheck");
        assert_eq!(event["reportingInstance"], "test-0");
        let described = (
            event["action"].as_str().unwrap().to_owned(),
            event["type"].as_str().unwrap().to_owned(),
            event["reason"].as_str().unwrap().to_owned(),
            event["note"].as_str().unwrap().to_owned(),
        );
        self.reply(StatusCode::CREATED, event);
        described
    }

    fn expect(&self, method: Method, uri: &str) {
        assert_eq!(
            (&self.method, self.uri.as_str()),
            (&method, uri),
            "body: {}",
            self.body
        );
    }

    fn reply(self, status: StatusCode, body: Value) {
        let response = Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        self.respond.send_response(response);
    }
}

// ---------------------------------------------------------------------------------------------
// The operator side: everything `operator::run` wires up, except the watches and the Lease.

struct Operator {
    api: ApiServer,
    ctx: Arc<Context>,
    engine: Arc<Engine>,
    cache: Writer<VoipCheck>,
    metrics: Metrics,
}

impl Operator {
    /// A leading operator with an empty cache.
    fn leading() -> Operator {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let metrics = Metrics::new("test");
        let cache = Writer::<VoipCheck>::default();
        let checks = Checks::new(vec![cache.as_reader()]);
        let gate = Arc::new(Gate::every_shard(Leadership::Leader));
        let writers = Writers::start("test", true, writing(&client, &checks, gate, &metrics));
        let engine = Arc::new(Engine::new(
            Dns::system().unwrap(),
            metrics.clone(),
            8,
            checks,
            writers.outbox.clone(),
        ));
        for shard in 0..SHARDS {
            engine.take(shard);
        }
        let ctx = Arc::new(Context::new(
            client,
            AllowList::parse(&[]).unwrap(),
            engine.clone(),
            metrics.clone(),
            SecretAccess::Watch,
            "test".into(),
            &writers,
        ));
        Operator {
            api: ApiServer(handle),
            ctx,
            engine,
            cache,
            metrics,
        }
    }

    /// A leader whose lab check has run once, its first status written and Events published.
    async fn with_lab_check_running(kamailio: &Kamailio, nginx: &Nginx) -> (Operator, VoipCheck) {
        let mut operator = Operator::leading();
        let check = lab_check(lab_spec(kamailio, nginx));
        operator.watched(&check);
        operator.reconcile(&check, true).await;
        operator.api.run_written(&json!({})).await;
        (operator, check)
    }

    /// The watch delivered `check` (the reflector stores it; the writer finds its uid there).
    fn watched(&mut self, check: &VoipCheck) {
        self.cache
            .apply_watcher_event(&watcher::Event::Apply(check.clone()));
    }

    /// Reconciles `check`, answering its Secret read.
    async fn reconcile(&mut self, check: &VoipCheck, secret_exists: bool) {
        let reconcile = tokio::spawn(controller::reconcile(
            Arc::new(check.clone()),
            self.ctx.clone(),
        ));
        self.api.secret_read(secret_exists).await;
        let action = reconcile.await.unwrap().expect("reconcile succeeds");
        let resync = voipcheck::operator::decide::resync_after(
            controller::RESYNC,
            check.metadata.uid.as_deref(),
            &CheckId::new(NS, NAME),
        );
        assert_eq!(action, Action::requeue(resync));
    }
}

/// The shard of the lab check.
fn lab_shard() -> usize {
    voipcheck::operator::shards::shard_of(Some(UID), &CheckId::new(NS, NAME))
}

/// What the status writers of replica `test-0` share.
fn writing(client: &Client, checks: &Checks, gate: Arc<Gate>, metrics: &Metrics) -> Writing {
    Writing {
        client: client.clone(),
        reporter: reporter(),
        checks: checks.clone(),
        gate,
        metrics: metrics.clone(),
    }
}

fn reporter() -> Reporter {
    Reporter {
        controller: "voipcheck".into(),
        instance: Some("test-0".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

/// The lab's VoipCheck with `spec`, as the API server would hand it to the controller.
fn lab_check(spec: Value) -> VoipCheck {
    serde_json::from_value(json!({
        "apiVersion": "voipcheck.io/v1alpha1",
        "kind": "VoipCheck",
        "metadata": { "name": NAME, "namespace": NS, "uid": UID, "generation": GENERATION },
        "spec": if spec == json!({}) { minimal_spec() } else { spec },
    }))
    .unwrap()
}

fn minimal_spec() -> Value {
    json!({ "target": { "kind": "Cloud", "name": "lab" }, "http": [ { "name": "ui", "url": "http://127.0.0.1:9/" } ] })
}

/// A Cloud check of the lab: REGISTER as alice at Kamailio (password in Secret `lab-sip`), and
/// the web UI on nginx.
fn lab_spec(kamailio: &Kamailio, nginx: &Nginx) -> Value {
    json!({
        "target": { "kind": "Cloud", "name": "lab.example" },
        "interval": "5s",
        "timeout": "2s",
        "failureThreshold": 1,
        "sip": {
            "server": kamailio.uri("udp"),
            "register": {
                "username": "alice",
                "credentialsSecretRef": { "name": SECRET, "key": "password" }
            }
        },
        "http": [ { "name": "web-ui", "url": nginx.http_url("/").to_string(), "bodyContains": "STARFACE" } ]
    })
}

/// Checks every timestamp in `status` lies between `since` and now and every duration is
/// plausible, then replaces them with placeholders so the rest compares exactly.
fn loosen(value: &mut Value, since: SystemTime) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match key.as_str() {
                    "lastTransitionTime" | "time" | "since" => {
                        let text = value.as_str().expect("a timestamp string");
                        let at: Timestamp = text.parse().expect("an RFC 3339 timestamp");
                        let at = SystemTime::from(at);
                        let slack = Duration::from_secs(1);
                        assert!(
                            at + slack >= since && at <= SystemTime::now() + slack,
                            "{text}"
                        );
                        *value = json!("<time>");
                    }
                    "durationSeconds" => {
                        let seconds = value.as_f64().expect("a number");
                        assert!((0.0..=2.5).contains(&seconds), "{seconds}");
                        *value = json!("<duration>");
                    }
                    _ => loosen(value, since),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| loosen(v, since)),
        _ => {}
    }
}

/// (type, status, reason) of each condition in a written status.
fn conditions(status: &Value) -> BTreeSet<(String, String, String)> {
    status["conditions"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|c| {
                    let field = |k: &str| c[k].as_str().unwrap().to_owned();
                    (field("type"), field("status"), field("reason"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The conditions of `after` that are new or changed status/reason since `before`: one Event each.
fn changed(before: &Value, after: &Value) -> BTreeSet<(String, String, String)> {
    let before = conditions(before);
    conditions(after).difference(&before).cloned().collect()
}

fn condition(status: &Value, type_: ConditionType) -> &Value {
    status["conditions"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["type"] == type_.as_str()))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secret_is_credentials_missing_with_an_event_and_recovers_when_it_appears() {
    let kamailio = Kamailio::start();
    let nginx = Nginx::start();
    let mut operator = Operator::leading();
    let check = lab_check(lab_spec(&kamailio, &nginx));
    operator.watched(&check);
    let start = SystemTime::now();

    // (1) The Secret is missing: Ready=False CredentialsMissing naming the field, and an Event.
    operator.reconcile(&check, false).await;
    let Written {
        own: mut missing_here,
        top: mut missing,
        events,
    } = operator.api.run_written(&json!({})).await;
    let ready = condition(&missing, ConditionType::Ready).clone();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "CredentialsMissing");
    assert_eq!(ready["observedGeneration"], GENERATION);
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("spec.sip.register.credentialsSecretRef"),
        "{message}"
    );
    assert!(message.contains(SECRET), "{message}");
    assert_eq!(missing["observedGeneration"], GENERATION);
    let ready_event = events
        .iter()
        .find(|(action, ..)| action == "Ready")
        .expect("an Event for Ready");
    assert_eq!(ready_event.1, "Warning");
    assert_eq!(ready_event.2, "CredentialsMissing");
    assert!(ready_event.3.contains(message), "{}", ready_event.3);
    // A plan error is published once, not on every interval.
    operator.api.silent(Duration::from_secs(6)).await;

    // (2) The Secret appears (its watch event re-triggers the reconcile): the probes run and
    // the conditions are written anew, Ready recovering with a Normal Event.
    let mut recovered_check = check.clone();
    let mut written = missing.clone();
    written["locations"] = json!([missing_here]);
    recovered_check.status = serde_json::from_value(written).unwrap();
    operator.watched(&recovered_check);
    operator.reconcile(&recovered_check, true).await;
    let Written {
        own: recovered_here,
        top: mut recovered,
        events,
    } = operator.api.run_written(&missing).await;
    let ready = condition(&recovered, ConditionType::Ready);
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("True"), &json!("Healthy"))
    );
    let registered = condition(&recovered, ConditionType::SipRegistered);
    assert_eq!(
        (&registered["status"], &registered["reason"]),
        (&json!("True"), &json!("Registered"))
    );
    let expected = changed(&missing, &recovered);
    let arrived: BTreeSet<_> = events
        .iter()
        .map(|(action, _, reason, _)| (action.clone(), reason.clone()))
        .collect();
    let wanted: BTreeSet<_> = expected
        .iter()
        .map(|(type_, _, reason)| (type_.clone(), reason.clone()))
        .collect();
    assert_eq!(arrived, wanted);
    let ready_event = events.iter().find(|e| e.0 == "Ready").unwrap();
    assert_eq!(
        (ready_event.1.as_str(), ready_event.2.as_str()),
        ("Normal", "Healthy")
    );

    // (3) The Secret goes again, minutes later at most: the same change as in (1) is an Event of
    // its own with its own note, created (POST) like the first, not counted into (1)'s Event as
    // a series (which would keep (1)'s note).
    let mut gone_again = recovered_check.clone();
    let mut written = recovered.clone();
    written["locations"] = json!([recovered_here]);
    gone_again.status = serde_json::from_value(written).unwrap();
    operator.watched(&gone_again);
    operator.reconcile(&gone_again, false).await;
    let again = operator.api.run_written(&recovered).await.events;
    let ready_again = again.iter().find(|e| e.0 == "Ready").unwrap();
    assert_eq!(
        (ready_again.1.as_str(), ready_again.2.as_str()),
        ("Warning", "CredentialsMissing")
    );
    assert!(
        ready_again
            .3
            .starts_with("Ready False (was True Healthy): "),
        "{}",
        ready_again.3
    );

    // The first writes exactly: nothing ran, so no lastRun; the reason names field and
    // Secret. The top level says the same as the one location, and that none fails.
    loosen(&mut missing, start);
    loosen(&mut missing_here, start);
    let cannot_run = format!("spec.sip.register.credentialsSecretRef: Secret {SECRET} not found");
    assert_eq!(
        missing_here,
        json!({
            "name": "test",
            "observedGeneration": GENERATION,
            "conditions": missing["conditions"]
        })
    );
    assert_eq!(
        missing,
        json!({
            "observedGeneration": GENERATION,
            "failingLocations": 0,
            "conditions": [
                {
                    "type": "Ready", "status": "False", "reason": "CredentialsMissing",
                    "message": cannot_run, "observedGeneration": GENERATION,
                    "lastTransitionTime": "<time>"
                },
                {
                    "type": "HotlineReportable", "status": "False", "reason": "ConfigurationProblem",
                    "message": format!("the check cannot run: {cannot_run}"),
                    "observedGeneration": GENERATION, "lastTransitionTime": "<time>"
                }
            ]
        })
    );
    // After recovery: every condition anew, one Event per change, Normal all of them.
    loosen(&mut recovered, start);
    assert_eq!(
        conditions(&recovered),
        [
            ("HotlineReportable", "False", "Healthy"),
            ("Ready", "True", "Healthy"),
            ("SipRegistered", "True", "Registered"),
            ("WebReachable", "True", "Reachable"),
        ]
        .map(|(t, s, r)| (t.to_owned(), s.to_owned(), r.to_owned()))
        .into(),
        "{recovered:#}"
    );
    assert!(events.iter().all(|e| e.1 == "Normal"), "{events:?}");
    assert_eq!(
        events.iter().find(|e| e.0 == "Ready").unwrap().3,
        "Ready True (was False CredentialsMissing): all probes pass"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_against_the_lab_writes_the_exact_status() {
    let kamailio = Kamailio::start();
    let nginx = Nginx::start();
    let mut operator = Operator::leading();
    let check = lab_check(lab_spec(&kamailio, &nginx));
    operator.watched(&check);
    let start = SystemTime::now();

    operator.reconcile(&check, true).await;
    let Written {
        own: mut status,
        top,
        events,
    } = operator.api.run_written(&json!({})).await;
    assert!(events.iter().all(|e| e.1 == "Normal"), "{events:?}");
    assert_eq!(top["failingLocations"], 0, "{top:#}");
    loosen(&mut status, start);
    // The messages are the verdict's wording; the rest is exact.
    let mut expected: Vec<Value> = [
        (ConditionType::Ready, "True", "Healthy"),
        (ConditionType::SipRegistered, "True", "Registered"),
        (ConditionType::WebReachable, "True", "Reachable"),
        (ConditionType::HotlineReportable, "False", "Healthy"),
    ]
    .into_iter()
    .map(|(type_, value, reason)| {
        let message = &condition(&status, type_)["message"];
        assert!(message.is_string(), "{type_}: {message}");
        json!({
            "type": type_.as_str(), "status": value, "reason": reason, "message": message,
            "observedGeneration": GENERATION, "lastTransitionTime": "<time>"
        })
    })
    .collect();
    expected.sort_by_key(|c| c["type"].to_string());
    let mut written = status["conditions"].as_array().unwrap().clone();
    written.sort_by_key(|c| c["type"].to_string());
    assert_eq!(written, expected, "{status:#}");
    assert_eq!(status["observedGeneration"], GENERATION);
    assert_eq!(
        status["lastRun"],
        json!({
            "time": "<time>",
            "probes": [
                { "name": "sip-register", "success": true, "reason": "Registered", "durationSeconds": "<duration>", "unregister": "removed" },
                { "name": "http:web-ui", "success": true, "reason": "Reachable", "durationSeconds": "<duration>" }
            ]
        }),
        "{status:#}"
    );
    assert!(status.get("incident").is_none(), "{status:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_check_stops_probing_and_removes_its_metric_series() {
    let kamailio = Kamailio::start();
    let nginx = Nginx::start();
    let (mut operator, check) = Operator::with_lab_check_running(&kamailio, &nginx).await;
    let series = format!("name=\"{NAME}\"");
    assert!(operator.metrics.encode().contains(&series));

    // The watch reports the deletion; the reflector applies it, then the engine forgets it.
    operator
        .cache
        .apply_watcher_event(&watcher::Event::Delete(check.clone()));
    operator.engine.remove(&CheckId::new(NS, NAME));

    let metrics = operator.metrics.encode();
    assert!(!metrics.contains(&series), "{metrics}");
    // No more runs, so no more status writes.
    operator.api.silent(Duration::from_secs(7)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_deleted_while_the_watch_was_down_is_pruned_after_the_relist() {
    let kamailio = Kamailio::start();
    let nginx = Nginx::start();
    let (mut operator, _) = Operator::with_lab_check_running(&kamailio, &nginx).await;

    // The re-list after a watch gap no longer contains the check: no Delete event, only absence.
    for event in [watcher::Event::Init, watcher::Event::InitDone] {
        operator.cache.apply_watcher_event(&event);
    }
    operator.engine.prune(Some(NS), lab_shard());
    assert!(
        !operator
            .metrics
            .encode()
            .contains(&format!("name=\"{NAME}\""))
    );
    operator.api.silent(Duration::from_secs(7)).await;
}

/// DESIGN.md §9: a hung API server delays status, never probes or metrics. Before the outbox, a
/// full writer lane stopped the dispatcher and every check waited for room before recording its
/// metrics: the runs stalled after ~1,000 updates and an outage never reached /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_status_writes_never_stop_probing_and_an_outage_reaches_metrics() {
    const CHECKS: usize = 300;
    const INTERVAL: u64 = 5;
    let nginx = Nginx::start();
    let Operator {
        api,
        ctx,
        mut cache,
        metrics,
        ..
    } = Operator::leading();
    // Every request is held and never answered: a hung API server.
    let held = tokio::spawn(async move {
        let mut api = api;
        let mut held = Vec::new();
        while let Some(request) = api.0.next_request().await {
            held.push(request);
        }
    });
    for i in 0..CHECKS {
        let mut check = lab_check(json!({
            "target": { "kind": "Portal", "name": "portal" },
            "interval": format!("{INTERVAL}s"),
            "timeout": "2s",
            "failureThreshold": 1,
            "http": [ { "name": "ui", "url": nginx.http_url("/").to_string() } ]
        }));
        check.metadata.name = Some(format!("portal-{i}"));
        check.metadata.uid = Some(format!("uid-{i}"));
        cache.apply_watcher_event(&watcher::Event::Apply(check.clone()));
        controller::reconcile(Arc::new(check), ctx.clone())
            .await
            .expect("a web check needs no API request to reconcile");
    }

    let runs =
        |text: &str| sample(text, "voipcheck_schedule_lag_seconds_count", &[]).unwrap_or(0.0);
    let measured = Duration::from_secs(6 * INTERVAL);
    tokio::time::sleep(measured).await;
    let text = metrics.encode();
    // The first run of each check lies somewhere in its first interval.
    let expected = CHECKS as f64 * (measured.as_secs() / INTERVAL - 1) as f64;
    assert!(
        runs(&text) >= expected,
        "{} runs, expected {expected}",
        runs(&text)
    );
    let pending = sample(&text, "voipcheck_status_pending_checks", &[]).unwrap();
    assert!(pending >= CHECKS as f64 * 0.9, "{pending} statuses waiting");

    // The web UI goes down while every write hangs: after failureThreshold (1) runs, every
    // check's condition on /metrics says so.
    drop(nginx);
    tokio::time::sleep(Duration::from_secs(INTERVAL + 3)).await;
    let text = metrics.encode();
    for i in 0..CHECKS {
        let name = format!("name=\"portal-{i}\"");
        let down = sample(
            &text,
            "voipcheck_condition",
            &[&name, "type=\"WebReachable\"", "status=\"False\""],
        );
        assert_eq!(down, Some(1.0), "portal-{i} not down on /metrics");
    }
    held.abort();
}

/// A writer for a replica in `role`, fed `updates`; returns its task and its outbox (closing
/// the outbox ends the task once what is due has been written).
fn write_with(
    role: Leadership,
    updates: Vec<StatusUpdate>,
    client: Client,
    metrics: &Metrics,
    cache: &Writer<VoipCheck>,
) -> (tokio::task::JoinHandle<()>, Arc<Outbox>) {
    let outbox = Arc::new(Outbox::new());
    let gate = Arc::new(Gate::every_shard(role));
    let checks = Checks::new(vec![cache.as_reader()]);
    let writer = StatusWriter::new(Part::Verdict, writing(&client, &checks, gate, metrics));
    let task = tokio::spawn(writer.run(outbox.clone()));
    for update in updates {
        outbox.offer(update);
    }
    (task, outbox)
}

fn update_with_transition() -> StatusUpdate {
    StatusUpdate {
        id: CheckId::new(NS, NAME),
        uid: Some(UID.into()),
        generation: Some(GENERATION),
        status: std::sync::Arc::new(VoipCheckStatus {
            observed_generation: Some(GENERATION),
            ..Default::default()
        }),
        transitions: vec![Transition {
            type_: ConditionType::SipRegistered,
            from: Some((ConditionStatus::True, Reason::Registered)),
            to: (ConditionStatus::False, Reason::Timeout),
            message: "no answer within 2s".into(),
        }],
    }
}

#[tokio::test]
async fn a_standby_writes_no_status_and_no_event() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let mut api = ApiServer(handle);
    let client = Client::new(service, "default");
    let metrics = Metrics::new("test");
    let mut cache = Writer::<VoipCheck>::default();
    cache.apply_watcher_event(&watcher::Event::Apply(lab_check(json!({}))));
    let (task, outbox) = write_with(
        Leadership::Standby,
        vec![update_with_transition()],
        client,
        &metrics,
        &cache,
    );
    outbox.close();
    task.await.unwrap();
    api.silent(Duration::from_millis(300)).await;
}

/// The API server's answer to a request that failed with `code`.
fn api_error(call: Call, code: u16) {
    let status = StatusCode::from_u16(code).unwrap();
    call.reply(
        status,
        json!({ "apiVersion": "v1", "kind": "Status", "status": "Failure", "message": "etcd unavailable", "reason": "InternalError", "code": code }),
    );
}

/// `api_write_failures_total{kind,category}` on `/metrics`.
fn write_failures(metrics: &Metrics, kind: &str, category: &str) -> u64 {
    let wanted = format!("kind=\"{kind}\"");
    let category = format!("category=\"{category}\"");
    metrics
        .encode()
        .lines()
        .find(|l| {
            l.starts_with("voipcheck_api_write_failures_total")
                && l.contains(&wanted)
                && l.contains(&category)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_failed_status_write_and_a_failed_event_are_retried_and_counted() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let mut api = ApiServer(handle);
    let client = Client::new(service, "default");
    let metrics = Metrics::new("test");
    let mut cache = Writer::<VoipCheck>::default();
    cache.apply_watcher_event(&watcher::Event::Apply(lab_check(json!({}))));
    let (task, outbox) = write_with(
        Leadership::Leader,
        vec![update_with_transition()],
        client,
        &metrics,
        &cache,
    );

    // The write fails: counted, no Event yet (it follows the status), retried after a backoff.
    let call = api.next().await;
    call.expect(Method::PATCH, &status_path());
    assert_eq!(
        call.body,
        json!({
            "apiVersion": "voipcheck.io/v1alpha1", "kind": "VoipCheck",
            "metadata": { "uid": UID },
            "status": { "observedGeneration": GENERATION }
        })
    );
    api_error(call, 500);
    api.silent(Duration::from_millis(800)).await;
    assert_eq!(write_failures(&metrics, "status", "server_error"), 1);
    let status = api.status_write().await;
    assert_eq!(status, json!({ "observedGeneration": GENERATION }));

    // The Event's POST fails too (500, then a 409 name collision): published on the third try.
    for code in [500, 409] {
        let call = api.next().await;
        call.expect(Method::POST, &events_path());
        api_error(call, code);
    }
    let events = api.events(1).await;
    assert_eq!(
        events[0],
        (
            "SipRegistered".into(),
            "Warning".into(),
            "Timeout".into(),
            "SipRegistered False (was True Registered): no answer within 2s".into()
        )
    );
    assert_eq!(write_failures(&metrics, "event", "server_error"), 1);
    assert_eq!(write_failures(&metrics, "event", "conflict"), 1);
    outbox.close();
    task.await.unwrap();
    api.silent(Duration::from_millis(300)).await;
}

// ---------------------------------------------------------------------------------------------
// The whole operator: watches per namespace, the Lease, readiness and the shutdown order.

/// A small stand-in for the API server behind the mock client: empty VoipCheck and Secret
/// lists, watches that stay open, and Leases kept in memory by name (LIST, create, PUT on the
/// resourceVersion read, DELETE).
/// Records every request as `METHOD uri`.
async fn fake_api_server(
    mut handle: Handle<Request<Body>, Response<Body>>,
    log: Arc<std::sync::Mutex<Vec<String>>>,
    leases: Arc<std::sync::Mutex<BTreeMap<String, Value>>>,
) {
    let mut open_watches = Vec::new();
    while let Some((request, respond)) = handle.next_request().await {
        let method = request.method().clone();
        let uri = request.uri().to_string();
        let path = uri.split('?').next().unwrap().to_owned();
        log.lock().unwrap().push(format!("{method} {uri}"));
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let reply = |status: StatusCode, body: Value| {
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap()
        };
        if uri.contains("watch=true") {
            open_watches.push(respond); // never answered: an idle watch
        } else if path.ends_with("/voipchecks") {
            respond.send_response(reply(
                StatusCode::OK,
                json!({ "apiVersion": "voipcheck.io/v1alpha1", "kind": "VoipCheckList", "metadata": { "resourceVersion": "1" }, "items": [] }),
            ));
        } else if path.ends_with("/secrets") {
            respond.send_response(reply(
                StatusCode::OK,
                json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": { "resourceVersion": "1" }, "items": [] }),
            ));
        } else if path.contains("/leases") {
            let mut leases = leases.lock().unwrap();
            let name = path.strip_prefix("/apis/coordination.k8s.io/v1/namespaces/ops/leases/");
            let status = |code: StatusCode, reason: &str| {
                reply(
                    code,
                    json!({ "apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": reason, "code": code.as_u16() }),
                )
            };
            let answer = match (method, name) {
                (Method::GET, None) => reply(
                    StatusCode::OK,
                    json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList", "metadata": { "resourceVersion": "1" }, "items": leases.values().collect::<Vec<_>>() }),
                ),
                (Method::POST, None) => {
                    let mut object = body.clone();
                    object["metadata"]["namespace"] = json!("ops");
                    object["metadata"]["resourceVersion"] = json!("1");
                    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
                    leases.insert(name, object.clone());
                    reply(StatusCode::CREATED, object)
                }
                (Method::PUT, Some(name)) => match leases.get_mut(name) {
                    // A replace on the version read, as the API server checks it.
                    Some(object)
                        if body["metadata"]["resourceVersion"]
                            == object["metadata"]["resourceVersion"] =>
                    {
                        let version: u64 = object["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        let mut replaced = body.clone();
                        replaced["metadata"]["resourceVersion"] = json!((version + 1).to_string());
                        *object = replaced;
                        reply(StatusCode::OK, object.clone())
                    }
                    Some(_) => status(StatusCode::CONFLICT, "Conflict"),
                    None => status(StatusCode::NOT_FOUND, "NotFound"),
                },
                (Method::DELETE, Some(name)) => match leases.remove(name) {
                    Some(object) => reply(StatusCode::OK, object),
                    None => status(StatusCode::NOT_FOUND, "NotFound"),
                },
                (method, _) => panic!("unexpected {method} {uri}"),
            };
            respond.send_response(answer);
        } else {
            panic!("unexpected {method} {uri}");
        }
    }
}

/// `GET path` on the metrics endpoint; the status code.
async fn http_status(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_watches_its_namespaces_holds_every_shard_alone_and_releases_them_on_shutdown()
{
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let leases = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    tokio::spawn(fake_api_server(handle, log.clone(), leases.clone()));

    let port = support::free_port();
    let config = voipcheck::operator::OperatorConfig {
        namespaces: vec!["team-a".into(), "team-b".into()],
        allow: AllowList::parse(&[]).unwrap(),
        nameserver: None,
        metrics_addr: ([127, 0, 0, 1], port).into(),
        location: "test".into(),
        aggregate: true,
        max_concurrent_probes: 4,
        lease: voipcheck::operator::leader::LeaseConfig {
            name: "voipcheck-operator".into(),
            namespace: "ops".into(),
            identity: "test-0".into(),
            timings: Default::default(),
        },
        secret_access: SecretAccess::Watch,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let clients = voipcheck::operator::Clients::single(client);
    let operator = tokio::spawn(voipcheck::operator::run(clients, config, async {
        let _ = stopped.await;
    }));

    // Ready once both namespaces' caches synced and the Leases were read.
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_status(port, "/readyz").await != Some(200) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready (healthz {:?}, finished {}): {:?}",
            http_status(port, "/healthz").await,
            operator.is_finished(),
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http_status(port, "/healthz").await, Some(200));
    // Alone, it holds every shard.
    let held = |leases: &BTreeMap<String, Value>| {
        (0..SHARDS)
            .filter(|n| {
                leases
                    .get(&format!("voipcheck-operator-test-{n}"))
                    .is_some_and(|l| l["spec"]["holderIdentity"] == "test-0")
            })
            .count()
    };
    while held(&leases.lock().unwrap()) < SHARDS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never holding every shard: {:?}",
            leases.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        leases
            .lock()
            .unwrap()
            .contains_key("voipcheck-operator-test-member-test-0")
    );
    let requests = log.lock().unwrap().clone();
    for wanted in [
        "GET /apis/voipcheck.io/v1alpha1/namespaces/team-a/voipchecks",
        "GET /apis/voipcheck.io/v1alpha1/namespaces/team-b/voipchecks",
        "GET /api/v1/namespaces/team-a/secrets",
        "GET /api/v1/namespaces/team-b/secrets",
        "POST /apis/coordination.k8s.io/v1/namespaces/ops/leases",
    ] {
        let found = requests.iter().any(|r| r.split('?').next() == Some(wanted));
        assert!(found, "no {wanted} in {requests:#?}");
    }
    assert!(
        !requests
            .iter()
            .any(|r| (r.contains("/voipchecks") || r.contains("/secrets"))
                && !r.contains("/namespaces/team-")),
        "a watch outside the given namespaces: {requests:#?}"
    );

    // SIGTERM's path: everything stops in order and the Lease is given back.
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, operator)
        .await
        .expect("the operator stops")
        .unwrap()
        .expect("a clean shutdown");
    let leases = leases.lock().unwrap().clone();
    assert_eq!(held(&leases), 0, "{leases:#?}");
    assert!(
        !leases.contains_key("voipcheck-operator-test-member-test-0"),
        "{leases:#?}"
    );
}
