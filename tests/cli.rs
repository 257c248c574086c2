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
    command
        .args(args)
        .env_remove("VOIPCHECK_SIP_PASSWORD")
        .env_remove("VOIPCHECK_SIP_CALLEE_PASSWORD");
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
    for kind in ["sip-register", "sip-options", "sip-call", "stun", "http"] {
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
fn an_operator_location_or_identity_that_cannot_name_a_lease_is_refused_at_the_start() {
    for (args, says) in [
        (&["operator", "--location", "Office"][..], "DNS label"),
        (&["operator", "--location", "eu west"], "DNS label"),
        (
            &["operator", "--location", "office", "--identity", "Pod_1"],
            "voipcheck-operator-office-member-Pod_1",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_voipcheck"))
            .args(args)
            .env_remove("VOIPCHECK_LOCATION")
            .env_remove("POD_NAME")
            .output()
            .expect("run voipcheck");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
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

/// On loopback the mapped address is private: the probe answers, and the check's
/// `StunReachable` would still be False (`PrivateAddressOnly`, this location's problem), so
/// the command says so and exits 1 (it printed OK and exited 0 before issue 8).
#[test]
fn stun_against_coturn_reports_the_mapped_address_and_that_it_is_private() {
    let coturn = Coturn::start();
    let out = voipcheck(&["probe", "stun", &coturn.server(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    let mapped = &report["outcome"]["servers"][0]["binding"]["mapped"];
    assert!(
        mapped.as_str().is_some_and(|m| m.starts_with("127.0.0.1:")),
        "{report:#}"
    );
    assert_eq!(report["success"], false, "{report:#}");
    assert_eq!(report["condition"], "StunReachable", "{report:#}");
    assert_eq!(report["reason"], "PrivateAddressOnly", "{report:#}");
    assert_eq!(report["blame"], "Local", "{report:#}");
    let table = voipcheck(&["probe", "stun", &coturn.server()]);
    assert!(
        text(&table).contains("FAILED PrivateAddressOnly")
            && text(&table).contains("this location"),
        "{}",
        text(&table)
    );
}

/// Values the CRD refuses are refused by the command line too, by the same parser and with
/// the same bound, exit status 2, and never a panic (several exited 101 before issue 8).
#[test]
fn values_the_crd_refuses_exit_2_with_the_bound() {
    let password = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(password.path(), "pw").unwrap();
    let password = password.path().to_str().unwrap();
    let register = |extra: &[&'static str]| -> Vec<String> {
        let mut args = vec![
            "probe",
            "sip-register",
            "sip:127.0.0.1:9",
            "--username",
            "alice",
        ];
        args.extend_from_slice(extra);
        args.iter()
            .map(|a| a.to_string())
            .chain(["--password-file".into(), password.into()])
            .collect()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            args(&["probe", "--timeout", "0s", "http", "http://127.0.0.1:9/"]),
            "between 100ms and 5m",
        ),
        (
            args(&[
                "probe",
                "--timeout",
                "500000000000y",
                "http",
                "http://127.0.0.1:9/",
            ]),
            "not a duration",
        ),
        (
            args(&[
                "probe",
                "--timeout",
                "99999999999999999999s",
                "stun",
                "127.0.0.1:9",
            ]),
            "too long",
        ),
        (
            args(&["probe", "sip-options", "tel:+4930123456"]),
            "sip: or sips: URI",
        ),
        (
            args(&["probe", "sip-options", "sip:100:secret@127.0.0.1"]),
            "no password",
        ),
        (
            args(&[
                "probe",
                "sip-options",
                "sip:127.0.0.1",
                "--lagged-threshold",
                "1h",
            ]),
            "between",
        ),
        (register(&["--expires", "0"]), "between 60 and 86400"),
        (
            args(&[
                "probe",
                "http",
                "http://127.0.0.1:9/",
                "--expect-status",
                "999",
            ]),
            "between 100 and 599",
        ),
        (
            args(&["probe", "http", "http://user:secret@127.0.0.1:9/"]),
            "without user:password",
        ),
        (args(&["probe", "stun", "127.0.0.1:70000"]), "port"),
    ];
    for (args, expected) in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = voipcheck(&refs);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {said}");
        assert!(
            said.contains(expected),
            "{args:?} should say {expected:?}: {said}"
        );
        assert!(!said.contains("panicked"), "{args:?}: {said}");
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

/// Each failure says which condition the check would set, with which reason, and whose
/// problem it is: the provider's (a 503), the configuration's (a wrong password).
#[test]
fn failures_name_the_condition_the_reason_and_whose_problem_it_is() {
    let nginx = Nginx::start();
    let out = voipcheck(&[
        "probe",
        "http",
        nginx.http_url("/status/503").as_str(),
        "--output",
        "json",
    ]);
    let report = json(&out);
    assert_eq!(report["condition"], "WebReachable", "{report:#}");
    assert_eq!(report["reason"], "HttpStatus", "{report:#}");
    assert_eq!(report["blame"], "Provider", "{report:#}");
    let table = voipcheck(&["probe", "http", nginx.http_url("/status/503").as_str()]);
    assert!(
        text(&table).contains("WebReachable=False reason HttpStatus"),
        "{}",
        text(&table)
    );
    assert!(text(&table).contains("the provider's"), "{}", text(&table));

    let kamailio = Kamailio::start();
    let out = voipcheck_with_password(
        &[
            "probe",
            "sip-register",
            &kamailio.uri("udp"),
            "--username",
            "alice",
        ],
        Some("not-the-password"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("SipRegistered=False reason AuthRejected"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("the configuration's"), "{}", text(&out));
}

/// On loopback every mapping is private, so a probe that reaches its servers reads
/// `PrivateAddressOnly`; a dead server of two must read as that server's failure instead.
#[test]
fn stun_with_a_dead_server_fails_naming_it_unless_any_will_do() {
    let coturn = Coturn::start();
    let dead = format!("127.0.0.1:{}", support::free_port());
    let all = voipcheck(&["probe", "stun", &coturn.server(), &dead, "--output", "json"]);
    assert_eq!(all.status.code(), Some(1), "{}", text(&all));
    let report = json(&all);
    assert_eq!(report["reason"], "TransportError", "{report:#}");
    assert_eq!(
        report["outcome"]["failure"]["class"], "StunServerFailed",
        "{report:#}"
    );
    let message = report["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("STUN server {dead} failed (1 of 2 answered)")),
        "{report:#}"
    );
    let any = voipcheck(&[
        "probe",
        "stun",
        &coturn.server(),
        &dead,
        "--require",
        "any",
        "--output",
        "json",
    ]);
    assert_eq!(json(&any)["reason"], "PrivateAddressOnly", "{}", text(&any));
}

#[test]
fn stun_over_tls_with_the_flag_or_a_stuns_entry() {
    let coturn = Coturn::start();
    let ca = coturn.ca.cert_path().to_str().unwrap().to_owned();
    let tls_addr = coturn.tls_addr.to_string();
    let tls_server = coturn.tls_server();
    for args in [vec!["--tls", tls_addr.as_str()], vec![tls_server.as_str()]] {
        let mut all = vec!["probe", "stun", "--ca-file", &ca, "--output", "json"];
        all.extend(args);
        let out = voipcheck(&all);
        let report = json(&out);
        // Answered over TLS: the mapping (private on loopback) is what the verdict reads.
        assert_eq!(report["reason"], "PrivateAddressOnly", "{report:#}");
        assert_eq!(
            report["outcome"]["servers"][0]["transport"], "Tls",
            "{report:#}"
        );
    }
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

/// A SIPp UAS behind Kamailio's `echo` number for `calls` calls, echoing RTP (as tests/call.rs
/// starts it).
fn echo_uas(calls: u32) -> support::sipp::Sipp {
    let media_port = support::free_media_port().to_string();
    support::sipp::Sipp::start_with(
        "call-echo.xml",
        std::net::Ipv4Addr::LOCALHOST.into(),
        calls,
        &["-rtp_echo", "-mi", "127.0.0.1", "-mp", &media_port],
    )
}

/// `voipcheck probe sip-call` from alice (password from a file) to `number` at Kamailio.
fn sip_call(kamailio: &Kamailio, number: &str, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "alice-secret\n").unwrap();
    let uri = kamailio.uri("udp");
    let to = kamailio.number(number, "udp");
    let mut list = vec![
        "probe",
        "sip-call",
        &uri,
        "--username",
        "alice",
        "--password-file",
        file.to_str().unwrap(),
        "--to",
        &to,
        "--timeout",
        "5s",
        "--ring-timeout",
        "2s",
    ];
    list.extend_from_slice(extra);
    voipcheck(&list)
}

#[test]
fn sip_call_to_the_echo_number_is_answered_with_its_timings_and_never_prints_the_password() {
    let mut uas = echo_uas(1);
    let kamailio = Kamailio::builder().echo(uas.addr).start();
    let out = sip_call(&kamailio, "echo", &["--no-media", "-v"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    for line in [
        "CallPossible=True reason Answered",
        "response",
        "200 OK",
        "post-dial delay",
        "setup time",
        "hang-up",
        "BYE by the probe, answered 200 OK",
        "→  INVITE sip:echo@",
        "←  SIP/2.0 407",
    ] {
        assert!(shown.contains(line), "no {line:?} in\n{shown}");
    }
    assert!(!shown.contains("alice-secret"), "{shown}");
    uas.assert_scenario_completes(std::time::Duration::from_secs(5));
}

/// A rejected call exits 1 and says which condition, reason and side; the code is kept.
#[test]
fn sip_call_rejections_name_the_reason_and_whose_problem_it_is() {
    let kamailio = Kamailio::start();
    for (number, reason, blame) in [
        ("503", "Rejected", "Provider"),
        ("404", "Rejected", "Configuration"),
        ("403", "Forbidden", "Configuration"),
        ("488", "NotAcceptableHere", "Configuration"),
        ("ring", "NotAnswered", "Configuration"),
    ] {
        let out = sip_call(&kamailio, number, &["--no-media", "--output", "json"]);
        assert_eq!(out.status.code(), Some(1), "{number}: {}", text(&out));
        let report = json(&out);
        assert_eq!(report["condition"], "CallPossible", "{report:#}");
        assert_eq!(report["reason"], reason, "{number}: {report:#}");
        assert_eq!(report["blame"], blame, "{number}: {report:#}");
        if let Ok(code) = number.parse::<u16>() {
            assert_eq!(report["outcome"]["response"]["code"], code, "{report:#}");
        }
    }
}

#[test]
fn sip_call_that_only_has_to_ring_succeeds_at_the_180() {
    let kamailio = Kamailio::start();
    let out = sip_call(&kamailio, "ring", &["--answer", "ringing-is-enough"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("CallPossible=True reason Ringing"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("CANCEL by the probe"), "{}", text(&out));
}

#[test]
fn sip_call_usage_errors_exit_2_and_its_help_explains_it() {
    let common = [
        "probe",
        "sip-call",
        "sip:127.0.0.1:5060",
        "--username",
        "alice",
    ];
    for extra in [
        &["--to", "sip:echo@127.0.0.1", "--callee-username", "bob"][..],
        &[],
        &["--to", "https://example.org/"],
        &["--to", "sip:echo@127.0.0.1", "--min-mos", "4.6"],
        &["--to", "sip:echo@127.0.0.1", "--ring-timeout", "5m"],
        &["--to", "sip:echo@127.0.0.1", "--media-duration", "2m"],
        &[
            "--to",
            "sip:echo@127.0.0.1",
            "--no-media",
            "--codec",
            "pcmu",
        ],
        &["--to", "sip:echo@127.0.0.1", "--advertise-stun", "stun://x"],
    ] {
        let args: Vec<&str> = common.iter().chain(extra).copied().collect();
        let out = voipcheck_with_password(&args, Some("alice-secret"));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
    // The callee's password is needed, and never taken from the command line.
    let out = voipcheck_with_password(
        &[&common[..], &["--callee-username", "bob"]].concat(),
        Some("alice-secret"),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("VOIPCHECK_SIP_CALLEE_PASSWORD"),
        "{}",
        text(&out)
    );
    let help = text(&voipcheck(&["probe", "sip-call", "--help"]));
    for word in [
        "--to",
        "--callee-username",
        "--answer",
        "--ring-timeout",
        "--media-duration",
        "--codec",
        "--no-media",
        "--advertise-stun",
        "--min-mos",
        "post-dial delay",
        "MOS",
        "VOIPCHECK_SIP_CALLEE_PASSWORD",
    ] {
        assert!(help.contains(word), "sip-call --help lacks {word}:\n{help}");
    }
}

/// With audio (the default): a second of RTP to the echo and back, per direction what arrived
/// and the MOS, which on loopback is the E-model's best for G.711.
#[test]
fn sip_call_with_audio_prints_what_arrived_and_the_mos() {
    let mut uas = echo_uas(2);
    let kamailio = Kamailio::builder().echo(uas.addr).start();
    let out = sip_call(&kamailio, "echo", &["--media-duration", "1s"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    for line in [
        "codec",
        "PCMA",
        "audio incoming",
        "0.0% lost",
        "round trip",
        "MOS",
    ] {
        assert!(shown.contains(line), "no {line:?} in\n{shown}");
    }
    let out = sip_call(
        &kamailio,
        "echo",
        &["--media-duration", "1s", "--output", "json"],
    );
    let report = json(&out);
    let media = &report["outcome"]["media"];
    assert_eq!(media["incoming"]["lost"], 0, "{report:#}");
    assert!(
        media["incoming"]["mos"].as_f64().unwrap() >= 4.0,
        "{report:#}"
    );
    assert_eq!(report["condition"], "CallPossible", "{report:#}");
    uas.assert_scenario_completes(std::time::Duration::from_secs(5));
}

/// The hairpin call: alice calls bob, whom the probe registers and answers itself (bob's
/// password from the environment), with audio measured both ways.
#[test]
fn sip_call_to_its_own_callee_measures_both_directions() {
    let kamailio = Kamailio::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "alice-secret\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_voipcheck"))
        .args([
            "probe",
            "sip-call",
            &kamailio.uri("udp"),
            "--username",
            "alice",
        ])
        .args(["--password-file", file.to_str().unwrap()])
        .args([
            "--callee-username",
            "bob",
            "--media-duration",
            "1s",
            "--timeout",
            "5s",
        ])
        .env_remove("VOIPCHECK_SIP_PASSWORD")
        .env("VOIPCHECK_SIP_CALLEE_PASSWORD", "bob-secret")
        .output()
        .unwrap();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    for line in ["callee reached", "audio outgoing", "audio incoming", "MOS"] {
        assert!(shown.contains(line), "no {line:?} in\n{shown}");
    }
    assert!(
        !shown.contains("bob-secret") && !shown.contains("alice-secret"),
        "{shown}"
    );
    assert!(
        kamailio.bindings("bob").is_empty(),
        "the callee's binding left behind"
    );
}
