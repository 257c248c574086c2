//! An in-test Kubernetes API server: a real HTTP/1.1 server on a loopback port that
//! `kube::Client` talks to like to the real one, holding its objects in memory, with fault
//! injection. It serves what the operator depends on and behaves like the API server there;
//! everything else answers 404 or 405.
//!
//! Resources: VoipChecks (`voipcheck.io/v1alpha1`, namespaced, with a status subresource),
//! Secrets (`v1`), Events (`events.k8s.io/v1`) and Leases (`coordination.k8s.io/v1`), each also
//! as `PartialObjectMetadata` when the request's `Accept` asks for
//! `as=PartialObjectMetadata[List]`, the way kube's `Api<PartialObjectMeta<K>>` does. Paths are the API server's:
//! `/api/v1/...` and `/apis/{group}/{version}/...`, namespaced (`/namespaces/{ns}/{plural}`) or
//! across namespaces (`/{plural}` for list and watch).
//!
//! How it behaves like the API server:
//! - Every object gets a `metadata.uid` (fresh per creation: a deleted and recreated object has
//!   a new one), a `resourceVersion` from one global counter (as etcd's revision) and a
//!   `generation`, 1 at creation and bumped when anything but `metadata` and `status` changes.
//!   A write that changes nothing bumps nothing and emits no event.
//! - Verbs: GET (one object, a list, or `watch=true`), POST (create; `generateName` works; an
//!   existing name is 409 AlreadyExists), PUT (replace), PATCH and DELETE. A `metadata.uid` or
//!   `metadata.resourceVersion` in a PUT or PATCH body is a precondition: a mismatch is
//!   409 Conflict ("the object has been modified"), as the API server answers. PUT without a
//!   resourceVersion is an unconditional update (allowed for these kinds).
//! - PATCH: `application/merge-patch+json` is RFC 7386; `strategic-merge-patch+json` is
//!   treated the same (no list merge keys are needed here); `apply-patch+yaml` (server-side
//!   apply; kube sends it as JSON) is structured-merge-diff's ([`apply`]): `metadata.managedFields`
//!   per field manager (`fieldManager`, required) and subresource, list-maps merged by the keys
//!   the CRD's schema declares, a manager's dropped fields removed unless another owns them,
//!   and 409 Conflict with the API server's message for a field another manager owns with
//!   another value unless `force=true`. On `/status` only the body's `status` is applied, on
//!   the object everything but the status (`metadata.labels` and `annotations` included: an
//!   apply of one label sets it and owns it, other labels stay). An apply creates a missing
//!   object, except on `/status`: 404. JSON patch is 415.
//! - The status subresource of VoipChecks: writes to the object ignore `status`, writes to
//!   `/status` change only `status` (and never the generation). A POST drops `status`.
//! - list answers the matching objects in pages of `limit` with a `continue` token and
//!   `remainingItemCount`, as the API server chunks lists (kube's watcher asks for 500), at the
//!   first page's resourceVersion ([`list`] says how it differs from etcd's snapshot).
//! - watch (`watch=true&resourceVersion=N`) streams newline-delimited JSON events ADDED,
//!   MODIFIED, DELETED after N, and with `allowWatchBookmarks=true` a BOOKMARK every
//!   [`FakeApi::start_with_bookmarks`] interval (1 s by default). `resourceVersion` 0 or absent
//!   first sends every current (matching) object as ADDED. It ends after `timeoutSeconds`. After
//!   [`FakeApi::compact`] every open watch receives an ERROR event with a `Status` of code 410
//!   (reason Expired) and ends, and a watch from an older resourceVersion gets that same ERROR
//!   event at once: that is how the real API server answers a too-old resourceVersion (HTTP 200,
//!   then the ERROR event), and what makes kube's watcher relist (an HTTP 410 on the watch
//!   request itself would make kube-runtime 5 retry the same resourceVersion forever).
//!   `sendInitialEvents` (streaming lists) is not served: kube's watcher uses list+watch unless
//!   configured otherwise.
//! - `labelSelector` on list and watch, for every kind and for `PartialObjectMetadata` answers
//!   alike, parsed as apimachinery's `labels.Parse` ([`selector`]: `key`, `!key`, `key=value`,
//!   `key==value`, `key!=value`, `key in (…)`, `key notin (…)`; `!=` and `notin` also match
//!   objects without the key); one that does not parse is 400 BadRequest. A list, each of its
//!   pages (the selector filters before `limit`) and a watch's initial ADDED events carry only
//!   the matching objects; a selected list has no `remainingItemCount`, as the API server
//!   counts only unfiltered lists. A watch sees a change as the API server's watch cache shows
//!   it to a selecting watcher, from the object before and after ([`WatchSpec::event`]): ADDED
//!   when the object starts to match (also by a label change), MODIFIED while it matches,
//!   DELETED when it stops (deleted, or labelled out: the previous object at the new
//!   resourceVersion), nothing for an object that matches neither before nor after. Field
//!   selectors are ignored: the operator uses none.
//!
//! Test controls: [`FakeApi::insert`] stores raw JSON as it is (also an object that does not
//! deserialize under the current schema, and with a status), [`FakeApi::replace`],
//! [`FakeApi::delete`], [`FakeApi::recreate`] (new uid, same name); readers [`FakeApi::get`],
//! [`FakeApi::status`], [`FakeApi::events`], [`FakeApi::lease`]; the request log
//! ([`FakeApi::requests`], [`FakeApi::wait_for_request`]); faults by request matcher
//! ([`FakeApi::inject`], [`FakeApi::inject_times`], [`FakeApi::clear_fault`]): hang until
//! cleared, delay, answer a status code (429 with `Retry-After`); [`FakeApi::drop_watches`]
//! ends every open watch cleanly; [`FakeApi::refuse_connections`] closes the listener and every
//! open connection until [`FakeApi::accept_connections`] listens again on the same port.

mod apply;
mod selector;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::jiff::Timestamp;
use selector::LabelSelector;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The kinds the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    VoipCheck,
    Secret,
    Event,
    Lease,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::VoipCheck, Kind::Secret, Kind::Event, Kind::Lease];

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::VoipCheck => "voipcheck.io/v1alpha1",
            Kind::Secret => "v1",
            Kind::Event => "events.k8s.io/v1",
            Kind::Lease => "coordination.k8s.io/v1",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Kind::VoipCheck => "VoipCheck",
            Kind::Secret => "Secret",
            Kind::Event => "Event",
            Kind::Lease => "Lease",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::VoipCheck => "voipchecks",
            Kind::Secret => "secrets",
            Kind::Event => "events",
            Kind::Lease => "leases",
        }
    }

    /// The group part of `<plural>.<group>` in the API server's messages.
    fn group(self) -> &'static str {
        self.api_version().rsplit_once('/').map_or("", |(g, _)| g)
    }

    fn has_status_subresource(self) -> bool {
        self == Kind::VoipCheck
    }

    fn of(object: &Value) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| object["apiVersion"] == k.api_version() && object["kind"] == k.kind())
    }

    fn route(api_version: &str, plural: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.plural() == plural)
    }
}

/// A request header naming the client (a replica's identity) in [`Logged::client`]; the API
/// server knows a client by its credentials, which the fake does not check.
pub const CLIENT_HEADER: &str = "x-test-client";

/// One request as it arrived (before any fault applied).
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: Method,
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    pub accept: String,
    pub content_type: String,
    /// The [`CLIENT_HEADER`] of the request: which of several clients sent it.
    pub client: String,
    /// The body as JSON; `Null` when empty or not JSON.
    pub body: Value,
}

impl Logged {
    /// The value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// Whether this is a `method` request whose path contains `path`.
    pub fn is(&self, method: &Method, path: &str) -> bool {
        self.method == method && self.path.contains(path)
    }

    pub fn is_watch(&self) -> bool {
        self.param("watch").as_deref() == Some("true")
    }
}

impl fmt::Display for Logged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}?{}", self.method, self.path, self.query)
    }
}

/// Which requests a fault applies to.
#[derive(Clone)]
pub struct Matcher(Arc<dyn Fn(&Logged) -> bool + Send + Sync>);

impl Matcher {
    /// `method` requests whose path contains `path` (watches included).
    pub fn request(method: Method, path: &str) -> Matcher {
        let path = path.to_owned();
        Matcher(Arc::new(move |r: &Logged| r.is(&method, &path)))
    }

    /// Requests for which `f` holds.
    pub fn when(f: impl Fn(&Logged) -> bool + Send + Sync + 'static) -> Matcher {
        Matcher(Arc::new(f))
    }

    fn matches(&self, request: &Logged) -> bool {
        (self.0)(request)
    }
}

/// What happens to a matching request.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Not answered until the fault is cleared; then served normally.
    Hang,
    /// Served normally after this delay.
    Delay(Duration),
    /// Answered with this status code and a Kubernetes `Status` body.
    Status(u16),
    /// 429 Too Many Requests with `Retry-After` (API Priority and Fairness' answer).
    Throttle { retry_after_seconds: u64 },
}

/// Names an injected fault, for [`FakeApi::clear_fault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultId(u64);

struct FaultRule {
    id: FaultId,
    matcher: Matcher,
    fault: Fault,
    /// `None`: every matching request.
    remaining: Option<usize>,
    /// Dropped when the rule is cleared, which releases the requests it holds.
    _release: watch::Sender<()>,
    held: watch::Receiver<()>,
}

/// What a fault decided for one request.
enum Verdict {
    Serve,
    Hold(watch::Receiver<()>),
    Delay(Duration),
    Answer(Response),
}

/// Counters whose change ends open watches and connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Control {
    watch_drops: u64,
    connection_resets: u64,
}

type Key = (Kind, String, String);

/// One change, for watches: the object before and after it, from which each watch works out
/// the event its label selector makes of it ([`WatchSpec::event`]). The versions are shared with
/// the store and the neighbouring changes, so the history holds each version once.
struct Change {
    revision: u64,
    kind: Kind,
    namespace: String,
    /// `None` for a creation.
    previous: Option<Arc<Value>>,
    /// `None` for a deletion.
    object: Option<Arc<Value>>,
}

/// The API server's error answer.
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
}

impl ApiError {
    fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason_of(code),
            message: message.into(),
        }
    }

    fn not_found(kind: Kind, name: &str) -> Self {
        Self::new(404, format!("{} \"{name}\" not found", resource_name(kind)))
    }

    fn conflict(kind: Kind, name: &str) -> Self {
        Self::new(
            409,
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                resource_name(kind)
            ),
        )
    }

    fn body(&self) -> Value {
        status_body(self.code, self.reason, &self.message)
    }
}

fn resource_name(kind: Kind) -> String {
    match kind.group() {
        "" => kind.plural().to_owned(),
        group => format!("{}.{group}", kind.plural()),
    }
}

fn reason_of(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    })
}

/// Which part of an object a write changes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Object,
    Status,
}

/// The objects and their history.
#[derive(Default)]
struct Store {
    /// The global resourceVersion counter (etcd's revision).
    revision: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    /// Changes after `compacted_at`, for watches.
    history: Vec<Change>,
    compacted_at: u64,
    /// Bumped by each compaction; a watch that sees it change answers 410.
    compactions: u64,
    uids: u64,
}

impl Store {
    fn record(
        &mut self,
        kind: Kind,
        namespace: &str,
        previous: Option<Arc<Value>>,
        object: Option<Arc<Value>>,
    ) {
        self.history.push(Change {
            revision: self.revision,
            kind,
            namespace: namespace.to_owned(),
            previous,
            object,
        });
    }

    fn stamp(&mut self, object: &mut Value) {
        self.revision += 1;
        object["metadata"]["resourceVersion"] = json!(self.revision.to_string());
    }

    /// Stores a new object: fresh uid, generation 1, the next resourceVersion.
    fn create(
        &mut self,
        kind: Kind,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        let name = match (
            object["metadata"]["name"].as_str(),
            object["metadata"]["generateName"].as_str(),
        ) {
            (Some(name), _) if !name.is_empty() => name.to_owned(),
            (_, Some(prefix)) => format!("{prefix}{:05x}", self.uids + 1),
            _ => return Err(ApiError::new(422, "metadata.name: Required value")),
        };
        let key = (kind, namespace.to_owned(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(ApiError {
                code: 409,
                reason: "AlreadyExists",
                message: format!("{} \"{name}\" already exists", resource_name(kind)),
            });
        }
        self.uids += 1;
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind());
        let metadata = &mut object["metadata"];
        metadata["name"] = json!(name);
        metadata["namespace"] = json!(namespace);
        metadata["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.uids));
        metadata["generation"] = json!(1);
        metadata["creationTimestamp"] = json!(now());
        self.stamp(&mut object);
        let stored = Arc::new(object.clone());
        self.objects.insert(key, stored.clone());
        self.record(kind, namespace, None, Some(stored));
        Ok(object)
    }

    /// Changes object `key` to what `change` makes of it, after checking the preconditions the
    /// request body carries (`metadata.uid`, `metadata.resourceVersion`).
    fn update(
        &mut self,
        key: &Key,
        part: Part,
        preconditions: &Value,
        change: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let (kind, namespace, name) = key;
        let Some(stored) = self.objects.get(key) else {
            return Err(ApiError::not_found(*kind, name));
        };
        for field in ["uid", "resourceVersion"] {
            if let Some(wanted) = preconditions["metadata"][field].as_str()
                && !wanted.is_empty()
                && stored["metadata"][field].as_str() != Some(wanted)
            {
                return Err(ApiError::conflict(*kind, name));
            }
        }
        let changed = change(stored)?;
        let managed_fields = changed["metadata"].get("managedFields").cloned();
        let mut next = Value::clone(stored);
        match part {
            Part::Status => match changed.get("status") {
                Some(status) if !status.is_null() => next["status"] = status.clone(),
                _ => {
                    next.as_object_mut().map(|o| o.remove("status"));
                }
            },
            Part::Object => {
                let keep_status = kind.has_status_subresource();
                let mut replacement = changed;
                for field in ["labels", "annotations", "ownerReferences", "finalizers"] {
                    match replacement["metadata"].get(field) {
                        Some(value) if !value.is_null() => {
                            next["metadata"][field] = value.clone();
                        }
                        _ => {
                            next["metadata"].as_object_mut().map(|m| m.remove(field));
                        }
                    }
                }
                let Value::Object(content) = &mut replacement else {
                    return Err(ApiError::new(400, "the body is not an object"));
                };
                content.remove("metadata");
                if keep_status {
                    content.remove("status");
                }
                let fields = next.as_object_mut().expect("stored objects are objects");
                let before: Value = content_of(fields, keep_status);
                fields.retain(|k, _| k == "metadata" || (keep_status && k == "status"));
                fields.extend(std::mem::take(content));
                let after = content_of(fields, keep_status);
                if before != after {
                    let generation = next["metadata"]["generation"].as_i64().unwrap_or(0);
                    next["metadata"]["generation"] = json!(generation + 1);
                }
                next["apiVersion"] = json!(kind.api_version());
                next["kind"] = json!(kind.kind());
            }
        }
        match managed_fields {
            Some(Value::Array(entries)) if entries.is_empty() => {
                next["metadata"]
                    .as_object_mut()
                    .map(|m| m.remove("managedFields"));
            }
            Some(entries) => next["metadata"]["managedFields"] = entries,
            None => {}
        }
        if next == **stored {
            return Ok(next);
        }
        self.stamp(&mut next);
        let stored = Arc::new(next.clone());
        let previous = self.objects.insert(key.clone(), stored.clone());
        self.record(*kind, namespace, previous, Some(stored));
        Ok(next)
    }

    /// Removes object `key`; returns its last state, at the deletion's resourceVersion (what
    /// the API server answers a DELETE with).
    fn delete(&mut self, key: &Key) -> Result<Value, ApiError> {
        let Some(previous) = self.objects.remove(key) else {
            return Err(ApiError::not_found(key.0, &key.2));
        };
        let mut object = Value::clone(&previous);
        self.stamp(&mut object);
        self.record(key.0, &key.1, Some(previous), None);
        Ok(object)
    }

    fn list(&self, kind: Kind, namespace: Option<&str>) -> Vec<Value> {
        self.matching(kind, namespace)
            .map(|(_, object)| Value::clone(object))
            .collect()
    }

    /// The objects of `kind` (in `namespace`, if given), in key order.
    fn matching<'a>(
        &'a self,
        kind: Kind,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Key, &'a Arc<Value>)> {
        self.objects
            .iter()
            .filter(move |((k, ns, _), _)| *k == kind && namespace.is_none_or(|n| n == ns))
    }
}

/// The fields that make up the generation: everything but metadata (and status, where it is a
/// subresource).
fn content_of(fields: &serde_json::Map<String, Value>, without_status: bool) -> Value {
    Value::Object(
        fields
            .iter()
            .filter(|(k, _)| *k != "metadata" && !(without_status && *k == "status"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in fields {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The CRD's schema of VoipChecks (`openAPIV3Schema` of its one version).
fn voipcheck_schema() -> Value {
    let crd = serde_json::to_value(voipcheck::api::crd()).expect("the CRD serialises");
    crd.pointer("/spec/versions/0/schema/openAPIV3Schema")
        .cloned()
        .expect("the CRD has a schema")
}

/// What every connection's handler shares.
struct Shared {
    store: Mutex<Store>,
    /// The store's revision after each change: wakes the watches.
    revisions: watch::Sender<u64>,
    control: watch::Sender<Control>,
    faults: Mutex<Vec<FaultRule>>,
    next_fault: Mutex<u64>,
    log: Mutex<Vec<Logged>>,
    bookmark_interval: Duration,
    /// The OpenAPI schema of each kind that has one here (VoipChecks: the CRD's), for the
    /// list-maps of server-side apply.
    schemas: BTreeMap<Kind, Value>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(&self) -> MutexGuard<'_, Vec<Logged>> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn faults(&self) -> MutexGuard<'_, Vec<FaultRule>> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the store and wakes the watches.
    fn mutate<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let (result, revision) = {
            let mut store = self.store();
            let result = f(&mut store);
            (result, store.revision)
        };
        self.revisions.send_replace(revision);
        result
    }

    fn verdict(&self, request: &Logged) -> Verdict {
        let mut faults = self.faults();
        let Some(rule) = faults
            .iter_mut()
            .find(|r| r.remaining != Some(0) && r.matcher.matches(request))
        else {
            return Verdict::Serve;
        };
        if let Some(remaining) = &mut rule.remaining {
            *remaining -= 1;
        }
        match rule.fault {
            Fault::Hang => Verdict::Hold(rule.held.clone()),
            Fault::Delay(delay) => Verdict::Delay(delay),
            Fault::Status(code) => Verdict::Answer(json_response(
                code,
                &status_body(code, reason_of(code), "injected fault"),
            )),
            Fault::Throttle {
                retry_after_seconds,
            } => {
                let mut response = json_response(
                    429,
                    &status_body(
                        429,
                        "TooManyRequests",
                        "Too many requests, please try again later.",
                    ),
                );
                response.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from(retry_after_seconds),
                );
                Verdict::Answer(response)
            }
        }
    }
}

type Response = http::Response<Either<Full<Bytes>, Chunks>>;

/// A streamed response body (a watch), fed by the watch's task.
struct Chunks(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

fn json_response(code: u16, body: &Value) -> Response {
    http::Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Either::Left(Full::new(Bytes::from(body.to_string()))))
        .expect("a valid response")
}

/// The API server in this test process. Dropping it stops the server.
pub struct FakeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl FakeApi {
    /// Starts the server on a free loopback port, with a bookmark every second on watches that
    /// ask for them. Needs a Tokio runtime.
    pub fn start() -> FakeApi {
        FakeApi::start_with_bookmarks(Duration::from_secs(1))
    }

    /// Starts the server with a bookmark every `interval`.
    pub fn start_with_bookmarks(interval: Duration) -> FakeApi {
        let addr = SocketAddr::from(([127, 0, 0, 1], super::free_port()));
        let shared = Arc::new(Shared {
            // etcd's revisions start above 0, and 0 means "any" to a watch.
            store: Mutex::new(Store {
                revision: 1,
                ..Store::default()
            }),
            revisions: watch::channel(0).0,
            control: watch::channel(Control::default()).0,
            faults: Mutex::default(),
            next_fault: Mutex::new(0),
            log: Mutex::default(),
            bookmark_interval: interval,
            schemas: BTreeMap::from([(Kind::VoipCheck, voipcheck_schema())]),
        });
        let api = FakeApi {
            shared,
            addr,
            acceptor: Mutex::new(None),
        };
        api.listen();
        api
    }

    fn listen(&self) {
        let socket = TcpSocket::new_v4().expect("a TCP socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(self.addr).expect("bind the fake API's port");
        let listener = socket.listen(128).expect("listen");
        let task = tokio::spawn(accept(listener, self.shared.clone()));
        *self.acceptor.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kube client configuration for this server (plain HTTP, no credentials).
    pub fn config(&self) -> kube::Config {
        kube::Config::new(
            format!("http://{}", self.addr)
                .parse()
                .expect("a valid URL"),
        )
    }

    /// A kube client for this server.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config()).expect("a kube client")
    }

    // --- objects -------------------------------------------------------------------------------

    /// Stores `object` as it is (raw JSON: it need not deserialize under any schema; a status is
    /// kept), with a fresh uid, generation 1 and the next resourceVersion; its kind comes from
    /// `apiVersion` and `kind`, its namespace from `metadata.namespace` ("default" if none).
    /// Returns the stored object. Panics if it exists.
    pub fn insert(&self, object: Value) -> Value {
        let (kind, namespace, _) = key_of(&object);
        self.shared
            .mutate(|store| store.create(kind, &namespace, object))
            .unwrap_or_else(|e| panic!("insert: {}", e.message))
    }

    /// Replaces the stored object of the same kind, namespace and name by `object`, status
    /// included; uid and creationTimestamp stay, the generation is bumped when the content
    /// changed. Returns the stored object. Panics if it does not exist.
    pub fn replace(&self, object: Value) -> Value {
        let key = key_of(&object);
        let kind = key.0;
        let status = object.get("status").cloned();
        self.shared
            .mutate(|store| {
                let replaced = store.update(&key, Part::Object, &Value::Null, |_| Ok(object))?;
                if !kind.has_status_subresource() {
                    return Ok(replaced);
                }
                store.update(&key, Part::Status, &Value::Null, |_| {
                    Ok(json!({ "status": status }))
                })
            })
            .unwrap_or_else(|e| panic!("replace: {}", e.message))
    }

    /// Deletes an object (a DELETED watch event); returns it, `None` if it did not exist.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let key = (kind, namespace.to_owned(), name.to_owned());
        self.shared.mutate(|store| store.delete(&key)).ok()
    }

    /// Deletes the object named like `object` and creates `object` under the same name: a new
    /// uid, generation 1.
    pub fn recreate(&self, object: Value) -> Value {
        let (kind, namespace, name) = key_of(&object);
        self.delete(kind, &namespace, &name);
        self.insert(object)
    }

    /// The stored object.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let key = (kind, namespace.to_owned(), name.to_owned());
        self.shared
            .store()
            .objects
            .get(&key)
            .map(|o| Value::clone(o))
    }

    /// The status of VoipCheck `namespace/name` (`None` if it has none or does not exist).
    pub fn status(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get(Kind::VoipCheck, namespace, name)
            .and_then(|o| o.get("status").cloned())
    }

    /// Every Event in `namespace`, in creation order.
    pub fn events(&self, namespace: &str) -> Vec<Value> {
        let mut events = self.shared.store().list(Kind::Event, Some(namespace));
        events.sort_by_key(|e| e["metadata"]["uid"].as_str().map(str::to_owned));
        events
    }

    /// Lease `namespace/name`.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get(Kind::Lease, namespace, name)
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().revision
    }

    // --- watches and connections ------------------------------------------------------------

    /// Forgets the history up to now, as etcd's compaction does: every open watch receives an
    /// ERROR event with code 410 and ends, and a watch from an older resourceVersion gets the
    /// same at once, so kube's watcher relists.
    pub fn compact(&self) {
        self.shared.mutate(|store| {
            store.compacted_at = store.revision;
            store.history.clear();
            store.compactions += 1;
        });
    }

    /// Ends every open watch cleanly (the stream closes, as when the API server restarts or a
    /// watch's timeout passes); clients resume from their last resourceVersion.
    pub fn drop_watches(&self) {
        self.shared.control.send_modify(|c| c.watch_drops += 1);
    }

    /// Closes the listener and every open connection: connections are refused until
    /// [`FakeApi::accept_connections`].
    pub async fn refuse_connections(&self) {
        let task = self
            .acceptor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.shared
            .control
            .send_modify(|c| c.connection_resets += 1);
    }

    /// Listens again on the same port.
    pub fn accept_connections(&self) {
        if self
            .acceptor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
        {
            self.listen();
        }
    }

    // --- faults -----------------------------------------------------------------------------

    /// Applies `fault` to every request `matcher` matches until cleared.
    pub fn inject(&self, matcher: Matcher, fault: Fault) -> FaultId {
        self.add_fault(matcher, fault, None)
    }

    /// Applies `fault` to the next `times` requests `matcher` matches.
    pub fn inject_times(&self, matcher: Matcher, fault: Fault, times: usize) -> FaultId {
        self.add_fault(matcher, fault, Some(times))
    }

    fn add_fault(&self, matcher: Matcher, fault: Fault, remaining: Option<usize>) -> FaultId {
        let id = {
            let mut next = self
                .shared
                .next_fault
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *next += 1;
            FaultId(*next)
        };
        let (release, held) = watch::channel(());
        self.shared.faults().push(FaultRule {
            id,
            matcher,
            fault,
            remaining,
            _release: release,
            held,
        });
        id
    }

    /// Lifts a fault: requests it holds are served now.
    pub fn clear_fault(&self, id: FaultId) {
        self.shared.faults().retain(|r| r.id != id);
    }

    /// Lifts every fault.
    pub fn clear_faults(&self) {
        self.shared.faults().clear();
    }

    // --- the request log ----------------------------------------------------------------------

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Logged> {
        self.shared.log().clone()
    }

    /// The requests so far that `matcher` matches.
    pub fn requests_matching(&self, matcher: &Matcher) -> Vec<Logged> {
        self.shared
            .log()
            .iter()
            .filter(|r| matcher.matches(r))
            .cloned()
            .collect()
    }

    /// Forgets the requests logged so far.
    pub fn clear_log(&self) {
        self.shared.log().clear();
    }

    /// The first logged request `matcher` matches, waiting up to `timeout` for it.
    pub async fn wait_for_request(&self, matcher: &Matcher, timeout: Duration) -> Logged {
        self.wait_until("a matching request", timeout, |api| {
            api.requests_matching(matcher).into_iter().next()
        })
        .await
    }

    /// Polls `probe` until it returns `Some`, for up to `timeout`; panics naming `what` and the
    /// last requests otherwise.
    pub async fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(&FakeApi) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = probe(self) {
                return found;
            }
            if Instant::now() >= deadline {
                let log = self.shared.log();
                let recent: Vec<String> =
                    log.iter().rev().take(30).map(|r| r.to_string()).collect();
                panic!("{what}: not within {timeout:?}; last requests (newest first): {recent:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(task) = self
            .acceptor
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
        self.shared
            .control
            .send_modify(|c| c.connection_resets += 1);
    }
}

/// Which stored object `object` is: kind from `apiVersion` and `kind`, namespace from
/// `metadata.namespace` ("default" if none), and name.
fn key_of(object: &Value) -> Key {
    let kind = Kind::of(object).unwrap_or_else(|| {
        panic!(
            "the fake API does not serve {} {}",
            object["apiVersion"], object["kind"]
        )
    });
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_owned();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    (kind, namespace, name.to_owned())
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        let mut control = shared.control.subscribe();
        let resets = control.borrow_and_update().connection_resets;
        tokio::spawn(async move {
            let handler = shared.clone();
            let service = service_fn(move |request| handle(handler.clone(), request));
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = control.wait_for(|c| c.connection_resets != resets) => {}
            }
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: http::Request<Incoming>,
) -> Result<Response, Infallible> {
    let (parts, body) = request.into_parts();
    let header = |name: http::header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let logged = Logged {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        accept: header(http::header::ACCEPT),
        content_type: header(http::header::CONTENT_TYPE),
        client: header(http::header::HeaderName::from_static(CLIENT_HEADER)),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    };
    shared.log().push(logged.clone());
    match shared.verdict(&logged) {
        Verdict::Serve => {}
        Verdict::Answer(response) => return Ok(response),
        Verdict::Delay(delay) => tokio::time::sleep(delay).await,
        Verdict::Hold(mut held) => {
            // Ends when the rule (the sender) is dropped.
            while held.changed().await.is_ok() {}
        }
    }
    Ok(route(&shared, &logged))
}

/// A request's target: `/api/v1/...` or `/apis/{group}/{version}/...`, then
/// `[namespaces/{ns}/]{plural}[/{name}[/{subresource}]]`.
struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    part: Part,
}

fn target(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ((*version).to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => (Some(*namespace), rest),
        _ => (None, rest),
    };
    let (plural, name, part) = match rest {
        [plural] => (*plural, None, Part::Object),
        [plural, name] => (*plural, Some(*name), Part::Object),
        [plural, name, "status"] => (*plural, Some(*name), Part::Status),
        _ => return None,
    };
    let kind = Kind::route(&api_version, plural)?;
    if part == Part::Status && !kind.has_status_subresource() {
        return None;
    }
    Some(Target {
        kind,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
        part,
    })
}

fn route(shared: &Arc<Shared>, request: &Logged) -> Response {
    let Some(target) = target(&request.path) else {
        return error(&ApiError::new(
            404,
            "the server could not find the requested resource",
        ));
    };
    let metadata_only = request.accept.contains("as=PartialObjectMetadata");
    let result = match (
        &request.method,
        target.namespace.as_deref(),
        target.name.as_deref(),
    ) {
        (&Method::GET, namespace, None) => match label_selector(request) {
            Ok(selector) if request.is_watch() => {
                return watch(
                    shared,
                    target.kind,
                    namespace,
                    request,
                    selector,
                    metadata_only,
                );
            }
            Ok(selector) => list(shared, target.kind, namespace, request, &selector)
                .map(|page| page.answer(target.kind, metadata_only)),
            Err(e) => Err(e),
        },
        (&Method::GET, Some(namespace), Some(name)) => shared
            .store()
            .objects
            .get(&(target.kind, namespace.to_owned(), name.to_owned()))
            .map(|o| answer_shape(Value::clone(o), metadata_only))
            .ok_or_else(|| ApiError::not_found(target.kind, name)),
        (&Method::POST, Some(namespace), None) => {
            let mut object = request.body.clone();
            if target.kind.has_status_subresource() {
                object.as_object_mut().map(|o| o.remove("status"));
            }
            return match shared.mutate(|s| s.create(target.kind, namespace, object)) {
                Ok(object) => json_response(201, &object),
                Err(e) => error(&e),
            };
        }
        (&Method::PUT, Some(namespace), Some(name)) => {
            let key = (target.kind, namespace.to_owned(), name.to_owned());
            let body = request.body.clone();
            shared.mutate(|s| s.update(&key, target.part, &request.body, |_| Ok(body)))
        }
        (&Method::PATCH, Some(namespace), Some(name)) => {
            let key = (target.kind, namespace.to_owned(), name.to_owned());
            patch(shared, &key, target.part, request)
        }
        (&Method::DELETE, Some(namespace), Some(name)) => {
            let key = (target.kind, namespace.to_owned(), name.to_owned());
            shared.mutate(|s| s.delete(&key))
        }
        _ => Err(ApiError::new(405, "method not allowed")),
    };
    match result {
        Ok(object) => json_response(200, &object),
        Err(e) => error(&e),
    }
}

/// The request's `labelSelector` (none: everything); one that does not parse is 400, as the API
/// server answers (before a watch starts streaming, too).
fn label_selector(request: &Logged) -> Result<LabelSelector, ApiError> {
    LabelSelector::parse(&request.param("labelSelector").unwrap_or_default())
        .map_err(|message| ApiError::new(400, message))
}

fn error(e: &ApiError) -> Response {
    json_response(e.code, &e.body())
}

fn patch(shared: &Shared, key: &Key, part: Part, request: &Logged) -> Result<Value, ApiError> {
    let body = &request.body;
    let content_type = request.content_type.as_str();
    if content_type.starts_with("application/apply-patch") {
        return server_side_apply(shared, key, part, request);
    }
    if !(content_type.starts_with("application/merge-patch+json")
        || content_type.starts_with("application/strategic-merge-patch+json"))
    {
        return Err(ApiError::new(
            415,
            format!("unsupported patch type {content_type}"),
        ));
    }
    shared.mutate(|s| {
        s.update(key, part, body, |stored| {
            let mut merged = stored.clone();
            merge_patch(&mut merged, body);
            Ok(merged)
        })
    })
}

/// An `apply-patch` ([`apply`]): on `/status` the body's `status`, on the object everything
/// else (with `metadata.labels` and `annotations`). A missing object is created, except on
/// `/status`: 404.
fn server_side_apply(
    shared: &Shared,
    key: &Key,
    part: Part,
    request: &Logged,
) -> Result<Value, ApiError> {
    let Some(manager) = request.param("fieldManager").filter(|m| !m.is_empty()) else {
        return Err(ApiError::new(
            422,
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    };
    let kind = key.0;
    let body = &request.body;
    let applied = match part {
        Part::Status => json!({ "status": body.get("status").cloned().unwrap_or(json!({})) }),
        Part::Object => {
            let mut applied = body.as_object().cloned().unwrap_or_default();
            for field in ["apiVersion", "kind", "metadata"] {
                applied.remove(field);
            }
            if kind.has_status_subresource() {
                applied.remove("status");
            }
            for field in ["labels", "annotations"] {
                if let Some(value) = body["metadata"].get(field) {
                    applied.entry("metadata").or_insert_with(|| json!({}))[field] = value.clone();
                }
            }
            Value::Object(applied)
        }
    };
    let now = now();
    let applier = apply::Applier {
        manager: &manager,
        force: request.param("force").as_deref() == Some("true"),
        subresource: (part == Part::Status).then_some("status"),
        api_version: kind.api_version(),
        now: &now,
    };
    let schema = apply::Schema(shared.schemas.get(&kind));
    let applied_to = |live: &Value| {
        apply::apply(live, &applied, schema, &applier).map_err(|conflicts| ApiError {
            code: 409,
            reason: "Conflict",
            message: conflicts.0,
        })
    };
    let exists = shared.store().objects.contains_key(key);
    if !exists && part == Part::Object {
        let mut object = applied_to(&json!({}))?;
        object["metadata"]["name"] = json!(key.2);
        return shared.mutate(|s| s.create(kind, &key.1, object));
    }
    shared.mutate(|s| s.update(key, part, body, applied_to))
}

/// An object as the request asked for it: whole, or as `PartialObjectMetadata`.
fn answer_shape(object: Value, metadata_only: bool) -> Value {
    if metadata_only {
        json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": object["metadata"],
        })
    } else {
        object
    }
}

/// One page of a list: the API server's chunking (`limit`, `continue`), which kube's watcher
/// asks for (500 objects a page) and without which a replica would parse every object in one
/// response.
struct Page {
    items: Vec<Value>,
    /// The resourceVersion the list is read at: the first page's, carried by the token.
    revision: u64,
    /// Set when objects are left: the token for the next page.
    next: Option<String>,
    /// How many are left, `None` with a label selector: the API server (etcd's store) counts
    /// what is left only for an unfiltered list, its count would include the objects a selector
    /// leaves out.
    remaining: Option<usize>,
}

impl Page {
    fn answer(self, kind: Kind, metadata_only: bool) -> Value {
        let (api_version, list_kind) = if metadata_only {
            (
                "meta.k8s.io/v1".to_owned(),
                "PartialObjectMetadataList".to_owned(),
            )
        } else {
            (
                kind.api_version().to_owned(),
                format!("{}List", kind.kind()),
            )
        };
        let mut metadata = json!({ "resourceVersion": self.revision.to_string() });
        if let Some(next) = self.next {
            metadata["continue"] = json!(next);
            if let Some(remaining) = self.remaining {
                metadata["remainingItemCount"] = json!(remaining);
            }
        }
        let items: Vec<Value> = self
            .items
            .into_iter()
            .map(|o| answer_shape(o, metadata_only))
            .collect();
        json!({
            "apiVersion": api_version,
            "kind": list_kind,
            "metadata": metadata,
            "items": items,
        })
    }
}

/// A list page: the objects `selector` matches, in key order after the `continue` token's key,
/// at most `limit`. A selector filters before the limit, so every page but the last is full
/// and the last one has no token. etcd's store fills pages the same way, but hands out a token
/// whenever keys follow the page, matching or not, so its last page may come empty.
///
/// Unlike etcd, later pages are read from the current objects, not from a snapshot at the
/// first page's resourceVersion: an object changed meanwhile comes in its newer version and its
/// change again on the watch that follows, which a reflector takes as it would a repeated event.
/// A token from before a compaction is refused with 410 Expired, as the API server does.
fn list(
    shared: &Shared,
    kind: Kind,
    namespace: Option<&str>,
    request: &Logged,
    selector: &LabelSelector,
) -> Result<Page, ApiError> {
    let store = shared.store();
    let (revision, after) = match request.param("continue") {
        None => (store.revision, None),
        Some(token) => {
            let mut parts = token.splitn(3, '/');
            let (Some(revision), Some(namespace), Some(name)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(ApiError::new(400, "continue key is not valid"));
            };
            let revision = revision
                .parse::<u64>()
                .map_err(|_| ApiError::new(400, "continue key is not valid"))?;
            if revision < store.compacted_at {
                return Err(ApiError::new(
                    410,
                    "The provided continue parameter is too old to display a consistent list \
                     result. You can start a new list without the continue parameter.",
                ));
            }
            (revision, Some((namespace.to_owned(), name.to_owned())))
        }
    };
    let limit = request
        .param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    let mut matching = store
        .matching(kind, namespace)
        .filter(|((_, ns, name), object)| {
            after
                .as_ref()
                .is_none_or(|after| (ns, name) > (&after.0, &after.1))
                && selector.matches(object)
        });
    let page: Vec<(&Key, &Arc<Value>)> = matching.by_ref().take(limit).collect();
    let remaining = matching.count();
    let next = match page.last() {
        Some(((_, ns, name), _)) if remaining > 0 => Some(format!("{revision}/{ns}/{name}")),
        _ => None,
    };
    let items = page.into_iter().map(|(_, o)| Value::clone(o)).collect();
    Ok(Page {
        items,
        revision,
        next,
        remaining: selector.selects_all().then_some(remaining),
    })
}

fn watch_event(type_: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": type_, "object": object }).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn too_old(from: u64, compacted_at: u64) -> Bytes {
    watch_event(
        "ERROR",
        &status_body(
            410,
            "Expired",
            &format!("too old resource version: {from} ({compacted_at})"),
        ),
    )
}

/// Starts a watch: its events are produced by a task that ends with the stream.
fn watch(
    shared: &Arc<Shared>,
    kind: Kind,
    namespace: Option<&str>,
    request: &Logged,
    selector: LabelSelector,
    metadata_only: bool,
) -> Response {
    let from = request
        .param("resourceVersion")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v > 0);
    let spec = WatchSpec {
        kind,
        namespace: namespace.map(str::to_owned),
        from,
        bookmarks: request.param("allowWatchBookmarks").as_deref() == Some("true"),
        timeout: request
            .param("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs),
        selector,
        metadata_only,
    };
    let (chunks, receiver) = mpsc::channel(64);
    tokio::spawn(stream_watch(shared.clone(), spec, chunks));
    http::Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Either::Right(Chunks(receiver)))
        .expect("a valid response")
}

struct WatchSpec {
    kind: Kind,
    namespace: Option<String>,
    from: Option<u64>,
    bookmarks: bool,
    timeout: Option<Duration>,
    selector: LabelSelector,
    metadata_only: bool,
}

impl WatchSpec {
    /// The event `change` is to this watch, if any. With a label selector, as the API server's
    /// watch cache (`cacheWatcher.convertToWatchEvent`) tells it from the object before and
    /// after: ADDED when it starts to match (created, or labelled into the selector), MODIFIED
    /// while it matches, DELETED when it stops (deleted, or labelled out: then the event
    /// carries the previous object at the change's resourceVersion, the last state the watcher
    /// was entitled to see), nothing while it does not match. Without a selector everything
    /// matches, which gives ADDED, MODIFIED and DELETED for creations, updates and deletions.
    fn event(&self, change: &Change) -> Option<Bytes> {
        let wanted = change.kind == self.kind
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| *n == change.namespace);
        if !wanted {
            return None;
        }
        let selected = |object: Option<&Arc<Value>>| {
            object.filter(|o| self.selector.matches(o)).map(Arc::clone)
        };
        let (type_, object) = match (
            selected(change.previous.as_ref()),
            selected(change.object.as_ref()),
        ) {
            (None, Some(now)) => ("ADDED", Value::clone(&now)),
            (Some(_), Some(now)) => ("MODIFIED", Value::clone(&now)),
            (Some(before), None) => {
                let mut gone = Value::clone(&before);
                gone["metadata"]["resourceVersion"] = json!(change.revision.to_string());
                ("DELETED", gone)
            }
            (None, None) => return None,
        };
        Some(watch_event(
            type_,
            &answer_shape(object, self.metadata_only),
        ))
    }

    fn bookmark(&self, revision: u64) -> Bytes {
        let (api_version, kind) = if self.metadata_only {
            ("meta.k8s.io/v1", "PartialObjectMetadata")
        } else {
            (self.kind.api_version(), self.kind.kind())
        };
        watch_event(
            "BOOKMARK",
            &json!({
                "apiVersion": api_version, "kind": kind,
                "metadata": { "resourceVersion": revision.to_string() }
            }),
        )
    }
}

/// Resolves once [`FakeApi::drop_watches`] was called after `started`.
async fn dropped(control: &mut watch::Receiver<Control>, started: Control) {
    let _ = control
        .wait_for(|c| c.watch_drops != started.watch_drops)
        .await;
}

/// What a watch sends next.
enum Next {
    Events(Vec<Bytes>),
    Gone(Bytes),
}

async fn stream_watch(shared: Arc<Shared>, spec: WatchSpec, chunks: mpsc::Sender<Bytes>) {
    let mut control = shared.control.subscribe();
    let started = *control.borrow_and_update();
    let mut revisions = shared.revisions.subscribe();
    let start = {
        let store = shared.store();
        match spec.from {
            Some(from) if from < store.compacted_at => Err(too_old(from, store.compacted_at)),
            Some(from) => Ok((from, store.compactions, Vec::new())),
            None => {
                let existing: Vec<Bytes> = store
                    .matching(spec.kind, spec.namespace.as_deref())
                    .filter(|(_, o)| spec.selector.matches(o))
                    .map(|(_, o)| {
                        watch_event("ADDED", &answer_shape(Value::clone(o), spec.metadata_only))
                    })
                    .collect();
                Ok((store.revision, store.compactions, existing))
            }
        }
    };
    let (mut cursor, compactions, initial) = match start {
        Ok(start) => start,
        Err(gone) => {
            let _ = chunks.send(gone).await;
            return;
        }
    };
    for chunk in initial {
        if chunks.send(chunk).await.is_err() {
            return;
        }
    }
    let mut bookmarks = tokio::time::interval(shared.bookmark_interval);
    bookmarks.reset();
    let ends = tokio::time::sleep(spec.timeout.unwrap_or(Duration::from_secs(24 * 3600)));
    tokio::pin!(ends);
    loop {
        revisions.borrow_and_update();
        let next = {
            let store = shared.store();
            if store.compactions != compactions {
                Next::Gone(too_old(cursor, store.compacted_at))
            } else {
                // The history is in revision order: skip what this watch has sent without
                // reading it (it holds every change since the last compaction).
                let unsent = store.history.partition_point(|c| c.revision <= cursor);
                let events = store.history[unsent..]
                    .iter()
                    .filter_map(|c| spec.event(c))
                    .collect();
                cursor = cursor.max(store.revision);
                Next::Events(events)
            }
        };
        match next {
            Next::Gone(chunk) => {
                let _ = chunks.send(chunk).await;
                return;
            }
            Next::Events(events) => {
                for chunk in events {
                    if chunks.send(chunk).await.is_err() {
                        return;
                    }
                }
            }
        }
        tokio::select! {
            changed = revisions.changed() => if changed.is_err() { return },
            _ = bookmarks.tick(), if spec.bookmarks => {
                if chunks.send(spec.bookmark(cursor)).await.is_err() {
                    return;
                }
            }
            () = dropped(&mut control, started) => return,
            () = &mut ends => return,
            () = chunks.closed() => return,
        }
    }
}
