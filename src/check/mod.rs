//! One VoipCheck as the engine sees it, without Kubernetes: what to probe ([`plan`]) and
//! probing it once ([`run`]). The operator and `voipcheck run` both build on this.

pub mod allow;
pub mod plan;
pub mod run;
pub mod secrets;

pub use allow::AllowList;
pub use plan::{Plan, PlanError, PlannedProbe, plan};
pub use run::{
    ProbeKind, ProbeOutcome, ProbeRun, RunReport, measure_nat_binding, run, run_with_nat_binding,
};
pub use secrets::{SecretLookup, SecretSource, StaticSecrets};

use std::fmt;

/// Identifies a check in metrics, logs, Events and status writes: its namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CheckId {
    pub namespace: String,
    pub name: String,
}

impl CheckId {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
