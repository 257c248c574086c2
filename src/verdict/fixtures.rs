//! Test fixtures: policies, runs and a check that is run again and again, written so a test
//! reads as the case it covers (`Check::new(Policy::test(Cloud)).run(|r| r.register_fails(timeout()))`).
//! The outcomes are the probes' real outcome structs, filled in as the probes fill them.

use super::{CallPolicy, ErrorCodePolicy, History, Policy, Verdict, evaluate};
use crate::api::{ConditionStatus, ConditionType, Reason, TargetKind};
use crate::check::{ProbeKind, ProbeOutcome, ProbeRun, RunReport};
use crate::probe::attempts::Attempt;
use crate::probe::http::{HttpOutcome, HttpPhases};
use crate::probe::media::{Codec, MeasuredBy, MediaDirection, MediaReport, Mos, StreamStats};
use crate::probe::sip::CallOutcome;
use crate::probe::sip::{
    OptionsOutcome, QualifyState, RegisterOutcome, StatusLine, Target, Transport,
};
use crate::probe::stun::{
    Binding, MappedVia, NatBindingMethod, NatBindingResult, ServerAnswer, ServerResult,
    StunOutcome, StunTransport, address_mismatch, classify,
};
use crate::probe::{DnsErrorKind, DnsRecord, Failure, TlsFailure};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The interval between the runs of a [`Check`].
pub const INTERVAL: Duration = Duration::from_secs(30);
/// The probes' timeout in these fixtures.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// `secs` after a fixed start (2023-11-14T22:13:20Z).
pub fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

// --- failures, as the probes return them ---

pub fn timeout() -> Failure {
    Failure::Timeout { after: TIMEOUT }
}

pub fn refused() -> Failure {
    Failure::ConnectRefused {
        peer: "192.0.2.10:5060".into(),
    }
}

pub fn nxdomain() -> Failure {
    Failure::DnsFailure {
        name: "pbx.example.net".into(),
        record: DnsRecord::Address,
        kind: DnsErrorKind::NxDomain,
    }
}

pub fn resolver_failed() -> Failure {
    Failure::DnsFailure {
        name: "pbx.example.net".into(),
        record: DnsRecord::Address,
        kind: DnsErrorKind::ResolverFailed,
    }
}

pub fn sip_status(code: u16) -> Failure {
    Failure::SipStatus { code, hint: None }
}

pub fn http_status(code: u16) -> Failure {
    Failure::HttpStatus { code }
}

pub fn cert_expired() -> Failure {
    Failure::Tls {
        detail: TlsFailure::Expired { not_after: None },
    }
}

/// One instance of every failure class, for properties over all of them.
pub fn every_failure() -> Vec<Failure> {
    vec![
        nxdomain(),
        resolver_failed(),
        Failure::DnsFailure {
            name: "pbx.example.net".into(),
            record: DnsRecord::Address,
            kind: DnsErrorKind::NoRecords,
        },
        Failure::DnsFailure {
            name: "_sip._udp.pbx.example.net".into(),
            record: DnsRecord::Srv,
            kind: DnsErrorKind::ServFail,
        },
        Failure::DnsFailure {
            name: "pbx.example.net".into(),
            record: DnsRecord::Address,
            kind: DnsErrorKind::Refused,
        },
        Failure::DnsFailure {
            name: "pbx.example.net".into(),
            record: DnsRecord::Address,
            kind: DnsErrorKind::Timeout,
        },
        refused(),
        Failure::Network {
            detail: "network unreachable".into(),
        },
        timeout(),
        Failure::Lagged {
            rtt: Duration::from_millis(2_500),
            threshold: Duration::from_secs(2),
        },
        cert_expired(),
        Failure::AuthRejected { code: 401 },
        Failure::Forbidden,
        Failure::NotAcceptableHere,
        sip_status(503),
        http_status(503),
        Failure::BodyMismatch {
            detail: "no STARFACE".into(),
        },
        Failure::AddressMismatch {
            addresses: "87.128.1.9, 212.227.1.7".into(),
        },
        Failure::StunError { code: 401 },
        Failure::Protocol {
            detail: "garbage".into(),
        },
        sip_status(404),
        sip_status(486),
        Failure::NoRinging { after: TIMEOUT },
        Failure::NotAnswered {
            after: Duration::from_secs(20),
        },
        Failure::DroppedEarly {
            after: Duration::from_secs(2),
        },
        Failure::MediaNotNegotiated {
            detail: "no common codec".into(),
        },
        Failure::CalleeNotRegistered {
            cause: Box::new(Failure::AuthRejected { code: 401 }),
        },
        Failure::OneWayAudio {
            silent: MediaDirection::Incoming,
        },
        Failure::NoAudio,
        Failure::PoorQuality {
            mos: Mos::from_f64(2.9),
            threshold: Mos::DEFAULT_THRESHOLD,
        },
    ]
}

// --- policies ---

impl Policy {
    /// Thresholds of 1 (every run decides), no error-code window, no NAT measurement, a
    /// 14-day certificate warning.
    pub fn test(target: TargetKind) -> Self {
        Policy {
            target,
            failure_threshold: 1,
            success_threshold: 1,
            error_codes: None,
            keepalive: None,
            cert_expiry_warning: Duration::from_secs(14 * 86_400),
            call: None,
        }
    }

    pub fn failure_threshold(mut self, runs: u32) -> Self {
        self.failure_threshold = runs;
        self
    }

    pub fn success_threshold(mut self, runs: u32) -> Self {
        self.success_threshold = runs;
        self
    }

    /// Seed 002's codes 404/480/500/503 over `window`, False above 20% of at least 10.
    pub fn error_codes(mut self, window: Duration) -> Self {
        self.error_codes = Some(ErrorCodePolicy {
            codes: vec![404, 480, 500, 503],
            window,
            threshold_percent: 20,
            min_responses: 10,
        });
        self
    }

    /// A test call to an echo number, `media` saying whether it measures audio, with the
    /// default 5 s post-dial delay threshold.
    pub fn call(mut self, media: bool) -> Self {
        self.call = Some(CallPolicy {
            destination: "sip:echo@pbx.example.net".into(),
            post_dial_delay: CallPolicy::DEFAULT_POST_DIAL_DELAY,
            media,
        });
        self
    }

    pub fn keepalive(mut self, interval: Duration) -> Self {
        self.keepalive = Some(interval);
        self
    }
}

// --- runs ---

/// A run being built: each method adds one probe's result.
pub struct Run(RunReport);

impl Run {
    pub fn at(started: SystemTime) -> Self {
        Run(RunReport {
            started,
            probes: Vec::new(),
            control: None,
        })
    }

    pub fn build(self) -> RunReport {
        self.0
    }

    fn probe(mut self, name: &str, kind: ProbeKind, outcome: ProbeOutcome) -> Self {
        self.0.probes.push(probe_run(name, kind, outcome));
        self
    }

    /// The SIP probe added last went to `served` (`host:port`, UDP) after the destinations
    /// in `failed` failed, in that order (RFC 3263 failover).
    pub fn via(mut self, served: &str, failed: &[(&str, Failure)]) -> Self {
        let address = |name: &str| -> SocketAddr {
            match name
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse().ok())
            {
                Some(port) => SocketAddr::new([192, 0, 2, 10 + failed.len() as u8].into(), port),
                None => panic!("{name}: host:port"),
            }
        };
        let target = Some(Target {
            transport: Transport::Udp,
            name: served.to_owned(),
            address: address(served),
        });
        let attempts: Vec<Attempt> = failed
            .iter()
            .map(|(name, failure)| Attempt {
                target: (*name).to_owned(),
                address: Some(address(name)),
                failure: failure.clone(),
            })
            .collect();
        match self.0.probes.last_mut().map(|run| &mut run.outcome) {
            Some(ProbeOutcome::SipRegister(o)) => (o.target, o.attempts) = (target, attempts),
            Some(ProbeOutcome::SipOptions(o)) => (o.target, o.attempts) = (target, attempts),
            _ => panic!("via() follows a SIP probe"),
        }
        self
    }

    /// REGISTER answered 200 OK.
    pub fn registered(self) -> Self {
        self.register_outcome(None)
    }

    /// REGISTER failed; a failure that is a final response (401, 403, 488, other codes) carries
    /// that response, as the probe fills it in.
    pub fn register_fails(self, failure: Failure) -> Self {
        self.register_outcome(Some(failure))
    }

    fn register_outcome(self, failure: Option<Failure>) -> Self {
        let code = match &failure {
            None => Some(200),
            Some(f) => final_code(f),
        };
        let answered = code.map(|_| Duration::from_millis(23));
        let outcome = RegisterOutcome {
            target: None,
            response: code.map(status_line),
            server: None,
            auth_algorithm: None,
            granted_expires: failure.is_none().then_some(300),
            unregister: None,
            first_response: answered,
            final_response: answered,
            total: answered.unwrap_or(TIMEOUT),
            attempts: Vec::new(),
            dns_fallbacks: Vec::new(),
            cert_not_after: None,
            failure,
            flow: Vec::new(),
        };
        self.probe(
            "sip-register",
            ProbeKind::SipRegister,
            ProbeOutcome::SipRegister(outcome),
        )
    }

    /// OPTIONS answered 200 OK within the threshold.
    pub fn qualified(self) -> Self {
        self.options_answer(200)
    }

    /// OPTIONS answered with `code` within the threshold: chan_sip counts any answer as
    /// reachable; the code still counts for `SipErrorRate`.
    pub fn options_answer(self, code: u16) -> Self {
        self.options_outcome(QualifyState::Reachable, Some(code), None)
    }

    /// OPTIONS answered 200 OK after `rtt`, above the 2 s threshold.
    pub fn lagged(self, rtt: Duration) -> Self {
        let threshold = Duration::from_secs(2);
        let failure = Failure::Lagged { rtt, threshold };
        self.options_outcome(QualifyState::Lagged, Some(200), Some(failure))
    }

    pub fn options_fails(self, failure: Failure) -> Self {
        self.options_outcome(QualifyState::Unreachable, None, Some(failure))
    }

    fn options_outcome(
        self,
        state: QualifyState,
        code: Option<u16>,
        failure: Option<Failure>,
    ) -> Self {
        let rtt = match &failure {
            Some(Failure::Lagged { rtt, .. }) => Some(*rtt),
            _ => code.map(|_| Duration::from_millis(12)),
        };
        let outcome = OptionsOutcome {
            target: None,
            state,
            response: code.map(status_line),
            server: None,
            rtt,
            first_response: rtt,
            lagged_threshold: Duration::from_secs(2),
            attempts: Vec::new(),
            dns_fallbacks: Vec::new(),
            cert_not_after: None,
            failure,
            flow: Vec::new(),
        };
        self.probe(
            "sip-options",
            ProbeKind::SipOptions,
            ProbeOutcome::SipOptions(outcome),
        )
    }

    /// The test call was answered 200 OK after ringing 180 `post_dial` after the INVITE;
    /// `media` is its audio.
    pub fn call_answered(self, post_dial: Duration, media: Option<MediaReport>) -> Self {
        self.call(call_outcome(Some(200), post_dial, media, None))
    }

    /// The test call rang (180) and, ringing being enough, was cancelled (487).
    pub fn call_rang(self) -> Self {
        self.call(call_outcome(
            Some(487),
            Duration::from_millis(80),
            None,
            None,
        ))
    }

    /// The test call failed; a failure that is a final response carries that response.
    pub fn call_fails(self, failure: Failure) -> Self {
        let code = final_code(&failure);
        self.call(call_outcome(
            code,
            Duration::from_millis(80),
            None,
            Some(failure),
        ))
    }

    /// The test call was answered and its audio failed with `failure` (OneWayAudio, NoAudio,
    /// PoorQuality), `media` being what was measured.
    pub fn call_audio_fails(self, media: MediaReport, failure: Failure) -> Self {
        let outcome = call_outcome(
            Some(200),
            Duration::from_millis(80),
            Some(media),
            Some(failure),
        );
        self.call(outcome)
    }

    fn call(self, outcome: CallOutcome) -> Self {
        self.probe(
            "sip-call",
            ProbeKind::SipCall,
            ProbeOutcome::SipCall(outcome),
        )
    }

    /// `http:<name>` answered 200.
    pub fn web_ok(self, name: &str) -> Self {
        self.web(name, http_outcome(name, None, None))
    }

    /// `http:<name>` answered 200 over HTTPS with a leaf certificate valid until `not_after`.
    pub fn web_cert(self, name: &str, not_after: SystemTime) -> Self {
        self.web(name, http_outcome(name, None, Some(not_after)))
    }

    pub fn web_fails(self, name: &str, failure: Failure) -> Self {
        self.web(name, http_outcome(name, Some(failure), None))
    }

    fn web(self, name: &str, outcome: HttpOutcome) -> Self {
        self.probe(
            &format!("http:{name}"),
            ProbeKind::Http,
            ProbeOutcome::Http(outcome),
        )
    }

    /// One STUN server mapped a public address.
    pub fn stun_public(self) -> Self {
        self.stun_mapped(&["212.227.1.7"])
    }

    /// One server per address, each mapping that address; disagreeing public addresses are an
    /// `AddressMismatch`, as the probe computes it.
    pub fn stun_mapped(self, addresses: &[&str]) -> Self {
        let ips: Vec<IpAddr> = addresses.iter().map(|a| a.parse().unwrap()).collect();
        let servers = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| mapped_server(i, *ip))
            .collect();
        self.stun(servers, address_mismatch(&ips))
    }

    /// One server answered with a public address, a second one failed, and all must answer.
    pub fn stun_one_dead(self, failure: Failure) -> Self {
        let answered = mapped_server(0, "203.0.113.7".parse().unwrap());
        let dead = ServerResult {
            server: "stun1.example.net".into(),
            address: Some(stun_server(1)),
            attempts: Vec::new(),
            transport: StunTransport::Udp,
            answer: ServerAnswer::Failure(failure.clone()),
        };
        let overall = Failure::StunServerFailed {
            server: "stun1.example.net".into(),
            answered: 1,
            of: 2,
            cause: Box::new(failure),
        };
        self.stun(vec![answered, dead], Some(overall))
    }

    /// No server answered.
    pub fn stun_fails(self, failure: Failure) -> Self {
        let server = ServerResult {
            server: "stun0.example.net".into(),
            address: Some(stun_server(0)),
            attempts: Vec::new(),
            transport: StunTransport::Udp,
            answer: ServerAnswer::Failure(failure.clone()),
        };
        self.stun(vec![server], Some(failure))
    }

    fn stun(self, servers: Vec<ServerResult>, failure: Option<Failure>) -> Self {
        let outcome = StunOutcome {
            transport: StunTransport::Udp,
            servers,
            nat_binding: None,
            nat_behaviour: None,
            failure,
            duration: Duration::from_millis(20),
        };
        self.probe("stun", ProbeKind::Stun, ProbeOutcome::Stun(outcome))
    }

    /// The STUN probe (added before) measured the NAT binding after `idle`.
    pub fn nat_binding(mut self, idle: Duration, survived: bool) -> Self {
        let outcome = self.stun_outcome();
        let mapped_before = match &outcome.servers[0].answer {
            ServerAnswer::Binding(b) => b.mapped,
            ServerAnswer::Failure(_) => panic!("nat_binding needs a STUN server that answered"),
        };
        outcome.nat_binding = Some(NatBindingResult {
            server: stun_server(0),
            idle,
            survived,
            method: NatBindingMethod::ResponsePort,
            mapped_before,
            mapped_after: None,
        });
        self
    }

    /// The STUN probe (added before) could not make the NAT measurement.
    pub fn nat_not_measured(mut self, failure: Failure) -> Self {
        self.stun_outcome().failure = Some(failure);
        self
    }

    fn stun_outcome(&mut self) -> &mut StunOutcome {
        self.0
            .probes
            .iter_mut()
            .find_map(|run| match &mut run.outcome {
                ProbeOutcome::Stun(outcome) => Some(outcome),
                _ => None,
            })
            .expect("add a STUN probe first")
    }

    /// The probe of `kind` outlived the timeout and was cancelled.
    pub fn cancelled(self, name: &str, kind: ProbeKind) -> Self {
        self.probe(name, kind, ProbeOutcome::Cancelled(timeout()))
    }

    /// The control probe (an independent URL) answered.
    pub fn control_ok(mut self) -> Self {
        self.0.control = Some(control_run(None));
        self
    }

    /// The control probe (an independent URL) got no answer, or answered with `HttpStatus`
    /// (what a probe expecting a 2xx makes of a 404).
    pub fn control_fails(mut self, failure: Failure) -> Self {
        self.0.control = Some(control_run(Some(failure)));
        self
    }

    /// The probe added last (e.g. by `stun_mapped`) is the control probe instead.
    pub fn into_control(mut self) -> Self {
        let mut control = self.0.probes.pop().expect("add the control's probe first");
        control.name = "control".to_owned();
        self.0.control = Some(control);
        self
    }
}

/// A test call to an echo number: its final response `code` (none: `None`), ringing after
/// `post_dial` when it got that far (not for NoRinging, nor for a failure before the INVITE
/// was answered at all), answered 40 ms after ringing.
fn call_outcome(
    code: Option<u16>,
    post_dial: Duration,
    media: Option<MediaReport>,
    failure: Option<Failure>,
) -> CallOutcome {
    let rang = matches!(
        failure,
        None | Some(
            Failure::NotAnswered { .. }
                | Failure::DroppedEarly { .. }
                | Failure::MediaNotNegotiated { .. }
                | Failure::OneWayAudio { .. }
                | Failure::NoAudio
                | Failure::PoorQuality { .. }
        )
    ) || code.is_some_and(|c| c >= 400);
    let answered = code == Some(200);
    CallOutcome {
        target: None,
        response: code.map(status_line),
        ringing: rang.then(|| StatusLine {
            code: 180,
            reason: "Ringing".into(),
        }),
        server: None,
        auth_algorithm: None,
        post_dial_delay: rang.then_some(post_dial),
        setup_time: answered.then(|| post_dial + Duration::from_millis(40)),
        callee_reached: None,
        hangup: None,
        media,
        total: Duration::from_secs(6),
        attempts: Vec::new(),
        dns_fallbacks: Vec::new(),
        cert_not_after: None,
        failure,
        flow: Vec::new(),
    }
}

/// Audio of an echo call: 250 packets sent, `received` of them echoed back, with `jitter_ms`,
/// and the MOS the E-model gives (`mos`).
pub fn echo_media(received: u32, jitter_ms: u64, mos: f64) -> MediaReport {
    let lost = 250 - received;
    MediaReport {
        codec: Codec::Pcma,
        duration: Duration::from_secs(5),
        outgoing: None,
        incoming: StreamStats {
            measured_by: MeasuredBy::Probe,
            sent: 250,
            received,
            lost,
            loss_ratio: f64::from(lost) / 250.0,
            jitter: Duration::from_millis(jitter_ms),
            mos: Mos::from_f64(mos),
        },
        round_trip: (received > 0).then(|| Duration::from_millis(41)),
        rtcp_received: 0,
    }
}

fn probe_run(name: &str, kind: ProbeKind, outcome: ProbeOutcome) -> ProbeRun {
    ProbeRun {
        name: name.to_owned(),
        kind,
        outcome,
        duration: Duration::from_micros(23_456),
    }
}

fn control_run(failure: Option<Failure>) -> ProbeRun {
    let outcome = http_outcome("control", failure, None);
    probe_run("control", ProbeKind::Http, ProbeOutcome::Http(outcome))
}

fn http_outcome(
    name: &str,
    failure: Option<Failure>,
    cert_not_after: Option<SystemTime>,
) -> HttpOutcome {
    let status = match &failure {
        None => Some(200),
        Some(Failure::HttpStatus { code }) => Some(*code),
        Some(Failure::BodyMismatch { .. }) => Some(200),
        Some(_) => None,
    };
    let url = format!("https://{name}.example.net/");
    HttpOutcome {
        final_url: url.clone(),
        url,
        peer: None,
        attempts: Vec::new(),
        redirects: 0,
        status,
        http_version: status.map(|_| "HTTP/1.1".to_owned()),
        server: None,
        phases: HttpPhases::default(),
        duration: Duration::from_micros(45_123),
        cert_not_after,
        content_encoding: Vec::new(),
        body_encoded_bytes: 0,
        body_bytes: 0,
        body_truncated: false,
        failure,
    }
}

/// Server `i` of a check, answering with a mapping to `ip`.
fn mapped_server(i: usize, ip: IpAddr) -> ServerResult {
    ServerResult {
        server: format!("stun{i}.example.net"),
        address: Some(stun_server(i)),
        attempts: Vec::new(),
        transport: StunTransport::Udp,
        answer: ServerAnswer::Binding(Binding {
            local: "192.168.1.10:40000".parse().unwrap(),
            mapped: SocketAddr::new(ip, 40000),
            mapped_via: MappedVia::XorMappedAddress,
            class: classify(ip),
            rtt: Duration::from_millis(20),
            retransmits: 0,
            software: None,
            other_address: None,
            source_address: None,
            changed_address: None,
        }),
    }
}

fn stun_server(i: usize) -> SocketAddr {
    SocketAddr::new([198, 51, 100, 1 + i as u8].into(), 3478)
}

/// The final response a SIP failure stands for, if it is one.
fn final_code(failure: &Failure) -> Option<u16> {
    match failure {
        Failure::AuthRejected { code } | Failure::SipStatus { code, .. } => Some(*code),
        Failure::Forbidden => Some(403),
        Failure::NotAcceptableHere => Some(488),
        Failure::NotBound { .. } => Some(200),
        _ => None,
    }
}

fn status_line(code: u16) -> StatusLine {
    let reason = match code {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        _ => "Other",
    };
    StatusLine {
        code,
        reason: reason.to_owned(),
    }
}

// --- a check, run again and again ---

/// One check's policy and history; each `run` happens [`INTERVAL`] after the previous one.
pub struct Check {
    pub policy: Policy,
    pub history: History,
    next: SystemTime,
}

impl Check {
    pub fn new(policy: Policy) -> Self {
        Check {
            policy,
            history: History::default(),
            next: at(0),
        }
    }

    /// Evaluates one run, built from an empty run at the next start time.
    pub fn run(&mut self, build: impl Fn(Run) -> Run) -> Verdict {
        self.run_report(build).1
    }

    /// As [`Check::run`], also returning the run's report.
    pub fn run_report(&mut self, build: impl Fn(Run) -> Run) -> (RunReport, Verdict) {
        let report = build(Run::at(self.next)).build();
        let (history, verdict) = evaluate(&self.policy, &self.history, &report, self.next);
        self.history = history;
        self.next += INTERVAL;
        (report, verdict)
    }

    /// `n` runs alike; the last verdict.
    pub fn runs(&mut self, n: usize, build: impl Fn(Run) -> Run) -> Verdict {
        (1..n).for_each(|_| {
            self.run(&build);
        });
        self.run(build)
    }

    /// When the next run starts.
    pub fn now(&self) -> SystemTime {
        self.next
    }

    /// Lets time pass without runs (e.g. the operator was down).
    pub fn pause(&mut self, idle: Duration) {
        self.next += idle;
    }
}

/// Reading a verdict in tests.
pub trait Reads {
    /// Status and reason of a condition; panics when the verdict lacks it.
    fn of(&self, type_: ConditionType) -> (ConditionStatus, Reason);
    fn message(&self, type_: ConditionType) -> &str;
}

impl Reads for Verdict {
    fn of(&self, type_: ConditionType) -> (ConditionStatus, Reason) {
        let c = self
            .condition(type_)
            .unwrap_or_else(|| panic!("no {type_} in {self:#?}"));
        (c.status, c.reason)
    }

    fn message(&self, type_: ConditionType) -> &str {
        &self.condition(type_).expect("condition present").message
    }
}
