//! The per-check values, kept compactly and copy-on-write, so a scrape reads them without
//! holding the store's lock.
//!
//! The `prometheus` crate's metric vectors keep, per series, owned label strings and a proto
//! structure; at 10,000 checks (about 22 series each) that was most of the operator's memory
//! (DESIGN.md §7). Here a check holds plain values (a slot per gauge, a count per SIP
//! response), and [`super::exposition`] writes their text straight from them.
//!
//! Each check's values sit behind an [`Arc`]. A scrape takes a [`Store::snapshot`]: under the
//! lock it only copies the 10,000 pointers (well under a millisecond), then renders the text
//! with the lock released. A run finishing meanwhile changes its check through
//! [`Arc::make_mut`]: the first change while a snapshot still points at the old values copies
//! that one check (a few hundred bytes), later ones write in place. So writers never wait for
//! an encode, and a scrape sees each check as it was when the scrape began.

use crate::check::CheckId;
use crate::probe::media::MediaDirection;
use litemap::LiteMap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A per-probe gauge with one value per probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProbeGauge {
    Success,
    Duration,
    SipLastStatusCode,
    SipRegistrationStatus,
    SipRtt,
    HttpStatusCode,
    TlsCertExpiry,
    StunRtt,
    StunPublicAddress,
    NatBindingLifetime,
    CallPostDialDelay,
    CallSetup,
    RtpRoundTrip,
}

/// Every per-probe gauge, in the order of [`ProbeMetrics::gauges`].
pub(super) const PROBE_GAUGES: [ProbeGauge; 13] = [
    ProbeGauge::Success,
    ProbeGauge::Duration,
    ProbeGauge::SipLastStatusCode,
    ProbeGauge::SipRegistrationStatus,
    ProbeGauge::SipRtt,
    ProbeGauge::HttpStatusCode,
    ProbeGauge::TlsCertExpiry,
    ProbeGauge::StunRtt,
    ProbeGauge::StunPublicAddress,
    ProbeGauge::NatBindingLifetime,
    ProbeGauge::CallPostDialDelay,
    ProbeGauge::CallSetup,
    ProbeGauge::RtpRoundTrip,
];

/// A gauge of a test call's audio with one value per direction (label `direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DirectionGauge {
    RtpLoss,
    RtpJitter,
    Mos,
}

/// Every per-direction gauge, in the order of [`ProbeMetrics::directions`].
pub(super) const DIRECTION_GAUGES: [DirectionGauge; 3] = [
    DirectionGauge::RtpLoss,
    DirectionGauge::RtpJitter,
    DirectionGauge::Mos,
];

/// The `direction` values, in the order of their text (the order of the exposition).
pub(super) const DIRECTIONS: [MediaDirection; 2] =
    [MediaDirection::Incoming, MediaDirection::Outgoing];

/// The `phase` values of `http_phase_duration_seconds` (blackbox_exporter's names), in
/// alphabetical order, the order of [`ProbeMetrics::phases`] and of the exposition.
pub(super) const HTTP_PHASES: [&str; 5] = ["connect", "processing", "resolve", "tls", "transfer"];

/// The `code` label of `sip_responses_total`: a three-digit status, anything else `invalid`.
///
/// The derived order is the order of the label's text: three-digit numbers compare as their
/// digits do, and `invalid` sorts after every digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum SipCode {
    Status(u16),
    Invalid,
}

impl SipCode {
    pub(super) fn new(code: u16) -> Self {
        if (100..=699).contains(&code) {
            SipCode::Status(code)
        } else {
            SipCode::Invalid
        }
    }

    pub(super) fn label(self) -> String {
        match self {
            SipCode::Status(code) => code.to_string(),
            SipCode::Invalid => "invalid".to_owned(),
        }
    }
}

/// The last run's values of one probe; `None` is a value the run did not produce (no series).
#[derive(Debug, Clone)]
pub(super) struct ProbeMetrics {
    pub(super) name: Arc<str>,
    pub(super) gauges: [Option<f64>; PROBE_GAUGES.len()],
    pub(super) phases: [Option<f64>; HTTP_PHASES.len()],
    /// Per [`DIRECTION_GAUGES`] and [`DIRECTIONS`].
    pub(super) directions: [[Option<f64>; DIRECTIONS.len()]; DIRECTION_GAUGES.len()],
    /// `sip_responses_total` by method and code: a sorted vector, as a probe sees one to a
    /// few codes and a BTreeMap's node has room for 11.
    pub(super) sip_responses: LiteMap<(&'static str, SipCode), u64>,
}

impl ProbeMetrics {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            gauges: [None; PROBE_GAUGES.len()],
            phases: [None; HTTP_PHASES.len()],
            directions: [[None; DIRECTIONS.len()]; DIRECTION_GAUGES.len()],
            sip_responses: LiteMap::new(),
        }
    }

    pub(super) fn set(&mut self, gauge: ProbeGauge, value: Option<f64>) {
        self.gauges[gauge as usize] = value;
    }

    /// `phase` is one of [`HTTP_PHASES`].
    pub(super) fn set_phase(&mut self, phase: &str, value: Option<f64>) {
        let index = HTTP_PHASES
            .iter()
            .position(|p| *p == phase)
            .expect("HTTP phases are the closed set HTTP_PHASES");
        self.phases[index] = value;
    }

    pub(super) fn set_direction(
        &mut self,
        gauge: DirectionGauge,
        direction: MediaDirection,
        value: Option<f64>,
    ) {
        let index = DIRECTIONS
            .iter()
            .position(|d| *d == direction)
            .expect("DIRECTIONS holds every direction");
        self.directions[gauge as usize][index] = value;
    }

    pub(super) fn count_sip_response(&mut self, method: &'static str, code: SipCode) {
        *self.sip_responses.entry((method, code)).or_default() += 1;
    }
}

/// The labels and value of `incident_since_timestamp_seconds`: the incident the check's
/// status carries, its fields from the spec (bounded per check).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct IncidentSeries {
    pub(super) service: &'static str,
    pub(super) target: String,
    pub(super) cloud_name: String,
    pub(super) server_license: String,
    pub(super) since: f64,
}

/// The verdict across locations (the check's top level), on the replica that writes it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StatusSeries {
    /// As [`CheckMetrics::conditions`].
    pub(super) conditions: Vec<[&'static str; 3]>,
    pub(super) hotline_reportable: bool,
    pub(super) failing_locations: f64,
    pub(super) stale_locations: f64,
    pub(super) incident: Option<IncidentSeries>,
}

impl StatusSeries {
    pub(super) fn new(
        conditions: impl IntoIterator<Item = [&'static str; 3]>,
        hotline_reportable: bool,
        failing_locations: f64,
        stale_locations: f64,
        incident: Option<IncidentSeries>,
    ) -> Self {
        StatusSeries {
            conditions: exposition_order(conditions),
            hotline_reportable,
            failing_locations,
            stale_locations,
            incident,
        }
    }
}

/// Condition triples (type, status, reason) sorted by reason, status, type, the order of the
/// exposition (its labels sort as reason, status, type); duplicates collapse into one series.
fn exposition_order(
    conditions: impl IntoIterator<Item = [&'static str; 3]>,
) -> Vec<[&'static str; 3]> {
    let mut conditions: Vec<_> = conditions.into_iter().collect();
    conditions.sort_unstable_by_key(|[type_, status, reason]| (*reason, *status, *type_));
    conditions.dedup();
    conditions
}

/// Everything one check has written.
#[derive(Debug, Clone)]
pub(super) struct CheckMetrics {
    pub(super) id: CheckId,
    /// Sorted by name, the order of the exposition.
    pub(super) probes: Vec<ProbeMetrics>,
    /// The current `condition` series as type, status, reason; sorted by reason, status,
    /// type, the order of the exposition (its labels sort as reason, status, type).
    pub(super) conditions: Vec<[&'static str; 3]>,
    pub(super) hotline_reportable: Option<bool>,
    /// Unix time the last run completed.
    pub(super) last_run: Option<f64>,
    /// The check's interval in seconds.
    pub(super) interval: Option<f64>,
    pub(super) incident: Option<IncidentSeries>,
    /// Only on the replica that writes the check's top level.
    pub(super) status: Option<StatusSeries>,
}

impl CheckMetrics {
    fn new(id: &CheckId) -> Self {
        Self {
            id: id.clone(),
            probes: Vec::new(),
            conditions: Vec::new(),
            hotline_reportable: None,
            last_run: None,
            interval: None,
            incident: None,
            status: None,
        }
    }

    /// Drops the probes not in `keep` (the check's spec no longer has them).
    pub(super) fn retain_probes(&mut self, keep: impl Fn(&str) -> bool) {
        self.probes.retain(|p| keep(&p.name));
    }

    /// The probe named `name`, added without values if new.
    pub(super) fn probe(&mut self, name: &str) -> &mut ProbeMetrics {
        let index = match self.probes.binary_search_by(|p| (*p.name).cmp(name)) {
            Ok(index) => index,
            Err(index) => {
                self.probes.insert(index, ProbeMetrics::new(name));
                // Probes are added on a check's first run and kept: no room to spare.
                self.probes.shrink_to_fit();
                index
            }
        };
        &mut self.probes[index]
    }

    /// Replaces the condition series; duplicates collapse into one series.
    pub(super) fn set_conditions(
        &mut self,
        conditions: impl IntoIterator<Item = [&'static str; 3]>,
    ) {
        self.conditions = exposition_order(conditions);
    }

    pub(super) fn set_hotline_reportable(&mut self, reportable: bool) {
        self.hotline_reportable = Some(reportable);
    }

    pub(super) fn set_last_run(&mut self, unix_seconds: f64) {
        self.last_run = Some(unix_seconds);
    }

    pub(super) fn set_interval(&mut self, seconds: f64) {
        self.interval = Some(seconds);
    }

    pub(super) fn set_incident(&mut self, incident: Option<IncidentSeries>) {
        self.incident = incident;
    }

    pub(super) fn set_status(&mut self, status: StatusSeries) {
        self.status = Some(status);
    }

    /// The status-level incident, when the check has status-level series.
    pub(super) fn set_status_incident(&mut self, incident: Option<IncidentSeries>) {
        if let Some(status) = &mut self.status {
            status.incident = incident;
        }
    }
}

/// The store shared by [`super::Metrics`] (writing) and the scrapes (reading).
#[derive(Debug, Default)]
pub(super) struct Store {
    checks: Mutex<HashMap<CheckId, Arc<CheckMetrics>>>,
}

impl Store {
    /// Locks the map; a panic elsewhere while holding it leaves plain values, still usable.
    fn lock(&self) -> MutexGuard<'_, HashMap<CheckId, Arc<CheckMetrics>>> {
        self.checks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes check `id`'s values, adding the check if new. Copies the check first when a
    /// scrape's snapshot still reads it.
    pub(super) fn update(&self, id: &CheckId, change: impl FnOnce(&mut CheckMetrics)) {
        let mut checks = self.lock();
        let check = match checks.get_mut(id) {
            Some(check) => check,
            None => checks
                .entry(id.clone())
                .or_insert_with(|| Arc::new(CheckMetrics::new(id))),
        };
        change(Arc::make_mut(check));
    }

    /// Changes check `id`'s values if it is in the store.
    pub(super) fn update_existing(&self, id: &CheckId, change: impl FnOnce(&mut CheckMetrics)) {
        if let Some(check) = self.lock().get_mut(id) {
            change(Arc::make_mut(check));
        }
    }

    pub(super) fn remove(&self, id: &CheckId) {
        self.lock().remove(id);
    }

    /// Every check as it is now, sorted by name and namespace (the order of the exposition:
    /// series sort by their label values, `name` before `namespace`). Only the pointers are
    /// copied under the lock; the sort runs after it is released.
    pub(super) fn snapshot(&self) -> Vec<Arc<CheckMetrics>> {
        let mut checks: Vec<Arc<CheckMetrics>> = self.lock().values().cloned().collect();
        checks.sort_unstable_by(|a, b| {
            (a.id.name.as_str(), a.id.namespace.as_str())
                .cmp(&(b.id.name.as_str(), b.id.namespace.as_str()))
        });
        checks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot keeps the values it was taken with; the write after it lands in the store
    /// (on a copy) without waiting for the snapshot to be dropped.
    #[test]
    fn a_snapshot_is_unchanged_by_later_writes() {
        let store = Store::default();
        let id = CheckId::new("ns", "a");
        store.update(&id, |check| check.set_hotline_reportable(false));
        let before = store.snapshot();
        store.update(&id, |check| check.set_hotline_reportable(true));
        assert_eq!(before[0].hotline_reportable, Some(false));
        assert_eq!(store.snapshot()[0].hotline_reportable, Some(true));
    }

    #[test]
    fn update_existing_adds_no_check() {
        let store = Store::default();
        store.update_existing(&CheckId::new("ns", "gone"), |check| {
            check.set_incident(None)
        });
        assert!(store.snapshot().is_empty());
    }
}
