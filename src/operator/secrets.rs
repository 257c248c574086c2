//! The Secrets a check references, read on demand at reconcile time.
//!
//! Why not a cache of all Secrets: a reflector would hold every Secret of the watched namespaces
//! in memory (Helm release data, other teams' keys) although a check reads only a few keys. The
//! controller watches Secret *metadata* only, to know when to re-reconcile, and reads the
//! referenced Secrets with one GET each when it builds a plan. RBAC: `get`, `list`, `watch` on
//! Secrets; the operator never writes one.

use super::error::Result;
use crate::api::VoipCheckSpec;
use crate::check::{SecretLookup, SecretSource};
use crate::secret::Secret;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::{Api, Client};
use std::collections::BTreeMap;

/// The Secrets of one namespace as read for one reconcile; `None` for a Secret that does not
/// exist.
#[derive(Default)]
pub struct FetchedSecrets {
    namespace: String,
    secrets: BTreeMap<String, Option<KubeSecret>>,
}

impl FetchedSecrets {
    /// Secrets given directly (tests, and the plan step's own unit tests).
    pub fn new(
        namespace: impl Into<String>,
        secrets: BTreeMap<String, Option<KubeSecret>>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            secrets,
        }
    }
}

/// Reads every Secret `spec` references in `namespace`, each once. A missing Secret is not an
/// error here: the plan names it in a `CredentialsMissing` condition.
pub async fn fetch(
    client: &Client,
    namespace: &str,
    spec: &VoipCheckSpec,
) -> Result<FetchedSecrets> {
    let api: Api<KubeSecret> = Api::namespaced(client.clone(), namespace);
    let mut secrets = BTreeMap::new();
    for name in spec.secret_keys().into_iter().map(|u| u.name) {
        if !secrets.contains_key(name) {
            secrets.insert(name.to_owned(), api.get_opt(name).await?);
        }
    }
    Ok(FetchedSecrets::new(namespace, secrets))
}

impl SecretSource for FetchedSecrets {
    fn lookup(&self, namespace: &str, name: &str, key: &str) -> SecretLookup {
        let secret = match self.secrets.get(name) {
            Some(Some(secret)) if namespace == self.namespace => secret,
            _ => return SecretLookup::SecretMissing,
        };
        let bytes = secret.data.as_ref().and_then(|data| data.get(key));
        match bytes.map(|b| String::from_utf8(b.0.clone())) {
            Some(Ok(value)) => SecretLookup::Found(Secret::new(value)),
            Some(Err(_)) => {
                // Passwords and PEM certificates are text; a binary value cannot be either.
                tracing::warn!(
                    namespace,
                    secret = name,
                    key,
                    "Secret value is not UTF-8 text"
                );
                SecretLookup::KeyMissing
            }
            None => SecretLookup::KeyMissing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(key: &str, value: &[u8]) -> KubeSecret {
        KubeSecret {
            data: Some([(key.to_owned(), ByteString(value.to_vec()))].into()),
            ..Default::default()
        }
    }

    fn fetched() -> FetchedSecrets {
        FetchedSecrets::new(
            "telephony",
            [
                ("sip".to_owned(), Some(secret("password", b"hunter2"))),
                ("binary".to_owned(), Some(secret("password", &[0xff, 0xfe]))),
                ("gone".to_owned(), None),
            ]
            .into(),
        )
    }

    #[test]
    fn finds_a_key_and_names_what_is_missing() {
        let secrets = fetched();
        match secrets.lookup("telephony", "sip", "password") {
            SecretLookup::Found(value) => assert_eq!(value.expose(), "hunter2"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            secrets.lookup("telephony", "sip", "username"),
            SecretLookup::KeyMissing
        ));
        assert!(matches!(
            secrets.lookup("telephony", "gone", "password"),
            SecretLookup::SecretMissing
        ));
        assert!(matches!(
            secrets.lookup("telephony", "never-fetched", "password"),
            SecretLookup::SecretMissing
        ));
        assert!(matches!(
            secrets.lookup("telephony", "binary", "password"),
            SecretLookup::KeyMissing
        ));
    }

    #[test]
    fn never_answers_for_another_namespace() {
        assert!(matches!(
            fetched().lookup("elsewhere", "sip", "password"),
            SecretLookup::SecretMissing
        ));
    }
}
