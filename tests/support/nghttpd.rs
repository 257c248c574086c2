//! Debian nghttpd (package nghttp2-server) as an HTTP/2-only TLS server: it offers only `h2` in
//! ALPN, as web UIs behind some load balancers do. One instance serves a page; with
//! `verify_client` it demands a client certificate, ending the handshake without one.

use super::certs::TestCa;
use super::{Daemon, free_port, require_program};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// The page nghttpd serves at `/`.
pub const PAGE: &str =
    "<html><title>STARFACE Cloud</title><body>STARFACE login over h2</body></html>\n";

pub struct Nghttpd {
    /// The trust anchor to verify the server's certificate with (PEM).
    pub ca_file: PathBuf,
    pub port: u16,
    daemon: Daemon,
    _ca: Option<TestCa>,
    _dir: tempfile::TempDir,
}

impl Nghttpd {
    /// A server for 127.0.0.1 with a certificate from a new [`TestCa`]; `verify_client` makes it
    /// request a client certificate (nghttpd's `--verify-client`).
    pub fn start(verify_client: bool) -> Nghttpd {
        let ca = TestCa::new();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let (cert, key) = ca.issue(&["127.0.0.1"], now - day, now + 30 * day);
        let ca_file = ca.cert_path().to_owned();
        Self::spawn(&cert, &key, ca_file, Some(ca), verify_client)
    }

    /// A server presenting `cert` (PEM, the leaf first, then intermediates) with `key`, whose
    /// chain `ca_file` anchors.
    pub fn start_with(cert: &Path, key: &Path, ca_file: PathBuf) -> Nghttpd {
        Self::spawn(cert, key, ca_file, None, false)
    }

    fn spawn(
        cert: &Path,
        key: &Path,
        ca_file: PathBuf,
        ca: Option<TestCa>,
        verify_client: bool,
    ) -> Nghttpd {
        let program = require_program("nghttpd");
        let dir = tempfile::tempdir().expect("create the nghttpd directory");
        let htdocs = dir.path().join("htdocs");
        std::fs::create_dir(&htdocs).unwrap();
        std::fs::write(htdocs.join("index.html"), PAGE).unwrap();
        let port = free_port();
        let mut command = Command::new(program);
        command
            .arg("--address=127.0.0.1")
            .arg(format!("--htdocs={}", htdocs.display()))
            .args(verify_client.then_some("--verify-client"))
            .arg(port.to_string())
            .arg(key)
            .arg(cert);
        let mut daemon = Daemon::spawn("nghttpd", command, &dir.path().join("nghttpd.log"));
        daemon.wait_for_tcp(SocketAddr::from(([127, 0, 0, 1], port)));
        Nghttpd {
            ca_file,
            port,
            daemon,
            _ca: ca,
            _dir: dir,
        }
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> url::Url {
        url::Url::parse(&format!("https://127.0.0.1:{}{path}", self.port)).unwrap()
    }

    /// What nghttpd printed, for failure messages.
    pub fn log_text(&self) -> String {
        self.daemon.log_text()
    }
}
