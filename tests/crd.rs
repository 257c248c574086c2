//! The VoipCheck CRD: the committed file is what the code generates, it has the names, columns
//! and subresource kubectl users rely on, and its CEL rules compile, stay within the API
//! server's cost budget and accept or refuse what they should. The rules are evaluated by
//! kube's client-side CEL validator (kube-cel), which applies the schema's defaults first as
//! the API server does.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::{ScopeContext, Validator, analyze_rule, compile_schema};
use serde_json::{Value, json};
use std::path::Path;
use voipcheck::api::{ConditionType, crd, crd_yaml};

const CRD_FILE: &str = "crds/voipcheck.yaml";

#[test]
fn committed_crd_is_what_the_code_generates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(CRD_FILE);
    let generated = crd_yaml();
    if std::env::var_os("UPDATE_CRD").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{CRD_FILE} differs from the CRD the code generates; regenerate it with \
         `UPDATE_CRD=1 cargo test --test crd` (or `voipcheck crd > {CRD_FILE}`) and commit it"
    );
}

#[test]
fn the_yaml_reads_back_as_the_same_crd() {
    let text = crd_yaml();
    let read: CustomResourceDefinition = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(read, crd());
}

#[test]
fn names_scope_and_status_subresource() {
    let crd = crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("voipchecks.voipcheck.io")
    );
    assert_eq!(crd.spec.group, "voipcheck.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "VoipCheck");
    assert_eq!(crd.spec.names.short_names, Some(vec!["vc".to_owned()]));
    let [version] = crd.spec.versions.as_slice() else {
        panic!("one version expected");
    };
    assert_eq!(version.name, "v1alpha1");
    assert!(version.served && version.storage);
    let subresources = version.subresources.as_ref().unwrap();
    assert!(subresources.status.is_some(), "no status subresource");
}

#[test]
fn printer_columns_read_the_conditions() {
    let crd = crd();
    let columns = crd.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .unwrap();
    let shown: Vec<(&str, &str, i32)> = columns
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.json_path.as_str(),
                c.priority.unwrap_or(0),
            )
        })
        .collect();
    let condition = |t: ConditionType, field: &str| {
        format!(".status.conditions[?(@.type==\"{}\")].{field}", t.as_str())
    };
    let expected = [
        ("Target", ".spec.target.kind".to_owned(), 0),
        ("Service", ".spec.target.name".to_owned(), 1),
        ("Ready", condition(ConditionType::Ready, "status"), 0),
        (
            "Reportable",
            condition(ConditionType::HotlineReportable, "status"),
            0,
        ),
        ("Failing", ".status.failingLocations".to_owned(), 0),
        ("SIP", condition(ConditionType::SipRegistered, "reason"), 0),
        (
            "Qualify",
            condition(ConditionType::SipReachable, "reason"),
            1,
        ),
        ("Call", condition(ConditionType::CallPossible, "reason"), 0),
        ("Web", condition(ConditionType::WebReachable, "reason"), 0),
        ("STUN", condition(ConditionType::StunReachable, "reason"), 0),
        ("Age", ".metadata.creationTimestamp".to_owned(), 0),
    ];
    let expected: Vec<(&str, &str, i32)> = expected
        .iter()
        .map(|(name, path, priority)| (*name, path.as_str(), *priority))
        .collect();
    assert_eq!(shown, expected);
}

/// The openAPIV3Schema as JSON.
fn schema() -> Value {
    let crd = crd();
    let schema = crd.spec.versions[0].schema.as_ref().unwrap();
    serde_json::to_value(schema.open_api_v3_schema.as_ref().unwrap()).unwrap()
}

/// Every CEL rule with the schema node it sits on.
fn rules(node: &Value, out: &mut Vec<(String, Value)>) {
    if let Some(validations) = node
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for v in validations {
            out.push((v["rule"].as_str().unwrap().to_owned(), node.clone()));
        }
    }
    match node {
        Value::Object(map) => map.values().for_each(|v| rules(v, out)),
        Value::Array(items) => items.iter().for_each(|v| rules(v, out)),
        _ => {}
    }
}

#[test]
fn cel_rules_compile_and_stay_within_the_cost_budget() {
    let schema = schema();
    let compiled = compile_schema(&schema);
    assert!(
        !compiled.has_errors(),
        "{:?}",
        compiled.compilation_errors()
    );
    let mut found = Vec::new();
    rules(&schema, &mut found);
    let texts: Vec<&str> = found.iter().map(|(rule, _)| rule.as_str()).collect();
    assert_eq!(texts.len(), 24, "rules lost or added: {texts:#?}");
    for (rule, node) in &found {
        let warnings = analyze_rule(rule, &compile_schema(node), ScopeContext::CrdValidation);
        assert!(warnings.is_empty(), "{rule}: {warnings:?}");
    }
}

/// A VoipCheck using every probe, the shape a user writes (defaults left out).
fn full() -> Value {
    json!({
        "apiVersion": "voipcheck.io/v1alpha1",
        "kind": "VoipCheck",
        "metadata": { "name": "maxmuster-cloud", "namespace": "telephony" },
        "spec": {
            "target": { "kind": "Cloud", "name": "maxmuster.starface-cloud.com" },
            "sip": {
                "server": "sip:maxmuster.starface-cloud.com;transport=tls",
                "register": {
                    "username": "monitor",
                    "credentialsSecretRef": { "name": "maxmuster-sip", "key": "password" }
                },
                "options": {},
                "errorCodes": {}
            },
            "http": [ { "name": "web-ui", "url": "https://maxmuster.starface-cloud.com/" } ],
            "stun": { "servers": ["stun.sipgate.net:3478"], "natBinding": {} },
            "control": { "url": "https://example.org/" }
        }
    })
}

/// `full()` with each `(path, value)` applied: the field at `path` (a JSON pointer below
/// `spec`) set to `value`, or removed for `null`.
fn with(edits: &[(&str, Value)]) -> Value {
    let mut object = full();
    for (path, value) in edits {
        let pointer = format!("/spec{path}");
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = object.pointer_mut(parent).unwrap().as_object_mut().unwrap();
        if value.is_null() {
            parent.remove(key);
        } else {
            parent.insert(key.to_owned(), value.clone());
        }
    }
    object
}

/// CEL failures for `object`, as "fieldPath: message".
fn cel_errors(object: &Value) -> Vec<String> {
    match Validator::new().validate(&schema(), object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn cel_accepts_a_full_check_with_defaults_filled_in() {
    assert_eq!(cel_errors(&full()), Vec::<String>::new());
    let http_only = with(&[("/sip", Value::Null), ("/stun", Value::Null)]);
    assert_eq!(cel_errors(&http_only), Vec::<String>::new());
    let insecure_allowed = with(&[(
        "/http",
        json!([{ "name": "portal", "url": "http://portal.example.net/",
                 "basicAuthSecretRef": { "name": "login" }, "allowInsecureBasicAuth": true }]),
    )]);
    assert_eq!(cel_errors(&insecure_allowed), Vec::<String>::new());
    assert_eq!(cel_errors(&calling(json!({}))), Vec::<String>::new());
    let hairpin = calling(json!({
        "to": null,
        "callee": { "username": "monitor-b",
                    "credentialsSecretRef": { "name": "monitor-b", "key": "password" } },
        "media": { "advertise": "StunMapped", "codec": "PCMU" },
        "thresholds": { "mos": "4.05", "postDialDelay": "3s" }
    }));
    assert_eq!(cel_errors(&hairpin), Vec::<String>::new());
}

/// `full()` with a test call to an echo number (with audio) and an interval it fits in;
/// `call` is merged over that call, a `null` removing a field.
fn calling(call: Value) -> Value {
    let mut base = json!({ "to": "sip:echo@maxmuster.starface-cloud.com", "media": {} });
    for (key, value) in call.as_object().unwrap() {
        match value {
            Value::Null => base.as_object_mut().unwrap().remove(key),
            _ => base
                .as_object_mut()
                .unwrap()
                .insert(key.clone(), value.clone()),
        };
    }
    let mut object = with(&[("/interval", json!("1m"))]);
    object["spec"]["sip"]["call"] = base;
    object
}

#[test]
fn cel_refuses_what_no_single_field_can() {
    let no_probe = [
        ("/sip", Value::Null),
        ("/stun", Value::Null),
        ("/http", json!([])),
    ];
    let cases: Vec<(&str, Value, &str)> = vec![
        ("no probe", with(&no_probe), "at least one probe"),
        (
            "timeout not shorter than interval",
            with(&[("/timeout", json!("30s"))]),
            "timeout must be shorter than interval",
        ),
        (
            "timeout against the defaulted interval",
            with(&[("/timeout", json!("45s"))]),
            "timeout must be shorter than interval",
        ),
        (
            "interval 1s",
            with(&[("/interval", json!("1s"))]),
            "between 5s and 24h",
        ),
        (
            "interval 2d",
            with(&[("/interval", json!("48h"))]),
            "between 5s and 24h",
        ),
        (
            "TLS expiry warning of two years",
            with(&[("/tlsExpiryWarning", json!("17520h"))]),
            "between 1h and 8760h",
        ),
        (
            "timeout 50ms",
            with(&[("/timeout", json!("50ms"))]),
            "between 100ms and 5m",
        ),
        (
            "timeout under twice the lagged threshold",
            with(&[("/sip/options", json!({ "laggedThreshold": "6s" }))]),
            "at least twice sip.options.laggedThreshold",
        ),
        (
            "lagged threshold 1m",
            with(&[("/sip/options", json!({ "laggedThreshold": "1m" }))]),
            "between 100ms and 30s",
        ),
        (
            "error window shorter than interval",
            with(&[
                ("/sip/errorCodes", json!({ "window": "1m" })),
                ("/interval", json!("2m")),
            ]),
            "window must be at least one interval",
        ),
        (
            "keep-alive 3h",
            with(&[("/stun/natBinding", json!({ "keepaliveInterval": "3h" }))]),
            "between 1s and 2h",
        ),
        (
            "sips over udp",
            with(&[("/sip/server", json!("sips:pbx.example.com;transport=UDP"))]),
            "sips: requires TLS",
        ),
        (
            "sctp",
            with(&[("/sip/server", json!("sip:pbx.example.com;transport=sctp"))]),
            "transport must be udp, tcp or tls",
        ),
        (
            "sip with neither register nor options",
            with(&[("/sip", json!({ "server": "sip:pbx.example.com" }))]),
            "register, options or both",
        ),
        (
            "control with both",
            with(&[(
                "/control",
                json!({ "url": "https://example.org/", "stunServer": "stun.example.org" }),
            )]),
            "exactly one of url and stunServer",
        ),
        (
            "control with neither",
            with(&[("/control", json!({}))]),
            "exactly one",
        ),
        (
            "basic auth over plain http",
            with(&[(
                "/http",
                json!([{ "name": "portal", "url": "http://portal.example.net/",
                         "basicAuthSecretRef": { "name": "login" } }]),
            )]),
            "use https:// or set allowInsecureBasicAuth: true",
        ),
    ];
    let call_cases: Vec<(&str, Value, &str)> = vec![
        (
            "call with to and callee",
            calling(json!({ "callee": { "username": "b",
                "credentialsSecretRef": { "name": "b", "key": "password" } } })),
            "set exactly one of to and callee",
        ),
        (
            "call with neither",
            calling(json!({ "to": null })),
            "set exactly one of to and callee",
        ),
        (
            "call without register",
            {
                let mut object = calling(json!({}));
                object["spec"]["sip"]
                    .as_object_mut()
                    .unwrap()
                    .remove("register");
                object
            },
            "sip.call needs sip.register",
        ),
        (
            "media with RingingIsEnough",
            calling(json!({ "answer": "RingingIsEnough" })),
            "media needs answer: Required",
        ),
        (
            "StunMapped without STUN",
            {
                let mut object = calling(json!({ "media": { "advertise": "StunMapped" } }));
                object["spec"].as_object_mut().unwrap().remove("stun");
                object
            },
            "StunMapped needs spec.stun.servers",
        ),
        (
            "a call that does not fit the defaulted interval",
            {
                let mut object = calling(json!({}));
                object["spec"].as_object_mut().unwrap().remove("interval");
                object
            },
            "interval must be longer than a test call can take",
        ),
        (
            "a call of 10s + 20s + 30s + 3s in a minute",
            calling(json!({ "media": { "duration": "30s" } })),
            "interval must be longer than a test call can take",
        ),
        (
            "MOS 4.6",
            calling(json!({ "thresholds": { "mos": "4.6" } })),
            "must be a MOS between 1.0 and 4.5",
        ),
        (
            "ring timeout 5m",
            calling(json!({ "ringTimeout": "5m" })),
            "between 1s and 3m",
        ),
        (
            "media of 2m",
            calling(json!({ "media": { "duration": "2m" } })),
            "between 1s and 1m",
        ),
        (
            "post-dial delay of 2m",
            calling(json!({ "thresholds": { "postDialDelay": "2m" } })),
            "between 100ms and 1m",
        ),
    ];
    for (case, object, message) in cases.into_iter().chain(call_cases) {
        let errors = cel_errors(&object);
        assert!(
            errors.iter().any(|e| e.contains(message)),
            "{case}: expected …{message}…, got {errors:?}"
        );
    }
}
