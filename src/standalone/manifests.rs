//! Reading a `voipcheck run -f` file: multi-document YAML holding VoipChecks and the Secrets they
//! reference, as `kubectl apply -f` would take it.
//!
//! A VoipCheck or v1 Secret that is not well-formed rejects the whole file, with an error naming
//! the file, the document (1-based, as a person counts `---` separators), its line and the
//! field. Reading is strict, as kubectl's server-side field validation (`--validate=strict`):
//! an unknown field is an error with its path, since a misspelt `failureTreshold` would
//! otherwise fall back silently to the default. Other kinds of objects (a Deployment in the
//! same file) are skipped and listed in [`Manifests::skipped`]. Whether a well-formed VoipCheck
//! can run (validation, Secret references) is the plan's question, answered per check: see
//! [`super`].

use crate::api::VoipCheck;
use crate::check::{CheckId, StaticSecrets};
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_saphyr::Spanned;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The namespace of objects that name none, as kubectl assumes.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A VoipCheck of the file.
#[derive(Debug, Clone)]
pub struct FileCheck {
    pub id: CheckId,
    pub check: VoipCheck,
    /// Where it is, for messages about it.
    pub place: Place,
}

/// Everything in one file.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    /// In file order.
    pub checks: Vec<FileCheck>,
    /// The file's Secrets. Their values print as `Secret(<redacted>)`, so printing the
    /// manifests shows no credential.
    pub secrets: StaticSecrets,
    /// Objects of other kinds, not used, for a warning each.
    pub skipped: Vec<Skipped>,
}

/// An object of the file that is neither a VoipCheck nor a Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub place: Place,
    /// `apps/v1 Deployment`.
    pub kind: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: skipped {}: only voipcheck.io/v1alpha1 VoipCheck and v1 Secret are read",
            self.place, self.kind
        )
    }
}

/// A document of a file: "checks.yaml document 2 (line 14)".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub file: PathBuf,
    /// 1-based.
    pub document: usize,
    /// 1-based, where the document's content starts.
    pub line: u64,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} document {} (line {})",
            self.file.display(),
            self.document,
            self.line
        )
    }
}

/// Why a file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("{}: {message}", file.display())]
    Read { file: PathBuf, message: String },
    /// Not YAML at all; the parser's message carries line and column.
    #[error("{place}: not valid YAML: {message}")]
    Syntax { place: Place, message: String },
    /// A document that is not a VoipCheck or a Secret as the API defines them.
    #[error("{place}: {field}: {message}")]
    Document {
        place: Place,
        /// `spec.interval`, `kind`, `metadata.name`, ... (`.` for the document itself).
        field: String,
        message: String,
    },
}

/// Reads and parses `file`.
pub fn load(file: &Path) -> Result<Manifests, LoadError> {
    let text = std::fs::read_to_string(file).map_err(|e| LoadError::Read {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    parse(file, &text)
}

/// Parses the text of `file`.
pub fn parse(file: &Path, text: &str) -> Result<Manifests, LoadError> {
    let place = |line: u64| Place {
        file: file.to_owned(),
        document: document_at_line(text, line),
        line,
    };
    let documents: Vec<Spanned<Value>> =
        serde_saphyr::from_multiple(text).map_err(|e| LoadError::Syntax {
            place: place(e.location().map_or(1, |l| l.line())),
            message: e.to_string(),
        })?;
    let mut manifests = Manifests::default();
    let mut seen_secrets = HashMap::new();
    for document in documents {
        let place = place(document.referenced.line().max(1));
        let value = document.value;
        match (field_str(&value, "apiVersion"), field_str(&value, "kind")) {
            (Some("voipcheck.io/v1alpha1"), Some("VoipCheck")) => {
                let check: VoipCheck = typed(&place, value)?;
                let id = object_id(&place, &check.metadata)?;
                if let Some(other) = manifests.checks.iter().find(|c| c.id == id) {
                    return Err(duplicate(place, "VoipCheck", &id, &other.place));
                }
                manifests.checks.push(FileCheck { id, check, place });
            }
            (Some("v1"), Some("Secret")) => {
                let secret: k8s_openapi::api::core::v1::Secret = typed(&place, value)?;
                let id = object_id(&place, &secret.metadata)?;
                if let Some(other) = seen_secrets.get(&id) {
                    return Err(duplicate(place, "Secret", &id, other));
                }
                manifests
                    .secrets
                    .insert_k8s(&secret, DEFAULT_NAMESPACE)
                    .map_err(|e| document_error(place.clone(), &e.field, e.reason))?;
                seen_secrets.insert(id, place);
            }
            // An empty document (`---` at the end of a file): kubectl ignores it too.
            (None, None) if value.is_null() => {}
            (None, _) if !value.is_object() => {
                return Err(document_error(place, ".", "expected a Kubernetes object"));
            }
            // Another kind of Kubernetes object, e.g. the Deployment of the same release.
            (Some(api_version), Some(kind)) if !api_version.starts_with("voipcheck.io/") => {
                let kind = format!("{api_version} {kind}");
                manifests.skipped.push(Skipped { place, kind });
            }
            (api_version, kind) => {
                let message = format!(
                    "unsupported object {}/{}: expected voipcheck.io/v1alpha1 VoipCheck or v1 Secret",
                    api_version.unwrap_or("<no apiVersion>"),
                    kind.unwrap_or("<no kind>")
                );
                let field = if api_version.is_none() {
                    "apiVersion"
                } else {
                    "kind"
                };
                return Err(document_error(place, field, message));
            }
        }
    }
    Ok(manifests)
}

fn field_str<'a>(value: &'a Value, field: &str) -> Option<&'a str> {
    value.get(field).and_then(Value::as_str)
}

/// Deserializes a document into its API type; an error names the field path. The first
/// unknown field is an error too (serde would ignore it), as `kubectl apply --validate=strict`
/// refuses it.
fn typed<T: DeserializeOwned>(place: &Place, value: Value) -> Result<T, LoadError> {
    let mut unknown = Vec::new();
    let typed = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
        value,
        &mut |path: serde_ignored::Path<'_>| unknown.push(field_path(&path)),
    ))
    .map_err(|e| {
        let field = e.path().to_string();
        document_error(place.clone(), &field, e.into_inner().to_string())
    })?;
    match unknown
        .into_iter()
        .find(|path| !KNOWN_TYPE_FIELDS.contains(&path.as_str()))
    {
        Some(field) => Err(document_error(place.clone(), &field, "unknown field")),
        None => Ok(typed),
    }
}

/// Fields every object has that the typed structs need not keep: they were read already.
const KNOWN_TYPE_FIELDS: [&str; 2] = ["apiVersion", "kind"];

/// `spec.http[0].expectStatus` from serde_ignored's path.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            parent if parent.is_empty() => key.clone(),
            parent => format!("{parent}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

fn object_id(
    place: &Place,
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<CheckId, LoadError> {
    let name = metadata
        .name
        .as_deref()
        .filter(|name| !name.is_empty())
        .ok_or_else(|| document_error(place.clone(), "metadata.name", "missing"))?;
    let namespace = metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    Ok(CheckId::new(namespace, name))
}

fn duplicate(place: Place, kind: &str, id: &CheckId, first: &Place) -> LoadError {
    let message = format!(
        "{kind} {id} is defined twice (first in document {})",
        first.document
    );
    document_error(place, "metadata.name", message)
}

fn document_error(place: Place, field: &str, message: impl Into<String>) -> LoadError {
    LoadError::Document {
        place,
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Which document (1-based) `line` is in, counting as a person reading the file does: content
/// before the first `---` is document 1, and each `---` starts the next one. (A `...` document
/// end marker followed by a bare document is not counted; kubectl manifests do not use it.)
fn document_at_line(text: &str, line: u64) -> usize {
    let mut document = 0;
    for (i, text_line) in text.lines().enumerate() {
        if i as u64 >= line {
            break;
        }
        let is_marker = text_line
            .strip_prefix("---")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']));
        let is_content = !text_line.trim().is_empty() && !text_line.trim_start().starts_with('#');
        if is_marker {
            document += 1;
        } else if is_content && document == 0 {
            document = 1;
        }
    }
    document.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{SecretLookup, SecretSource};

    const CHECK: &str = "apiVersion: voipcheck.io/v1alpha1
kind: VoipCheck
metadata:
  name: lab
spec:
  target: { kind: Cloud, name: lab }
  interval: 5s
  timeout: 1s
  http:
    - { name: web-ui, url: 'http://127.0.0.1:8080/' }
";

    const SECRET: &str = "apiVersion: v1
kind: Secret
metadata: { name: lab-sip, namespace: telephony }
data:
  password: YWxpY2Utc2VjcmV0
stringData:
  token: abc
";

    fn parse_text(text: &str) -> Result<Manifests, LoadError> {
        parse(Path::new("checks.yaml"), text)
    }

    fn document_error(text: &str) -> (usize, u64, String, String) {
        match parse_text(text).unwrap_err() {
            LoadError::Document {
                place,
                field,
                message,
            } => (place.document, place.line, field, message),
            other => panic!("not a document error: {other}"),
        }
    }

    #[test]
    fn checks_and_secrets_are_read_with_default_namespace() {
        let manifests = parse_text(&format!("# lab\n---\n{CHECK}---\n{SECRET}")).unwrap();
        assert_eq!(manifests.checks.len(), 1);
        let check = &manifests.checks[0];
        assert_eq!(check.id, CheckId::new("default", "lab"));
        assert_eq!(check.place.document, 1);
        assert_eq!(check.place.line, 3);
        let lookup = |ns: &str, name: &str, key: &str| manifests.secrets.lookup(ns, name, key);
        match lookup("telephony", "lab-sip", "password") {
            SecretLookup::Found(secret) => assert_eq!(secret.expose(), "alice-secret"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            lookup("telephony", "lab-sip", "token"),
            SecretLookup::Found(_)
        ));
        assert!(matches!(
            lookup("telephony", "lab-sip", "user"),
            SecretLookup::KeyMissing
        ));
        assert!(matches!(
            lookup("default", "lab-sip", "password"),
            SecretLookup::SecretMissing
        ));
        assert!(!format!("{manifests:?}").contains("alice-secret"));
    }

    #[test]
    fn a_bad_field_is_named_with_its_document_and_line() {
        let bad = CHECK.replace("interval: 5s", "interval: often");
        let (document, line, field, message) = document_error(&format!("{SECRET}---\n{bad}"));
        assert_eq!((document, line), (2, 9));
        assert_eq!(field, "spec.interval");
        assert!(message.contains("often"), "{message}");

        let bad = CHECK.replace("kind: Cloud", "kind: Cluod");
        let (_, _, field, _) = document_error(&bad);
        assert_eq!(field, "spec.target.kind");

        let bad = CHECK.replace(
            "'http://127.0.0.1:8080/' }",
            "'http://x/', expectStatus: [abc] }",
        );
        let (_, _, field, _) = document_error(&bad);
        assert_eq!(field, "spec.http[0].expectStatus[0]");
    }

    /// A Deployment in the same file rejected the whole file before issue 8.
    #[test]
    fn other_kinds_are_skipped_and_listed() {
        let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: x }\n";
        let manifests = parse_text(&format!("{CHECK}---\n{deployment}---\n")).unwrap();
        assert_eq!(manifests.checks.len(), 1);
        assert_eq!(manifests.skipped.len(), 1);
        let skipped = &manifests.skipped[0];
        assert_eq!(
            (skipped.place.document, skipped.kind.as_str()),
            (2, "apps/v1 Deployment")
        );
        assert!(
            skipped.to_string().contains("skipped apps/v1 Deployment"),
            "{skipped}"
        );
    }

    /// Unknown fields were dropped silently before issue 8: a misspelt `failureThreshold` fell
    /// back to the default.
    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        for (text, path) in [
            (
                CHECK.replace("  interval: 5s", "  failureTreshold: 5"),
                "spec.failureTreshold",
            ),
            (
                CHECK.replace("url: 'http", "bodyContain: x, url: 'http"),
                "spec.http[0].bodyContain",
            ),
            (
                CHECK.replace("  name: lab\n", "  name: lab\n  lables: { a: b }\n"),
                "metadata.lables",
            ),
            (CHECK.replace("spec:", "sepc: {}\nspec:"), "sepc"),
            (SECRET.replace("stringData:", "strinData:"), "strinData"),
        ] {
            let (_, _, field, message) = document_error(&text);
            assert_eq!(
                (field.as_str(), message.as_str()),
                (path, "unknown field"),
                "{text}"
            );
        }
    }

    #[test]
    fn unknown_kinds_of_our_group_and_missing_names_are_refused() {
        let typo = CHECK.replace("kind: VoipCheck", "kind: VoipChek");
        let (_, _, field, message) = document_error(&typo);
        assert_eq!(field, "kind");
        assert!(
            message.contains("voipcheck.io/v1alpha1/VoipChek"),
            "{message}"
        );

        let (_, _, field, _) = document_error("kind: VoipCheck\nmetadata: { name: x }\n");
        assert_eq!(field, "apiVersion");

        let (_, _, field, _) = document_error("- just\n- a list\n");
        assert_eq!(field, ".");

        let nameless = CHECK.replace("  name: lab\n", "  labels: { a: b }\n");
        let (_, _, field, _) = document_error(&nameless);
        assert_eq!(field, "metadata.name");
    }

    #[test]
    fn duplicates_are_refused() {
        let (document, _, field, message) =
            document_error(&format!("{CHECK}---\n{SECRET}---\n{CHECK}"));
        assert_eq!((document, field.as_str()), (3, "metadata.name"));
        assert!(message.contains("default/lab"), "{message}");
        assert!(message.contains("document 1"), "{message}");
    }

    #[test]
    fn secret_data_must_be_base64() {
        let bad = SECRET.replace("YWxpY2Utc2VjcmV0", "not base64!");
        let (_, _, field, _) = document_error(&bad);
        assert_eq!(field, "data.password");
    }

    #[test]
    fn a_syntax_error_names_its_document_and_line() {
        let text = format!("{CHECK}---\n{SECRET}---\nmetadata: {{ name: [unclosed\n");
        match parse_text(&text).unwrap_err() {
            LoadError::Syntax { place, message } => {
                assert_eq!(place.document, 3);
                assert!(place.line >= 18, "{place}");
                assert!(!message.is_empty());
            }
            other => panic!("{other}"),
        }
    }

    proptest::proptest! {
        /// Any text is a file or an error naming its place, never a panic.
        #[test]
        fn any_text_loads_or_is_refused(text in "\\PC{0,200}|([a-zA-Z:{}\\[\\], \n-]|apiVersion: v1\n|kind: Secret\n){0,30}") {
            let _ = parse_text(&text);
        }
    }

    #[test]
    fn documents_are_counted_as_written() {
        let text = "# comment\n---\na: 1\n---\nb: 2\n";
        assert_eq!(document_at_line(text, 3), 1);
        assert_eq!(document_at_line(text, 5), 2);
        let implicit = "a: 1\n---\nb: 2\n";
        assert_eq!(document_at_line(implicit, 1), 1);
        assert_eq!(document_at_line(implicit, 3), 2);
    }
}
