//! The `voipcheck probe` command as a user runs it: exit statuses, output formats, and that a
//! password never shows.

mod support;

use std::process::{Command, Output};

fn voipcheck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_voipcheck"))
        .args(args)
        .env_remove("VOIPCHECK_SIP_PASSWORD")
        .output()
        .expect("run voipcheck")
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
