//! The operator's one error type. Every variant has a bounded [`Error::metric_label`], so
//! `reconcile_errors_total` and logs group failures by category (the controller-rs pattern).

use crate::check::PlanError;

/// What can go wrong in the operator. None of these carries a Secret value: Secret contents are
/// never formatted, and API errors only quote the API server's status message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the Kubernetes API failed (network, RBAC, server error).
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// A VoipCheck without `metadata.namespace` (it is a namespaced kind, so only a broken cache
    /// could hand one over).
    #[error("VoipCheck {0} has no namespace")]
    MissingNamespace(String),

    /// `/metrics`, `/healthz`, `/readyz` could not be served.
    #[error("metrics endpoint: {0}")]
    MetricsServer(#[source] std::io::Error),

    /// The operator's own configuration is unusable (flags, kubeconfig, resolver).
    #[error("configuration: {0}")]
    Config(String),
}

/// `Result` with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The category, as the `error` label of `reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube_api",
            Error::MissingNamespace(_) => "missing_namespace",
            Error::MetricsServer(_) => "metrics_server",
            Error::Config(_) => "config",
        }
    }
}

/// The category of a VoipCheck object that does not deserialize, for `reconcile_errors_total`
/// (its status says `InvalidSpec` like a spec the validation refuses; this label tells the two
/// apart: an object written under another schema).
pub const INVALID_OBJECT: &str = "invalid_object";

/// The category of a plan error, for `reconcile_errors_total`: the reconcile itself succeeds
/// (the scheduler publishes `Ready=False`), but the check cannot run.
pub fn plan_error_label(error: &PlanError) -> &'static str {
    match error {
        PlanError::CredentialsMissing { .. } => "credentials_missing",
        PlanError::InvalidSpec(_) => "invalid_spec",
        PlanError::TargetNotAllowed { .. } => "target_not_allowed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_snake_case_names() {
        let errors = [
            Error::MissingNamespace("x".into()),
            Error::MetricsServer(std::io::Error::other("bind")),
            Error::Config("no kubeconfig".into()),
        ];
        for error in &errors {
            let label = error.metric_label();
            assert!(
                label.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{label}"
            );
        }
        let missing = PlanError::CredentialsMissing {
            field: "spec.sip.register.credentialsSecretRef".into(),
            secret: "sip".into(),
            key: None,
        };
        assert_eq!(plan_error_label(&missing), "credentials_missing");
    }
}
