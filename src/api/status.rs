//! `VoipCheck.status`: written by the operator only.
//!
//! Reasons are stored as strings, not as [`Reason`](super::Reason): an object written by a newer
//! operator (with a reason this one does not know) must still deserialize, or the watcher would
//! stall on it.

use super::spec::{TargetKind, VoipCheckSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;

use serde::{Deserialize, Serialize};

/// What the operator last observed.
///
/// Two writers share it, each with its own server-side-apply field manager: every location
/// writes its own entry of `locations` (field manager `voipcheck/<location>`), and one
/// instance, the aggregating location's holder of the check's shard, writes the rest: the
/// verdict across locations (`voipcheck`).
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VoipCheckStatus {
    /// The metadata.generation of the spec the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, SipRegistered, SipReachable, SipErrorRate, WebReachable, StunReachable,
    /// NatBindingStable and HotlineReportable, each with a stable CamelCase reason: the verdict
    /// across the locations that run the check (with one location, that location's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The most recent run of the probes (written by operators before status.locations; each
    /// location's entry has its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<LastRun>,

    /// Set while HotlineReportable is True: everything the hotline asks for in an outage report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<Incident>,

    /// How many locations see a provider-side failure (the printer column `Failing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_locations: Option<i32>,

    /// One entry per location that runs the check, keyed by the location's name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_STATUS_LOCATIONS))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub locations: Vec<LocationStatus>,
}

/// Entries of `status.locations` the schema allows: more than a spec may select
/// ([`super::limits::MAX_LOCATIONS`]), so entries of locations dropped from the spec still fit.
pub const MAX_STATUS_LOCATIONS: u32 = 64;

/// One location's own view of a check: what its probes saw and its own verdict, written by
/// that location's instance only (field manager `voipcheck/<name>`).
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LocationStatus {
    /// The location (the operator's --location).
    pub name: String,

    /// The metadata.generation of the spec this location ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The same conditions as status.conditions, as seen from this location alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// This location's most recent run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<LastRun>,

    /// This location's incident while its own HotlineReportable is True.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<Incident>,

    /// Set by the aggregating instance (its own field of this entry) while the location has not
    /// written for longer than its writes may be apart: its view is left out of the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<bool>,
}

/// One run of a check's probes.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastRun {
    /// When the run started.
    pub time: Time,
    /// One entry per probe.
    #[serde(default)]
    pub probes: Vec<ProbeResult>,
}

/// The result of one probe in a run.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    /// The probe, as in the probe label of the metrics (e.g. sip-register, http-web-ui).
    pub name: String,
    /// Whether the probe passed.
    pub success: bool,
    /// Why: the reason the probe's condition takes from this result (e.g. Registered, Timeout).
    pub reason: String,
    /// How long the probe took.
    pub duration_seconds: f64,
    /// sip-register after a successful registration: whether the un-REGISTER removed the
    /// binding ("removed") or why not (the binding then stays until it expires). Not a failure
    /// of the probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unregister: Option<String>,
}

/// An outage report for the hotline.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    /// The affected service's kind (Cloud, ConnectTrunk, PushServer, Portal).
    pub service: TargetKind,
    /// The affected service's name (spec.target.name).
    pub name: String,
    /// From spec.report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_name: Option<String>,
    /// From spec.report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_license: Option<String>,
    /// From spec.report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Since when the failure has persisted (its first failed run).
    pub since: Time,
    /// A short account of what failed: codes, timings, locations.
    pub evidence: String,
}

impl Incident {
    /// The report for `spec`'s target, with the fields the spec's `report` gives.
    pub fn new(spec: &VoipCheckSpec, since: Time, evidence: String) -> Self {
        let report = spec.report.clone().unwrap_or_default();
        Incident {
            service: spec.target.kind,
            name: spec.target.name.clone(),
            cloud_name: report.cloud_name,
            server_license: report.server_license,
            contact: report.contact,
            since,
            evidence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn incident_copies_target_and_report_from_the_spec() {
        let spec: VoipCheckSpec = serde_json::from_value(serde_json::json!({
            "target": { "kind": "ConnectTrunk", "name": "4972100000000" },
            "sip": { "server": "sip:connect.example.net", "options": {} },
            "report": { "serverLicense": "ABC-123", "contact": "NOC" }
        }))
        .unwrap();
        let since = Time(Timestamp::from_second(1_700_000_000).unwrap());
        let incident = Incident::new(&spec, since.clone(), "503 in 9 of 20 runs".into());
        assert_eq!(
            serde_json::to_value(&incident).unwrap(),
            serde_json::json!({
                "service": "ConnectTrunk",
                "name": "4972100000000",
                "serverLicense": "ABC-123",
                "contact": "NOC",
                "since": "2023-11-14T22:13:20Z",
                "evidence": "503 in 9 of 20 runs"
            })
        );
    }
}
