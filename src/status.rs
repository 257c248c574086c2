//! From a verdict to the `status` written on the VoipCheck: Kubernetes condition conventions
//! (lastTransitionTime changes only on a real transition, observedGeneration on each
//! condition), `lastRun`, `incident`, and the list of transitions that become Events and the
//! lines `voipcheck run` prints. Pure.

use crate::api::{ConditionStatus, ConditionType, Reason};
use crate::api::{VoipCheckSpec, VoipCheckStatus};
use crate::check::RunReport;
use crate::verdict::Verdict;
use std::time::SystemTime;

/// A condition that changed status or reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub type_: ConditionType,
    /// `None` for a condition seen for the first time.
    pub from: Option<(ConditionStatus, Reason)>,
    pub to: (ConditionStatus, Reason),
    pub message: String,
}

/// The next status and what changed since `previous`.
pub fn next_status(
    previous: Option<&VoipCheckStatus>,
    spec: &VoipCheckSpec,
    verdict: &Verdict,
    run: Option<&RunReport>,
    generation: Option<i64>,
    now: SystemTime,
) -> (VoipCheckStatus, Vec<Transition>) {
    let _ = (previous, spec, verdict, run, generation, now);
    todo!("SKELETON")
}
