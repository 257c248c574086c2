//! The Helm chart (charts/voipcheck), rendered by Helm's own engine: Helm's Go SDK as a library
//! (the PyPI wheel helm-python-sdk, which scripts/test installs; Debian has no helm package). The
//! tests render the chart as `helm template` would, with values.schema.json enforced, and check
//! the objects: a hardened Deployment whose arguments the real `voipcheck operator` accepts,
//! least-privilege RBAC in both watch modes, the CRD as a template (upgraded by `helm upgrade`,
//! kept on uninstall), a disruption budget and anti-affinity for several replicas, the optional
//! monitoring objects carrying the very rules and dashboard of alerts/ and dashboards/, and a
//! schema that refuses unsafe values. Without Helm: every template's `.Values` path exists and
//! the chart's CRD is crds/'s.

use regex::Regex;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const CHART: &str = "charts/voipcheck";
/// The chart's copy of crds/voipcheck.yaml, which templates/crd.yaml renders.
const CHART_CRD: &str = "charts/voipcheck/files/voipcheck.crd.yaml";
const RELEASE: &str = "prod";
const NAMESPACE: &str = "monitoring";
/// The uid of distroless' nonroot user, which the Dockerfile sets too.
const NONROOT: u64 = 65532;

/// Renders (or lints) a chart with Helm's engine; answers JSON on stdout.
const HELM: &str = r#"
import json, sys
import helm_python as helm
request = json.load(sys.stdin)
try:
    if request["action"] == "lint":
        json.dump({"lint": helm.lint(request["chart"], strict=True, kube_version="v1.30.0")}, sys.stdout)
    else:
        with helm.Chart.load(request["chart"]) as chart:
            manifests = chart.render(request["values"], name=request["release"],
                                     namespace=request["namespace"],
                                     is_install=not request["upgrade"],
                                     is_upgrade=request["upgrade"])
        json.dump({"manifests": manifests}, sys.stdout)
except helm.HelmError as error:
    json.dump({"error": str(error)}, sys.stdout)
"#;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn helm(request: Value) -> Value {
    let mut child = Command::new("python3")
        .args(["-c", HELM])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'helm_python'"),
        "Helm's engine is not installed: run scripts/test (it installs helm-python-sdk from PyPI)"
    );
    assert!(output.status.success(), "{stderr}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// What `helm install` would apply, or Helm's error (schema violations included).
fn try_render(values: Value) -> Result<Vec<Value>, String> {
    try_render_for(RELEASE, values, false)
}

/// What `helm install` (or, with `upgrade`, `helm upgrade`) would apply. Helm applies the
/// chart's crds/ directory on install only and never renders it: these are the templates.
fn try_render_for(release: &str, values: Value, upgrade: bool) -> Result<Vec<Value>, String> {
    let answer = helm(json!({
        "action": "render",
        "chart": repo(CHART),
        "values": values,
        "release": release,
        "namespace": NAMESPACE,
        "upgrade": upgrade,
    }));
    if let Some(error) = answer.get("error") {
        return Err(error.as_str().unwrap().to_owned());
    }
    let mut objects = Vec::new();
    for (file, text) in answer["manifests"].as_object().unwrap() {
        if file.ends_with("NOTES.txt") {
            continue;
        }
        let documents: Vec<Value> = serde_saphyr::from_multiple(text.as_str().unwrap())
            .unwrap_or_else(|e| panic!("{file} renders to invalid YAML: {e}\n{text}"));
        objects.extend(documents.into_iter().filter(|d| !d.is_null()));
    }
    Ok(objects)
}

fn render(values: Value) -> Vec<Value> {
    try_render(values).unwrap_or_else(|e| panic!("helm render failed: {e}"))
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, got {found:#?}");
    found[0]
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap()).collect())
        .unwrap_or_default()
}

fn yaml_file(path: &str) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(repo(path)).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn helm_lint_finds_nothing_to_warn_about() {
    let report = helm(json!({ "action": "lint", "chart": repo(CHART) }))["lint"].clone();
    assert_eq!(report["errors"], json!([]), "{report:#}");
    for message in report["messages"].as_array().unwrap() {
        // 1 is info (e.g. "icon is recommended"); 2 warning, 3 error.
        assert!(message["severity"].as_u64() < Some(2), "{message}");
    }
}

#[test]
fn the_deployment_runs_the_operator_hardened() {
    let objects = render(json!({}));
    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["metadata"]["namespace"], NAMESPACE);
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];

    // Non-root, read-only, no capabilities, no escalation, the runtime's seccomp profile.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], NONROOT);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    assert!(security["capabilities"].get("add").is_none());
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());

    // A writable /tmp on the read-only root.
    let tmp = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/tmp")
        .expect("/tmp mounted");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == tmp["name"])
        .unwrap();
    assert!(volume["emptyDir"].is_object(), "{volume}");

    // Probes on the metrics port, where --metrics-addr serves them.
    let port = &container["ports"][0];
    assert_eq!(port["name"], "metrics");
    assert_eq!(port["containerPort"], 8080);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "metrics");
    }
    let args = strings(&container["args"]);
    assert!(args.contains(&"--metrics-addr=0.0.0.0:8080"), "{args:?}");

    // POD_NAME and POD_NAMESPACE from the downward API (the Lease's identity and namespace).
    let env = container["env"].as_array().unwrap();
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = env.iter().find(|e| e["name"] == name).expect(name);
        assert_eq!(var["valueFrom"]["fieldRef"]["fieldPath"], field);
    }
    assert_eq!(
        pod["serviceAccountName"],
        one(&objects, "ServiceAccount")["metadata"]["name"]
    );
}

/// The arguments the chart renders from every value are flags `voipcheck operator` knows, with
/// values it accepts: clap checks them all before it gets to `--help`.
#[test]
fn the_operator_accepts_the_rendered_arguments() {
    let objects = render(json!({
        "location": "fra-1",
        "allowTargets": ["*.starface-cloud.com", "10.0.0.0/8"],
        "watchNamespaces": ["telephony", "office"],
        "maxConcurrentProbes": 64,
        "metricsPort": 9100,
        "logFormat": "text",
    }));
    let container = &one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&container["args"]);
    assert_eq!(args[0], "operator");
    for expected in [
        "--location=fra-1",
        "--aggregate=true",
        "--allow-target=*.starface-cloud.com",
        "--allow-target=10.0.0.0/8",
        "--namespace=telephony",
        "--namespace=office",
        "--max-concurrent-probes=64",
        "--metrics-addr=0.0.0.0:9100",
        "--log-format=text",
        "--lease-name=prod-voipcheck",
    ] {
        assert!(args.contains(&expected), "{expected} not in {args:?}");
    }
    assert_eq!(container["ports"][0]["containerPort"], 9100);
    let help = Command::new(env!("CARGO_BIN_EXE_voipcheck"))
        .args(&args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        help.status.success(),
        "voipcheck {} --help: {}",
        args.join(" "),
        String::from_utf8_lossy(&help.stderr)
    );
}

/// One RBAC rule, normalised for comparison.
type Rule = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);

fn rules(role: &Value) -> BTreeSet<Rule> {
    let sorted = |v: &Value| {
        let mut s: Vec<String> = strings(v).into_iter().map(str::to_owned).collect();
        s.sort();
        s
    };
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                sorted(&r["apiGroups"]),
                sorted(&r["resources"]),
                sorted(&r["verbs"]),
                sorted(&r["resourceNames"]),
            )
        })
        .collect()
}

fn rule(group: &str, resource: &str, verbs: &[&str], names: &[&str]) -> Rule {
    let owned = |s: &[&str]| {
        let mut v: Vec<String> = s.iter().map(|s| (*s).to_owned()).collect();
        v.sort();
        v
    };
    (
        vec![group.to_owned()],
        vec![resource.to_owned()],
        owned(verbs),
        owned(names),
    )
}

/// What the operator does, and nothing more (the after-help of `voipcheck operator`): read
/// VoipChecks, apply their status, read Secrets, publish Events.
fn watch_rules() -> BTreeSet<Rule> {
    BTreeSet::from([
        rule(
            "voipcheck.io",
            "voipchecks",
            &["get", "list", "watch", "patch"],
            &[],
        ),
        rule("voipcheck.io", "voipchecks/status", &["patch"], &[]),
        rule("", "secrets", &["get", "list", "watch"], &[]),
        rule("events.k8s.io", "events", &["create", "patch"], &[]),
    ])
}

/// The shard and member Leases: listed, created, renewed by updates that carry their
/// resourceVersion (a late renewal fails instead of overwriting another holder), and the member
/// Leases of replicas long gone deleted; their names hold identities, so no rule names them.
fn lease_rules() -> BTreeSet<Rule> {
    BTreeSet::from([rule(
        "coordination.k8s.io",
        "leases",
        &["get", "list", "create", "update", "delete"],
        &[],
    )])
}

fn bound_to_the_operator(binding: &Value, objects: &[Value]) {
    let account = one(objects, "ServiceAccount");
    assert_eq!(
        binding["subjects"],
        json!([{
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": NAMESPACE,
        }])
    );
}

#[test]
fn rbac_is_cluster_wide_by_default_and_least_privilege() {
    let objects = render(json!({}));
    let cluster_role = one(&objects, "ClusterRole");
    assert_eq!(rules(cluster_role), watch_rules());
    let binding = one(&objects, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], cluster_role["metadata"]["name"]);
    bound_to_the_operator(binding, &objects);

    let role = one(&objects, "Role");
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(rules(role), lease_rules());
    let binding = one(&objects, "RoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    bound_to_the_operator(binding, &objects);
    // The Lease the rules name is the one the operator is told to use.
    let args =
        strings(&one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(args.contains(&"--lease-name=prod-voipcheck"), "{args:?}");
}

/// `secretAccess: get` (issue 8): Secrets by name only, no list or watch, and the operator is
/// told not to watch them.
#[test]
fn get_only_secret_access_grants_get_on_secrets_and_nothing_else() {
    for values in [
        json!({ "secretAccess": "get" }),
        json!({ "secretAccess": "get", "watchNamespaces": ["telephony"] }),
    ] {
        let objects = render(values.clone());
        let role = of_kind(&objects, "ClusterRole")
            .into_iter()
            .chain(of_kind(&objects, "Role"))
            .find(|role| {
                rules(role)
                    .iter()
                    .any(|(_, resources, _, _)| resources[0] == "secrets")
            })
            .unwrap_or_else(|| panic!("no role for Secrets with {values}"));
        let mut expected = watch_rules();
        expected.remove(&rule("", "secrets", &["get", "list", "watch"], &[]));
        expected.insert(rule("", "secrets", &["get"], &[]));
        assert_eq!(rules(role), expected, "{values}");
        let args = strings(
            &one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"],
        );
        assert!(args.contains(&"--secret-access=get"), "{args:?}");
    }
    let defaults = render(json!({}));
    let args =
        strings(&one(&defaults, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(args.contains(&"--secret-access=watch"), "{args:?}");
}

#[test]
fn watched_namespaces_get_roles_and_no_cluster_role() {
    let objects = render(json!({ "watchNamespaces": ["telephony", "office"] }));
    assert!(of_kind(&objects, "ClusterRole").is_empty());
    assert!(of_kind(&objects, "ClusterRoleBinding").is_empty());
    let roles = of_kind(&objects, "Role");
    let bindings = of_kind(&objects, "RoleBinding");
    for namespace in ["telephony", "office"] {
        let role = roles
            .iter()
            .find(|r| r["metadata"]["namespace"] == namespace)
            .unwrap_or_else(|| panic!("no Role in {namespace}"));
        assert_eq!(rules(role), watch_rules());
        let binding = bindings
            .iter()
            .find(|b| b["metadata"]["namespace"] == namespace)
            .unwrap_or_else(|| panic!("no RoleBinding in {namespace}"));
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        bound_to_the_operator(binding, &objects);
    }
    let lease = roles
        .iter()
        .find(|r| r["metadata"]["namespace"] == NAMESPACE)
        .expect("the Lease's Role in the release namespace");
    assert_eq!(rules(lease), lease_rules());
    assert_eq!(roles.len(), 3);
    assert_eq!(bindings.len(), 3);
}

#[test]
fn monitoring_objects_are_off_by_default() {
    let objects = render(json!({}));
    for kind in ["ServiceMonitor", "PrometheusRule", "ConfigMap"] {
        assert!(of_kind(&objects, kind).is_empty(), "{kind} rendered");
    }
    let service = one(&objects, "Service");
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
}

#[test]
fn service_monitor_scrapes_the_service_and_keeps_the_checks_namespaces() {
    let objects = render(json!({
        "serviceMonitor": { "enabled": true, "labels": { "release": "kube-prometheus-stack" } }
    }));
    let monitor = one(&objects, "ServiceMonitor");
    let service = one(&objects, "Service");
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][key], value, "{key}");
    }
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(endpoint["path"], "/metrics");
    // The VoipCheck's namespace label must not become exported_namespace.
    assert_eq!(endpoint["honorLabels"], true);
    // Every pod is an endpoint of the Service, so every replica is a scrape target (each
    // exports its own shards' checks).
    let deployment = one(&objects, "Deployment");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[key], value, "{key}");
    }
    assert_ne!(service["spec"]["clusterIP"], "None");
    // job="voipcheck" for VoipCheckOperatorDown, whatever the release is called.
    let job_label = monitor["spec"]["jobLabel"].as_str().unwrap();
    assert_eq!(service["metadata"]["labels"][job_label], "voipcheck");
}

/// A location per release: its `location`, whether it aggregates, and Lease names of its own.
/// The default release aggregates; exactly one per cluster should.
#[test]
fn each_location_is_a_release_of_its_own_and_one_aggregates() {
    let args = |objects: &[Value]| -> Vec<String> {
        let container = &one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
        strings(&container["args"])
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    let office = args(&render(json!({ "location": "office" })));
    for expected in ["--location=office", "--aggregate=true"] {
        assert!(office.contains(&expected.to_owned()), "{office:?}");
    }

    let other = try_render_for(
        "vc-eu-west",
        json!({ "location": "eu-west", "aggregate": false, "nodeSelector": { "network": "eu-west" } }),
        false,
    )
    .unwrap();
    let eu_west = args(&other);
    for expected in ["--location=eu-west", "--aggregate=false"] {
        assert!(eu_west.contains(&expected.to_owned()), "{eu_west:?}");
    }
    let lease = |args: &[String]| {
        args.iter()
            .find(|a| a.starts_with("--lease-name="))
            .cloned()
            .unwrap()
    };
    assert_eq!(lease(&office), "--lease-name=prod-voipcheck");
    assert_eq!(lease(&eu_west), "--lease-name=vc-eu-west-voipcheck");
    let pod = &one(&other, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"], json!({ "network": "eu-west" }));
}

#[test]
fn prometheus_rule_carries_the_alert_rules_unrendered() {
    let objects = render(json!({ "prometheusRule": { "enabled": true } }));
    let rule = one(&objects, "PrometheusRule");
    // The same groups as the file Prometheus loads, Go templates of the annotations intact.
    assert_eq!(rule["spec"], yaml_file("alerts/voipcheck.rules.yaml"));
}

#[test]
fn dashboard_config_map_carries_the_dashboard_for_the_sidecar() {
    let objects = render(json!({
        "dashboard": {
            "enabled": true,
            "namespace": "grafana",
            "annotations": { "grafana_folder": "Telephony" },
        }
    }));
    let map = one(&objects, "ConfigMap");
    assert_eq!(map["metadata"]["namespace"], "grafana");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        map["metadata"]["annotations"]["grafana_folder"],
        "Telephony"
    );
    let source = std::fs::read_to_string(repo("dashboards/voipcheck.json")).unwrap();
    assert_eq!(
        map["data"]["voipcheck.json"].as_str().unwrap(),
        source.trim_end()
    );
}

#[test]
fn the_schema_refuses_unsafe_or_mistyped_values() {
    for (values, complaint) in [
        (json!({ "location": "two words" }), "/location"),
        // Lease names carry it: a DNS label.
        (json!({ "location": "Office" }), "/location"),
        (json!({ "aggregate": "no" }), "/aggregate"),
        (json!({ "locaton": "fra" }), "locaton"),
        (json!({ "logFormat": "xml" }), "/logFormat"),
        (json!({ "maxConcurrentProbes": 0 }), "/maxConcurrentProbes"),
        (
            json!({ "watchNamespaces": ["Not_A_Namespace"] }),
            "/watchNamespaces/0",
        ),
        (
            json!({ "securityContext": { "readOnlyRootFilesystem": false, "allowPrivilegeEscalation": false } }),
            "/securityContext/readOnlyRootFilesystem",
        ),
        (
            json!({ "podSecurityContext": { "runAsNonRoot": false } }),
            "/podSecurityContext/runAsNonRoot",
        ),
        (
            json!({ "podSecurityContext": { "runAsUser": 0 } }),
            "/podSecurityContext/runAsUser",
        ),
        (
            json!({ "serviceMonitor": { "interval": "often" } }),
            "/serviceMonitor/interval",
        ),
        (
            json!({ "terminationGracePeriodSeconds": 30 }),
            "/terminationGracePeriodSeconds",
        ),
        (json!({ "crds": { "install": "yes" } }), "/crds/install"),
    ] {
        let error = try_render(values.clone()).expect_err(&format!("{values} was accepted"));
        assert!(error.contains(complaint), "{values}: {error}");
    }
}

#[test]
fn every_rendered_object_is_named_and_placed() {
    let objects = render(json!({
        "replicaCount": 2,
        "serviceMonitor": { "enabled": true },
        "prometheusRule": { "enabled": true },
        "dashboard": { "enabled": true },
    }));
    assert_eq!(of_kind(&objects, "PodDisruptionBudget").len(), 1);
    let cluster_scoped = [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
    ];
    for object in &objects {
        let kind = object["kind"].as_str().expect("kind");
        assert!(object["apiVersion"].is_string(), "{object}");
        let name = object["metadata"]["name"].as_str().expect("name");
        assert!(name.len() <= 63, "{kind} {name}");
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/instance"],
            RELEASE
        );
        if cluster_scoped.contains(&kind) {
            assert!(object["metadata"].get("namespace").is_none(), "{kind}");
        } else {
            assert_eq!(object["metadata"]["namespace"], NAMESPACE, "{kind} {name}");
        }
    }
}

/// A misspelt `.Values.x` renders as empty instead of failing: every path a template reads
/// must exist in values.yaml.
#[test]
fn templates_read_only_values_that_exist() {
    let values = yaml_file(&format!("{CHART}/values.yaml"));
    let path = Regex::new(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)").unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(repo(&format!("{CHART}/templates"))).unwrap() {
        let file = entry.unwrap().path();
        let text = std::fs::read_to_string(&file).unwrap();
        for m in path.captures_iter(&text) {
            let mut node = &values;
            for key in m[1].trim_start_matches('.').split('.') {
                node = node.get(key).unwrap_or_else(|| {
                    panic!("{}: .Values{} is not in values.yaml", file.display(), &m[1])
                });
            }
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} .Values references found");
}

#[test]
fn the_chart_files_parse_and_its_crd_is_the_generated_one() {
    for file in ["Chart.yaml", "values.yaml", "files/voipcheck.rules.yaml"] {
        yaml_file(&format!("{CHART}/{file}"));
    }
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo(&format!("{CHART}/values.schema.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(schema["type"], "object");
    let chart = yaml_file(&format!("{CHART}/Chart.yaml"));
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "voipcheck");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));

    let source = std::fs::read(repo("crds/voipcheck.yaml")).unwrap();
    let copy_path = repo(CHART_CRD);
    if std::env::var_os("UPDATE_CHART_FILES").is_some() {
        std::fs::write(&copy_path, &source).unwrap();
    }
    assert!(
        std::fs::read(&copy_path).unwrap_or_default() == source,
        "{CHART_CRD} differs from crds/voipcheck.yaml: copy it \
         (UPDATE_CHART_FILES=1 cargo test --test chart) and commit both"
    );
    // Helm's crds/ directory is applied on the first install only, and would clash with the
    // template's CRD.
    assert!(
        !repo(&format!("{CHART}/crds")).exists(),
        "{CHART}/crds/: the CRD is a template"
    );
}

/// `value` with every number as a float: Helm's toYaml writes the CRD's `maximum: 599.0` as
/// `599`, which the API server reads as the same JSON number.
fn numbers_as_floats(value: Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_floats).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, numbers_as_floats(v)))
                .collect(),
        ),
        other => other,
    }
}

/// `helm upgrade` upgrades the CRD (a template, unlike the crds/ directory Helm installs once),
/// uninstalling keeps it (deleting a CRD deletes every VoipCheck), and it is the one `voipcheck
/// crd` generates, with the release's labels added.
#[test]
fn the_crd_is_installed_and_upgraded_with_the_chart_and_kept_on_uninstall() {
    let generated = numbers_as_floats(yaml_file("crds/voipcheck.yaml"));
    for upgrade in [false, true] {
        let objects = try_render_for(RELEASE, json!({}), upgrade).unwrap();
        let mut crd = one(&objects, "CustomResourceDefinition").clone();
        let metadata = crd["metadata"].as_object_mut().unwrap();
        assert_eq!(
            metadata.remove("annotations"),
            Some(json!({ "helm.sh/resource-policy": "keep" })),
            "upgrade: {upgrade}"
        );
        let labels = metadata.remove("labels").unwrap();
        assert_eq!(labels["app.kubernetes.io/instance"], RELEASE);
        assert_eq!(numbers_as_floats(crd), generated, "upgrade: {upgrade}");
    }
    // Not two empty objects.
    assert_eq!(generated["spec"]["names"]["kind"], "VoipCheck");

    let objects = render(json!({ "crds": { "install": false } }));
    assert!(of_kind(&objects, "CustomResourceDefinition").is_empty());
}

/// The pod gets longer to stop than the operator's drain takes (in-flight runs, the status
/// writer's flush and the Lease's release are bounded to about 60 s).
#[test]
fn the_pod_may_drain_before_it_is_killed() {
    let grace = |values: Value| {
        render(values)
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .unwrap()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .clone()
    };
    assert_eq!(grace(json!({})), 90);
    assert_eq!(grace(json!({ "terminationGracePeriodSeconds": 120 })), 120);
}

/// Replicas share the shards: spread over nodes (preferred, so a one-node cluster still runs
/// them; one node lost moves only its replica's shards) and evicted one at a time. One replica
/// gets neither: a budget would only block node drains.
#[test]
fn several_replicas_get_a_disruption_budget_and_spread_over_nodes() {
    let objects = render(json!({}));
    assert!(of_kind(&objects, "PodDisruptionBudget").is_empty());
    let pod = &one(&objects, "Deployment")["spec"]["template"]["spec"];
    assert!(pod.get("affinity").is_none(), "{pod}");

    let objects = render(json!({ "replicaCount": 2 }));
    let deployment = one(&objects, "Deployment");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let budget = one(&objects, "PodDisruptionBudget");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    let selector = budget["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    assert_eq!(
        selector,
        deployment["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
    );
    for (key, value) in selector {
        assert_eq!(&pod_labels[key], value, "{key}");
    }
    let preferred = &deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"];
    assert_eq!(preferred.as_array().unwrap().len(), 1, "{preferred}");
    let term = &preferred[0]["podAffinityTerm"];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(term["labelSelector"]["matchLabels"], json!(selector));

    // The operator's own affinity stays; its own podAntiAffinity replaces the chart's.
    let zone = json!({ "requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{ "matchExpressions": [
            { "key": "topology.kubernetes.io/zone", "operator": "In", "values": ["fra-1"] }
        ]}]
    }});
    let objects = render(json!({ "replicaCount": 3, "affinity": { "nodeAffinity": zone } }));
    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        one(&objects, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );
    let affinity = &deployment["spec"]["template"]["spec"]["affinity"];
    assert_eq!(affinity["nodeAffinity"], zone);
    assert!(affinity["podAntiAffinity"].is_object(), "{affinity}");
    let own = json!({ "requiredDuringSchedulingIgnoredDuringExecution": [{
        "topologyKey": "topology.kubernetes.io/zone",
        "labelSelector": { "matchLabels": { "app.kubernetes.io/name": "voipcheck" } }
    }]});
    let objects = render(json!({ "replicaCount": 2, "affinity": { "podAntiAffinity": own } }));
    let affinity = &one(&objects, "Deployment")["spec"]["template"]["spec"]["affinity"];
    assert_eq!(affinity["podAntiAffinity"], own);
}
