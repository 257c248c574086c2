//! Where a check's credentials come from: Kubernetes Secrets, looked up by namespace, name and
//! key. [`plan`](super::plan()) asks a [`SecretSource`]; the operator answers from its Secret
//! cache, `voipcheck run` from the Secrets in its file ([`StaticSecrets`]).

use crate::probe::ConfigError;
use crate::secret::Secret;
use k8s_openapi::api::core::v1 as core;
use std::collections::BTreeMap;

/// Where Secret values come from: the operator's Secret cache, or the Secrets in a
/// `voipcheck run` file.
///
/// Values are text: a Secret's `data` is bytes, and a value that is not UTF-8 is answered with
/// [`SecretLookup::NotUtf8`] (a password, a user name or a PEM certificate is always text).
pub trait SecretSource: Send + Sync {
    fn lookup(&self, namespace: &str, name: &str, key: &str) -> SecretLookup;
}

/// The answer to one Secret lookup.
#[derive(Debug, Clone)]
pub enum SecretLookup {
    Found(Secret),
    SecretMissing,
    KeyMissing,
    /// The key exists but its value is not UTF-8 text, so it cannot be a password or PEM.
    NotUtf8,
}

/// Secrets held in memory, keyed by namespace and name: the Secrets of a `voipcheck run` file,
/// test fixtures, or a snapshot of the operator's cache.
#[derive(Debug, Clone, Default)]
pub struct StaticSecrets {
    secrets: BTreeMap<(String, String), BTreeMap<String, Value>>,
}

/// A stored value; bytes that are not UTF-8 are remembered as such, never kept.
#[derive(Debug, Clone)]
enum Value {
    Text(Secret),
    NotUtf8,
}

impl StaticSecrets {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets one key of Secret `namespace/name` (creating the Secret).
    pub fn insert(&mut self, namespace: &str, name: &str, key: &str, value: Secret) {
        self.entry(namespace, name)
            .insert(key.to_owned(), Value::Text(value));
    }

    /// Adds a Kubernetes Secret, replacing one of the same namespace and name. Its `data`
    /// (base64 in YAML, bytes here) and `stringData` are merged as the API server merges them:
    /// `stringData` wins. A Secret without `metadata.namespace` lands in `default_namespace`
    /// (as `kubectl apply -n` would place it).
    pub fn insert_k8s(
        &mut self,
        secret: &core::Secret,
        default_namespace: &str,
    ) -> Result<(), ConfigError> {
        let name = secret
            .metadata
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ConfigError::new("metadata.name", "a Secret needs a name"))?;
        let namespace = secret
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(default_namespace);
        let mut values = BTreeMap::new();
        for (key, bytes) in secret.data.iter().flatten() {
            let value = match String::from_utf8(bytes.0.clone()) {
                Ok(text) => Value::Text(Secret::new(text)),
                Err(_) => Value::NotUtf8,
            };
            values.insert(key.clone(), value);
        }
        for (key, text) in secret.string_data.iter().flatten() {
            values.insert(key.clone(), Value::Text(Secret::new(text.clone())));
        }
        self.secrets
            .insert((namespace.to_owned(), name.to_owned()), values);
        Ok(())
    }

    /// Removes Secret `namespace/name`; whether it was there.
    pub fn remove(&mut self, namespace: &str, name: &str) -> bool {
        self.secrets
            .remove(&(namespace.to_owned(), name.to_owned()))
            .is_some()
    }

    fn entry(&mut self, namespace: &str, name: &str) -> &mut BTreeMap<String, Value> {
        self.secrets
            .entry((namespace.to_owned(), name.to_owned()))
            .or_default()
    }
}

impl SecretSource for StaticSecrets {
    fn lookup(&self, namespace: &str, name: &str, key: &str) -> SecretLookup {
        let Some(values) = self.secrets.get(&(namespace.to_owned(), name.to_owned())) else {
            return SecretLookup::SecretMissing;
        };
        match values.get(key) {
            Some(Value::Text(secret)) => SecretLookup::Found(secret.clone()),
            Some(Value::NotUtf8) => SecretLookup::NotUtf8,
            None => SecretLookup::KeyMissing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn k8s_secret(yaml: &str) -> core::Secret {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn data_is_base64_decoded_and_string_data_wins() {
        let mut secrets = StaticSecrets::new();
        let secret = k8s_secret(
            "apiVersion: v1\nkind: Secret\nmetadata: { name: sip, namespace: telephony }\n\
             data: { password: aHVudGVyMg==, user: bW9uaXRvcg== }\n\
             stringData: { user: override }\n",
        );
        secrets.insert_k8s(&secret, "default").unwrap();
        let found = |key| match secrets.lookup("telephony", "sip", key) {
            SecretLookup::Found(s) => s.expose().to_owned(),
            other => panic!("{key}: {other:?}"),
        };
        assert_eq!(found("password"), "hunter2");
        assert_eq!(found("user"), "override");
        assert!(matches!(
            secrets.lookup("telephony", "sip", "other"),
            SecretLookup::KeyMissing
        ));
        assert!(matches!(
            secrets.lookup("default", "sip", "password"),
            SecretLookup::SecretMissing
        ));
    }

    #[test]
    fn missing_namespace_takes_the_default_and_bytes_that_are_not_text_are_flagged() {
        let mut secret = core::Secret::default();
        secret.metadata.name = Some("ca".into());
        secret.data = Some([("pem".to_owned(), ByteString(vec![0xff, 0xfe]))].into());
        let mut secrets = StaticSecrets::new();
        secrets.insert_k8s(&secret, "lab").unwrap();
        assert!(matches!(
            secrets.lookup("lab", "ca", "pem"),
            SecretLookup::NotUtf8
        ));
        assert!(secrets.remove("lab", "ca"));
        assert!(matches!(
            secrets.lookup("lab", "ca", "pem"),
            SecretLookup::SecretMissing
        ));
    }

    #[test]
    fn a_secret_needs_a_name() {
        let err = StaticSecrets::new()
            .insert_k8s(&core::Secret::default(), "lab")
            .unwrap_err();
        assert_eq!(err.field, "metadata.name");
    }

    #[test]
    fn debug_shows_no_value() {
        let mut secrets = StaticSecrets::new();
        secrets.insert("ns", "s", "password", Secret::new("hunter2"));
        assert!(!format!("{secrets:?}").contains("hunter2"));
    }
}
