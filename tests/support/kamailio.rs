//! Kamailio as the test registrar (tests/peers/kamailio.cfg): digest auth with static accounts,
//! in-memory bindings, UDP and TCP on one loopback port (127.0.0.1, or ::1) and TLS on another
//! (127.0.0.1), with a certificate for 127.0.0.1/localhost issued at start by a throwaway test CA.

use super::certs::{TestCa, whole_seconds};
use super::{Daemon, free_port, peers_dir, require_program};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// How to start Kamailio.
#[derive(Default)]
pub struct KamailioBuilder {
    sha256: bool,
    port: Option<u16>,
    ipv6: bool,
    echo: Option<SocketAddr>,
}

impl KamailioBuilder {
    /// Challenge with `algorithm=SHA-256` instead of MD5.
    pub fn sha256(mut self) -> Self {
        self.sha256 = true;
        self
    }

    /// Listen for UDP and TCP on `port` (e.g. the port of a registrar stopped earlier, to
    /// simulate its recovery) instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Listen for UDP and TCP on [::1] instead of 127.0.0.1.
    pub fn ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }

    /// Forward calls to the number `echo` to `uas` (UDP), e.g. a SIPp UAS with `-rtp_echo`.
    pub fn echo(mut self, uas: SocketAddr) -> Self {
        self.echo = Some(uas);
        self
    }

    pub fn start(self) -> Kamailio {
        let program = require_program("kamailio");
        let dir = tempfile::tempdir().expect("temp dir for kamailio");
        let port = self.port.unwrap_or_else(free_port);
        let tls_port = free_port();
        let ca = TestCa::new();
        let now = whole_seconds(std::time::SystemTime::now());
        let day = Duration::from_secs(86_400);
        let cert_not_after = now + 30 * day;
        let (cert, key) = ca.issue(&["localhost", "127.0.0.1"], now - day, cert_not_after);
        let ctl = dir.path().join("ctl.sock");
        let ip: IpAddr = match self.ipv6 {
            true => Ipv6Addr::LOCALHOST.into(),
            false => Ipv4Addr::LOCALHOST.into(),
        };
        let listen = SocketAddr::new(ip, port);
        let mut command = Command::new(program);
        command
            .arg("-DD")
            .arg("-E")
            .args(["-f".as_ref(), peers_dir().join("kamailio.cfg").as_os_str()])
            .args(["-l", &format!("udp:{listen}")])
            .args(["-l", &format!("tcp:{listen}")])
            .args(["-l", &format!("tls:127.0.0.1:{tls_port}")])
            .args(["-m", "32", "-M", "4"])
            .args(["-Y".as_ref(), dir.path().as_os_str()])
            .args(["-P".as_ref(), dir.path().join("kamailio.pid").as_os_str()])
            .args(["-w".as_ref(), dir.path().as_os_str()])
            .args(["-A", &format!("CTL_SOCKET=\"unix:{}\"", ctl.display())])
            .args(["-A", "WITH_TLS"])
            .args(["-A", &format!("TLS_CERT=\"{}\"", cert.display())])
            .args(["-A", &format!("TLS_KEY=\"{}\"", key.display())]);
        if self.sha256 {
            command.args(["-A", "WITH_SHA256"]);
        }
        if let Some(uas) = self.echo {
            command.args(["-A", &format!("ECHO_UAS=\"sip:{uas};transport=udp\"")]);
        }
        let mut daemon = Daemon::spawn("kamailio", command, &dir.path().join("kamailio.log"));
        daemon.wait_for_tcp(listen);
        daemon.wait_for_tcp(SocketAddr::from(([127, 0, 0, 1], tls_port)));
        warm_up_udp(&daemon, listen);
        Kamailio {
            daemon,
            ip,
            port,
            tls_port,
            ca_file: ca.cert_path().to_owned(),
            cert_not_after,
            _ca: ca,
            ctl,
            _dir: dir,
        }
    }
}

/// A running Kamailio; stopped when dropped.
pub struct Kamailio {
    pub daemon: Daemon,
    /// Where UDP and TCP listen: 127.0.0.1 or ::1.
    pub ip: IpAddr,
    /// UDP and TCP.
    pub port: u16,
    pub tls_port: u16,
    /// The test CA that issued the TLS certificate (PEM).
    pub ca_file: PathBuf,
    /// When the TLS certificate expires.
    pub cert_not_after: std::time::SystemTime,
    _ca: TestCa,
    ctl: PathBuf,
    _dir: tempfile::TempDir,
}

impl Kamailio {
    pub fn builder() -> KamailioBuilder {
        KamailioBuilder::default()
    }

    pub fn start() -> Kamailio {
        Self::builder().start()
    }

    /// The registrar URI for `transport` (`udp`, `tcp` or `tls`).
    pub fn uri(&self, transport: &str) -> String {
        let address = if transport == "tls" {
            SocketAddr::from(([127, 0, 0, 1], self.tls_port))
        } else {
            SocketAddr::new(self.ip, self.port)
        };
        format!("sip:{address};transport={transport}")
    }

    /// The URI of number `user` at this Kamailio over `transport`, as a callee (`call.to`).
    pub fn number(&self, user: &str, transport: &str) -> String {
        let address = if transport == "tls" {
            SocketAddr::from(([127, 0, 0, 1], self.tls_port))
        } else {
            SocketAddr::new(self.ip, self.port)
        };
        format!("sip:{user}@{address}")
    }

    /// The test account `alice` at this Kamailio over `transport`, as a caller, trusting the
    /// test CA for TLS.
    pub fn caller(&self, transport: &str) -> voipcheck::probe::sip::Account {
        voipcheck::probe::sip::Account {
            server: self.uri(transport),
            username: "alice".into(),
            auth_username: None,
            domain: None,
            proxy: None,
            password: voipcheck::secret::Secret::new("alice-secret"),
            ca: Some(voipcheck::probe::tls::CaSource::File(self.ca_file.clone())),
        }
    }

    /// The Contacts Kamailio holds for `user` right now, from `kamcmd ul.dump`.
    pub fn bindings(&self, user: &str) -> Vec<String> {
        let output = Command::new(require_program("kamcmd"))
            .args(["-s", &format!("unix:{}", self.ctl.display()), "ul.dump"])
            .output()
            .expect("run kamcmd");
        assert!(output.status.success(), "kamcmd failed: {output:?}");
        contacts_of(&String::from_utf8_lossy(&output.stdout), user)
    }
}

/// Waits until the UDP workers answer. A freshly started Kamailio takes a few hundred ms over
/// its first UDP requests, which would distort the RTT tests; each worker gets a request here.
fn warm_up_udp(daemon: &Daemon, listen: SocketAddr) {
    let socket = UdpSocket::bind(SocketAddr::new(listen.ip(), 0)).unwrap();
    socket.connect(listen).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let local = socket.local_addr().unwrap();
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 65536];
    while answered < 4 {
        assert!(
            Instant::now() < deadline,
            "kamailio does not answer OPTIONS over UDP:\n{}",
            daemon.log_text()
        );
        let request = format!(
            "OPTIONS sip:{listen} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKwarm{answered}\r\nFrom: <sip:warmup@{local}>;tag=w\r\nTo: <sip:{listen}>\r\nCall-ID: warmup-{answered}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        let _ = socket.send(request.as_bytes());
        if socket.recv(&mut buf).is_ok() {
            answered += 1;
        }
    }
}

/// Reads the contacts of AoR `user` from ul.dump's text output (`AoR: alice@127.0.0.1` blocks
/// with `Address: sip:...` lines).
fn contacts_of(dump: &str, user: &str) -> Vec<String> {
    let mut contacts = Vec::new();
    let mut in_aor = false;
    for line in dump.lines().map(str::trim) {
        if let Some(aor) = line.strip_prefix("AoR:") {
            let aor = aor.trim();
            in_aor = aor == user || aor.starts_with(&format!("{user}@"));
        } else if let Some(address) = line.strip_prefix("Address:")
            && in_aor
        {
            contacts.push(address.trim().to_owned());
        }
    }
    contacts
}

/// An OPTIONS qualify of `server` with chan_sip's default threshold, bounded by `timeout`.
pub fn options_config(server: String, timeout: Duration) -> voipcheck::probe::sip::OptionsConfig {
    voipcheck::probe::sip::OptionsConfig {
        server,
        proxy: None,
        lagged_threshold: voipcheck::probe::sip::DEFAULT_LAGGED_THRESHOLD,
        timeout,
        ca: None,
    }
}

/// OPTIONS to `server` within `timeout`, which must be answered (chan_sip Reachable).
pub async fn reachable(
    dns: &voipcheck::probe::dns::Dns,
    timeout: Duration,
    server: String,
) -> voipcheck::probe::sip::OptionsOutcome {
    let outcome = voipcheck::probe::sip::options(dns, &options_config(server.clone(), timeout))
        .await
        .unwrap();
    assert_eq!(
        outcome.state,
        voipcheck::probe::sip::QualifyState::Reachable,
        "{server}: {outcome:#?}"
    );
    outcome
}
