//! The controller's decisions as plain functions: which check an object is, what the scheduler
//! gets, what the status patch and the Events look like, which checks a Secret change concerns,
//! which scheduled checks are gone. No client, no clock: the controller, the status writer and
//! the deletion handling call these, and the unit tests below cover them without any API.

use super::error::{Error, Result};
use super::shards;
use crate::api::{
    ConditionStatus, ConditionType, InvalidCheck, InvalidSpec, LocationStatus, VoipCheck,
    VoipCheckSpec, VoipCheckStatus,
};
use crate::check::{CheckId, Plan, PlanError};
use crate::schedule::CheckEntry;
use crate::status::Transition;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The field manager of the verdict across locations (the top level of `status`), the name the
/// single-location operator used for the whole status, so an upgraded install takes over its
/// fields; each location's entry has its own ([`location_manager`]). `kubectl get -o yaml
/// --show-managed-fields` shows who owns what.
pub const FIELD_MANAGER: &str = "voipcheck";

/// Kubernetes caps an Event's note at 1 kB.
const MAX_NOTE_BYTES: usize = 1024;

/// The check an object is: its namespace and name.
pub fn check_id(check: &VoipCheck) -> Result<CheckId> {
    object_id(&check.metadata)
}

/// The check an object with `metadata` is (also one that does not deserialize).
pub fn object_id(metadata: &ObjectMeta) -> Result<CheckId> {
    let name = metadata.name.clone().unwrap_or_default();
    match &metadata.namespace {
        Some(namespace) => Ok(CheckId::new(namespace, name)),
        None => Err(Error::MissingNamespace(name)),
    }
}

/// What the scheduler of `location` receives for `check`: its plan (or why it cannot run) and
/// the location's status already on the object ([`own_status`]), so conditions keep their
/// lastTransitionTime across restarts and leader changes.
pub fn check_entry(
    check: &VoipCheck,
    id: CheckId,
    plan: Result<Plan, PlanError>,
    location: &str,
) -> CheckEntry {
    CheckEntry {
        id,
        uid: check.metadata.uid.clone(),
        generation: check.metadata.generation,
        spec: Some(Arc::new(check.spec.clone())),
        plan,
        previous: own_status(check.status.as_ref(), location).map(Box::new),
    }
}

/// Whether `location` runs the check: `spec.locations` is empty (every location) or names it.
pub fn runs_in(spec: &VoipCheckSpec, location: &str) -> bool {
    spec.locations.is_empty() || spec.locations.iter().any(|l| l == location)
}

/// What `location` continues a check from: its own entry of `status.locations`; or, on an
/// object without any entry, the top level, which the single-location operator before
/// `status.locations` wrote as its own (it is still that location's last word). Once any
/// location has an entry the top level is the verdict across locations, never one location's.
pub fn own_status(status: Option<&VoipCheckStatus>, location: &str) -> Option<VoipCheckStatus> {
    let status = status?;
    if status.locations.is_empty() {
        return Some(VoipCheckStatus {
            failing_locations: None,
            ..status.clone()
        });
    }
    let own = status.locations.iter().find(|l| l.name == location)?;
    Some(VoipCheckStatus {
        observed_generation: own.observed_generation,
        conditions: own.conditions.clone(),
        last_run: own.last_run.clone(),
        incident: own.incident.clone(),
        ..VoipCheckStatus::default()
    })
}

/// Whether `status` carries an entry of `location`.
pub fn has_entry(status: Option<&VoipCheckStatus>, location: &str) -> bool {
    status.is_some_and(|s| s.locations.iter().any(|l| l.name == location))
}

/// The field manager of `location`'s entry: `voipcheck/<location>`.
pub fn location_manager(location: &str) -> String {
    format!("{FIELD_MANAGER}/{location}")
}

/// The status that stands for "no entry": nothing in it (a run always has conditions). Applied
/// as a location's entry it removes what the location's manager owned: its entry goes.
pub fn no_entry() -> VoipCheckStatus {
    VoipCheckStatus::default()
}

/// The server-side apply body of `location`'s entry with `status` (what its scheduler computed:
/// conditions, lastRun, incident, observedGeneration), under [`location_manager`]; for
/// [`no_entry`] an empty `status`, which takes the entry away. The uid is a precondition as in
/// [`status_patch`].
pub fn entry_patch(status: &VoipCheckStatus, location: &str, uid: Option<&str>) -> Value {
    let written = if *status == no_entry() {
        VoipCheckStatus::default()
    } else {
        VoipCheckStatus {
            locations: vec![location_entry(status, location)],
            ..VoipCheckStatus::default()
        }
    };
    status_patch(&written, uid)
}

/// `location`'s entry with what its scheduler computed (`status`).
pub fn location_entry(status: &VoipCheckStatus, location: &str) -> LocationStatus {
    LocationStatus {
        name: location.to_owned(),
        observed_generation: status.observed_generation,
        conditions: status.conditions.clone(),
        last_run: status.last_run.clone(),
        incident: status.incident.clone(),
        stale: None,
    }
}

/// What the scheduler receives for an object that does not deserialize: no spec, and a plan
/// error that publishes `Ready=False` reason `InvalidSpec` naming the field, like any spec the
/// validation refuses.
pub fn invalid_entry(id: CheckId, check: &InvalidCheck, location: &str) -> CheckEntry {
    CheckEntry {
        id,
        uid: check.metadata.uid.clone(),
        generation: check.metadata.generation,
        spec: None,
        plan: Err(PlanError::InvalidSpec(InvalidSpec(vec![
            check.error.clone(),
        ]))),
        previous: own_status(check.status.as_ref(), location).map(Box::new),
    }
}

/// When an unchanged check is reconciled again: somewhere in [period / 2, period × 3 / 2),
/// fixed per object by its uid (its name when it has none). One fixed period for all would
/// bring every check's reconcile and Secret reads in one burst (10,000 of them every 30
/// minutes, on the API flow the Lease renewals use); spread this way they arrive evenly, and
/// each check still keeps one steady period.
pub fn resync_after(period: Duration, uid: Option<&str>, id: &CheckId) -> Duration {
    let seed = match uid {
        Some(uid) => stable_hash(uid.as_bytes()),
        None => stable_hash(format!("{}/{}", id.namespace, id.name).as_bytes()),
    };
    // The top 32 bits as a fraction in [0, 1), exact in f64.
    let fraction = (seed >> 32) as f64 / (1u64 << 32) as f64;
    period.mul_f64(0.5 + fraction)
}

/// 64-bit FNV-1a, then MurmurHash3's finalizer so that uids differing only in their last
/// characters (as generated ones do) spread over the high bits too. Stable across processes
/// and Rust versions (unlike `DefaultHasher`), so a check keeps its resync period across
/// operator restarts.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// The server-side apply body for the status subresource: the whole status this operator owns.
/// Fields left out (e.g. `incident` after recovery) are removed, because SSA drops fields a
/// manager stops sending. `metadata.uid`, when known, is a precondition for the API server: the
/// status of a deleted object never lands on one recreated under the same name (409 instead).
pub fn status_patch(status: &VoipCheckStatus, uid: Option<&str>) -> Value {
    let mut patch = json!({
        "apiVersion": VoipCheck::api_version(&()),
        "kind": VoipCheck::kind(&()),
        "status": status,
    });
    if let Some(uid) = uid {
        patch["metadata"] = json!({ "uid": uid });
    }
    patch
}

/// What the Events of check `id` refer to: the object with `uid`, the one the status was
/// computed for.
pub fn event_reference(id: &CheckId, uid: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some(VoipCheck::api_version(&()).into_owned()),
        kind: Some(VoipCheck::kind(&()).into_owned()),
        name: Some(id.name.clone()),
        namespace: Some(id.namespace.clone()),
        uid: uid.map(str::to_owned),
        ..ObjectReference::default()
    }
}

/// Whether `own` (the last status this replica computed for a check) is at least as new as
/// `written` (the one on the object): true unless another replica ran the check later.
pub fn is_newest(own: Option<&VoipCheckStatus>, written: Option<&VoipCheckStatus>) -> bool {
    let run_time =
        |s: Option<&VoipCheckStatus>| s.and_then(|s| s.last_run.as_ref()).map(|r| r.time.0);
    match (run_time(own), run_time(written)) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(own), Some(written)) => own >= written,
    }
}

/// How long a status whose conditions did not change may go unwritten. Writing every run would
/// be 333 writes/s to the API server at 10,000 checks every 30 s; the conditions are what users
/// and alerts read, `lastRun` only needs to show the operator is alive.
pub const STATUS_REFRESH: Duration = Duration::from_secs(300);

/// The part of a status that must reach the API at once when it changes: observedGeneration,
/// each condition's type, status and reason, the incident, and the verdict across locations
/// (how many fail, which entries are stale). Messages (with live timings) and `lastRun` may wait
/// for [`STATUS_REFRESH`].
///
/// Kept as a 64-bit hash, not a copy: the writers keep one per check they write (20,000 at
/// 10,000 checks), and a copy of the conditions' strings was a kilobyte each. Two different
/// statuses colliding (odds 2^-64) would delay a write to the next refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusDigest(u64);

impl StatusDigest {
    pub fn of(status: &VoipCheckStatus) -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        status.observed_generation.hash(&mut hasher);
        status.conditions.len().hash(&mut hasher);
        for condition in &status.conditions {
            (&condition.type_, &condition.status, &condition.reason).hash(&mut hasher);
        }
        status
            .incident
            .as_ref()
            .map(|i| i.since.0)
            .hash(&mut hasher);
        status.failing_locations.hash(&mut hasher);
        for entry in &status.locations {
            (&entry.name, entry.stale == Some(true)).hash(&mut hasher);
        }
        Self(hasher.finish())
    }
}

/// Whether a status with `digest` must be written, given the last successful write.
pub fn needs_write(
    last: Option<&(StatusDigest, Instant)>,
    digest: &StatusDigest,
    now: Instant,
) -> bool {
    match last {
        None => true,
        Some((written, at)) => written != digest || now.duration_since(*at) >= STATUS_REFRESH,
    }
}

/// The Event for one condition transition: reason = the condition's reason, action = the
/// condition type (so `Timeout` of SipRegistered and of WebReachable stay apart), the note
/// names the condition, the change, the location when it is one location's transition (not
/// the verdict across locations), and the condition's message.
pub fn transition_event(transition: &Transition, location: Option<&str>) -> Event {
    let (status, reason) = transition.to;
    let was = match transition.from {
        Some((from_status, from_reason)) => format!(" (was {from_status} {from_reason})"),
        None => String::new(),
    };
    let place = match location {
        Some(location) => format!(" in location {location}"),
        None => String::new(),
    };
    let note = format!(
        "{} {status}{was}{place}: {}",
        transition.type_, transition.message
    );
    Event {
        type_: event_type(transition.type_, status),
        reason: reason.as_str().to_owned(),
        note: Some(truncate(note, MAX_NOTE_BYTES)),
        action: transition.type_.as_str().to_owned(),
        secondary: None,
    }
}

/// `Warning` when a condition turns bad, `Normal` when it turns good or unknown. Every condition
/// has positive polarity except `HotlineReportable`, where True means "call the hotline now":
/// that is the one a person must see as a Warning.
pub fn event_type(type_: ConditionType, status: ConditionStatus) -> EventType {
    let bad = match type_ {
        ConditionType::HotlineReportable => ConditionStatus::True,
        _ => ConditionStatus::False,
    };
    if status == bad {
        EventType::Warning
    } else {
        EventType::Normal
    }
}

/// The checks among `checks` that read the Secret `namespace/secret`: a change of that Secret
/// (created, edited, deleted) re-reconciles exactly these.
pub fn referencing_checks<'a>(
    checks: impl IntoIterator<Item = &'a VoipCheck>,
    namespace: &str,
    secret: &str,
) -> Vec<ObjectRef<VoipCheck>> {
    checks
        .into_iter()
        .filter(|check| check.metadata.namespace.as_deref() == Some(namespace))
        .filter(|check| check.spec.secret_keys().iter().any(|u| u.name == secret))
        .map(ObjectRef::from_obj)
        .collect()
}

/// The checks among `checks` of `shard`: taking it reconciles exactly these.
pub fn checks_of_shard<'a>(
    checks: impl IntoIterator<Item = &'a VoipCheck>,
    shard: usize,
) -> Vec<ObjectRef<VoipCheck>> {
    checks
        .into_iter()
        .filter(|check| {
            check_id(check)
                .is_ok_and(|id| shards::shard_of(check.metadata.uid.as_deref(), &id) == shard)
        })
        .map(ObjectRef::from_obj)
        .collect()
}

/// The scheduled checks in `scope` (one namespace, or all for `None`) that are no longer
/// `present` in the cache: deleted, possibly while the watch was down (a re-list then brings no
/// Delete event, only the absence).
pub fn vanished<'a>(
    scheduled: impl IntoIterator<Item = &'a CheckId>,
    scope: Option<&str>,
    present: impl Fn(&CheckId) -> bool,
) -> Vec<CheckId> {
    scheduled
        .into_iter()
        .filter(|id| scope.is_none_or(|ns| id.namespace == ns))
        .filter(|id| !present(id))
        .cloned()
        .collect()
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Reason;

    fn check(namespace: Option<&str>, name: &str, spec: Value) -> VoipCheck {
        let mut check = VoipCheck::new(name, serde_json::from_value(spec).unwrap());
        check.metadata.namespace = namespace.map(str::to_owned);
        check.metadata.generation = Some(3);
        check
    }

    fn sip_check(namespace: &str, name: &str, secret: &str) -> VoipCheck {
        check(
            Some(namespace),
            name,
            json!({
                "target": { "kind": "Cloud", "name": "pbx.example.com" },
                "sip": {
                    "server": "sip:pbx.example.com",
                    "register": {
                        "username": "monitor",
                        "credentialsSecretRef": { "name": secret, "key": "password" }
                    }
                }
            }),
        )
    }

    fn web_check(namespace: &str, name: &str) -> VoipCheck {
        check(
            Some(namespace),
            name,
            json!({
                "target": { "kind": "Portal", "name": "portal" },
                "http": [ { "name": "ui", "url": "https://portal.example.com/" } ]
            }),
        )
    }

    #[test]
    fn check_id_needs_a_namespace() {
        let ok = sip_check("telephony", "cloud", "sip");
        assert_eq!(check_id(&ok).unwrap(), CheckId::new("telephony", "cloud"));
        let mut broken = ok.clone();
        broken.metadata.namespace = None;
        assert!(matches!(check_id(&broken), Err(Error::MissingNamespace(n)) if n == "cloud"));
    }

    #[test]
    fn check_entry_carries_generation_spec_and_the_status_on_the_object() {
        let mut object = sip_check("telephony", "cloud", "sip");
        object.status = Some(VoipCheckStatus {
            observed_generation: Some(2),
            ..Default::default()
        });
        let error = PlanError::CredentialsMissing {
            field: "spec.sip.register.credentialsSecretRef".into(),
            secret: "sip".into(),
            key: None,
        };
        let id = CheckId::new("telephony", "cloud");
        let entry = check_entry(&object, id.clone(), Err(error.clone()), "eu-west");
        assert_eq!(entry.id, id);
        assert_eq!(entry.generation, Some(3));
        assert_eq!(entry.spec.as_deref(), Some(&object.spec));
        assert_eq!(entry.plan.unwrap_err(), error);
        assert_eq!(entry.previous.as_deref(), object.status.as_ref());
    }

    fn ran(secs: i64) -> Option<crate::api::LastRun> {
        Some(crate::api::LastRun {
            time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(secs).unwrap(),
            ),
            probes: Vec::new(),
        })
    }

    /// A status of spec generation `generation` whose last run was at `secs`.
    fn ran_status(generation: i64, secs: i64) -> VoipCheckStatus {
        VoipCheckStatus {
            observed_generation: Some(generation),
            last_run: ran(secs),
            ..Default::default()
        }
    }

    #[test]
    fn a_location_continues_from_its_own_entry_or_else_from_a_legacy_top_level() {
        let legacy = ran_status(2, 100);
        // Written by the operator before status.locations: the one location's own.
        assert_eq!(own_status(Some(&legacy), "eu-west"), Some(legacy.clone()));
        assert_eq!(own_status(None, "eu-west"), None);

        let entry = |name: &str, secs: i64| LocationStatus {
            name: name.into(),
            observed_generation: Some(3),
            last_run: ran(secs),
            stale: Some(true),
            ..Default::default()
        };
        let shared = VoipCheckStatus {
            observed_generation: Some(3),
            failing_locations: Some(1),
            last_run: ran(50),
            locations: vec![entry("office", 200), entry("eu-west", 300)],
            ..Default::default()
        };
        assert_eq!(
            own_status(Some(&shared), "eu-west"),
            Some(ran_status(3, 300))
        );
        // Another location's entries exist: the top level is theirs and the verdict's, not
        // this location's; it starts afresh.
        assert_eq!(own_status(Some(&shared), "lab"), None);
        assert!(has_entry(Some(&shared), "office"));
        assert!(!has_entry(Some(&shared), "lab"));
        assert!(!has_entry(Some(&legacy), "eu-west"));
    }

    #[test]
    fn a_check_runs_in_the_locations_its_spec_names_or_in_every_one() {
        let mut spec = web_check("telephony", "d").spec;
        assert!(runs_in(&spec, "office"));
        spec.locations = vec!["office".into()];
        assert!(runs_in(&spec, "office"));
        assert!(!runs_in(&spec, "eu-west"));
    }

    #[test]
    fn the_entry_patch_holds_only_this_locations_entry_and_none_removes_it() {
        let status = ran_status(7, 100);
        assert_eq!(
            entry_patch(&status, "office", Some("u-1")),
            json!({
                "apiVersion": "voipcheck.io/v1alpha1",
                "kind": "VoipCheck",
                "metadata": { "uid": "u-1" },
                "status": { "locations": [ {
                    "name": "office",
                    "observedGeneration": 7,
                    "lastRun": { "time": "1970-01-01T00:01:40Z", "probes": [] }
                } ] }
            })
        );
        assert_eq!(
            entry_patch(&no_entry(), "office", None),
            json!({ "apiVersion": "voipcheck.io/v1alpha1", "kind": "VoipCheck", "status": {} })
        );
        assert_eq!(location_manager("office"), "voipcheck/office");
    }

    #[test]
    fn unchanged_conditions_wait_for_the_refresh_but_a_new_reason_does_not() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        let condition = |reason: &str, message: &str| Condition {
            type_: "SipRegistered".into(),
            status: "True".into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            observed_generation: Some(1),
        };
        let status = |reason: &str, message: &str| VoipCheckStatus {
            observed_generation: Some(1),
            conditions: vec![condition(reason, message)],
            ..Default::default()
        };
        let start = Instant::now();
        let written = (
            StatusDigest::of(&status("Registered", "200 OK after 1.2 ms")),
            start,
        );
        let later = start + Duration::from_secs(30);
        let same = StatusDigest::of(&status("Registered", "200 OK after 3.4 ms"));
        assert!(needs_write(None, &same, later));
        assert!(!needs_write(Some(&written), &same, later));
        assert!(needs_write(Some(&written), &same, start + STATUS_REFRESH));
        let changed = StatusDigest::of(&status("Timeout", "no answer within 10s"));
        assert!(needs_write(Some(&written), &changed, later));

        // Each part of the digest on its own, and lastRun not at all.
        let base = status("Registered", "200 OK after 1.2 ms");
        let variants: [fn(&mut VoipCheckStatus); 5] = [
            |s| s.observed_generation = Some(2),
            |s| s.conditions[0].status = "False".into(),
            |s| s.failing_locations = Some(1),
            |s| {
                s.locations = vec![crate::api::LocationStatus {
                    name: "berlin".into(),
                    stale: Some(true),
                    ..Default::default()
                }]
            },
            |s| {
                s.incident = Some(crate::api::Incident {
                    service: crate::api::TargetKind::Cloud,
                    name: "cloud".into(),
                    cloud_name: None,
                    server_license: None,
                    contact: None,
                    since: Time(k8s_openapi::jiff::Timestamp::from_second(60).unwrap()),
                    evidence: "503".into(),
                })
            },
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut other = base.clone();
            change(&mut other);
            assert_ne!(
                StatusDigest::of(&other),
                StatusDigest::of(&base),
                "variant {i}"
            );
        }
        let mut ran = base.clone();
        ran.last_run = Some(crate::api::LastRun {
            time: Time(k8s_openapi::jiff::Timestamp::from_second(60).unwrap()),
            probes: Vec::new(),
        });
        assert_eq!(StatusDigest::of(&ran), StatusDigest::of(&base));
    }

    #[test]
    fn own_state_is_newest_unless_another_replica_ran_the_check_later() {
        use crate::api::LastRun;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let ran = |secs: i64| VoipCheckStatus {
            last_run: Some(LastRun {
                time: Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap()),
                probes: Vec::new(),
            }),
            ..Default::default()
        };
        assert!(is_newest(Some(&ran(100)), Some(&ran(100))));
        assert!(is_newest(Some(&ran(130)), Some(&ran(100))));
        assert!(!is_newest(Some(&ran(100)), Some(&ran(130))));
        assert!(is_newest(None, None));
        assert!(!is_newest(None, Some(&ran(100))));
    }

    #[test]
    fn status_patch_is_a_full_apply_object() {
        let status = VoipCheckStatus {
            observed_generation: Some(7),
            ..Default::default()
        };
        assert_eq!(
            status_patch(&status, None),
            json!({
                "apiVersion": "voipcheck.io/v1alpha1",
                "kind": "VoipCheck",
                "status": { "observedGeneration": 7 }
            })
        );
        assert_eq!(
            status_patch(&status, Some("u-1"))["metadata"],
            json!({ "uid": "u-1" })
        );
    }

    #[test]
    fn a_condition_turning_false_is_a_warning_naming_the_change() {
        let transition = Transition {
            type_: ConditionType::SipRegistered,
            from: Some((ConditionStatus::True, Reason::Registered)),
            to: (ConditionStatus::False, Reason::Timeout),
            message: "no answer within 10s".into(),
        };
        let event = transition_event(&transition, None);
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, "Timeout");
        assert_eq!(event.action, "SipRegistered");
        assert_eq!(
            event.note.as_deref(),
            Some("SipRegistered False (was True Registered): no answer within 10s")
        );
        // One location's own transition names the location.
        let event = transition_event(&transition, Some("office"));
        assert_eq!(
            event.note.as_deref(),
            Some(
                "SipRegistered False (was True Registered) in location office: no answer within 10s"
            )
        );
    }

    #[test]
    fn a_first_seen_true_condition_is_normal() {
        let event = transition_event(
            &Transition {
                type_: ConditionType::Ready,
                from: None,
                to: (ConditionStatus::True, Reason::Healthy),
                message: "all probes pass".into(),
            },
            None,
        );
        assert_eq!(event.type_, EventType::Normal);
        assert_eq!(event.note.as_deref(), Some("Ready True: all probes pass"));
    }

    #[test]
    fn reportable_is_the_one_condition_whose_true_warns() {
        use ConditionStatus::*;
        assert_eq!(
            event_type(ConditionType::HotlineReportable, True),
            EventType::Warning
        );
        assert_eq!(
            event_type(ConditionType::HotlineReportable, False),
            EventType::Normal
        );
        for type_ in ConditionType::ALL
            .iter()
            .filter(|t| **t != ConditionType::HotlineReportable)
        {
            assert_eq!(event_type(*type_, False), EventType::Warning, "{type_}");
            assert_eq!(event_type(*type_, True), EventType::Normal, "{type_}");
            assert_eq!(event_type(*type_, Unknown), EventType::Normal, "{type_}");
        }
    }

    #[test]
    fn long_notes_are_cut_to_the_api_limit_on_a_char_boundary() {
        let event = transition_event(
            &Transition {
                type_: ConditionType::WebReachable,
                from: None,
                to: (ConditionStatus::False, Reason::BodyMismatch),
                message: "ä".repeat(2000),
            },
            None,
        );
        let note = event.note.unwrap();
        assert!(note.len() <= MAX_NOTE_BYTES);
        assert!(note.len() > MAX_NOTE_BYTES - 2);
    }

    #[test]
    fn a_secret_concerns_the_checks_of_its_namespace_that_reference_it() {
        let checks = [
            sip_check("telephony", "a", "sip"),
            sip_check("telephony", "b", "other"),
            sip_check("elsewhere", "c", "sip"),
            web_check("telephony", "d"),
        ];
        let refs = referencing_checks(&checks, "telephony", "sip");
        assert_eq!(refs, vec![ObjectRef::new("a").within("telephony")]);
        assert!(referencing_checks(&checks, "telephony", "nothing").is_empty());
    }

    #[test]
    fn a_taken_shard_concerns_the_checks_whose_uid_hashes_to_it() {
        let mut checks: Vec<VoipCheck> = (0..40)
            .map(|i| {
                let mut check = web_check("telephony", &format!("c{i}"));
                check.metadata.uid = Some(format!("00000000-0000-4000-8000-{i:012x}"));
                check
            })
            .collect();
        checks[0].metadata.uid = None;
        let mut seen = 0;
        for shard in 0..shards::SHARDS {
            let refs = checks_of_shard(&checks, shard);
            for reference in &refs {
                let check = checks
                    .iter()
                    .find(|c| c.metadata.name.as_deref() == Some(&reference.name));
                let check = check.unwrap();
                let id = check_id(check).unwrap();
                assert_eq!(shards::shard_of(check.metadata.uid.as_deref(), &id), shard);
            }
            seen += refs.len();
        }
        assert_eq!(seen, checks.len(), "every check in exactly one shard");
        assert!(checks_of_shard(&checks, shards::SHARDS).is_empty());
    }

    #[test]
    fn resyncs_spread_over_half_to_one_and_a_half_periods_fixed_per_object() {
        let period = Duration::from_secs(1800);
        let id = CheckId::new("telephony", "cloud");
        let table = [
            (Some("6a1f2c3d-0000-4000-8000-000000000001"), 2548),
            (Some("00000000-0000-4000-8000-000000000002"), 1594),
            // Without a uid the name decides.
            (None, 1886),
        ];
        for (uid, seconds) in table {
            assert_eq!(resync_after(period, uid, &id).as_secs(), seconds, "{uid:?}");
        }
        // 10,000 checks: each tenth of the range gets its share, none falls outside.
        let mut tenths = [0u32; 10];
        for i in 0..10_000 {
            let uid = format!("00000000-0000-4000-8000-{i:012x}");
            let after = resync_after(period, Some(&uid), &id);
            assert!(after >= period / 2 && after < period * 3 / 2, "{after:?}");
            tenths[((after - period / 2).as_secs_f64() / period.as_secs_f64() * 10.0) as usize] +=
                1;
        }
        assert!(tenths.iter().all(|n| (900..1100).contains(n)), "{tenths:?}");
    }

    #[test]
    fn an_invalid_object_becomes_an_invalid_spec_entry_without_spec() {
        let error =
            crate::api::SpecError::new("spec.interval", "invalid type: integer, expected a string");
        let mut metadata = ObjectMeta {
            name: Some("cloud".into()),
            namespace: Some("telephony".into()),
            uid: Some("u-1".into()),
            generation: Some(5),
            ..ObjectMeta::default()
        };
        let invalid = InvalidCheck {
            metadata: metadata.clone(),
            error: error.clone(),
            status: None,
        };
        let id = object_id(&metadata).unwrap();
        let entry = invalid_entry(id.clone(), &invalid, "eu-west");
        assert_eq!(entry.id, CheckId::new("telephony", "cloud"));
        assert_eq!(entry.uid.as_deref(), Some("u-1"));
        assert_eq!(entry.generation, Some(5));
        assert!(entry.spec.is_none());
        assert_eq!(
            entry.plan.unwrap_err(),
            PlanError::InvalidSpec(InvalidSpec(vec![error]))
        );
        metadata.namespace = None;
        assert!(object_id(&metadata).is_err());
    }

    #[test]
    fn vanished_checks_are_those_of_the_scope_missing_from_the_cache() {
        let scheduled = [
            CheckId::new("a", "kept"),
            CheckId::new("a", "deleted"),
            CheckId::new("b", "deleted"),
        ];
        let present = |id: &CheckId| id.name == "kept";
        assert_eq!(
            vanished(&scheduled, Some("a"), present),
            vec![CheckId::new("a", "deleted")]
        );
        assert_eq!(
            vanished(&scheduled, None, present),
            vec![CheckId::new("a", "deleted"), CheckId::new("b", "deleted")]
        );
    }
}
