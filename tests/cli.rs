//! The `voipcheck probe` command as a user runs it: exit statuses, output formats, and that a
//! password never shows.

mod support;

use std::process::{Command, Output};
use support::coturn::Coturn;
use support::kamailio::Kamailio;
use support::nginx::Nginx;

fn voipcheck(args: &[&str]) -> Output {
    voipcheck_with_password(args, None)
}

fn voipcheck_with_password(args: &[&str], env_password: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_voipcheck"));
    command.args(args).env_remove("VOIPCHECK_SIP_PASSWORD");
    if let Some(password) = env_password {
        command.env("VOIPCHECK_SIP_PASSWORD", password);
    }
    command.output().expect("run voipcheck")
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(output)))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn help_explains_each_probe() {
    let out = voipcheck(&["probe", "--help"]);
    assert!(out.status.success(), "{}", text(&out));
    for kind in ["sip-register", "sip-options", "stun", "http"] {
        assert!(text(&out).contains(kind), "probe --help lacks {kind}");
    }
    let out = voipcheck(&["probe", "sip-register", "--help"]);
    assert!(
        text(&out).contains("VOIPCHECK_SIP_PASSWORD"),
        "{}",
        text(&out)
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["probe"][..],
        &["probe", "http", "not a url"],
        &["probe", "sip-options", "sip:127.0.0.1", "--timeout", "soon"],
        &["probe", "stun"],
    ] {
        let out = voipcheck(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
}

#[test]
fn register_without_password_is_a_usage_error() {
    let out = voipcheck(&[
        "probe",
        "sip-register",
        "sip:127.0.0.1",
        "--username",
        "alice",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--password-file"), "{}", text(&out));
}

#[test]
fn unreadable_password_file_is_a_usage_error() {
    let out = voipcheck(&[
        "probe",
        "sip-register",
        "sip:127.0.0.1",
        "--username",
        "alice",
        "--password-file",
        "/nonexistent/password",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("/nonexistent/password"),
        "{}",
        text(&out)
    );
}

#[test]
fn sip_options_against_kamailio_prints_a_table_and_exits_0() {
    let kamailio = Kamailio::start();
    let uri = kamailio.uri("udp");
    let out = voipcheck(&["probe", "sip-options", &uri]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("result"), "{table}");
    assert!(table.contains("OK"), "{table}");
    assert!(table.contains("Reachable"), "{table}");
}

#[test]
fn sip_options_json_reports_state_and_rtt() {
    let kamailio = Kamailio::start();
    let uri = kamailio.uri("tcp");
    let out = voipcheck(&["probe", "sip-options", &uri, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["probe"], "sip-options");
    assert_eq!(report["success"], true);
    assert_eq!(report["outcome"]["state"], "Reachable", "{report:#}");
    let rtt = report["outcome"]["rttSeconds"]
        .as_f64()
        .expect("rttSeconds");
    assert!(rtt > 0.0 && rtt < 1.0, "{rtt}");
}

#[test]
fn sip_register_with_password_file_succeeds_and_never_prints_it() {
    let kamailio = Kamailio::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "alice-secret\n").unwrap();
    let uri = kamailio.uri("udp");
    for format in ["table", "json"] {
        let out = voipcheck(&[
            "probe",
            "sip-register",
            &uri,
            "--username",
            "alice",
            "--password-file",
            file.to_str().unwrap(),
            "--output",
            format,
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(!text(&out).contains("alice-secret"), "{}", text(&out));
    }
    assert!(kamailio.bindings("alice").is_empty(), "binding left behind");
}

#[test]
fn sip_register_with_wrong_password_from_env_exits_1_without_echoing_it() {
    let kamailio = Kamailio::start();
    let uri = kamailio.uri("tcp");
    let out = voipcheck_with_password(
        &[
            "probe",
            "sip-register",
            &uri,
            "--username",
            "alice",
            "--output",
            "json",
        ],
        Some("not-the-password"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).contains("not-the-password"), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["success"], false);
    assert_eq!(
        report["outcome"]["failure"]["class"], "AuthRejected",
        "{report:#}"
    );
}

#[test]
fn stun_against_coturn_reports_the_mapped_address() {
    let coturn = Coturn::start();
    let out = voipcheck(&["probe", "stun", &coturn.server(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json(&out);
    let mapped = &report["outcome"]["servers"][0]["binding"]["mapped"];
    assert!(
        mapped.as_str().is_some_and(|m| m.starts_with("127.0.0.1:")),
        "{report:#}"
    );
}

#[test]
fn http_probe_exit_status_follows_the_http_status() {
    let nginx = Nginx::start();
    let ok = voipcheck(&["probe", "http", nginx.http_url("/").as_str()]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let unavailable = voipcheck(&["probe", "http", nginx.http_url("/status/503").as_str()]);
    assert_eq!(unavailable.status.code(), Some(1), "{}", text(&unavailable));
    assert!(
        text(&unavailable).contains("HttpStatus"),
        "{}",
        text(&unavailable)
    );
}

#[test]
fn https_with_the_test_ca_reports_certificate_expiry() {
    let nginx = Nginx::start();
    let url = nginx.https_url("127.0.0.1", nginx.https_port, "/");
    let ca = nginx.ca.cert_path().to_str().unwrap().to_owned();
    let out = voipcheck(&[
        "probe",
        "http",
        url.as_str(),
        "--ca-file",
        &ca,
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        json(&out)["outcome"]["certNotAfter"].is_string(),
        "{}",
        text(&out)
    );
}

#[test]
fn crd_command_prints_the_committed_crd() {
    let out = voipcheck(&["crd"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/voipcheck.yaml"),
    )
    .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout) == committed,
        "crds/voipcheck.yaml differs from `voipcheck crd`: run `voipcheck crd > crds/voipcheck.yaml`"
    );
}
