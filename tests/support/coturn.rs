//! Debian coturn (`turnserver`) as the STUN peer, on free loopback ports, configured from
//! `tests/peers/turnserver.conf`.

use super::certs::TestCa;
use super::{Daemon, free_port, peers_dir, require_program};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Coturn {
    /// The primary address: 127.0.0.1 (or `[::1]`) and the listening port.
    pub addr: SocketAddr,
    /// The RFC 5780 alternate address (127.0.0.2 and the alternate port), when started with
    /// [`Coturn::start_rfc5780`].
    pub other: Option<SocketAddr>,
    /// The TLS listener on the first listening IP, with a certificate for 127.0.0.1, ::1 and
    /// localhost from `ca`.
    pub tls_addr: SocketAddr,
    pub ca: TestCa,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Coturn {
    /// One listening address: a plain STUN server without RFC 5780.
    pub fn start() -> Coturn {
        Self::spawn(&[Ipv4Addr::LOCALHOST.into()])
    }

    /// One listening address on the IPv6 loopback, `[::1]`, only.
    pub fn start_ipv6() -> Coturn {
        Self::spawn(&[Ipv6Addr::LOCALHOST.into()])
    }

    /// Listening on 127.0.0.1 and 127.0.0.2 (all of 127/8 is on `lo`), each on the listening
    /// and the alternate port, so coturn offers RFC 5780 NAT behaviour discovery.
    pub fn start_rfc5780() -> Coturn {
        Self::spawn(&[
            Ipv4Addr::LOCALHOST.into(),
            Ipv4Addr::new(127, 0, 0, 2).into(),
        ])
    }

    /// Two listening IPs make coturn offer RFC 5780.
    fn spawn(ips: &[IpAddr]) -> Coturn {
        let rfc5780 = ips.len() > 1;
        let turnserver = require_program("turnserver");
        let dir = tempfile::tempdir().expect("create the coturn directory");
        let (port, alt_port, tls_port) = (free_port(), free_port(), free_port());
        let ca = TestCa::new();
        let now = std::time::SystemTime::now();
        let day = Duration::from_secs(86_400);
        let names = ["127.0.0.1", "::1", "localhost"];
        let (cert, key) = ca.issue(&names, now - day, now + 30 * day);
        let listening_ips = ips
            .iter()
            .map(|ip| format!("listening-ip={ip}"))
            .collect::<Vec<_>>()
            .join("\n");
        let template = std::fs::read_to_string(peers_dir().join("turnserver.conf")).unwrap();
        let conf = template
            .replace("@LISTENING_IPS@", &listening_ips)
            .replace("@PORT@", &port.to_string())
            .replace("@ALT_PORT@", &alt_port.to_string())
            .replace("@TLS_PORT@", &tls_port.to_string())
            .replace("@CERT@", &cert.display().to_string())
            .replace("@PKEY@", &key.display().to_string())
            .replace("@DIR@", &dir.path().display().to_string());
        assert!(
            !conf.contains('@'),
            "unfilled placeholder in turnserver.conf"
        );
        let conf_path = dir.path().join("turnserver.conf");
        std::fs::write(&conf_path, conf).unwrap();

        let mut command = Command::new(turnserver);
        command.arg("-c").arg(&conf_path);
        let mut daemon = Daemon::spawn("coturn", command, &dir.path().join("turnserver.log"));
        let ports: &[u16] = if rfc5780 { &[port, alt_port] } else { &[port] };
        let listeners: Vec<SocketAddr> = ips
            .iter()
            .flat_map(|ip| ports.iter().map(|port| SocketAddr::new(*ip, *port)))
            .collect();
        let tls_addr = SocketAddr::new(ips[0], tls_port);
        for &listener in listeners.iter().chain([&tls_addr]) {
            daemon.wait_for_tcp(listener);
        }
        // coturn serves UDP from other threads than TCP: wait until each UDP listener answers.
        for &listener in &listeners {
            wait_for_udp(&daemon, listener);
        }
        Coturn {
            addr: SocketAddr::new(ips[0], port),
            other: rfc5780.then(|| SocketAddr::new(ips[1], alt_port)),
            tls_addr,
            ca,
            daemon,
            _dir: dir,
        }
    }

    /// `addr` as a probe's server entry (`127.0.0.1:port`, `[::1]:port`).
    pub fn server(&self) -> String {
        self.addr.to_string()
    }

    /// `stuns:127.0.0.1:tls-port`, the TLS listener as a probe's server entry.
    pub fn tls_server(&self) -> String {
        format!("stuns:{}", self.tls_addr)
    }

    pub fn log_text(&self) -> String {
        self.daemon.log_text()
    }

    /// Stops coturn now (the guard's drop is then harmless).
    pub fn stop(&mut self) {
        self.daemon.stop();
    }
}

/// Sends a bare Binding request (a 20-byte header, RFC 8489 §5) until the listener answers.
fn wait_for_udp(daemon: &Daemon, listener: SocketAddr) {
    let any: IpAddr = match listener {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((any, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let request = [
        0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buffer = [0u8; 1024];
    while Instant::now() < deadline {
        let _ = socket.send_to(&request, listener);
        if let Ok((_, from)) = socket.recv_from(&mut buffer)
            && from == listener
        {
            return;
        }
    }
    panic!(
        "coturn did not answer STUN on UDP {listener}:\n{}",
        daemon.log_text()
    );
}
