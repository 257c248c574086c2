//! The HTTP probe against a real nginx (tests/peers/nginx.conf) on loopback: phases, TLS
//! verification and expiry, status and body expectations, redirects, the body limit, and the
//! failures before any HTTP (refused connection, unknown name).

mod support;

use std::time::{Duration, Instant};
use support::nghttpd::{self, Nghttpd};
use support::nginx::{self, Nginx};
use voipcheck::probe::dns::Dns;
use voipcheck::probe::http::{self, ContentCoding, ExpectStatus, HttpConfig, HttpOutcome};
use voipcheck::probe::tls::CaSource;
use voipcheck::probe::{DnsErrorKind, Failure, Outcome, TlsFailure};

/// The system resolver, or where the machine has none, one that asks a closed port (IP literals
/// need no resolver at all).
fn dns() -> Dns {
    Dns::system()
        .unwrap_or_else(|_| Dns::with_nameserver(([127, 0, 0, 1], support::free_port()).into()))
}

fn config(url: url::Url) -> HttpConfig {
    HttpConfig {
        timeout: Duration::from_secs(5),
        ..HttpConfig::new(url)
    }
}

async fn run(cfg: &HttpConfig) -> HttpOutcome {
    http::probe(&dns(), cfg)
        .await
        .expect("a valid configuration")
}

fn assert_success(outcome: &HttpOutcome, nginx: &Nginx) {
    assert!(
        outcome.failure.is_none(),
        "probe failed: {outcome:#?}\nnginx log:\n{}",
        nginx.log_text()
    );
}

#[tokio::test]
async fn http_200_with_body_match_measures_every_phase() {
    let nginx = Nginx::start();
    let mut cfg = config(nginx.http_url("/"));
    cfg.body_contains = Some("STARFACE".into());
    cfg.body_regex = Some(regex::Regex::new(r"<title>STARFACE \w+</title>").unwrap());
    let outcome = run(&cfg).await;
    assert_success(&outcome, &nginx);
    assert_eq!(outcome.status, Some(200));
    assert_eq!(outcome.http_version.as_deref(), Some("HTTP/1.1"));
    assert!(
        outcome
            .server
            .as_deref()
            .is_some_and(|s| s.starts_with("nginx/")),
        "{outcome:?}"
    );
    assert_eq!(outcome.peer, Some(([127, 0, 0, 1], nginx.http_port).into()));
    let phases = &outcome.phases;
    for (name, phase) in phases.named() {
        if name == "tls" {
            assert_eq!(phase, None, "no TLS on plain HTTP");
        } else {
            let d = phase.unwrap_or_else(|| panic!("{name} not measured: {outcome:?}"));
            assert!(d < outcome.duration, "{name} longer than the whole probe");
        }
    }
    let sum: Duration = phases.named().iter().filter_map(|(_, d)| *d).sum();
    assert!(sum <= outcome.duration, "{sum:?} > {:?}", outcome.duration);
    assert_eq!(outcome.cert_not_after, None);
    assert!(
        outcome.body_bytes > 60 && !outcome.body_truncated,
        "{outcome:?}"
    );
    eprintln!(
        "loopback nginx, HTTP: {:?} total {:?}",
        phases, outcome.duration
    );
}

#[tokio::test]
async fn https_with_the_test_ca_reports_the_leaf_expiry() {
    let nginx = Nginx::start();
    let mut cfg = config(nginx.https_url("127.0.0.1", nginx.https_port, "/"));
    cfg.ca = Some(CaSource::File(nginx.ca.cert_path().to_owned()));
    cfg.body_contains = Some("STARFACE".into());
    let outcome = run(&cfg).await;
    assert_success(&outcome, &nginx);
    assert_eq!(outcome.cert_not_after, Some(nginx.valid_not_after));
    assert!(outcome.phases.tls.is_some_and(|d| d > Duration::ZERO));
    let json = serde_json::to_value(&outcome).unwrap();
    let expiry = humantime::format_rfc3339_seconds(nginx.valid_not_after).to_string();
    assert_eq!(json["certNotAfter"], expiry.as_str());
    assert!(
        json["phases"]["tlsSeconds"].as_f64().unwrap() > 0.0,
        "{json}"
    );
    assert!(
        outcome
            .facts()
            .iter()
            .any(|(k, v)| *k == "certificate expires" && *v == expiry),
        "{:?}",
        outcome.facts()
    );
    eprintln!(
        "loopback nginx, HTTPS: {:?} total {:?}",
        outcome.phases, outcome.duration
    );
}

#[tokio::test]
async fn https_by_name_resolves_localhost() {
    let nginx = Nginx::start();
    let mut cfg = config(nginx.https_url("localhost", nginx.https_port, "/"));
    cfg.ca = Some(CaSource::File(nginx.ca.cert_path().to_owned()));
    let outcome = run(&cfg).await;
    assert_success(&outcome, &nginx);
    assert!(outcome.phases.resolve.is_some());
    assert_eq!(outcome.cert_not_after, Some(nginx.valid_not_after));
}

async fn tls_failure(nginx: &Nginx, port: u16, with_ca: bool) -> TlsFailure {
    let mut cfg = config(nginx.https_url("127.0.0.1", port, "/"));
    if with_ca {
        cfg.ca = Some(CaSource::File(nginx.ca.cert_path().to_owned()));
    }
    let started = Instant::now();
    let outcome = run(&cfg).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "TLS failures are immediate"
    );
    assert_eq!(outcome.status, None);
    assert!(outcome.phases.connect.is_some() && outcome.phases.processing.is_none());
    match outcome.failure {
        Some(Failure::Tls { detail }) => detail,
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

#[tokio::test]
async fn expired_certificate_fails_with_its_expiry() {
    let nginx = Nginx::start();
    assert_eq!(
        tls_failure(&nginx, nginx.expired_port, true).await,
        TlsFailure::Expired {
            not_after: Some(nginx.expired_not_after)
        }
    );
}

#[tokio::test]
async fn not_yet_valid_certificate_fails() {
    let nginx = Nginx::start();
    assert_eq!(
        tls_failure(&nginx, nginx.not_yet_valid_port, true).await,
        TlsFailure::NotYetValid
    );
}

#[tokio::test]
async fn unknown_ca_fails_with_unknown_issuer() {
    let nginx = Nginx::start();
    assert_eq!(
        tls_failure(&nginx, nginx.https_port, false).await,
        TlsFailure::UnknownIssuer
    );
}

#[tokio::test]
async fn certificate_for_another_name_is_a_hostname_mismatch() {
    let nginx = Nginx::start();
    assert_eq!(
        tls_failure(&nginx, nginx.mismatch_port, true).await,
        TlsFailure::HostnameMismatch {
            name: "127.0.0.1".into()
        }
    );
}

#[tokio::test]
async fn status_503_fails_unless_expected() {
    let nginx = Nginx::start();
    let mut cfg = config(nginx.http_url("/status/503"));
    let outcome = run(&cfg).await;
    assert_eq!(outcome.failure, Some(Failure::HttpStatus { code: 503 }));
    assert_eq!(outcome.status, Some(503));

    cfg.expect_status = ExpectStatus::from_codes(vec![503]);
    let outcome = run(&cfg).await;
    assert_success(&outcome, &nginx);

    cfg.url = nginx.http_url("/");
    let outcome = run(&cfg).await;
    assert_eq!(outcome.failure, Some(Failure::HttpStatus { code: 200 }));
}

#[tokio::test]
async fn body_mismatch_is_reported() {
    let nginx = Nginx::start();
    let mut cfg = config(nginx.http_url("/"));
    cfg.body_contains = Some("Asterisk".into());
    let outcome = run(&cfg).await;
    assert!(
        matches!(&outcome.failure, Some(Failure::BodyMismatch { detail }) if detail.contains("Asterisk")),
        "{outcome:?}"
    );
    assert_eq!(outcome.status, Some(200));

    cfg.body_contains = None;
    cfg.body_regex = Some(regex::Regex::new("^STARFACE").unwrap());
    let outcome = run(&cfg).await;
    assert!(
        matches!(outcome.failure, Some(Failure::BodyMismatch { .. })),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn relative_redirect_is_followed() {
    let nginx = Nginx::start();
    let mut cfg = config(nginx.http_url("/redirect"));
    cfg.body_contains = Some("STARFACE".into());
    let outcome = run(&cfg).await;
    assert_success(&outcome, &nginx);
    assert_eq!(outcome.redirects, 1);
    assert_eq!(outcome.url, nginx.http_url("/redirect").as_str());
    assert_eq!(outcome.final_url, nginx.http_url("/").as_str());
    assert_eq!(outcome.status, Some(200));
}

#[tokio::test]
async fn redirect_not_followed_is_the_final_response() {
    let nginx = Nginx::start();
    let mut cfg = config(nginx.http_url("/redirect"));
    cfg.follow_redirects = false;
    let outcome = run(&cfg).await;
    assert_eq!(outcome.failure, Some(Failure::HttpStatus { code: 302 }));
    assert_eq!(outcome.redirects, 0);

    cfg.expect_status = ExpectStatus::from_codes(vec![301, 302]);
    let outcome = run(&cfg).await;
    assert_success(&outcome, &nginx);
    assert_eq!(outcome.final_url, nginx.http_url("/redirect").as_str());
}

#[tokio::test]
async fn redirect_loop_stops_at_the_limit() {
    let nginx = Nginx::start();
    let mut cfg = config(nginx.http_url("/loop"));
    cfg.max_redirects = 3;
    let outcome = run(&cfg).await;
    assert!(
        matches!(&outcome.failure, Some(Failure::Protocol { detail }) if detail.contains("more than 3 redirects")),
        "{outcome:?}"
    );
    assert_eq!(outcome.redirects, 3);
}

#[tokio::test]
async fn redirect_to_https_sums_phases_over_hops() {
    let nginx = Nginx::start();
    let mut cfg = config(nginx.http_url("/to-https"));
    cfg.ca = Some(CaSource::File(nginx.ca.cert_path().to_owned()));
    let outcome = run(&cfg).await;
    assert_success(&outcome, &nginx);
    assert_eq!(outcome.redirects, 1);
    assert_eq!(
        outcome.final_url,
        nginx.https_url("127.0.0.1", nginx.https_port, "/").as_str()
    );
    assert_eq!(
        outcome.peer,
        Some(([127, 0, 0, 1], nginx.https_port).into())
    );
    assert!(outcome.phases.tls.is_some());
    assert_eq!(outcome.cert_not_after, Some(nginx.valid_not_after));
}

#[tokio::test]
async fn big_body_is_read_up_to_the_limit() {
    let nginx = Nginx::start();
    let mut cfg = config(nginx.http_url("/big"));
    let outcome = run(&cfg).await;
    assert_success(&outcome, &nginx);
    assert_eq!(outcome.body_bytes, http::DEFAULT_MAX_BODY_BYTES);
    assert!(outcome.body_truncated);

    cfg.max_body_bytes = 4 * nginx::BIG_BYTES;
    let outcome = run(&cfg).await;
    assert_success(&outcome, &nginx);
    assert_eq!(outcome.body_bytes, nginx::BIG_BYTES);
    assert!(!outcome.body_truncated);
}

fn fact(outcome: &HttpOutcome, name: &str) -> String {
    let facts = outcome.facts();
    facts
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {name:?} in {facts:?}"))
}

#[tokio::test]
async fn gzip_from_nginx_is_decoded_before_the_body_check() {
    let nginx = Nginx::start();
    // Pre-compressed and sent gzip-encoded to every client (gzip_static always).
    let mut cfg = config(nginx.http_url("/page.html"));
    cfg.body_contains = Some("STARFACE login, pre-compressed".into());
    let outcome = run(&cfg).await;
    assert_success(&outcome, &nginx);
    assert_eq!(outcome.content_encoding, vec![ContentCoding::Gzip]);
    assert_eq!(outcome.body_bytes, nginx::GZIP_PAGE.len());
    assert!(!outcome.body_truncated);

    // Compressed on the fly: nginx's `gzip on` answers the probe's Accept-Encoding.
    cfg.url = nginx.http_url("/gzip");
    cfg.body_contains = Some("STARFACE login, gzip".into());
    let outcome = run(&cfg).await;
    assert_success(&outcome, &nginx);
    assert_eq!(outcome.content_encoding, vec![ContentCoding::Gzip]);
    assert!(
        fact(&outcome, "body").contains(&format!(
            "gzip decoded from {} bytes",
            outcome.body_encoded_bytes
        )),
        "{:?}",
        outcome.facts()
    );
    assert_eq!(
        serde_json::to_value(&outcome).unwrap()["contentEncoding"],
        serde_json::json!(["gzip"])
    );
}

#[tokio::test]
async fn h2_only_tls_server_is_probed_over_http2() {
    let server = Nghttpd::start(false);
    let mut cfg = config(server.url("/"));
    cfg.ca = Some(CaSource::File(server.ca_file.clone()));
    cfg.body_contains = Some("STARFACE login over h2".into());
    let outcome = run(&cfg).await;
    assert!(
        outcome.failure.is_none(),
        "probe failed: {outcome:#?}\nnghttpd log:\n{}",
        server.log_text()
    );
    assert_eq!(outcome.status, Some(200));
    assert_eq!(outcome.http_version.as_deref(), Some("HTTP/2.0"));
    assert_eq!(fact(&outcome, "version"), "HTTP/2.0");
    assert_eq!(outcome.body_bytes, nghttpd::PAGE.len());
    assert!(outcome.phases.tls.is_some() && outcome.phases.transfer.is_some());
}

#[tokio::test]
async fn a_demanded_client_certificate_is_a_tls_failure() {
    let server = Nghttpd::start(true);
    let mut cfg = config(server.url("/"));
    cfg.ca = Some(CaSource::File(server.ca_file.clone()));
    let outcome = run(&cfg).await;
    assert!(
        matches!(
            outcome.failure,
            Some(Failure::Tls {
                detail: TlsFailure::ClientCertificateRequired
            })
        ),
        "{outcome:#?}\nnghttpd log:\n{}",
        server.log_text()
    );
}

/// Runs openssl with `args` in `dir`, panicking with its output when it fails.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new(support::require_program("openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// notAfter of the PEM certificate at `path`.
fn not_after(path: &std::path::Path) -> std::time::SystemTime {
    let pem = std::fs::read(path).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let secs = cert.validity().not_after.timestamp() as u64;
    std::time::UNIX_EPOCH + Duration::from_secs(secs)
}

#[tokio::test]
async fn the_earliest_expiry_of_the_presented_chain_is_reported() {
    // root (30 days) -> intermediate (3 days) -> leaf (20 days), made by openssl.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    std::fs::write(
        d.join("ca.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    std::fs::write(
        d.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let root = [
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "root.key",
            "-out",
            "root.pem",
            "-days",
            "30",
            "-subj",
            "/CN=voipcheck chain root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ]
    .concat();
    openssl(d, &root);
    for (name, cn) in [
        ("int", "/CN=voipcheck intermediate"),
        ("leaf", "/CN=127.0.0.1"),
    ] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        openssl(
            d,
            &[
                &["req"][..],
                &ec,
                &["-keyout", &key, "-out", &csr, "-subj", cn],
            ]
            .concat(),
        );
    }
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "int.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-out",
            "int.pem",
            "-days",
            "3",
            "-extfile",
            "ca.ext",
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "int.pem",
            "-CAkey",
            "int.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "20",
            "-extfile",
            "leaf.ext",
        ],
    );
    let chain = [
        std::fs::read(d.join("leaf.pem")).unwrap(),
        std::fs::read(d.join("int.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(d.join("chain.pem"), chain).unwrap();

    let server = Nghttpd::start_with(
        &d.join("chain.pem"),
        &d.join("leaf.key"),
        d.join("root.pem"),
    );
    let mut cfg = config(server.url("/"));
    cfg.ca = Some(CaSource::File(server.ca_file.clone()));
    let outcome = run(&cfg).await;
    assert!(
        outcome.failure.is_none(),
        "{outcome:#?}\n{}",
        server.log_text()
    );
    let intermediate = not_after(&d.join("int.pem"));
    assert!(intermediate < not_after(&d.join("leaf.pem")));
    assert_eq!(outcome.cert_not_after, Some(intermediate));
}

#[tokio::test]
async fn http1_server_still_speaks_http1_over_tls() {
    let nginx = Nginx::start();
    let mut cfg = config(nginx.https_url("127.0.0.1", nginx.https_port, "/"));
    cfg.ca = Some(CaSource::File(nginx.ca.cert_path().to_owned()));
    let outcome = run(&cfg).await;
    assert_success(&outcome, &nginx);
    assert_eq!(outcome.http_version.as_deref(), Some("HTTP/1.1"));
}

#[tokio::test]
async fn throttled_body_times_out_at_the_deadline() {
    let nginx = Nginx::start();
    let mut cfg = config(nginx.http_url("/slow"));
    cfg.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let outcome = run(&cfg).await;
    let elapsed = started.elapsed();
    assert_eq!(
        outcome.failure,
        Some(Failure::Timeout {
            after: Duration::from_secs(1)
        })
    );
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_millis(1300),
        "{elapsed:?}"
    );
    assert_eq!(outcome.status, Some(200), "the head arrived in time");
    assert_eq!(outcome.phases.transfer, None, "the transfer never finished");
}

#[tokio::test]
async fn closed_port_is_connect_refused() {
    let port = support::free_port();
    let cfg = config(url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap());
    let started = Instant::now();
    let outcome = run(&cfg).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        outcome.failure,
        Some(Failure::ConnectRefused {
            peer: format!("127.0.0.1:{port}")
        })
    );
    assert!(outcome.phases.connect.is_none());
}

#[tokio::test]
async fn unknown_name_is_a_dns_failure() {
    // RFC 6761 §6.4: `.invalid` never resolves. Without a reachable resolver the failure is
    // still a DNS one (ResolverFailed) as long as the resolver gives up within the timeout.
    let mut cfg = config(url::Url::parse("http://voipcheck-test.invalid/").unwrap());
    cfg.timeout = Duration::from_secs(30);
    let outcome = run(&cfg).await;
    match &outcome.failure {
        Some(Failure::DnsFailure { name, kind, .. }) => {
            assert_eq!(name, "voipcheck-test.invalid");
            assert!(matches!(
                kind,
                DnsErrorKind::NxDomain | DnsErrorKind::ResolverFailed
            ));
        }
        other => panic!("expected a DNS failure, got {other:?}"),
    }
    assert!(outcome.phases.resolve.is_none() && outcome.peer.is_none());
}

#[tokio::test]
async fn url_credentials_are_sent_as_basic_auth_and_never_shown() {
    let nginx = Nginx::start();
    let with_password = |password: &str| {
        let mut url = nginx.http_url("/private");
        url.set_username(nginx::USERNAME).unwrap();
        url.set_password(Some(password)).unwrap();
        url
    };
    let secrets = [nginx::PASSWORD, nginx::PASSWORD_IN_URL, "wrong-pass"];
    // Plain HTTP, which Basic auth needs an explicit yes for.
    let insecure = |url| HttpConfig {
        allow_insecure_basic_auth: true,
        ..config(url)
    };

    let cfg = insecure(with_password(nginx::PASSWORD_IN_URL));
    let outcome = run(&cfg).await;
    assert_success(&outcome, &nginx);
    assert_eq!(outcome.url, nginx.http_url("/private").as_str());
    let wrong = insecure(with_password("wrong-pass"));
    let rejected = run(&wrong).await;
    assert_eq!(rejected.failure, Some(Failure::HttpStatus { code: 401 }));
    let anonymous = run(&config(nginx.http_url("/private"))).await;
    assert_eq!(anonymous.failure, Some(Failure::HttpStatus { code: 401 }));

    for outcome in [&outcome, &rejected] {
        let shown = [
            format!("{outcome:?}"),
            serde_json::to_string(outcome).unwrap(),
            format!("{:?}", outcome.facts()),
            outcome.failure.iter().map(|f| f.to_string()).collect(),
            format!("{cfg:?}{wrong:?}"),
        ];
        for text in shown {
            for secret in secrets {
                assert!(!text.contains(secret), "{secret:?} shown in {text}");
            }
            assert!(!text.contains(&format!("{}:", nginx::USERNAME)), "{text}");
        }
    }
}

#[tokio::test]
async fn unsupported_scheme_and_bad_ca_file_are_config_errors() {
    let cfg = config(url::Url::parse("ftp://127.0.0.1/").unwrap());
    assert_eq!(http::probe(&dns(), &cfg).await.unwrap_err().field, "url");
    let mut cfg = config(url::Url::parse("https://127.0.0.1/").unwrap());
    cfg.ca = Some(CaSource::File("/nonexistent/ca.pem".into()));
    assert_eq!(
        http::probe(&dns(), &cfg).await.unwrap_err().field,
        "--ca-file"
    );
}
