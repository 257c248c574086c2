//! A VoipCheck as a watch delivers it: the typed object, or — when it does not deserialize under
//! this schema (a field of the wrong type written under an older CRD, a status shape an older
//! operator wrote) — its metadata and the first problem with its field path.
//!
//! Why not kube's `DeserializeGuard`: its error text has no field path, and the controller must
//! report the field on the object (`spec.interval: invalid type: integer, expected a string`).
//! Messages never quote the offending value (it may be a password pasted into the wrong field):
//! serde's wording is kept, the value dropped.

use super::spec::VoipCheck;
use super::status::VoipCheckStatus;
use super::validate::SpecError;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::borrow::Cow;

/// A watched VoipCheck: `Ok` when it deserializes, else why not.
#[derive(Debug, Clone)]
pub struct GuardedCheck(pub Result<VoipCheck, InvalidCheck>);

/// A VoipCheck object that does not deserialize.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidCheck {
    pub metadata: ObjectMeta,
    /// The first problem found, with its field path (`spec.interval`).
    pub error: SpecError,
    /// The status on the object, when that part still reads.
    pub status: Option<VoipCheckStatus>,
}

impl<'de> Deserialize<'de> for GuardedCheck {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut object = Value::deserialize(deserializer)?;
        let error = match typed(&object) {
            Ok(check) => return Ok(GuardedCheck(Ok(check))),
            Err(error) => error,
        };
        // The status is this operator's own and is written again on the next run: an old shape
        // there must not stop the check.
        if error.field.starts_with("status")
            && let Some(fields) = object.as_object_mut()
        {
            let status = fields.remove("status");
            if let Ok(mut check) = typed(&object) {
                check.status = status.and_then(|s| VoipCheckStatus::deserialize(s).ok());
                return Ok(GuardedCheck(Ok(check)));
            }
        }
        // Without readable metadata the object cannot even be named: that fails the list as
        // any undecodable answer does.
        let metadata =
            ObjectMeta::deserialize(&object["metadata"]).map_err(serde::de::Error::custom)?;
        let status = object
            .get("status")
            .and_then(|s| VoipCheckStatus::deserialize(s).ok());
        Ok(GuardedCheck(Err(InvalidCheck {
            metadata,
            error,
            status,
        })))
    }
}

/// Deserializes `object` as a VoipCheck; an error names the field path.
fn typed(object: &Value) -> Result<VoipCheck, SpecError> {
    serde_path_to_error::deserialize(object).map_err(|e| {
        let field = e.path().to_string();
        SpecError::new(field, without_values(&e.into_inner().to_string()))
    })
}

/// serde's message without the value it quotes: `invalid type: string "x", expected u32`
/// becomes `invalid type: string, expected u32`. Quoted field names (`unknown field `x``) and
/// what is expected (`expected one of `Cloud`, …`: the schema's words) stay.
fn without_values(message: &str) -> String {
    let (head, expected) = message
        .find("expected")
        .map_or((message, ""), |at| message.split_at(at));
    let mut out = String::new();
    let mut rest = head;
    while let Some((start, end)) = quoted(rest) {
        let before = &rest[..start];
        if before.ends_with("field ") {
            out.push_str(&rest[..end]);
        } else if out.is_empty() && before.trim().is_empty() {
            out.push_str("the value");
        } else {
            out.push_str(before.trim_end());
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out.push_str(expected);
    out
}

/// The byte range of the first `` `…` `` or `"…"` segment in `text` (backslash escapes inside
/// double quotes, as `{:?}` writes them), quotes included.
fn quoted(text: &str) -> Option<(usize, usize)> {
    let start = text.find(['`', '"'])?;
    let quote = text[start..].chars().next()?;
    let mut escaped = false;
    for (offset, c) in text[start + 1..].char_indices() {
        match c {
            '\\' if quote == '"' && !escaped => escaped = true,
            c if c == quote && !escaped => return Some((start, start + 1 + offset + 1)),
            _ => escaped = false,
        }
    }
    None
}

impl Resource for GuardedCheck {
    type DynamicType = ();
    type Scope = <VoipCheck as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        VoipCheck::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        VoipCheck::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        VoipCheck::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        VoipCheck::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match &self.0 {
            Ok(check) => &check.metadata,
            Err(invalid) => &invalid.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.0 {
            Ok(check) => &mut check.metadata,
            Err(invalid) => &mut invalid.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(spec: Value) -> Value {
        json!({
            "apiVersion": "voipcheck.io/v1alpha1", "kind": "VoipCheck",
            "metadata": { "name": "cloud", "namespace": "telephony", "uid": "u-1", "generation": 4 },
            "spec": spec,
        })
    }

    fn valid_spec() -> Value {
        json!({ "target": { "kind": "Cloud", "name": "c" }, "http": [ { "name": "ui", "url": "https://c.example/" } ] })
    }

    fn invalid(spec: Value) -> InvalidCheck {
        match serde_json::from_value::<GuardedCheck>(object(spec))
            .unwrap()
            .0
        {
            Err(invalid) => invalid,
            Ok(check) => panic!("deserialized: {check:?}"),
        }
    }

    #[test]
    fn a_valid_object_is_the_typed_check() {
        let guarded: GuardedCheck = serde_json::from_value(object(valid_spec())).unwrap();
        let check = guarded.0.unwrap();
        assert_eq!(check.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(check.spec.target.name, "c");
    }

    #[test]
    fn a_wrong_type_names_the_field_and_not_the_value() {
        let mut spec = valid_spec();
        spec["interval"] = json!(30);
        let bad = invalid(spec);
        assert_eq!(bad.metadata.name.as_deref(), Some("cloud"));
        assert_eq!(bad.metadata.generation, Some(4));
        assert_eq!(bad.error.field, "spec.interval");
        assert_eq!(bad.error.reason, "invalid type: integer, expected a string");

        let mut spec = valid_spec();
        spec["failureThreshold"] = json!("hunter2");
        let bad = invalid(spec);
        assert_eq!(bad.error.field, "spec.failureThreshold");
        assert!(!bad.error.to_string().contains("hunter2"), "{}", bad.error);
        assert!(
            bad.error
                .reason
                .starts_with("invalid type: string, expected"),
            "{}",
            bad.error
        );
    }

    #[test]
    fn an_unreadable_status_does_not_make_the_check_invalid() {
        let mut raw = object(valid_spec());
        raw["status"] = json!({ "observedGeneration": "four" });
        let guarded: GuardedCheck = serde_json::from_value(raw).unwrap();
        let check = guarded.0.unwrap();
        assert_eq!(check.status, None);
    }

    #[test]
    fn a_readable_status_of_an_invalid_object_is_kept() {
        let mut raw =
            object(json!({ "target": { "kind": "Cloud", "name": "c" }, "timeout": true }));
        raw["status"] = json!({ "observedGeneration": 3 });
        let bad = match serde_json::from_value::<GuardedCheck>(raw).unwrap().0 {
            Err(bad) => bad,
            Ok(check) => panic!("{check:?}"),
        };
        assert_eq!(bad.status.and_then(|s| s.observed_generation), Some(3));
    }

    #[test]
    fn values_are_cut_from_serde_messages_and_schema_words_kept() {
        let cases = [
            (
                "invalid type: string \"se\\\"cret\", expected u32",
                "invalid type: string, expected u32",
            ),
            (
                "invalid value: integer `0`, expected a nonzero u32",
                "invalid value: integer, expected a nonzero u32",
            ),
            (
                "unknown variant `Clod`, expected one of `Cloud`, `Portal`",
                "unknown variant, expected one of `Cloud`, `Portal`",
            ),
            (
                "unknown field `intervall`, expected one of `interval`",
                "unknown field `intervall`, expected one of `interval`",
            ),
            ("missing field `target`", "missing field `target`"),
            (
                "`30x` is not a duration like 30s",
                "the value is not a duration like 30s",
            ),
            (
                "invalid type: map, expected a string",
                "invalid type: map, expected a string",
            ),
            ("unterminated `quote", "unterminated `quote"),
        ];
        for (message, expected) in cases {
            assert_eq!(without_values(message), expected, "{message}");
        }
    }
}
