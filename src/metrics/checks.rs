//! The per-check series, kept compactly and turned into Prometheus series only at scrape time.
//!
//! The `prometheus` crate's metric vectors keep, per series, owned label strings and a proto
//! structure; at 10,000 checks (about 22 series each) that was most of the operator's memory
//! (DESIGN.md §7). Here a check holds plain values (a slot per gauge, a count per SIP
//! response) and [`CheckCollector::collect`] builds the families on demand. The registry adds
//! the `voipcheck_` prefix and the `location` label, sorts the series and drops empty
//! families, as it does for its own metric vectors, so the exposition is the same.

use crate::check::CheckId;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use std::collections::{BTreeMap, HashMap};
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
}

/// Every per-probe gauge, in the order of [`ProbeMetrics::gauges`].
const PROBE_GAUGES: [ProbeGauge; 10] = [
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
];

/// The `phase` values of `http_phase_duration_seconds` (blackbox_exporter's names), in the
/// order of [`ProbeMetrics::phases`].
pub(super) const HTTP_PHASES: [&str; 5] = ["resolve", "connect", "tls", "processing", "transfer"];

/// The `code` label of `sip_responses_total`: a three-digit status, anything else `invalid`.
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

    fn label(self) -> String {
        match self {
            SipCode::Status(code) => code.to_string(),
            SipCode::Invalid => "invalid".to_owned(),
        }
    }
}

/// The last run's values of one probe; `None` is a value the run did not produce (no series).
#[derive(Debug)]
pub(super) struct ProbeMetrics {
    name: Arc<str>,
    gauges: [Option<f64>; PROBE_GAUGES.len()],
    phases: [Option<f64>; HTTP_PHASES.len()],
    /// `sip_responses_total` by method and code.
    sip_responses: BTreeMap<(&'static str, SipCode), u64>,
}

impl ProbeMetrics {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            gauges: [None; PROBE_GAUGES.len()],
            phases: [None; HTTP_PHASES.len()],
            sip_responses: BTreeMap::new(),
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

    pub(super) fn count_sip_response(&mut self, method: &'static str, code: SipCode) {
        *self.sip_responses.entry((method, code)).or_default() += 1;
    }
}

/// Everything one check has written.
#[derive(Debug, Default)]
pub(super) struct CheckMetrics {
    probes: Vec<ProbeMetrics>,
    /// The current `condition` series: type, status, reason.
    conditions: Vec<[&'static str; 3]>,
    hotline_reportable: Option<bool>,
}

impl CheckMetrics {
    /// Drops the probes not in `keep` (the check's spec no longer has them).
    pub(super) fn retain_probes(&mut self, keep: impl Fn(&str) -> bool) {
        self.probes.retain(|p| keep(&p.name));
    }

    /// The probe named `name`, added without values if new.
    pub(super) fn probe(&mut self, name: &str) -> &mut ProbeMetrics {
        let index = match self.probes.iter().position(|p| &*p.name == name) {
            Some(index) => index,
            None => {
                self.probes.push(ProbeMetrics::new(name));
                self.probes.len() - 1
            }
        };
        &mut self.probes[index]
    }

    /// Replaces the condition series; duplicates collapse into one series.
    pub(super) fn set_conditions(
        &mut self,
        conditions: impl IntoIterator<Item = [&'static str; 3]>,
    ) {
        self.conditions.clear();
        for condition in conditions {
            if !self.conditions.contains(&condition) {
                self.conditions.push(condition);
            }
        }
    }

    pub(super) fn set_hotline_reportable(&mut self, reportable: bool) {
        self.hotline_reportable = Some(reportable);
    }
}

/// The store shared by [`super::Metrics`] (writing) and the registry's collector (reading).
pub(super) type Store = Arc<Mutex<HashMap<CheckId, CheckMetrics>>>;

/// Locks the store; a panic elsewhere while holding it leaves plain values, still usable.
pub(super) fn lock(store: &Store) -> MutexGuard<'_, HashMap<CheckId, CheckMetrics>> {
    store
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One per-check family as exposed: the names, help texts, types and label names the metric
/// vectors had (DESIGN.md §5, the table in [`super`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Probe(ProbeGauge),
    HttpPhaseDuration,
    SipResponses,
    Condition,
    HotlineReportable,
}

/// The number of per-check families.
const FAMILY_COUNT: usize = PROBE_GAUGES.len() + 4;

impl Family {
    /// Every per-check family, in the order of [`Family::index`].
    fn all() -> impl Iterator<Item = Family> {
        PROBE_GAUGES.into_iter().map(Family::Probe).chain([
            Family::HttpPhaseDuration,
            Family::SipResponses,
            Family::Condition,
            Family::HotlineReportable,
        ])
    }

    fn index(self) -> usize {
        match self {
            Family::Probe(gauge) => gauge as usize,
            Family::HttpPhaseDuration => PROBE_GAUGES.len(),
            Family::SipResponses => PROBE_GAUGES.len() + 1,
            Family::Condition => PROBE_GAUGES.len() + 2,
            Family::HotlineReportable => PROBE_GAUGES.len() + 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Family::Probe(gauge) => match gauge {
                ProbeGauge::Success => "probe_success",
                ProbeGauge::Duration => "probe_duration_seconds",
                ProbeGauge::SipLastStatusCode => "sip_last_status_code",
                ProbeGauge::SipRegistrationStatus => "sip_registration_status",
                ProbeGauge::SipRtt => "sip_rtt_seconds",
                ProbeGauge::HttpStatusCode => "http_status_code",
                ProbeGauge::TlsCertExpiry => "tls_cert_expiry_timestamp_seconds",
                ProbeGauge::StunRtt => "stun_rtt_seconds",
                ProbeGauge::StunPublicAddress => "stun_public_address",
                ProbeGauge::NatBindingLifetime => "nat_binding_lifetime_seconds",
            },
            Family::HttpPhaseDuration => "http_phase_duration_seconds",
            Family::SipResponses => "sip_responses_total",
            Family::Condition => "condition",
            Family::HotlineReportable => "hotline_reportable",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Family::Probe(gauge) => match gauge {
                ProbeGauge::Success => {
                    "Whether the probe succeeded in its last run (1) or failed (0)."
                }
                // A gauge of the last run, as blackbox_exporter has it: a histogram per check
                // and probe would cost 18 series each (DESIGN.md §7).
                ProbeGauge::Duration => "How long the probe's last run took, DNS and TLS included.",
                ProbeGauge::SipLastStatusCode => {
                    "The final SIP response code of the last run; 0 when none came."
                }
                ProbeGauge::SipRegistrationStatus => {
                    "Registration state after the last REGISTER: 0 unregistered (no answer), \
                     1 registered, 2 rejected (as Asterisk's res_prometheus)."
                }
                ProbeGauge::SipRtt => {
                    "SIP round trip of the last run: OPTIONS to its final response, REGISTER \
                     to its first response."
                }
                ProbeGauge::HttpStatusCode => {
                    "HTTP status of the final response of the last run; 0 when none came."
                }
                ProbeGauge::TlsCertExpiry => {
                    "notAfter of the server's leaf certificate seen in the last run, as a Unix \
                     timestamp."
                }
                ProbeGauge::StunRtt => {
                    "Round trip of the STUN Binding of the first server that answered."
                }
                ProbeGauge::StunPublicAddress => {
                    "Whether a STUN server reported a public mapped address (1) or not (0)."
                }
                ProbeGauge::NatBindingLifetime => {
                    "Idle time the NAT binding was shown to survive in the last measurement \
                     (the keep-alive interval tested); 0 when it expired within it."
                }
            },
            Family::HttpPhaseDuration => {
                "Time spent in each phase of the last HTTP probe run, over all redirects \
                 (blackbox_exporter's phase names)."
            }
            Family::SipResponses => {
                "Final SIP responses received, by request method and status code."
            }
            Family::Condition => {
                "The current status and reason of each condition of a check (always 1)."
            }
            Family::HotlineReportable => {
                "Whether the check's failure is an outage the provider's hotline accepts."
            }
        }
    }

    fn labels(self) -> &'static [&'static str] {
        match self {
            Family::Probe(_) => &["namespace", "name", "probe"],
            Family::HttpPhaseDuration => &["namespace", "name", "probe", "phase"],
            Family::SipResponses => &["namespace", "name", "probe", "method", "code"],
            Family::Condition => &["namespace", "name", "type", "status", "reason"],
            Family::HotlineReportable => &["namespace", "name"],
        }
    }

    fn metric_type(self) -> MetricType {
        match self {
            Family::SipResponses => MetricType::COUNTER,
            _ => MetricType::GAUGE,
        }
    }
}

/// The registry's view of the [`Store`].
pub(super) struct CheckCollector {
    store: Store,
    descs: Vec<Desc>,
}

impl CheckCollector {
    pub(super) fn new(store: Store) -> Self {
        let descs = Family::all()
            .map(|family| {
                let labels = family.labels().iter().map(|l| (*l).to_owned()).collect();
                Desc::new(
                    family.name().to_owned(),
                    family.help().to_owned(),
                    labels,
                    HashMap::new(),
                )
                .expect("valid metric")
            })
            .collect();
        Self { store, descs }
    }
}

impl Collector for CheckCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut metrics: [Vec<Metric>; FAMILY_COUNT] = Default::default();
        for (id, check) in lock(&self.store).iter() {
            let base = [
                ("namespace", id.namespace.as_str()),
                ("name", id.name.as_str()),
            ];
            for probe in &check.probes {
                let probe_label = ("probe", &*probe.name);
                for (gauge, value) in PROBE_GAUGES.iter().zip(probe.gauges) {
                    if let Some(value) = value {
                        let labels = series_labels(&base, &[probe_label]);
                        metrics[Family::Probe(*gauge).index()].push(gauge_metric(labels, value));
                    }
                }
                for (phase, value) in HTTP_PHASES.iter().zip(probe.phases) {
                    if let Some(value) = value {
                        let labels = series_labels(&base, &[probe_label, ("phase", phase)]);
                        metrics[Family::HttpPhaseDuration.index()]
                            .push(gauge_metric(labels, value));
                    }
                }
                for (&(method, code), &count) in &probe.sip_responses {
                    let code = code.label();
                    let extra = [probe_label, ("method", method), ("code", &code)];
                    let mut counter = Counter::default();
                    // Counts stay far below 2^53, where f64 is exact.
                    counter.set_value(count as f64);
                    let mut metric = Metric::from_label(series_labels(&base, &extra));
                    metric.set_counter(counter);
                    metrics[Family::SipResponses.index()].push(metric);
                }
            }
            for [type_, status, reason] in &check.conditions {
                let extra = [("type", *type_), ("status", *status), ("reason", *reason)];
                metrics[Family::Condition.index()]
                    .push(gauge_metric(series_labels(&base, &extra), 1.0));
            }
            if let Some(reportable) = check.hotline_reportable {
                metrics[Family::HotlineReportable.index()].push(gauge_metric(
                    series_labels(&base, &[]),
                    f64::from(u8::from(reportable)),
                ));
            }
        }
        Family::all()
            .zip(metrics)
            .map(|(family, metrics)| {
                let mut proto = MetricFamily::default();
                proto.set_name(family.name().to_owned());
                proto.set_help(family.help().to_owned());
                proto.set_field_type(family.metric_type());
                proto.set_metric(metrics);
                proto
            })
            .collect()
    }
}

/// The label pairs of one series, sorted by name as the crate's metric vectors sort them.
fn series_labels(base: &[(&str, &str)], extra: &[(&str, &str)]) -> Vec<LabelPair> {
    let mut pairs: Vec<LabelPair> = base
        .iter()
        .chain(extra)
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name((*name).to_owned());
            pair.set_value((*value).to_owned());
            pair
        })
        .collect();
    pairs.sort_by(|a, b| a.name().cmp(b.name()));
    pairs
}

fn gauge_metric(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut gauge = Gauge::default();
    gauge.set_value(value);
    let mut metric = Metric::from_gauge(gauge);
    metric.set_label(labels);
    metric
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};

    fn encode(registry: &Registry) -> String {
        TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap()
    }

    /// The same series written through the crate's metric vectors and through the store
    /// encode to the same text: label order, series order, help and type.
    #[test]
    fn the_store_exposes_what_the_crates_metric_vectors_would() {
        let labels = || Some(HashMap::from([("location".to_owned(), "l".to_owned())]));
        let vectors = Registry::new_custom(Some("voipcheck".into()), labels()).unwrap();
        let family = |f: Family| Opts::new(f.name(), f.help());
        let success = GaugeVec::new(
            family(Family::Probe(ProbeGauge::Success)),
            Family::Probe(ProbeGauge::Success).labels(),
        )
        .unwrap();
        let phases = GaugeVec::new(
            family(Family::HttpPhaseDuration),
            Family::HttpPhaseDuration.labels(),
        )
        .unwrap();
        let responses =
            IntCounterVec::new(family(Family::SipResponses), Family::SipResponses.labels())
                .unwrap();
        let conditions =
            GaugeVec::new(family(Family::Condition), Family::Condition.labels()).unwrap();
        vectors.register(Box::new(success.clone())).unwrap();
        vectors.register(Box::new(phases.clone())).unwrap();
        vectors.register(Box::new(responses.clone())).unwrap();
        vectors.register(Box::new(conditions.clone())).unwrap();

        let store = Store::default();
        let collected = Registry::new_custom(Some("voipcheck".into()), labels()).unwrap();
        collected
            .register(Box::new(CheckCollector::new(store.clone())))
            .unwrap();
        let mut checks = lock(&store);
        for (namespace, name) in [("b", "z"), ("a", "y"), ("a", "x")] {
            let check = checks.entry(CheckId::new(namespace, name)).or_default();
            for probe in ["stun", "http:web"] {
                success
                    .with_label_values(&[namespace, name, probe])
                    .set(1.0);
                check.probe(probe).set(ProbeGauge::Success, Some(1.0));
            }
            phases
                .with_label_values(&[namespace, name, "http:web", "tls"])
                .set(0.5);
            check.probe("http:web").set_phase("tls", Some(0.5));
            for code in [200, 99] {
                let label = if code == 200 { "200" } else { "invalid" };
                responses
                    .with_label_values(&[namespace, name, "sip-options", "OPTIONS", label])
                    .inc();
                check
                    .probe("sip-options")
                    .count_sip_response("OPTIONS", SipCode::new(code));
            }
            conditions
                .with_label_values(&[namespace, name, "Ready", "True", "Healthy"])
                .set(1.0);
            check.set_conditions([["Ready", "True", "Healthy"], ["Ready", "True", "Healthy"]]);
        }
        drop(checks);
        assert_eq!(encode(&collected), encode(&vectors));
    }
}
