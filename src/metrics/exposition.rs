//! The text exposition of the per-check series, written straight from a [`Store`] snapshot.
//!
//! A scrape of 10,000 checks has about 220,000 series. Building a `MetricFamily` proto per
//! series first (what `Registry::gather` does for a collector) cost 0.65 s of CPU and 150 MiB
//! at once; here each line is written from the check's plain values into the output (a
//! buffer that is sent or compressed as it fills), so a scrape allocates next to nothing.
//!
//! The text is byte for byte what the registry and its `TextEncoder` produced from the
//! crate's metric vectors (the test below holds both side by side): families sorted by name
//! and merged with the registry's own (operator) families, the `voipcheck_` prefix, label
//! pairs sorted by name with the registry's `location` label last, series sorted by their
//! label values in that order, values as Rust prints an `f64`, empty families left out.
//!
//! [`Store`]: super::checks::Store

use super::checks::{
    CheckMetrics, DIRECTION_GAUGES, DIRECTIONS, DirectionGauge, HTTP_PHASES, IncidentSeries,
    PROBE_GAUGES, ProbeGauge, StatusSeries,
};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, TextEncoder};
use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::Arc;

/// The registry's prefix (with its separator).
pub(super) const PREFIX: &str = "voipcheck_";

/// One per-check family as exposed: the names, help texts, types and label names the metric
/// vectors had (DESIGN.md §5, the table in [`super`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    Probe(ProbeGauge),
    Direction(DirectionGauge),
    HttpPhaseDuration,
    SipResponses,
    Condition,
    HotlineReportable,
    LastRun,
    Interval,
    IncidentSince,
    /// The verdict across locations, from the replica that writes the check's top level.
    StatusCondition,
    StatusHotlineReportable,
    StatusFailingLocations,
    StatusStaleLocations,
    StatusIncidentSince,
}

impl Family {
    /// Every per-check family, sorted by name (the order of the exposition).
    pub(super) fn all() -> Vec<Family> {
        let mut families: Vec<Family> = PROBE_GAUGES
            .into_iter()
            .map(Family::Probe)
            .chain(DIRECTION_GAUGES.into_iter().map(Family::Direction))
            .chain([
                Family::HttpPhaseDuration,
                Family::SipResponses,
                Family::Condition,
                Family::HotlineReportable,
                Family::LastRun,
                Family::Interval,
                Family::IncidentSince,
                Family::StatusCondition,
                Family::StatusHotlineReportable,
                Family::StatusFailingLocations,
                Family::StatusStaleLocations,
                Family::StatusIncidentSince,
            ])
            .collect();
        families.sort_unstable_by_key(|family| family.name());
        families
    }

    pub(super) fn name(self) -> &'static str {
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
                ProbeGauge::CallPostDialDelay => "call_post_dial_delay_seconds",
                ProbeGauge::CallSetup => "call_setup_seconds",
                ProbeGauge::RtpRoundTrip => "rtp_round_trip_seconds",
            },
            Family::Direction(gauge) => match gauge {
                DirectionGauge::RtpLoss => "rtp_loss_ratio",
                DirectionGauge::RtpJitter => "rtp_jitter_seconds",
                DirectionGauge::Mos => "call_mos",
            },
            Family::HttpPhaseDuration => "http_phase_duration_seconds",
            Family::SipResponses => "sip_responses_total",
            Family::Condition => "condition",
            Family::HotlineReportable => "hotline_reportable",
            Family::LastRun => "last_run_timestamp_seconds",
            Family::Interval => "check_interval_seconds",
            Family::IncidentSince => "incident_since_timestamp_seconds",
            Family::StatusCondition => "status_condition",
            Family::StatusHotlineReportable => "status_hotline_reportable",
            Family::StatusFailingLocations => "status_failing_locations",
            Family::StatusStaleLocations => "status_stale_locations",
            Family::StatusIncidentSince => "status_incident_since_timestamp_seconds",
        }
    }

    pub(super) fn help(self) -> &'static str {
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
                    "Earliest notAfter of the certificates the server presented in the last run \
                     (leaf and intermediates), as a Unix timestamp."
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
                ProbeGauge::CallPostDialDelay => {
                    "Post-dial delay of the last test call: its INVITE to the first 180/183."
                }
                ProbeGauge::CallSetup => {
                    "Setup time of the last test call: its INVITE to the 2xx answer."
                }
                ProbeGauge::RtpRoundTrip => {
                    "Round trip of the last test call's RTP (echoed packets, or RTCP LSR/DLSR)."
                }
            },
            Family::Direction(gauge) => match gauge {
                DirectionGauge::RtpLoss => {
                    "Share of the last test call's RTP packets lost, per direction seen from \
                     the caller (RFC 3550), 0 to 1."
                }
                DirectionGauge::RtpJitter => {
                    "Interarrival jitter of the last test call's RTP, per direction (RFC 3550 \
                     6.4.1)."
                }
                DirectionGauge::Mos => {
                    "Listening quality of the last test call's audio as a MOS (ITU-T G.107 \
                     E-model, 1 to 4.5), per direction."
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
            Family::LastRun => {
                "When the check's last run completed, as a Unix timestamp (alert when it is \
                 several intervals old)."
            }
            Family::Interval => "The check's interval between runs.",
            Family::IncidentSince => {
                "Since when the check's current incident has persisted, as a Unix timestamp; \
                 only while the check's status has an incident."
            }
            Family::StatusCondition => {
                "The status and reason of each condition of a check across its locations, as \
                 its status says (always 1; from the replica that writes it)."
            }
            Family::StatusHotlineReportable => {
                "Whether the check's failure is an outage the provider's hotline accepts, \
                 judged across its locations."
            }
            Family::StatusFailingLocations => {
                "How many of the check's locations see a provider-side failure."
            }
            Family::StatusStaleLocations => {
                "How many of the check's locations have not written their status in time (left \
                 out of the verdict)."
            }
            Family::StatusIncidentSince => {
                "Since when the incident across the check's locations has persisted, as a Unix \
                 timestamp; only while its status has one."
            }
        }
    }

    /// The label names besides `location`, sorted (the order they are written in).
    pub(super) fn labels(self) -> &'static [&'static str] {
        match self {
            Family::Probe(_) => &["name", "namespace", "probe"],
            Family::Direction(_) => &["direction", "name", "namespace", "probe"],
            Family::HttpPhaseDuration => &["name", "namespace", "phase", "probe"],
            Family::SipResponses => &["code", "method", "name", "namespace", "probe"],
            Family::Condition | Family::StatusCondition => {
                &["name", "namespace", "reason", "status", "type"]
            }
            Family::HotlineReportable
            | Family::LastRun
            | Family::Interval
            | Family::StatusHotlineReportable
            | Family::StatusFailingLocations
            | Family::StatusStaleLocations => &["name", "namespace"],
            Family::IncidentSince | Family::StatusIncidentSince => &[
                "cloud_name",
                "name",
                "namespace",
                "server_license",
                "service",
                "target",
            ],
        }
    }

    pub(super) fn is_counter(self) -> bool {
        self == Family::SipResponses
    }
}

/// Writes the whole exposition: the registry's own families (`gathered`, already prefixed
/// and labelled) and the per-check families of `checks` (a [`Store`] snapshot, sorted by
/// name and namespace), merged in name order as the registry merges its collectors.
///
/// [`Store`]: super::checks::Store
pub(super) fn write(
    out: &mut impl Write,
    gathered: Vec<MetricFamily>,
    checks: &[Arc<CheckMetrics>],
    location: &str,
) -> io::Result<()> {
    let location = escape(location, true);
    let mut line = Vec::with_capacity(256);
    let mut gathered = gathered.into_iter().peekable();
    for family in Family::all() {
        while let Some(own) = gathered
            .next_if(|own| own.name().strip_prefix(PREFIX).unwrap_or(own.name()) < family.name())
        {
            write_gathered(out, own)?;
        }
        let mut series = Series {
            out: &mut *out,
            family,
            location: &location,
            started: false,
            line: &mut line,
        };
        series.write_family(checks)?;
    }
    gathered.try_for_each(|own| write_gathered(out, own))
}

/// Writes families gathered from a registry, with the crate's encoder.
pub(super) fn write_gathered(out: &mut impl Write, family: MetricFamily) -> io::Result<()> {
    TextEncoder::new()
        .encode(&[family], out)
        .map_err(|error| match error {
            prometheus::Error::Io(error) => error,
            other => io::Error::other(other),
        })
}

/// The lines of one per-check family; its `# HELP` and `# TYPE` lines come with the first
/// series (a family without series is left out, as the registry leaves it out).
struct Series<'a, W> {
    out: &'a mut W,
    family: Family,
    location: &'a str,
    started: bool,
    /// The line being written, reused from line to line.
    line: &'a mut Vec<u8>,
}

impl<W: Write> Series<'_, W> {
    fn write_family(&mut self, checks: &[Arc<CheckMetrics>]) -> io::Result<()> {
        match self.family {
            Family::Probe(gauge) => {
                for check in checks {
                    for probe in &check.probes {
                        if let Some(value) = probe.gauges[gauge as usize] {
                            self.line(&[&check.id.name, &check.id.namespace, &probe.name], value)?;
                        }
                    }
                }
            }
            Family::Direction(gauge) => {
                // Sorted by its first label, direction, across checks.
                for (index, direction) in DIRECTIONS.iter().enumerate() {
                    for check in checks {
                        for probe in &check.probes {
                            if let Some(value) = probe.directions[gauge as usize][index] {
                                let id = &check.id;
                                let labels =
                                    [direction.label(), &id.name, &id.namespace, &probe.name];
                                self.line(&labels, value)?;
                            }
                        }
                    }
                }
            }
            Family::HttpPhaseDuration => {
                for check in checks {
                    for (index, phase) in HTTP_PHASES.iter().enumerate() {
                        for probe in &check.probes {
                            if let Some(value) = probe.phases[index] {
                                let id = &check.id;
                                self.line(&[&id.name, &id.namespace, phase, &probe.name], value)?;
                            }
                        }
                    }
                }
            }
            Family::SipResponses => {
                // The only per-check family whose first labels (code, method) are not the
                // check's: its series are sorted across checks.
                let mut rows: Vec<_> = checks
                    .iter()
                    .flat_map(|check| {
                        check.probes.iter().flat_map(move |probe| {
                            probe
                                .sip_responses
                                .iter()
                                .map(move |(&(method, code), &count)| {
                                    (code, method, check, probe, count)
                                })
                        })
                    })
                    .collect();
                rows.sort_unstable_by_key(|&(code, method, check, probe, _)| {
                    (
                        code,
                        method,
                        &check.id.name,
                        &check.id.namespace,
                        &probe.name,
                    )
                });
                for (code, method, check, probe, count) in rows {
                    let (code, id) = (code.label(), &check.id);
                    let labels = [&code, method, &id.name, &id.namespace, &probe.name];
                    // Counts stay far below 2^53, where f64 is exact.
                    self.line(&labels, count as f64)?;
                }
            }
            Family::Condition => self.conditions(checks, |check| Some(&check.conditions))?,
            Family::HotlineReportable => self.per_check(checks, |check| {
                check.hotline_reportable.map(|r| f64::from(u8::from(r)))
            })?,
            Family::LastRun => self.per_check(checks, |check| check.last_run)?,
            Family::Interval => self.per_check(checks, |check| check.interval)?,
            Family::IncidentSince => self.incidents(checks, |check| check.incident.as_ref())?,
            Family::StatusCondition => {
                self.conditions(checks, |check| Some(&check.status.as_ref()?.conditions))?
            }
            Family::StatusHotlineReportable => self.per_check(checks, |check| {
                let reportable = check.status.as_ref()?.hotline_reportable;
                Some(f64::from(u8::from(reportable)))
            })?,
            Family::StatusFailingLocations => self.per_check(checks, |check| {
                Some(check.status.as_ref()?.failing_locations)
            })?,
            Family::StatusStaleLocations => {
                self.per_check(checks, |check| Some(check.status.as_ref()?.stale_locations))?
            }
            Family::StatusIncidentSince => self.incidents(checks, |check| {
                check
                    .status
                    .as_ref()
                    .and_then(|s: &StatusSeries| s.incident.as_ref())
            })?,
        }
        Ok(())
    }

    /// A `condition` family: one series per (type, status, reason) of each check.
    fn conditions(
        &mut self,
        checks: &[Arc<CheckMetrics>],
        triples: impl Fn(&CheckMetrics) -> Option<&Vec<[&'static str; 3]>>,
    ) -> io::Result<()> {
        for check in checks {
            for [type_, status, reason] in triples(check).into_iter().flatten() {
                let id = &check.id;
                self.line(&[&id.name, &id.namespace, reason, status, type_], 1.0)?;
            }
        }
        Ok(())
    }

    /// An incident family, sorted by its first label, cloud_name, across checks; few checks
    /// have one.
    fn incidents(
        &mut self,
        checks: &[Arc<CheckMetrics>],
        incident: impl Fn(&CheckMetrics) -> Option<&IncidentSeries>,
    ) -> io::Result<()> {
        let mut rows: Vec<(&CheckMetrics, &IncidentSeries)> = checks
            .iter()
            .filter_map(|check| Some((&**check, incident(check)?)))
            .collect();
        rows.sort_unstable_by_key(|&(check, incident)| incident_labels(check, incident));
        for (check, incident) in rows {
            self.line(&incident_labels(check, incident), incident.since)?;
        }
        Ok(())
    }

    /// A family with one series per check, labelled `name` and `namespace`.
    fn per_check(
        &mut self,
        checks: &[Arc<CheckMetrics>],
        value: impl Fn(&CheckMetrics) -> Option<f64>,
    ) -> io::Result<()> {
        for check in checks {
            if let Some(value) = value(check) {
                self.line(&[&check.id.name, &check.id.namespace], value)?;
            }
        }
        Ok(())
    }

    /// One series: `values` are those of [`Family::labels`], in its order. The line is put
    /// together in a buffer and written at once (a quarter of a million lines per scrape).
    fn line(&mut self, values: &[&str], value: f64) -> io::Result<()> {
        let name = self.family.name();
        if !self.started {
            self.started = true;
            let kind = if self.family.is_counter() {
                "counter"
            } else {
                "gauge"
            };
            let help = escape(self.family.help(), false);
            write!(
                self.out,
                "# HELP {PREFIX}{name} {help}\n# TYPE {PREFIX}{name} {kind}\n"
            )?;
        }
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(PREFIX.as_bytes());
        line.extend_from_slice(name.as_bytes());
        let mut separator = b'{';
        for (label, value) in self.family.labels().iter().zip(values) {
            line.push(separator);
            line.extend_from_slice(label.as_bytes());
            line.extend_from_slice(b"=\"");
            line.extend_from_slice(escape(value, true).as_bytes());
            line.push(b'"');
            separator = b',';
        }
        line.extend_from_slice(b",location=\"");
        line.extend_from_slice(self.location.as_bytes());
        line.extend_from_slice(b"\"} ");
        push_value(line, value);
        line.push(b'\n');
        self.out.write_all(line)
    }
}

/// `value` as Rust's `Display` prints an `f64` (what the crate's encoder writes). Most values
/// are integers (codes, 0/1, counts, timestamps in seconds): those are printed as integers,
/// which gives the same digits several times faster.
fn push_value(line: &mut Vec<u8>, value: f64) {
    // Below 2^53 an integral f64 is exactly that integer; -0 prints as "-0".
    let exact = value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0;
    if exact && !(value == 0.0 && value.is_sign_negative()) {
        line.extend_from_slice(itoa::Buffer::new().format(value as i64).as_bytes());
    } else {
        write!(line, "{value}").expect("writing into memory does not fail");
    }
}

/// The incident series' label values, in the order of [`Family::labels`].
fn incident_labels<'a>(check: &'a CheckMetrics, incident: &'a IncidentSeries) -> [&'a str; 6] {
    [
        &incident.cloud_name,
        &check.id.name,
        &check.id.namespace,
        &incident.server_license,
        incident.service,
        &incident.target,
    ]
}

/// The text format's escaping, as the crate's encoder applies it: `\` and newline in help
/// texts, and `"` as well in label values.
fn escape(text: &str, quote: bool) -> Cow<'_, str> {
    let special = |c: char| c == '\\' || c == '\n' || (quote && c == '"');
    if !text.bytes().any(|b| special(char::from(b))) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            c if special(c) => {
                escaped.push('\\');
                escaped.push(c);
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::CheckId;
    use crate::metrics::checks::{SipCode, Store};
    use prometheus::{GaugeVec, IntCounterVec, IntGauge, Opts, Registry};
    use std::collections::HashMap;

    fn registry() -> Registry {
        let labels = HashMap::from([("location".to_owned(), "l".to_owned())]);
        Registry::new_custom(Some("voipcheck".into()), Some(labels)).unwrap()
    }

    /// The crate's metric vector for `family`, registered in `registry`.
    fn gauges(registry: &Registry, family: Family) -> GaugeVec {
        let vector =
            GaugeVec::new(Opts::new(family.name(), family.help()), family.labels()).unwrap();
        registry.register(Box::new(vector.clone())).unwrap();
        vector
    }

    /// The same series written through the crate's metric vectors (and its registry and text
    /// encoder) and through the store encode to the same text: family order and merge with the
    /// registry's own families, label order, series order, escaping, help and type.
    #[test]
    fn the_store_exposes_what_the_crates_metric_vectors_would() {
        let vectors = registry();
        let success = gauges(&vectors, Family::Probe(ProbeGauge::Success));
        let rtt = gauges(&vectors, Family::Probe(ProbeGauge::SipRtt));
        let phases = gauges(&vectors, Family::HttpPhaseDuration);
        let conditions = gauges(&vectors, Family::Condition);
        let reportable = gauges(&vectors, Family::HotlineReportable);
        let last_run = gauges(&vectors, Family::LastRun);
        let interval = gauges(&vectors, Family::Interval);
        let incident = gauges(&vectors, Family::IncidentSince);
        let status_conditions = gauges(&vectors, Family::StatusCondition);
        let status_reportable = gauges(&vectors, Family::StatusHotlineReportable);
        let failing = gauges(&vectors, Family::StatusFailingLocations);
        let stale = gauges(&vectors, Family::StatusStaleLocations);
        let status_incident = gauges(&vectors, Family::StatusIncidentSince);
        let family = Family::SipResponses;
        let responses =
            IntCounterVec::new(Opts::new(family.name(), family.help()), family.labels()).unwrap();
        vectors.register(Box::new(responses.clone())).unwrap();
        // Operator metrics, whose names sort between the per-check families'.
        let own = registry();
        for registry in [&vectors, &own] {
            let checks = IntGauge::new("checks", "VoipChecks scheduled.").unwrap();
            checks.set(4);
            registry.register(Box::new(checks)).unwrap();
            let lag = IntGauge::new("schedule_lag", "Between s and s.").unwrap();
            registry.register(Box::new(lag)).unwrap();
        }

        let store = Store::default();
        // `name` sorts before `namespace`: x in b comes before y in a.
        let ids = [("b", "z"), ("a", "y"), ("b", "x"), ("a", "z")];
        for (i, (namespace, name)) in ids.into_iter().enumerate() {
            let id = CheckId::new(namespace, name);
            let value = i as f64 + 0.25;
            store.update(&id, |check| {
                for probe in ["stun", "http:web", "sip-options"] {
                    success
                        .with_label_values(&[name, namespace, probe])
                        .set(1.0);
                    check.probe(probe).set(ProbeGauge::Success, Some(1.0));
                }
                rtt.with_label_values(&[name, namespace, "sip-options"])
                    .set(value * 1e-3);
                check
                    .probe("sip-options")
                    .set(ProbeGauge::SipRtt, Some(value * 1e-3));
                // Phases sort before probes.
                for (probe, phase) in [
                    ("http:web", "tls"),
                    ("http:b", "connect"),
                    ("http:b", "tls"),
                ] {
                    phases
                        .with_label_values(&[name, namespace, phase, probe])
                        .set(value);
                    check.probe(probe).set_phase(phase, Some(value));
                }
                // Codes and methods sort before the check's labels.
                let method = if i % 2 == 0 { "OPTIONS" } else { "REGISTER" };
                for code in [200, 99, 486, 100, 200] {
                    let label = SipCode::new(code).label();
                    responses
                        .with_label_values(&[&label, method, name, namespace, "sip-options"])
                        .inc();
                    check
                        .probe("sip-options")
                        .count_sip_response(method, SipCode::new(code));
                }
                let triples = [
                    ["Ready", "False", "ProbesFailing"],
                    ["SipReachable", "True", "Healthy"],
                    ["WebReachable", "False", "HttpStatus"],
                    ["Ready", "False", "ProbesFailing"],
                ];
                for [type_, status, reason] in triples {
                    conditions
                        .with_label_values(&[name, namespace, reason, status, type_])
                        .set(1.0);
                }
                check.set_conditions(triples);
                reportable
                    .with_label_values(&[name, namespace])
                    .set(f64::from(u8::from(i == 1)));
                check.set_hotline_reportable(i == 1);
                last_run
                    .with_label_values(&[name, namespace])
                    .set(1.7e9 + value);
                check.set_last_run(1.7e9 + value);
                interval.with_label_values(&[name, namespace]).set(30.0);
                check.set_interval(30.0);
                // Only some checks are aggregated here (the others' top level is another
                // replica's).
                if i != 1 {
                    let triples = [
                        ["Ready", "False", "LocalNetworkProblem"],
                        ["HotlineReportable", "False", "LocalNetworkProblem"],
                        ["Ready", "False", "LocalNetworkProblem"],
                    ];
                    for [type_, status, reason] in triples {
                        status_conditions
                            .with_label_values(&[name, namespace, reason, status, type_])
                            .set(1.0);
                    }
                    let labels = [name, namespace];
                    status_reportable.with_label_values(&labels).set(0.0);
                    failing.with_label_values(&labels).set(value);
                    stale.with_label_values(&labels).set(0.0);
                    let incident = (i == 2).then(|| IncidentSeries {
                        service: "Portal",
                        target: "portal.example".into(),
                        cloud_name: String::new(),
                        server_license: String::new(),
                        since: 1.5e9,
                    });
                    if let Some(series) = &incident {
                        status_incident
                            .with_label_values(&["", name, namespace, "", "Portal", &series.target])
                            .set(series.since);
                    }
                    check.set_status(StatusSeries::new(triples, false, value, 0.0, incident));
                }
                // Incident series sort by cloud_name first; a label value is escaped.
                if i != 2 {
                    let series = IncidentSeries {
                        service: "Cloud",
                        target: format!("{name}.example \"q\"\\"),
                        cloud_name: if i == 0 {
                            String::new()
                        } else {
                            format!("c{}", 3 - i)
                        },
                        server_license: "SF-1".into(),
                        since: 1.6e9,
                    };
                    incident
                        .with_label_values(&[
                            &series.cloud_name,
                            name,
                            namespace,
                            &series.server_license,
                            series.service,
                            &series.target,
                        ])
                        .set(series.since);
                    check.set_incident(Some(series));
                }
            });
        }
        let mut text = Vec::new();
        write(&mut text, own.gather(), &store.snapshot(), "l").unwrap();
        let expected = TextEncoder::new()
            .encode_to_string(&vectors.gather())
            .unwrap();
        assert_eq!(String::from_utf8(text).unwrap(), expected);
    }

    #[test]
    fn values_are_printed_as_rusts_display_prints_them() {
        let values = [
            0.0,
            -0.0,
            1.0,
            -5.0,
            200.0,
            0.5,
            1e-7,
            0.1 + 0.2,
            1.7e9 + 0.25,
            2f64.powi(53),
            2f64.powi(53) - 1.0,
            1e16,
            -1e300,
            1e21,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        for value in values {
            let mut line = Vec::new();
            push_value(&mut line, value);
            assert_eq!(String::from_utf8(line).unwrap(), value.to_string());
        }
    }

    #[test]
    fn label_values_and_help_are_escaped_as_the_text_format_asks() {
        assert_eq!(escape("plain", true), "plain");
        assert_eq!(escape("a\"b\\c\nd", true), "a\\\"b\\\\c\\nd");
        assert_eq!(escape("a\"b\\c\nd", false), "a\"b\\\\c\\nd");
    }
}
