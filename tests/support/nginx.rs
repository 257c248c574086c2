//! Debian nginx as the HTTP/HTTPS peer: one plain HTTP port and HTTPS ports with a valid, an
//! expired, a not-yet-valid and a wrong-name certificate from a [`TestCa`]. The locations are in
//! `tests/peers/nginx.conf`.

use super::certs::{TestCa, whole_seconds};
use super::{Daemon, free_port, peers_dir, require_program};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, SystemTime};

/// The account `/private` accepts (HTTP Basic auth). The password has characters that must be
/// percent-encoded in a URL's userinfo (not `:`, which ends a password in nginx's htpasswd).
pub const USERNAME: &str = "monitor";
pub const PASSWORD: &str = "p@ss w/rd";
/// [`PASSWORD`] as it is written in a URL.
pub const PASSWORD_IN_URL: &str = "p%40ss%20w%2Frd";

/// The page served gzip-encoded at `/page.html`, to any client.
pub const GZIP_PAGE: &str =
    "<html><title>STARFACE Cloud</title><body>STARFACE login, pre-compressed</body></html>\n";

/// Size of the file served at `/big` and, throttled to 64 KiB/s, at `/slow`.
pub const BIG_BYTES: usize = 2 * 1024 * 1024;

pub struct Nginx {
    pub ca: TestCa,
    pub http_port: u16,
    pub https_port: u16,
    /// Plain HTTP on `[::1]` only.
    pub http6_port: u16,
    pub expired_port: u16,
    pub not_yet_valid_port: u16,
    pub mismatch_port: u16,
    /// notAfter of the certificate on `https_port` (whole seconds).
    pub valid_not_after: SystemTime,
    /// notAfter of the certificate on `expired_port` (whole seconds, a day ago).
    pub expired_not_after: SystemTime,
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start() -> Nginx {
        let nginx = require_program("nginx");
        let dir = tempfile::tempdir().expect("create the nginx prefix");
        let prefix = dir.path();
        for sub in ["html", "tmp"] {
            std::fs::create_dir(prefix.join(sub)).unwrap();
        }
        std::fs::write(prefix.join("html/big"), big_body()).unwrap();
        std::fs::write(prefix.join("html/private"), "private STARFACE page\n").unwrap();
        std::fs::write(prefix.join("html/page.html.gz"), gzip(GZIP_PAGE.as_bytes())).unwrap();
        std::fs::write(
            prefix.join("htpasswd"),
            format!("{USERNAME}:{{PLAIN}}{PASSWORD}\n"),
        )
        .unwrap();

        let ca = TestCa::new();
        let now = whole_seconds(SystemTime::now());
        let day = Duration::from_secs(86_400);
        let valid_not_after = now + 30 * day;
        let valid = ca.issue(&["127.0.0.1", "localhost"], now - day, valid_not_after);
        let expired_not_after = now - day;
        let expired = ca.issue(
            &["127.0.0.1", "localhost"],
            now - 30 * day,
            expired_not_after,
        );
        let not_yet_valid = ca.issue(&["127.0.0.1", "localhost"], now + day, now + 30 * day);
        let mismatch = ca.issue(&["other.example"], now - day, now + 30 * day);

        let ports = [
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        ];
        let [
            http_port,
            https_port,
            expired_port,
            not_yet_valid_port,
            mismatch_port,
        ] = ports;
        let http6_port = free_port();
        let template = std::fs::read_to_string(peers_dir().join("nginx.conf")).unwrap();
        let path = |p: &std::path::Path| p.display().to_string();
        let conf = [
            ("@PREFIX@", path(prefix)),
            ("@HTTP_PORT@", http_port.to_string()),
            ("@HTTPS_PORT@", https_port.to_string()),
            ("@HTTP6_PORT@", http6_port.to_string()),
            ("@EXPIRED_PORT@", expired_port.to_string()),
            ("@NOT_YET_VALID_PORT@", not_yet_valid_port.to_string()),
            ("@MISMATCH_PORT@", mismatch_port.to_string()),
            ("@VALID_CERT@", path(&valid.0)),
            ("@VALID_KEY@", path(&valid.1)),
            ("@EXPIRED_CERT@", path(&expired.0)),
            ("@EXPIRED_KEY@", path(&expired.1)),
            ("@NOT_YET_VALID_CERT@", path(&not_yet_valid.0)),
            ("@NOT_YET_VALID_KEY@", path(&not_yet_valid.1)),
            ("@MISMATCH_CERT@", path(&mismatch.0)),
            ("@MISMATCH_KEY@", path(&mismatch.1)),
        ]
        .iter()
        .fold(template, |conf, (key, value)| conf.replace(key, value));
        let unfilled = regex::Regex::new("@[A-Z_]+@").unwrap().find(&conf);
        assert!(
            unfilled.is_none(),
            "unfilled placeholder in nginx.conf: {unfilled:?}"
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();

        let mut command = Command::new(nginx);
        command
            .arg("-p")
            .arg(prefix)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"]);
        let mut daemon = Daemon::spawn("nginx", command, &prefix.join("stderr.log"));
        for port in ports {
            daemon.wait_for_tcp(SocketAddr::from(([127, 0, 0, 1], port)));
        }
        daemon.wait_for_tcp(SocketAddr::from((
            std::net::Ipv6Addr::LOCALHOST,
            http6_port,
        )));
        Nginx {
            ca,
            http_port,
            https_port,
            http6_port,
            expired_port,
            not_yet_valid_port,
            mismatch_port,
            valid_not_after,
            expired_not_after,
            daemon,
            dir,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn http_url(&self, path: &str) -> url::Url {
        url(&format!("http://127.0.0.1:{}{path}", self.http_port))
    }

    /// `https://<host>:<port><path>`, e.g. with `host` 127.0.0.1 or localhost.
    pub fn https_url(&self, host: &str, port: u16, path: &str) -> url::Url {
        url(&format!("https://{host}:{port}{path}"))
    }

    /// nginx's output and error log, for failure messages.
    pub fn log_text(&self) -> String {
        let error_log = std::fs::read_to_string(self.dir.path().join("error.log"));
        format!(
            "{}{}",
            self.daemon.log_text(),
            error_log.unwrap_or_default()
        )
    }
}

fn url(s: &str) -> url::Url {
    url::Url::parse(s).expect("a valid test URL")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// The alphabet over and over: printable, and a wrong offset would show.
fn big_body() -> Vec<u8> {
    (0..BIG_BYTES).map(|i| b'a' + (i % 26) as u8).collect()
}
