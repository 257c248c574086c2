//! From a VoipCheck spec (plus its Secrets) to the probe configurations to run: everything that
//! can go wrong before a packet is sent is found here and named ([`PlanError`]).

use super::{AllowList, CheckId};
use crate::api::InvalidSpec;
use crate::api::VoipCheckSpec;
use crate::probe::{http, sip, stun};
use crate::secret::Secret;
use crate::verdict::Policy;
use std::time::Duration;

/// Where Secret values come from: the operator's Secret cache, or the Secrets in a
/// `voipcheck run` file.
pub trait SecretSource: Send + Sync {
    fn lookup(&self, namespace: &str, name: &str, key: &str) -> SecretLookup;
}

/// The answer to one Secret lookup.
#[derive(Debug, Clone)]
pub enum SecretLookup {
    Found(Secret),
    SecretMissing,
    KeyMissing,
}

/// Everything one run of a check needs, resolved and validated.
#[derive(Debug, Clone)]
pub struct Plan {
    pub id: CheckId,
    pub interval: Duration,
    pub timeout: Duration,
    pub probes: Vec<PlannedProbe>,
    /// The independent probe that tells a local network problem from a provider outage.
    pub control: Option<PlannedProbe>,
    pub policy: Policy,
}

/// One probe to run, with its name as used in `status.lastRun.probes[].name` and metric labels
/// (`sip-register`, `sip-options`, `http:<name>`, `stun`, `control`).
#[derive(Debug, Clone)]
pub enum PlannedProbe {
    SipRegister(sip::RegisterConfig),
    SipOptions(sip::OptionsConfig),
    Http {
        name: String,
        config: http::HttpConfig,
    },
    Stun(stun::StunConfig),
}

/// Why a check cannot run at all; becomes `Ready=False` with the matching reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// A referenced Secret or key does not exist (reason `CredentialsMissing`). Names the field
    /// and the Secret, never a value.
    #[error("{field}: Secret {secret} {}", match key { Some(k) => format!("has no key {k}"), None => "not found".to_owned() })]
    CredentialsMissing {
        field: String,
        secret: String,
        key: Option<String>,
    },
    /// The spec is invalid in a way the schema could not catch (reason `InvalidSpec`).
    #[error("{0}")]
    InvalidSpec(InvalidSpec),
    /// A host is outside the operator's `--allow-target` list (reason `TargetNotAllowed`).
    #[error("{field}: {host} is not allowed by the operator's --allow-target list")]
    TargetNotAllowed { field: String, host: String },
}

/// Builds the plan for `spec`, looking up Secrets in `id.namespace`.
pub fn plan(
    id: &CheckId,
    spec: &VoipCheckSpec,
    secrets: &dyn SecretSource,
    allow: &AllowList,
) -> Result<Plan, PlanError> {
    let _ = (id, spec, secrets, allow);
    todo!("SKELETON")
}
