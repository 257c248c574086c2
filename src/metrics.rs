//! Prometheus metrics (DESIGN.md §5) and the HTTP endpoint serving `/metrics`, `/healthz` and
//! `/readyz`. Labels are `namespace`, `name`, `probe` and `location`, never a credential, URL
//! userinfo or an unbounded value.
//!
//! Every series of a check carries `namespace` and `name`; probe series add `probe`
//! (`sip-register`, `sip-options`, `http:<name>`, `stun`, `control`); every series of the
//! registry carries `location` (given to [`Metrics::new`]). The remaining labels take values
//! from closed sets: SIP `method` and `code` (a three-digit status; anything else `invalid`),
//! blackbox_exporter's `phase` names, and the condition `type`/`status`/`reason` enums. Reason
//! phrases, addresses, URLs and server names stay in status and logs.
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
//! | `condition` | gauge, always 1 | namespace, name, type, status, reason |
//! | `hotline_reportable` | gauge 0/1 | namespace, name |
//! | `reconcile_total`, `reconcile_errors_total` | counters | -, category |
//! | `schedule_lag_seconds` | histogram | - |
//! | `checks` | gauge | - |
//!
//! The `prometheus` crate cannot delete series by a partial label match, so the series each
//! check has written are recorded here; [`Metrics::remove_check`], probes gone from a check and
//! stale condition triples are removed from that record.

use crate::api::{ConditionStatus, ConditionType};
use crate::check::{CheckId, ProbeOutcome, ProbeRun, RunReport};
use crate::probe::http::HttpOutcome;
use crate::probe::sip::{OptionsOutcome, RegisterOutcome, StatusLine};
use crate::probe::stun::{ServerAnswer, StunOutcome};
use crate::verdict::Verdict;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{
    GaugeVec, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

/// Labels of every per-probe series.
const PROBE_LABELS: [&str; 3] = ["namespace", "name", "probe"];
/// Labels of every per-check series.
const CHECK_LABELS: [&str; 2] = ["namespace", "name"];

/// Probe durations range from a loopback round trip to a NAT binding test idling for the
/// phones' keep-alive (up to 2 h).
/// DESIGN.md §7 asks for a p99 lag of at most 5 ms, so the buckets are fine around it.
const SCHEDULE_LAG_BUCKETS: [f64; 14] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// The registry and every metric family. Cloning shares them.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    families: Families,
    /// The label values each check has written, per family.
    written: Mutex<HashMap<CheckId, HashSet<Series>>>,
}

/// One series: its family and its full label values.
type Series = (Family, Vec<String>);

/// The per-check families, named so written series can be recorded and removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    ProbeSuccess,
    ProbeDuration,
    SipResponses,
    SipLastStatusCode,
    SipRegistrationStatus,
    SipRtt,
    HttpStatusCode,
    HttpPhaseDuration,
    TlsCertExpiry,
    StunRtt,
    StunPublicAddress,
    NatBindingLifetime,
    Condition,
    HotlineReportable,
}

struct Families {
    probe_success: GaugeVec,
    /// A gauge of the last run, as blackbox_exporter has it: a histogram per check and probe
    /// cost 18 series each and most of the memory at 10,000 checks (DESIGN.md §7).
    probe_duration: GaugeVec,
    sip_responses: IntCounterVec,
    sip_last_status_code: GaugeVec,
    sip_registration_status: GaugeVec,
    sip_rtt: GaugeVec,
    http_status_code: GaugeVec,
    http_phase_duration: GaugeVec,
    tls_cert_expiry: GaugeVec,
    stun_rtt: GaugeVec,
    stun_public_address: GaugeVec,
    nat_binding_lifetime: GaugeVec,
    condition: GaugeVec,
    hotline_reportable: GaugeVec,
    reconcile: IntCounter,
    reconcile_errors: IntCounterVec,
    schedule_lag: prometheus::Histogram,
    checks: IntGauge,
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
        let labels = HashMap::from([("location".to_owned(), location.to_owned())]);
        let registry = Registry::new_custom(Some("voipcheck".into()), Some(labels))
            .expect("a fixed prefix and label name are valid");
        let families = Families::register(&registry);
        Self {
            inner: Arc::new(Inner {
                registry,
                families,
                written: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Probe results of one run. Series of probes that are no longer in the check (its spec
    /// changed) are removed.
    pub fn record_run(&self, id: &CheckId, report: &RunReport) {
        let mut written = self.written();
        let series = written.entry(id.clone()).or_default();
        let probes: HashSet<&str> = report
            .probes
            .iter()
            .chain(&report.control)
            .map(|p| p.name.as_str())
            .collect();
        series.retain(|(family, values)| {
            let stale = family.has_probe_label() && !probes.contains(values[2].as_str());
            if stale {
                self.inner.families.remove(*family, values);
            }
            !stale
        });
        for run in report.probes.iter().chain(&report.control) {
            let mut writer = Writer {
                families: &self.inner.families,
                series,
                base: vec![id.namespace.clone(), id.name.clone(), run.name.clone()],
            };
            writer.probe(run);
        }
    }

    /// `condition{type,status,reason}` and `hotline_reportable` after a verdict.
    pub fn record_verdict(&self, id: &CheckId, verdict: &Verdict) {
        let families = &self.inner.families;
        let mut written = self.written();
        let series = written.entry(id.clone()).or_default();
        let current: HashSet<Series> = verdict
            .conditions
            .iter()
            .map(|c| {
                let values = vec![
                    id.namespace.clone(),
                    id.name.clone(),
                    c.type_.as_str().to_owned(),
                    c.status.as_str().to_owned(),
                    c.reason.as_str().to_owned(),
                ];
                (Family::Condition, values)
            })
            .collect();
        series.retain(|s| {
            let stale = s.0 == Family::Condition && !current.contains(s);
            if stale {
                families.remove(s.0, &s.1);
            }
            !stale
        });
        for (family, values) in current {
            families.condition.with_label_values(&values).set(1.0);
            series.insert((family, values));
        }
        let reportable = verdict.conditions.iter().any(|c| {
            c.type_ == ConditionType::HotlineReportable && c.status == ConditionStatus::True
        });
        let values = vec![id.namespace.clone(), id.name.clone()];
        families
            .hotline_reportable
            .with_label_values(&values)
            .set(f64::from(u8::from(reportable)));
        series.insert((Family::HotlineReportable, values));
    }

    /// Removes every series of a deleted check.
    pub fn remove_check(&self, id: &CheckId) {
        let removed = self.written().remove(id).unwrap_or_default();
        for (family, values) in removed {
            self.inner.families.remove(family, &values);
        }
    }

    /// Lag between a run's due time and its start.
    pub fn observe_schedule_lag(&self, lag: Duration) {
        self.inner.families.schedule_lag.observe(lag.as_secs_f64());
    }

    /// Number of checks scheduled.
    pub fn set_checks(&self, count: usize) {
        self.inner
            .families
            .checks
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn record_reconcile(&self, result: ReconcileResult) {
        let families = &self.inner.families;
        families.reconcile.inc();
        if let ReconcileResult::Error(category) = result {
            families
                .reconcile_errors
                .with_label_values(&[category])
                .inc();
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.inner.registry.gather())
            .expect("the text encoder writes every gathered family")
    }

    fn written(&self) -> std::sync::MutexGuard<'_, HashMap<CheckId, HashSet<Series>>> {
        // A panic elsewhere while holding the lock leaves the record usable: it is only sets.
        self.inner
            .written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Sets one probe's series and records them.
struct Writer<'a> {
    families: &'a Families,
    series: &'a mut HashSet<Series>,
    /// namespace, name, probe.
    base: Vec<String>,
}

impl Writer<'_> {
    fn probe(&mut self, run: &ProbeRun) {
        let success = run.failure().is_none();
        self.gauge(
            Family::ProbeSuccess,
            &[],
            Some(f64::from(u8::from(success))),
        );
        self.gauge(Family::ProbeDuration, &[], Some(run.duration.as_secs_f64()));
        match &run.outcome {
            ProbeOutcome::SipRegister(outcome) => self.register(outcome),
            ProbeOutcome::SipOptions(outcome) => self.options(outcome),
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
            Family::SipRegistrationStatus,
            &[],
            Some(f64::from(status as u8)),
        );
        self.gauge(Family::SipRtt, &[], secs(outcome.first_response));
    }

    fn options(&mut self, outcome: &OptionsOutcome) {
        self.sip_response("OPTIONS", outcome.response.as_ref());
        self.gauge(Family::SipRtt, &[], secs(outcome.rtt));
    }

    /// `sip_responses_total` and `sip_last_status_code` for the final response, if any.
    fn sip_response(&mut self, method: &str, response: Option<&StatusLine>) {
        let code = response.map_or(0, |r| r.code);
        self.gauge(Family::SipLastStatusCode, &[], Some(f64::from(code)));
        if response.is_some() {
            let code = if (100..=699).contains(&code) {
                code.to_string()
            } else {
                "invalid".to_owned()
            };
            let values = self.values(&[method, &code]);
            self.families.sip_responses.with_label_values(&values).inc();
            self.series.insert((Family::SipResponses, values));
        }
    }

    fn http(&mut self, outcome: &HttpOutcome) {
        let code = outcome.status.unwrap_or(0);
        self.gauge(Family::HttpStatusCode, &[], Some(f64::from(code)));
        for (phase, duration) in outcome.phases.named() {
            self.gauge(Family::HttpPhaseDuration, &[phase], secs(duration));
        }
        let expiry = outcome
            .cert_not_after
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        self.gauge(Family::TlsCertExpiry, &[], secs(expiry));
    }

    fn stun(&mut self, outcome: &StunOutcome) {
        // The first server (in configured order) that answered: the one the NAT measurements
        // use, so the figures describe the same path.
        let rtt = outcome.servers.iter().find_map(|s| match &s.answer {
            ServerAnswer::Binding(binding) => Some(binding.rtt),
            ServerAnswer::Failure(_) => None,
        });
        self.gauge(Family::StunRtt, &[], secs(rtt));
        let public = outcome.public_address().is_some();
        self.gauge(
            Family::StunPublicAddress,
            &[],
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
        self.gauge(Family::NatBindingLifetime, &[], lifetime);
    }

    /// A cancelled probe saw nothing: its codes are 0 ("no response"), its facts removed.
    fn cancelled(&mut self, run: &ProbeRun) {
        use crate::check::ProbeKind;
        let facts: &[Family] = match run.kind {
            ProbeKind::SipRegister => {
                let unregistered = f64::from(RegistrationStatus::Unregistered as u8);
                self.gauge(Family::SipRegistrationStatus, &[], Some(unregistered));
                self.gauge(Family::SipLastStatusCode, &[], Some(0.0));
                &[Family::SipRtt]
            }
            ProbeKind::SipOptions => {
                self.gauge(Family::SipLastStatusCode, &[], Some(0.0));
                &[Family::SipRtt]
            }
            ProbeKind::Http => {
                self.gauge(Family::HttpStatusCode, &[], Some(0.0));
                for phase in ["resolve", "connect", "tls", "processing", "transfer"] {
                    self.gauge(Family::HttpPhaseDuration, &[phase], None);
                }
                &[Family::TlsCertExpiry]
            }
            ProbeKind::Stun => {
                self.gauge(Family::StunPublicAddress, &[], Some(0.0));
                &[Family::StunRtt, Family::NatBindingLifetime]
            }
        };
        for family in facts {
            self.gauge(*family, &[], None);
        }
    }

    fn values(&self, extra: &[&str]) -> Vec<String> {
        let mut values = self.base.clone();
        values.extend(extra.iter().map(|v| (*v).to_owned()));
        values
    }

    /// Sets a gauge, or removes its series when the run produced no value.
    fn gauge(&mut self, family: Family, extra: &[&str], value: Option<f64>) {
        let values = self.values(extra);
        let gauge = self.families.gauge(family);
        match value {
            Some(value) => {
                gauge.with_label_values(&values).set(value);
                self.series.insert((family, values));
            }
            None => {
                if self.series.remove(&(family, values.clone())) {
                    let _ = gauge.remove_label_values(&values);
                }
            }
        }
    }
}

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

impl Family {
    fn has_probe_label(self) -> bool {
        !matches!(self, Family::Condition | Family::HotlineReportable)
    }
}

impl Families {
    fn register(registry: &Registry) -> Self {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let vec = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(vec.clone()))
                .expect("unique metric");
            vec
        };
        let probe_gauge = |name: &str, help: &str| gauge(name, help, &PROBE_LABELS);
        let with = |extra: &[&'static str]| -> Vec<&'static str> {
            PROBE_LABELS.iter().chain(extra).copied().collect()
        };
        let probe_duration = probe_gauge(
            "probe_duration_seconds",
            "How long the probe's last run took, DNS and TLS included.",
        );
        let sip_responses = IntCounterVec::new(
            Opts::new(
                "sip_responses_total",
                "Final SIP responses received, by request method and status code.",
            ),
            &with(&["method", "code"]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(sip_responses.clone()))
            .expect("unique metric");
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
        Families {
            probe_success: probe_gauge(
                "probe_success",
                "Whether the probe succeeded in its last run (1) or failed (0).",
            ),
            probe_duration,
            sip_responses,
            sip_last_status_code: probe_gauge(
                "sip_last_status_code",
                "The final SIP response code of the last run; 0 when none came.",
            ),
            sip_registration_status: probe_gauge(
                "sip_registration_status",
                "Registration state after the last REGISTER: 0 unregistered (no answer), \
                 1 registered, 2 rejected (as Asterisk's res_prometheus).",
            ),
            sip_rtt: probe_gauge(
                "sip_rtt_seconds",
                "SIP round trip of the last run: OPTIONS to its final response, REGISTER to \
                 its first response.",
            ),
            http_status_code: probe_gauge(
                "http_status_code",
                "HTTP status of the final response of the last run; 0 when none came.",
            ),
            http_phase_duration: gauge(
                "http_phase_duration_seconds",
                "Time spent in each phase of the last HTTP probe run, over all redirects \
                 (blackbox_exporter's phase names).",
                &with(&["phase"]),
            ),
            tls_cert_expiry: probe_gauge(
                "tls_cert_expiry_timestamp_seconds",
                "notAfter of the server's leaf certificate seen in the last run, as a Unix \
                 timestamp.",
            ),
            stun_rtt: probe_gauge(
                "stun_rtt_seconds",
                "Round trip of the STUN Binding of the first server that answered.",
            ),
            stun_public_address: probe_gauge(
                "stun_public_address",
                "Whether a STUN server reported a public mapped address (1) or not (0).",
            ),
            nat_binding_lifetime: probe_gauge(
                "nat_binding_lifetime_seconds",
                "Idle time the NAT binding was shown to survive in the last measurement (the \
                 keep-alive interval tested); 0 when it expired within it.",
            ),
            condition: gauge(
                "condition",
                "The current status and reason of each condition of a check (always 1).",
                &["namespace", "name", "type", "status", "reason"],
            ),
            hotline_reportable: gauge(
                "hotline_reportable",
                "Whether the check's failure is an outage the provider's hotline accepts.",
                &CHECK_LABELS,
            ),
            reconcile,
            reconcile_errors,
            schedule_lag,
            checks,
        }
    }

    fn gauge(&self, family: Family) -> &GaugeVec {
        match family {
            Family::ProbeSuccess => &self.probe_success,
            Family::ProbeDuration => &self.probe_duration,
            Family::SipLastStatusCode => &self.sip_last_status_code,
            Family::SipRegistrationStatus => &self.sip_registration_status,
            Family::SipRtt => &self.sip_rtt,
            Family::HttpStatusCode => &self.http_status_code,
            Family::HttpPhaseDuration => &self.http_phase_duration,
            Family::TlsCertExpiry => &self.tls_cert_expiry,
            Family::StunRtt => &self.stun_rtt,
            Family::StunPublicAddress => &self.stun_public_address,
            Family::NatBindingLifetime => &self.nat_binding_lifetime,
            Family::Condition => &self.condition,
            Family::HotlineReportable => &self.hotline_reportable,
            Family::SipResponses => unreachable!("{family:?} is not a gauge"),
        }
    }

    /// Deletes one series; one already gone is fine.
    fn remove(&self, family: Family, values: &[String]) {
        let _ = match family {
            Family::SipResponses => self.sip_responses.remove_label_values(values),
            gauge => self.gauge(gauge).remove_label_values(values),
        };
    }
}

/// Readiness as `/readyz` reports it (e.g. the operator's caches have synced).
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// A client must send its request head within this time (a slow or silent client cannot hold
/// a connection open).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Request heads larger than this are refused (hyper's minimum buffer size).
const MAX_REQUEST_HEAD_BYTES: usize = 8192;
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// How long connections still open at shutdown may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until `shutdown` completes.
///
/// One request per connection (no keep-alive), the request head bounded in size and time, and
/// at most [`MAX_CONNECTIONS`] at once, so scrapers and stray clients cannot tie the server up.
/// `/healthz` answers 200 while the server runs; `/readyz` 200 when [`Health`] is ready, else
/// 503; anything else 404 (405 for a method other than GET or HEAD).
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    health: Health,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_on(listener, metrics, health, shutdown).await
}

/// [`serve`] on a listener already bound (e.g. to port 0 in a test, or a socket handed over).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    health: Health,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors or similar: wait instead of spinning.
                    tracing::warn!(%error, "accepting a metrics connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        let service = service_fn(move |request| {
            let response = respond(&request, &metrics, &health);
            async move { Ok::<_, std::convert::Infallible>(response) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_REQUEST_HEAD_BYTES)
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "metrics connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("metrics connections still open after the shutdown grace period");
    }
    Ok(())
}

fn respond(
    request: &Request<hyper::body::Incoming>,
    metrics: &Metrics,
    health: &Health,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("a valid response")
    };
    let path = request.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/metrics" => Response::builder()
            .header(CONTENT_TYPE, prometheus::TEXT_FORMAT)
            .body(Full::new(Bytes::from(metrics.encode())))
            .expect("a valid response"),
        "/readyz" if !health.is_ready() => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(StatusCode::OK, "ok\n"),
    }
}
