//! The Secrets a check references, read on demand at reconcile time.
//!
//! Why not a cache of all Secrets: a reflector would hold every Secret of the watched namespaces
//! in memory (Helm release data, other teams' keys) although a check reads only a few keys. The
//! controller watches Secret *metadata* only, to know when to re-reconcile, and reads the
//! referenced Secrets with one GET each when it builds a plan. RBAC: `get`, `list`, `watch` on
//! Secrets; the operator never writes one.
//!
//! Kubernetes RBAC cannot grant a metadata-only list: `list` on Secrets lets the service account
//! read every value in its scope, although this code never asks for one. Where that is too much,
//! [`SecretAccess::Get`] drops the watch: RBAC `get` only (a Secret must be named to be read),
//! and a changed Secret takes effect at the check's next resync instead of at once.

use super::error::Result;
use crate::api::VoipCheckSpec;
use crate::check::StaticSecrets;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use std::collections::BTreeSet;
use std::time::Duration;

/// How the operator learns that a Secret a check references changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecretAccess {
    /// Watch Secret metadata and reconcile the checks that reference a changed Secret at once.
    /// RBAC: `get`, `list`, `watch`.
    #[default]
    Watch,
    /// No watch: each check re-reads its Secrets every [`RESYNC_WITHOUT_WATCH`] on average
    /// (spread by uid). RBAC: `get` only.
    Get,
}

/// Without the Secret watch, how often a check re-reads its Secrets on average: a fixed
/// password reaches the probes within about this long. 10,000 checks then cost 33 GETs/s.
pub const RESYNC_WITHOUT_WATCH: Duration = Duration::from_secs(5 * 60);

impl std::str::FromStr for SecretAccess {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "watch" => Ok(SecretAccess::Watch),
            "get" => Ok(SecretAccess::Get),
            _ => Err("must be watch or get".into()),
        }
    }
}

/// Reads every Secret `spec` references in `namespace`, each once, into the plan's Secret
/// source. A missing Secret is not an error here: it stays absent, and the plan names it in a
/// `CredentialsMissing` condition.
pub async fn fetch(
    client: &Client,
    namespace: &str,
    spec: &VoipCheckSpec,
) -> Result<StaticSecrets> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let names: BTreeSet<&str> = spec.secret_keys().into_iter().map(|u| u.name).collect();
    let mut secrets = StaticSecrets::new();
    for name in names {
        if let Some(secret) = api.get_opt(name).await? {
            // Only a Secret without a name is refused, and the API server never returns one.
            if let Err(error) = secrets.insert_k8s(&secret, namespace) {
                tracing::warn!(namespace, secret = name, %error, "Secret ignored");
            }
        }
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{SecretLookup, SecretSource};
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::json;

    /// Each referenced Secret is read once, however many fields use it, and a 404 leaves it
    /// absent while the others are found.
    #[tokio::test]
    async fn reads_each_referenced_secret_once() {
        let spec: VoipCheckSpec = serde_json::from_value(json!({
            "target": { "kind": "Portal", "name": "portal" },
            "sip": {
                "server": "sip:pbx.example.com",
                "register": {
                    "username": "monitor",
                    "credentialsSecretRef": { "name": "shared", "key": "password" }
                }
            },
            "http": [
                { "name": "a", "url": "https://a.example.com/", "basicAuthSecretRef": { "name": "shared" } },
                { "name": "b", "url": "https://b.example.com/", "basicAuthSecretRef": { "name": "gone" } }
            ]
        }))
        .unwrap();
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let fetching = tokio::spawn(async move { fetch(&client, "telephony", &spec).await });
        let mut paths = Vec::new();
        for _ in 0..2 {
            let (request, respond) = handle.next_request().await.unwrap();
            let path = request.uri().path().to_owned();
            let (status, body) = if path.ends_with("/shared") {
                (
                    200,
                    json!({
                        "apiVersion": "v1", "kind": "Secret",
                        "metadata": { "name": "shared", "namespace": "telephony" },
                        "data": { "password": "aHVudGVyMg==" }
                    }),
                )
            } else {
                (
                    404,
                    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404 }),
                )
            };
            paths.push(path);
            let body = Body::from(serde_json::to_vec(&body).unwrap());
            respond.send_response(Response::builder().status(status).body(body).unwrap());
        }
        let secrets = fetching.await.unwrap().unwrap();
        assert_eq!(
            paths,
            [
                "/api/v1/namespaces/telephony/secrets/gone",
                "/api/v1/namespaces/telephony/secrets/shared"
            ]
        );
        assert!(matches!(
            secrets.lookup("telephony", "shared", "password"),
            SecretLookup::Found(s) if s.expose() == "hunter2"
        ));
        assert!(matches!(
            secrets.lookup("telephony", "gone", "password"),
            SecretLookup::SecretMissing
        ));
    }
}
