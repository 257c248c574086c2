//! Running every probe of a plan once, concurrently, each bounded by the check's timeout.

use super::plan::Plan;
use crate::probe::Failure;
use crate::probe::dns::Dns;
use crate::probe::http::HttpOutcome;
use crate::probe::sip::{OptionsOutcome, RegisterOutcome};
use crate::probe::stun::StunOutcome;
use std::time::{Duration, SystemTime};

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
    Http,
    Stun,
}

/// One probe's result in a run.
#[derive(Debug, Clone)]
pub struct ProbeRun {
    /// `sip-register`, `sip-options`, `http:<name>`, `stun` or `control`.
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
            ProbeOutcome::Http(outcome) => outcome.failure(),
            ProbeOutcome::Stun(outcome) => outcome.failure(),
            ProbeOutcome::Cancelled(failure) => Some(failure),
        }
    }
}

/// Runs all probes of `plan` (and its control probe) concurrently.
pub async fn run(dns: &Dns, plan: &Plan) -> RunReport {
    let _ = (dns, plan);
    todo!("SKELETON")
}
