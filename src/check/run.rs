//! Running every probe of a plan once, concurrently, each bounded by the check's timeout.

use super::plan::{Plan, PlannedProbe};
use crate::probe::dns::Dns;
use crate::probe::http::HttpOutcome;
use crate::probe::sip::{CallOutcome, OptionsOutcome, RegisterOutcome};
use crate::probe::stun::StunConfig;
use crate::probe::stun::StunOutcome;
use crate::probe::{ConfigError, Failure, http, sip, stun};
use std::collections::HashMap;
use std::pin::Pin;
use std::time::{Duration, SystemTime};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

/// What one run of a check saw.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub started: SystemTime,
    pub probes: Vec<ProbeRun>,
    pub control: Option<ProbeRun>,
}

/// Which probe a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    SipRegister,
    SipOptions,
    SipCall,
    Http,
    Stun,
}

/// One probe's result in a run.
#[derive(Debug, Clone)]
pub struct ProbeRun {
    /// `sip-register`, `sip-options`, `sip-call`, `http:<name>`, `stun` or `control`.
    pub name: String,
    pub kind: ProbeKind,
    /// What the probe returned, or `Cancelled` when it outlived the timeout and was stopped.
    pub outcome: ProbeOutcome,
    pub duration: Duration,
}

/// A probe's typed outcome.
#[derive(Debug, Clone)]
pub enum ProbeOutcome {
    SipRegister(RegisterOutcome),
    SipOptions(OptionsOutcome),
    SipCall(CallOutcome),
    Http(HttpOutcome),
    Stun(StunOutcome),
    /// Stopped at the check's timeout; counts as [`Failure::Timeout`].
    Cancelled(Failure),
}

impl ProbeRun {
    /// `None` when the probe succeeded.
    pub fn failure(&self) -> Option<&Failure> {
        use crate::probe::Outcome;
        match &self.outcome {
            ProbeOutcome::SipRegister(outcome) => outcome.failure(),
            ProbeOutcome::SipOptions(outcome) => outcome.failure(),
            ProbeOutcome::SipCall(outcome) => outcome.failure(),
            ProbeOutcome::Http(outcome) => outcome.failure(),
            ProbeOutcome::Stun(outcome) => outcome.failure(),
            ProbeOutcome::Cancelled(failure) => Some(failure),
        }
    }

    /// How the un-REGISTER after a successful registration went, in words (`removed`, or
    /// `failed: …`); `None` for other probes and when none was tried.
    pub fn unregister(&self) -> Option<String> {
        match &self.outcome {
            ProbeOutcome::SipRegister(outcome) => {
                outcome.unregister.as_ref().map(ToString::to_string)
            }
            _ => None,
        }
    }
}

/// How long a probe may run past its own bound before it is cancelled. Every probe bounds
/// itself by its timeout; the grace covers its last bookkeeping (an un-REGISTER already sent,
/// the outcome being built) and a busy runtime, so a probe is cancelled only when it really
/// failed to stop.
pub const GRACE: Duration = Duration::from_millis(250);

/// How long `probe` may take with the check's `timeout`, before [`GRACE`]: the timeout, except
/// for a STUN probe measuring the NAT binding, which idles for the keep-alive interval `T` on
/// purpose and takes up to `T + 4 x timeout` (see [`crate::probe::stun::StunConfig::timeout`]),
/// and a REGISTER that removes its binding again, whose un-REGISTER has a budget of its own
/// after the registration ([`sip::UNREGISTER_BUDGET`]), and a test call, which rings, talks and
/// hangs up after its set-up ([`sip::CallConfig::bound`]).
pub fn probe_bound(probe: &PlannedProbe, timeout: Duration) -> Duration {
    match probe {
        PlannedProbe::SipRegister(sip::RegisterConfig {
            unregister: true, ..
        }) => timeout + sip::UNREGISTER_BUDGET.min(timeout),
        PlannedProbe::Stun(StunConfig {
            nat_binding: Some(idle),
            ..
        }) => *idle + 4 * timeout,
        PlannedProbe::SipCall(cfg) => cfg.bound(),
        _ => timeout,
    }
}

/// Runs all probes of `plan` (and its control probe) concurrently.
///
/// Each probe runs as its own task, bounded by [`probe_bound`] plus [`GRACE`]; one that
/// outlives that is cancelled and reported as [`ProbeOutcome::Cancelled`] with
/// [`Failure::Timeout`]. Results come back in plan order. Dropping the returned future
/// cancels every probe still running (the tasks live in a [`JoinSet`]).
///
/// A probe that refuses its configuration, or panics, is a bug in voipcheck: [`plan`]
/// (super::plan()) puts every configuration through the probe's own check first. Such a
/// probe is logged at error level and reported as `Cancelled` with [`Failure::Protocol`]
/// whose detail says so, so the run still completes and the failure is visible in status;
/// no failure class fits a bug better, and none is invented for it.
pub async fn run(dns: &Dns, plan: &Plan) -> RunReport {
    let started = SystemTime::now();
    let clock = Instant::now();
    let slots: Vec<(String, &PlannedProbe)> = plan
        .probes
        .iter()
        .map(|probe| (probe.name(), probe))
        .chain(
            plan.control
                .iter()
                .map(|probe| ("control".to_owned(), probe)),
        )
        .collect();
    let mut tasks = JoinSet::new();
    let mut slot_of = HashMap::new();
    for (index, (name, probe)) in slots.iter().enumerate() {
        let bound = probe_bound(probe, plan.timeout);
        let task = run_probe(dns.clone(), (*probe).clone(), bound);
        let handle = tasks
            .spawn(task.instrument(tracing::debug_span!("probe", check = %plan.id, probe = %name)));
        slot_of.insert(handle.id(), index);
    }
    let mut done: Vec<Option<(ProbeOutcome, Duration)>> = vec![None; slots.len()];
    while let Some(joined) = tasks.join_next_with_id().await {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(error) => {
                tracing::error!(check = %plan.id, %error, "a probe task failed");
                (error.id(), (bug("the probe crashed"), clock.elapsed()))
            }
        };
        done[slot_of[&id]] = Some(result);
    }
    let mut runs = slots.into_iter().zip(done).map(|((name, probe), result)| {
        let (outcome, duration) = result.expect("every task reports once");
        ProbeRun {
            name,
            kind: probe.kind(),
            outcome,
            duration,
        }
    });
    let probes = runs.by_ref().take(plan.probes.len()).collect();
    RunReport {
        started,
        probes,
        control: runs.next(),
    }
}

/// Measures the NAT binding of `plan`, if it asks for that: the STUN probe with the
/// keep-alive idle (RFC 5780 §4.6), bounded by [`probe_bound`]. It takes the keep-alive
/// interval and more (60 s by default), so the scheduler runs it on its own cadence beside the
/// check's runs, and [`RunReport::with_nat_binding`] brings its result into a run's report.
pub async fn measure_nat_binding(dns: &Dns, plan: &Plan) -> Option<ProbeRun> {
    let config = plan.nat_binding.clone()?;
    let probe = PlannedProbe::Stun(config);
    let bound = probe_bound(&probe, plan.timeout);
    let (outcome, duration) = run_probe(dns.clone(), probe.clone(), bound)
        .instrument(tracing::debug_span!("nat binding", check = %plan.id))
        .await;
    Some(ProbeRun {
        name: probe.name(),
        kind: probe.kind(),
        outcome,
        duration,
    })
}

/// The run's probes and, at the same time, its NAT binding measurement: one complete run, as
/// `voipcheck run --once` makes it.
pub async fn run_with_nat_binding(dns: &Dns, plan: &Plan) -> RunReport {
    let (report, measured) = tokio::join!(run(dns, plan), measure_nat_binding(dns, plan));
    match measured {
        Some(measured) => report.with_nat_binding(&measured),
        None => report,
    }
}

impl RunReport {
    /// This run's report with the NAT binding `measured` apart from it (the same STUN servers):
    /// its STUN probe carries the measurement's result. A measurement that could not be made
    /// adds nothing.
    pub fn with_nat_binding(mut self, measured: &ProbeRun) -> Self {
        let ProbeOutcome::Stun(measured) = &measured.outcome else {
            return self;
        };
        let stun = self.probes.iter_mut().find(|p| p.kind == ProbeKind::Stun);
        if let Some(ProbeRun {
            outcome: ProbeOutcome::Stun(outcome),
            ..
        }) = stun
            && measured.nat_binding.is_some()
        {
            outcome.nat_binding = measured.nat_binding.clone();
            outcome.nat_behaviour = measured.nat_behaviour.clone();
        }
        self
    }
}

/// Runs one probe within `bound` (+ [`GRACE`]) and measures it.
async fn run_probe(dns: Dns, probe: PlannedProbe, bound: Duration) -> (ProbeOutcome, Duration) {
    let start = Instant::now();
    // Each kind's future boxed: unboxed, every probe's task would be as large as the largest
    // kind's (a test call's, 54 KiB), and the probes waiting at once on a bad day (a takeover's
    // catch-up, a server that stopped answering) are thousands.
    let probe: Pin<Box<dyn Future<Output = _> + Send + '_>> = match &probe {
        PlannedProbe::SipRegister(cfg) => Box::pin(async {
            sip::register(&dns, cfg)
                .await
                .map(ProbeOutcome::SipRegister)
        }),
        PlannedProbe::SipOptions(cfg) => {
            Box::pin(async { sip::options(&dns, cfg).await.map(ProbeOutcome::SipOptions) })
        }
        PlannedProbe::Http { config, .. } => {
            Box::pin(async { http::probe(&dns, config).await.map(ProbeOutcome::Http) })
        }
        PlannedProbe::Stun(cfg) => {
            Box::pin(async { stun::probe(&dns, cfg).await.map(ProbeOutcome::Stun) })
        }
        PlannedProbe::SipCall(cfg) => {
            Box::pin(async { sip::call(&dns, cfg).await.map(ProbeOutcome::SipCall) })
        }
    };
    let outcome = bounded(bound, probe).await;
    (outcome, start.elapsed())
}

/// `probe` within `bound` + [`GRACE`], its errors mapped as [`run`] documents.
async fn bounded(
    bound: Duration,
    probe: impl Future<Output = Result<ProbeOutcome, ConfigError>>,
) -> ProbeOutcome {
    match tokio::time::timeout(bound + GRACE, probe).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(error)) => {
            tracing::error!(%error, "a probe refused the configuration its plan gave it");
            bug(&format!("the probe refused its configuration ({error})"))
        }
        Err(_elapsed) => ProbeOutcome::Cancelled(Failure::Timeout { after: bound }),
    }
}

/// The outcome of a probe that could not run because of a bug in voipcheck.
fn bug(what: &str) -> ProbeOutcome {
    ProbeOutcome::Cancelled(Failure::Protocol {
        detail: format!("{what}: a bug in voipcheck, please report it"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_probe() -> PlannedProbe {
        PlannedProbe::Http {
            name: "web".into(),
            config: http::HttpConfig::new("http://127.0.0.1:1/".parse().unwrap()),
        }
    }

    #[tokio::test]
    async fn a_probe_that_outlives_its_bound_is_cancelled_as_timeout() {
        let bound = Duration::from_millis(100);
        let start = Instant::now();
        let outcome = bounded(bound, std::future::pending()).await;
        let elapsed = start.elapsed();
        assert!(elapsed >= bound + GRACE, "{elapsed:?}");
        assert!(elapsed < bound + GRACE * 2, "{elapsed:?}");
        match outcome {
            ProbeOutcome::Cancelled(Failure::Timeout { after }) => assert_eq!(after, bound),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_refused_configuration_is_reported_as_a_bug() {
        let outcome = bounded(Duration::from_secs(1), async {
            Err(ConfigError::new("server", "not a SIP URI"))
        })
        .await;
        match outcome {
            ProbeOutcome::Cancelled(Failure::Protocol { detail }) => {
                assert_eq!(
                    detail,
                    "the probe refused its configuration (server: not a SIP URI): \
                     a bug in voipcheck, please report it"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nat_binding_measurement_gets_its_idle_time_on_top() {
        let timeout = Duration::from_secs(2);
        let stun = |nat_binding| {
            PlannedProbe::Stun(StunConfig {
                servers: vec!["stun.example.com".into()],
                transport: stun::StunTransport::Udp,
                timeout,
                nat_binding,
                require: stun::StunRequire::All,
                ca: None,
            })
        };
        assert_eq!(probe_bound(&stun(None), timeout), timeout);
        assert_eq!(
            probe_bound(&stun(Some(Duration::from_secs(60))), timeout),
            Duration::from_secs(68)
        );
        assert_eq!(probe_bound(&http_probe(), timeout), timeout);
    }
}
