//! Every manifest in examples/ is one a user can apply as it stands: each VoipCheck reads as the
//! API type, passes `validate()` and the CRD's CEL rules, and each Secret key it references
//! exists in a Secret of the same file and namespace.

use k8s_openapi::api::core::v1::Secret;
use kube::core::cel::Validator;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use voipcheck::api::{TargetKind, VoipCheck, crd, validate};

fn example_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The VoipChecks and Secrets of one multi-document file.
struct Manifests {
    checks: Vec<(Value, VoipCheck)>,
    secrets: Vec<Secret>,
}

fn read(path: &Path) -> Manifests {
    let text = std::fs::read_to_string(path).unwrap();
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut manifests = Manifests {
        checks: Vec::new(),
        secrets: Vec::new(),
    };
    for (i, document) in documents.into_iter().enumerate() {
        let at = format!("{} document {}", path.display(), i + 1);
        match (document["apiVersion"].as_str(), document["kind"].as_str()) {
            (Some("voipcheck.io/v1alpha1"), Some("VoipCheck")) => {
                let check = serde_json::from_value(document.clone())
                    .unwrap_or_else(|e| panic!("{at}: {e}"));
                manifests.checks.push((document, check));
            }
            (Some("v1"), Some("Secret")) => {
                let secret =
                    serde_json::from_value(document).unwrap_or_else(|e| panic!("{at}: {e}"));
                manifests.secrets.push(secret);
            }
            other => panic!("{at}: unexpected apiVersion/kind {other:?}"),
        }
    }
    manifests
}

/// (namespace, name) -> keys, from `data` and `stringData`.
fn secret_keys(secrets: &[Secret]) -> BTreeMap<(String, String), BTreeSet<String>> {
    secrets
        .iter()
        .map(|s| {
            let id = (
                s.metadata.namespace.clone().unwrap_or_default(),
                s.metadata.name.clone().unwrap_or_default(),
            );
            let data = s.data.iter().flat_map(|d| d.keys());
            let string_data = s.string_data.iter().flat_map(|d| d.keys());
            (id, data.chain(string_data).cloned().collect())
        })
        .collect()
}

#[test]
fn there_is_an_example_for_each_provider_service() {
    let names: Vec<String> = example_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "cloud.yaml",
        "connect-trunk.yaml",
        "push-server.yaml",
        "partner-portal.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "examples/{expected} missing"
        );
    }
    let kinds: BTreeSet<TargetKind> = example_files()
        .iter()
        .flat_map(|path| read(path).checks)
        .map(|(_, check)| check.spec.target.kind)
        .collect();
    for kind in [
        TargetKind::Cloud,
        TargetKind::ConnectTrunk,
        TargetKind::PushServer,
        TargetKind::Portal,
    ] {
        assert!(kinds.contains(&kind), "no example for {kind:?}");
    }
}

#[test]
fn every_example_check_is_valid() {
    let crd = crd();
    let schema = crd.spec.versions[0].schema.as_ref().unwrap();
    let schema = serde_json::to_value(schema.open_api_v3_schema.as_ref().unwrap()).unwrap();
    for path in example_files() {
        let manifests = read(&path);
        assert!(
            !manifests.checks.is_empty(),
            "{}: no VoipCheck",
            path.display()
        );
        for (document, check) in manifests.checks {
            let at = format!(
                "{} {}",
                path.display(),
                check.metadata.name.as_deref().unwrap()
            );
            validate(&check.spec).unwrap_or_else(|e| panic!("{at}: {e}"));
            Validator::new()
                .validate(&schema, &document, None)
                .unwrap_or_else(|e| panic!("{at}: CEL: {e:?}"));
            let written = serde_json::to_value(&check).unwrap();
            let reread: VoipCheck = serde_json::from_value(written).unwrap();
            assert_eq!(reread, check, "{at}: does not survive a round trip");
        }
    }
}

#[test]
fn every_referenced_secret_key_is_in_the_same_file() {
    for path in example_files() {
        let manifests = read(&path);
        let available = secret_keys(&manifests.secrets);
        let mut referenced = BTreeSet::new();
        for (_, check) in &manifests.checks {
            let namespace = check.metadata.namespace.clone().unwrap_or_default();
            for used in check.spec.secret_keys() {
                let id = (namespace.clone(), used.name.to_owned());
                let keys = available.get(&id).unwrap_or_else(|| {
                    panic!(
                        "{}: {} names Secret {id:?}, not in the file",
                        path.display(),
                        used.field
                    )
                });
                assert!(
                    keys.contains(used.key),
                    "{}: {} needs key {} of Secret {id:?}, which has {keys:?}",
                    path.display(),
                    used.field,
                    used.key
                );
                referenced.insert(id);
            }
        }
        let unused: Vec<_> = available
            .keys()
            .filter(|id| !referenced.contains(*id))
            .collect();
        assert!(
            unused.is_empty(),
            "{}: Secrets no check uses: {unused:?}",
            path.display()
        );
    }
}

#[test]
fn example_secrets_hold_placeholders_only() {
    for path in example_files() {
        // The lab runs against the test registrar, whose account is in tests/peers/kamailio.cfg.
        let placeholder = if path.ends_with("lab.yaml") {
            "alice-secret"
        } else {
            "change-me"
        };
        for secret in read(&path).secrets {
            for (key, value) in secret.string_data.unwrap_or_default() {
                if key == "password" {
                    assert_eq!(value, placeholder, "{}: a real password?", path.display());
                }
            }
            assert!(
                secret.data.is_none(),
                "{}: use stringData placeholders",
                path.display()
            );
        }
    }
}
