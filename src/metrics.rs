//! Prometheus metrics (DESIGN.md §5) and the HTTP endpoint serving `/metrics`, `/healthz` and
//! `/readyz`. Labels are `namespace`, `name`, `probe` and `location`, never a credential, URL
//! userinfo or an unbounded value.
//!
//! Every series of a check carries `namespace` and `name`; probe series add `probe`
//! (`sip-register`, `sip-options`, `sip-call`, `http:<name>`, `stun`, `control`); every series
//! of the registry carries `location` (given to [`Metrics::new`]). The remaining labels take
//! values from closed sets: SIP `method` (`REGISTER`, `OPTIONS`, `INVITE`) and `code` (a
//! three-digit status; anything else `invalid`), a test call's media `direction` (`outgoing`,
//! `incoming`, seen from the caller), blackbox_exporter's `phase` names, and the condition
//! `type`/`status`/`reason` enums. Reason phrases, addresses, URLs and server names stay in
//! status and logs.
//!
//! Gauges describe the last run. A value the last run did not produce (no response, no
//! certificate, no NAT measurement) removes its series instead of leaving a stale one, except
//! the status codes, which are 0 for "no final response", as blackbox_exporter's
//! `probe_http_status_code` is.
//!
//! | metric (prefix `voipcheck_`) | type | labels besides `location` |
//! |---|---|---|
//! | `probe_success` | gauge 0/1 | namespace, name, probe |
//! | `probe_duration_seconds` | gauge | namespace, name, probe |
//! | `sip_responses_total` | counter | namespace, name, probe, method, code |
//! | `sip_last_status_code` | gauge (0: none) | namespace, name, probe |
//! | `sip_registration_status` | gauge 0 unregistered, 1 registered, 2 rejected | namespace, name, probe |
//! | `sip_rtt_seconds` | gauge | namespace, name, probe |
//! | `http_status_code` | gauge (0: none) | namespace, name, probe |
//! | `http_phase_duration_seconds` | gauge | namespace, name, probe, phase |
//! | `tls_cert_expiry_timestamp_seconds` | gauge | namespace, name, probe |
//! | `stun_rtt_seconds` | gauge | namespace, name, probe |
//! | `stun_public_address` | gauge 0/1 | namespace, name, probe |
//! | `nat_binding_lifetime_seconds` | gauge (idle time survived; 0: expired) | namespace, name, probe |
//! | `call_post_dial_delay_seconds` | gauge (INVITE to the first 18x) | namespace, name, probe |
//! | `call_setup_seconds` | gauge (INVITE to the 2xx) | namespace, name, probe |
//! | `rtp_round_trip_seconds` | gauge | namespace, name, probe |
//! | `rtp_loss_ratio` | gauge 0 to 1 | namespace, name, probe, direction |
//! | `rtp_jitter_seconds` | gauge | namespace, name, probe, direction |
//! | `call_mos` | gauge 1 to 4.5 | namespace, name, probe, direction |
//! | `condition` | gauge, always 1 | namespace, name, type, status, reason |
//! | `hotline_reportable` | gauge 0/1 | namespace, name |
//! | `last_run_timestamp_seconds` | gauge (Unix time) | namespace, name |
//! | `check_interval_seconds` | gauge | namespace, name |
//! | `incident_since_timestamp_seconds` | gauge (Unix time; only during an incident) | namespace, name, service, target, cloud_name, server_license |
//! | `status_condition` | gauge, always 1 (the check's top level) | namespace, name, type, status, reason |
//! | `status_hotline_reportable` | gauge 0/1 (across locations) | namespace, name |
//! | `status_failing_locations` | gauge (locations with a provider-side failure) | namespace, name |
//! | `status_stale_locations` | gauge (locations left out: not written in time) | namespace, name |
//! | `status_incident_since_timestamp_seconds` | gauge (Unix time; only during an incident across locations) | namespace, name, service, target, cloud_name, server_license |
//! | `reconcile_total`, `reconcile_errors_total` | counters | -, category |
//! | `schedule_lag_seconds` | histogram | - |
//! | `checks` | gauge | - |
//! | `leader` | gauge 0/1 (1: this replica holds at least one shard) | - |
//! | `shards`, `shards_held` | gauges (the fixed shard count; this replica's share) | - |
//! | `status_pending_checks` | gauge (checks whose latest status is not yet written) | - |
//! | `api_write_failures_total` | counter | kind (`status`, `event`, `label`), category |
//! | `events_dropped_total` | counter (transition Events given up on) | - |
//! | `build_info` | gauge, always 1 | version |
//!
//! Besides, the standard unprefixed `process_*` metrics (CPU seconds, resident memory, open
//! and maximum file descriptors, start time; Linux only), which dashboards and alerts expect
//! under exactly those names.
//!
//! `condition`, `hotline_reportable` and `incident_since_timestamp_seconds` are this location's
//! own view (its entry of `status.locations`); the `status_*` series are the verdict across
//! locations (the check's top-level status), exported only by the replica that writes it: the
//! holder of the check's shard in the aggregating location. So alerts on the verdict read the
//! `status_*` series and need no aggregation across replicas or locations.
//!
//! `last_run_timestamp_seconds` and `check_interval_seconds` let an alert catch a check that
//! has not completed a run for several intervals, whatever stalled it (this operator
//! included). The incident series' labels come from the spec (`target`, `report`), so they
//! are bounded per check; nothing a probe received becomes a label.
//!
//! The per-check series live in a compact, copy-on-write store ([`checks`]) and their text is
//! written from it when scraped ([`exposition`]), without holding the store's lock while it
//! is written; [`Metrics::remove_check`], probes gone from a check and stale condition
//! triples drop out of that store. The operator-level metrics are the crate's own. The
//! server ([`http`]) streams the text, gzip-compressed when the scraper accepts it.

mod checks;
mod exposition;
mod http;

pub use http::{Health, serve, serve_on};

use crate::api::{ConditionStatus, ConditionType, Incident, Reason, TargetKind};
use crate::check::{CheckId, ProbeOutcome, ProbeRun, RunReport};
use crate::probe::http::HttpOutcome;
use crate::probe::media::{MediaDirection, MediaReport};
use crate::probe::sip::{CallOutcome, OptionsOutcome, RegisterOutcome, StatusLine};
use crate::probe::stun::{ServerAnswer, StunOutcome};
use crate::verdict::{Aggregate, Verdict};
use checks::{
    DIRECTIONS, DirectionGauge, HTTP_PHASES, IncidentSeries, ProbeGauge, ProbeMetrics, SipCode,
    StatusSeries, Store,
};
use prometheus::{HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Probe durations range from a loopback round trip to a NAT binding test idling for the
/// phones' keep-alive (up to 2 h).
/// DESIGN.md §7 asks for a p99 lag of at most 5 ms, so the buckets are fine around it.
const SCHEDULE_LAG_BUCKETS: [f64; 14] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// The registry, the per-check store and the operator-level metrics. Cloning shares them.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    /// The operator's own metrics.
    registry: Registry,
    /// The `process_*` metrics, without the prefix.
    process: Registry,
    /// Every check's series, written into the exposition next to the registry's.
    checks: Store,
    /// The `location` label's value.
    location: String,
    /// Whether this process runs its checks alone ([`Metrics::alone`]).
    alone: bool,
    operator: OperatorMetrics,
}

/// The metrics of the operator itself (a handful of series, whatever the number of checks).
struct OperatorMetrics {
    reconcile: IntCounter,
    reconcile_errors: IntCounterVec,
    schedule_lag: prometheus::Histogram,
    checks: IntGauge,
    leader: IntGauge,
    shards: IntGauge,
    shards_held: IntGauge,
    status_pending: IntGauge,
    write_failures: IntCounterVec,
    events_dropped: IntCounter,
    invalid_objects: IntGauge,
}

/// What a failed write to the API was, for `api_write_failures_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// A status apply.
    Status,
    /// An Event published for a condition transition.
    Event,
    /// A check's shard label (`operator::labels`).
    Label,
}

impl WriteKind {
    fn as_str(self) -> &'static str {
        match self {
            WriteKind::Status => "status",
            WriteKind::Event => "event",
            WriteKind::Label => "label",
        }
    }
}

/// `sip_registration_status`, as Asterisk's res_prometheus reports an outbound registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegistrationStatus {
    /// No final answer (timeout, transport or DNS failure).
    Unregistered = 0,
    Registered = 1,
    /// A final answer other than 200 OK.
    Rejected = 2,
}

/// How a reconcile ended, for `reconcile_total` / `reconcile_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileResult {
    Ok,
    /// The error's category (a bounded label value, e.g. `kube_api`, `invalid_spec`).
    Error(&'static str),
}

impl Metrics {
    /// `location` labels every series, so several operator instances can be told apart.
    pub fn new(location: &str) -> Self {
        Self::with(location, false)
    }

    /// For a process that runs its checks alone (`voipcheck run`): no other location, nobody
    /// aggregates, so its own verdict is also each check's verdict across locations, and
    /// [`Metrics::record_verdict`] and [`Metrics::record_incident`] export the `status_*` series
    /// too (the pages read those, wherever the checks run).
    pub fn alone(location: &str) -> Self {
        Self::with(location, true)
    }

    fn with(location: &str, alone: bool) -> Self {
        let labels = HashMap::from([("location".to_owned(), location.to_owned())]);
        let registry = Registry::new_custom(Some("voipcheck".into()), Some(labels.clone()))
            .expect("a fixed prefix and label name are valid");
        let process =
            Registry::new_custom(None, Some(labels)).expect("a fixed label name is valid");
        #[cfg(target_os = "linux")]
        process
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        register_build_info(&registry);
        let operator = OperatorMetrics::register(&registry);
        Self {
            inner: Arc::new(Inner {
                registry,
                process,
                checks: Store::default(),
                location: location.to_owned(),
                alone,
                operator,
            }),
        }
    }

    /// Probe results of one run, and now as the time its last run completed. Series of probes
    /// that are no longer in the check (its spec changed) are removed.
    pub fn record_run(&self, id: &CheckId, report: &RunReport) {
        let completed = unix_seconds(SystemTime::now());
        let probes: HashSet<&str> = report
            .probes
            .iter()
            .chain(&report.control)
            .map(|p| p.name.as_str())
            .collect();
        self.inner.checks.update(id, |check| {
            check.set_last_run(completed);
            check.retain_probes(|name| probes.contains(name));
            for run in report.probes.iter().chain(&report.control) {
                Writer(check.probe(&run.name)).probe(run);
            }
        });
    }

    /// `condition{type,status,reason}` and `hotline_reportable` after a verdict (and, for a
    /// process running alone, the `status_*` series).
    pub fn record_verdict(&self, id: &CheckId, verdict: &Verdict) {
        let reportable = verdict.is_reportable();
        let triples = || {
            verdict
                .conditions
                .iter()
                .map(|c| [c.type_.as_str(), c.status.as_str(), c.reason.as_str()])
        };
        let alone = self.inner.alone;
        self.inner.checks.update(id, |check| {
            check.set_conditions(triples());
            check.set_hotline_reportable(reportable);
            if alone {
                let failing = f64::from(u8::from(verdict.sees_provider_side_failure()));
                let incident = check.incident.clone();
                check.set_status(StatusSeries::new(
                    triples(),
                    reportable,
                    failing,
                    0.0,
                    incident,
                ));
            }
        });
    }

    /// `check_interval_seconds`: how often the check is meant to run.
    pub fn set_interval(&self, id: &CheckId, interval: Duration) {
        let seconds = interval.as_secs_f64();
        self.inner
            .checks
            .update(id, |check| check.set_interval(seconds));
    }

    /// `incident_since_timestamp_seconds` while the check's status has an incident; `None`
    /// removes the series. For a process running alone, the status-level one too.
    pub fn record_incident(&self, id: &CheckId, incident: Option<&Incident>) {
        let checks = &self.inner.checks;
        let alone = self.inner.alone;
        let set = move |check: &mut checks::CheckMetrics, series: Option<IncidentSeries>| {
            if alone {
                check.set_status_incident(series.clone());
            }
            check.set_incident(series);
        };
        match incident {
            Some(incident) => {
                let series = incident_series(incident);
                checks.update(id, |check| set(check, Some(series)));
            }
            // No check is added (a removed check stays removed).
            None => checks.update_existing(id, |check| set(check, None)),
        }
    }

    /// The verdict across locations, as this replica wrote it to the check's top level:
    /// `status_condition`, `status_hotline_reportable`, `status_failing_locations`,
    /// `status_stale_locations` and, while there is one, `status_incident_since_timestamp_seconds`.
    /// Alerts read these rather than re-deriving the verdict from each location's series.
    pub fn record_aggregate(&self, id: &CheckId, aggregate: &Aggregate) {
        // The aggregate's conditions were written from these enums: nothing is left out.
        let triples = aggregate.conditions.iter().filter_map(|c| {
            let type_ = c.type_.parse::<ConditionType>().ok()?;
            let status = c.status.parse::<ConditionStatus>().ok()?;
            let reason = c.reason.parse::<Reason>().ok()?;
            Some([type_.as_str(), status.as_str(), reason.as_str()])
        });
        let series = StatusSeries::new(
            triples,
            aggregate.is_reportable(),
            f64::from(aggregate.failing_locations),
            aggregate.stale.len() as f64,
            aggregate.incident.as_ref().map(incident_series),
        );
        self.inner
            .checks
            .update(id, |check| check.set_status(series));
    }

    /// Removes every series of a check: deleted, or no longer this replica's (another replica
    /// holds its shard now, and exports it).
    pub fn remove_check(&self, id: &CheckId) {
        self.inner.checks.remove(id);
    }

    /// Lag between a run's due time and its start.
    pub fn observe_schedule_lag(&self, lag: Duration) {
        self.inner.operator.schedule_lag.observe(lag.as_secs_f64());
    }

    /// Number of checks scheduled.
    pub fn set_checks(&self, count: usize) {
        self.inner
            .operator
            .checks
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn record_reconcile(&self, result: ReconcileResult) {
        let operator = &self.inner.operator;
        operator.reconcile.inc();
        if let ReconcileResult::Error(category) = result {
            operator
                .reconcile_errors
                .with_label_values(&[category])
                .inc();
        }
    }

    /// Whether this replica holds at least one shard (probes and writes).
    pub fn set_leader(&self, leading: bool) {
        self.inner.operator.leader.set(i64::from(leading));
    }

    /// `shards`: how many shards a location's checks are split into (a fixed count), and
    /// `shards_held`: how many of them this replica holds. Summed over a location's replicas,
    /// the held shards fall short of the count while some shard has no holder.
    pub fn set_shards(&self, total: usize, held: usize) {
        let operator = &self.inner.operator;
        operator
            .shards
            .set(i64::try_from(total).unwrap_or(i64::MAX));
        operator
            .shards_held
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// Checks whose latest status waits to be written.
    pub fn set_status_pending(&self, checks: usize) {
        let checks = i64::try_from(checks).unwrap_or(i64::MAX);
        self.inner.operator.status_pending.set(checks);
    }

    /// A write to the API server failed; `category` is a bounded name (`timeout`, `throttled`,
    /// `conflict`, `server_error`, ...).
    pub fn record_write_failure(&self, kind: WriteKind, category: &'static str) {
        self.inner
            .operator
            .write_failures
            .with_label_values(&[kind.as_str(), category])
            .inc();
    }

    /// VoipCheck objects that do not deserialize.
    pub fn set_invalid_objects(&self, count: usize) {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.inner.operator.invalid_objects.set(count);
    }

    /// Transition Events given up on.
    pub fn add_events_dropped(&self, count: u64) {
        self.inner.operator.events_dropped.inc_by(count);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut text = Vec::new();
        self.encode_to(&mut text)
            .expect("writing into memory does not fail");
        String::from_utf8(text).expect("the exposition is written from UTF-8 strings only")
    }

    /// Writes the text exposition into `out` as it is produced. The store's lock is held only
    /// to copy its pointers (see [`checks`]), never while writing, so runs recording their
    /// results are not held up by a scrape, however slow its writer.
    pub fn encode_to(&self, out: &mut impl Write) -> io::Result<()> {
        let checks = self.inner.checks.snapshot();
        exposition::write(
            out,
            self.inner.registry.gather(),
            &checks,
            &self.inner.location,
        )?;
        self.inner
            .process
            .gather()
            .into_iter()
            .try_for_each(|family| exposition::write_gathered(out, family))
    }
}

/// Writes one probe's run into its values.
struct Writer<'a>(&'a mut ProbeMetrics);

impl Writer<'_> {
    fn probe(&mut self, run: &ProbeRun) {
        let success = run.failure().is_none();
        self.gauge(ProbeGauge::Success, Some(f64::from(u8::from(success))));
        self.gauge(ProbeGauge::Duration, Some(run.duration.as_secs_f64()));
        match &run.outcome {
            ProbeOutcome::SipRegister(outcome) => self.register(outcome),
            ProbeOutcome::SipOptions(outcome) => self.options(outcome),
            ProbeOutcome::SipCall(outcome) => self.call(outcome),
            ProbeOutcome::Http(outcome) => self.http(outcome),
            ProbeOutcome::Stun(outcome) => self.stun(outcome),
            ProbeOutcome::Cancelled(_) => self.cancelled(run),
        }
    }

    fn register(&mut self, outcome: &RegisterOutcome) {
        self.sip_response("REGISTER", outcome.response.as_ref());
        let status = match (&outcome.failure, &outcome.response) {
            (None, _) => RegistrationStatus::Registered,
            (Some(_), Some(_)) => RegistrationStatus::Rejected,
            (Some(_), None) => RegistrationStatus::Unregistered,
        };
        self.gauge(
            ProbeGauge::SipRegistrationStatus,
            Some(f64::from(status as u8)),
        );
        self.gauge(ProbeGauge::SipRtt, secs(outcome.first_response));
        self.cert_expiry(outcome.cert_not_after);
    }

    fn options(&mut self, outcome: &OptionsOutcome) {
        self.sip_response("OPTIONS", outcome.response.as_ref());
        self.gauge(ProbeGauge::SipRtt, secs(outcome.rtt));
        self.cert_expiry(outcome.cert_not_after);
    }

    /// A test call: its INVITE's final response (`sip_responses_total{method="INVITE"}`,
    /// `sip_last_status_code`), its timings and its audio.
    fn call(&mut self, outcome: &CallOutcome) {
        self.sip_response("INVITE", outcome.response.as_ref());
        self.gauge(ProbeGauge::CallPostDialDelay, secs(outcome.post_dial_delay));
        self.gauge(ProbeGauge::CallSetup, secs(outcome.setup_time));
        self.cert_expiry(outcome.cert_not_after);
        self.media(outcome.media.as_ref());
    }

    /// The per-direction RTP figures and the round trip; a direction nobody measured (an echo
    /// without RTCP has no `outgoing`) and a call without audio have no series.
    fn media(&mut self, media: Option<&MediaReport>) {
        self.gauge(
            ProbeGauge::RtpRoundTrip,
            secs(media.and_then(|m| m.round_trip)),
        );
        for direction in DIRECTIONS {
            let stats = media.and_then(|m| match direction {
                MediaDirection::Outgoing => m.outgoing.as_ref(),
                MediaDirection::Incoming => Some(&m.incoming),
            });
            let values = [
                (DirectionGauge::RtpLoss, stats.map(|s| s.loss_ratio)),
                (
                    DirectionGauge::RtpJitter,
                    stats.map(|s| s.jitter.as_secs_f64()),
                ),
                (DirectionGauge::Mos, stats.map(|s| s.mos.as_f64())),
            ];
            for (gauge, value) in values {
                self.0.set_direction(gauge, direction, value);
            }
        }
    }

    /// `tls_cert_expiry_timestamp_seconds`: HTTPS and SIP over TLS alike, absent otherwise.
    fn cert_expiry(&mut self, not_after: Option<SystemTime>) {
        let expiry = not_after.and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        self.gauge(ProbeGauge::TlsCertExpiry, secs(expiry));
    }

    /// `sip_responses_total` and `sip_last_status_code` for the final response, if any.
    fn sip_response(&mut self, method: &'static str, response: Option<&StatusLine>) {
        let code = response.map_or(0, |r| r.code);
        self.gauge(ProbeGauge::SipLastStatusCode, Some(f64::from(code)));
        if response.is_some() {
            self.0.count_sip_response(method, SipCode::new(code));
        }
    }

    fn http(&mut self, outcome: &HttpOutcome) {
        let code = outcome.status.unwrap_or(0);
        self.gauge(ProbeGauge::HttpStatusCode, Some(f64::from(code)));
        for (phase, duration) in outcome.phases.named() {
            self.0.set_phase(phase, secs(duration));
        }
        self.cert_expiry(outcome.cert_not_after);
    }

    fn stun(&mut self, outcome: &StunOutcome) {
        // The first server (in configured order) that answered: the one the NAT measurements
        // use, so the figures describe the same path.
        let rtt = outcome.servers.iter().find_map(|s| match &s.answer {
            ServerAnswer::Binding(binding) => Some(binding.rtt),
            ServerAnswer::Failure(_) => None,
        });
        self.gauge(ProbeGauge::StunRtt, secs(rtt));
        let public = outcome.public_address().is_some();
        self.gauge(
            ProbeGauge::StunPublicAddress,
            Some(f64::from(u8::from(public))),
        );
        // The idle time the binding was shown to survive (a lower bound of its lifetime), 0
        // when it expired within it: alert on `< keepalive`.
        let lifetime = outcome.nat_binding.as_ref().map(|n| {
            if n.survived {
                n.idle.as_secs_f64()
            } else {
                0.0
            }
        });
        self.gauge(ProbeGauge::NatBindingLifetime, lifetime);
    }

    /// A cancelled probe saw nothing: its codes are 0 ("no response"), its facts removed.
    fn cancelled(&mut self, run: &ProbeRun) {
        use crate::check::ProbeKind;
        let facts: &[ProbeGauge] = match run.kind {
            ProbeKind::SipRegister => {
                let unregistered = f64::from(RegistrationStatus::Unregistered as u8);
                self.gauge(ProbeGauge::SipRegistrationStatus, Some(unregistered));
                self.gauge(ProbeGauge::SipLastStatusCode, Some(0.0));
                &[ProbeGauge::SipRtt]
            }
            ProbeKind::SipOptions => {
                self.gauge(ProbeGauge::SipLastStatusCode, Some(0.0));
                &[ProbeGauge::SipRtt]
            }
            ProbeKind::SipCall => {
                self.gauge(ProbeGauge::SipLastStatusCode, Some(0.0));
                self.media(None);
                &[
                    ProbeGauge::CallPostDialDelay,
                    ProbeGauge::CallSetup,
                    ProbeGauge::TlsCertExpiry,
                ]
            }
            ProbeKind::Http => {
                self.gauge(ProbeGauge::HttpStatusCode, Some(0.0));
                for phase in HTTP_PHASES {
                    self.0.set_phase(phase, None);
                }
                &[ProbeGauge::TlsCertExpiry]
            }
            ProbeKind::Stun => {
                self.gauge(ProbeGauge::StunPublicAddress, Some(0.0));
                &[ProbeGauge::StunRtt, ProbeGauge::NatBindingLifetime]
            }
        };
        for gauge in facts {
            self.gauge(*gauge, None);
        }
    }

    /// Sets a gauge, or removes its series when the run produced no value.
    fn gauge(&mut self, gauge: ProbeGauge, value: Option<f64>) {
        self.0.set(gauge, value);
    }
}

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

/// `time` as a Unix timestamp (0 for a time before 1970, which a clock never reads).
fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// The incident series' labels (from the spec) and value.
fn incident_series(incident: &Incident) -> IncidentSeries {
    IncidentSeries {
        service: service_label(incident.service),
        target: incident.name.clone(),
        cloud_name: incident.cloud_name.clone().unwrap_or_default(),
        server_license: incident.server_license.clone().unwrap_or_default(),
        since: incident.since.0.as_second() as f64,
    }
}

/// The incident's `service` label: the target kind as the CRD spells it.
fn service_label(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Cloud => "Cloud",
        TargetKind::ConnectTrunk => "ConnectTrunk",
        TargetKind::PushServer => "PushServer",
        TargetKind::Portal => "Portal",
        TargetKind::Other => "Other",
    }
}

/// `build_info{version}` = 1, so dashboards and alerts can tell which version runs where.
fn register_build_info(registry: &Registry) {
    let build_info = IntGauge::with_opts(
        Opts::new("build_info", "The version of voipcheck running (always 1).")
            .const_label("version", env!("CARGO_PKG_VERSION")),
    )
    .expect("valid metric");
    build_info.set(1);
    registry
        .register(Box::new(build_info))
        .expect("unique metric");
}

impl OperatorMetrics {
    fn register(registry: &Registry) -> Self {
        let reconcile =
            IntCounter::new("reconcile_total", "Reconciles of VoipChecks.").expect("valid metric");
        registry
            .register(Box::new(reconcile.clone()))
            .expect("unique metric");
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "reconcile_errors_total",
                "Reconciles that ended in an error, by category.",
            ),
            &["category"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(reconcile_errors.clone()))
            .expect("unique metric");
        let schedule_lag = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "schedule_lag_seconds",
                "Delay between a check run's due time and its start.",
            )
            .buckets(SCHEDULE_LAG_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(schedule_lag.clone()))
            .expect("unique metric");
        let checks = IntGauge::new("checks", "VoipChecks scheduled.").expect("valid metric");
        registry
            .register(Box::new(checks.clone()))
            .expect("unique metric");
        let leader = registered(
            registry,
            IntGauge::new(
                "leader",
                "1 while this replica holds at least one shard's Lease: it probes and writes.",
            )
            .expect("valid metric"),
        );
        let shards = registered(
            registry,
            IntGauge::new(
                "shards",
                "Shards the location's checks are split into (a fixed count; each one Lease).",
            )
            .expect("valid metric"),
        );
        let shards_held = registered(
            registry,
            IntGauge::new(
                "shards_held",
                "Shards this replica holds: it probes, writes and exports their checks.",
            )
            .expect("valid metric"),
        );
        let status_pending = registered(
            registry,
            IntGauge::new(
                "status_pending_checks",
                "Checks whose latest status is not yet written to the API server.",
            )
            .expect("valid metric"),
        );
        let write_failures = registered(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "api_write_failures_total",
                    "Failed writes to the API server, by kind (status, event) and category.",
                ),
                &["kind", "category"],
            )
            .expect("valid metric"),
        );
        let events_dropped = registered(
            registry,
            IntCounter::new(
                "events_dropped_total",
                "Transition Events given up on (too many waiting for one check, or not \
                 publishable).",
            )
            .expect("valid metric"),
        );
        let invalid_objects = registered(
            registry,
            IntGauge::new(
                "invalid_objects",
                "VoipCheck objects that do not deserialize under this operator's schema (each \
                 has Ready=False reason InvalidSpec).",
            )
            .expect("valid metric"),
        );
        Self {
            reconcile,
            reconcile_errors,
            schedule_lag,
            checks,
            leader,
            shards,
            shards_held,
            status_pending,
            write_failures,
            events_dropped,
            invalid_objects,
        }
    }
}
/// Registers `metric` and returns it (a clone shares its value).
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}
