//! Debian coturn (`turnserver`) as the STUN peer, on free loopback ports, configured from
//! `tests/peers/turnserver.conf`.

use super::{Daemon, free_port, peers_dir, require_program};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Coturn {
    /// The primary address: 127.0.0.1 and the listening port.
    pub addr: SocketAddr,
    /// The RFC 5780 alternate address (127.0.0.2 and the alternate port), when started with
    /// [`Coturn::start_rfc5780`].
    pub other: Option<SocketAddr>,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Coturn {
    /// One listening address: a plain STUN server without RFC 5780.
    pub fn start() -> Coturn {
        Self::spawn(false)
    }

    /// Listening on 127.0.0.1 and 127.0.0.2 (all of 127/8 is on `lo`), each on the listening
    /// and the alternate port, so coturn offers RFC 5780 NAT behaviour discovery.
    pub fn start_rfc5780() -> Coturn {
        Self::spawn(true)
    }

    fn spawn(rfc5780: bool) -> Coturn {
        let turnserver = require_program("turnserver");
        let dir = tempfile::tempdir().expect("create the coturn directory");
        let (port, alt_port) = (free_port(), free_port());
        let ips: &[[u8; 4]] = if rfc5780 {
            &[[127, 0, 0, 1], [127, 0, 0, 2]]
        } else {
            &[[127, 0, 0, 1]]
        };
        let listening_ips = ips
            .iter()
            .map(|ip| format!("listening-ip={}", std::net::Ipv4Addr::from(*ip)))
            .collect::<Vec<_>>()
            .join("\n");
        let template = std::fs::read_to_string(peers_dir().join("turnserver.conf")).unwrap();
        let conf = template
            .replace("@LISTENING_IPS@", &listening_ips)
            .replace("@PORT@", &port.to_string())
            .replace("@ALT_PORT@", &alt_port.to_string())
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
            .flat_map(|ip| ports.iter().map(|port| SocketAddr::from((*ip, *port))))
            .collect();
        for &listener in &listeners {
            daemon.wait_for_tcp(listener);
        }
        // coturn serves UDP from other threads than TCP: wait until each UDP listener answers.
        for &listener in &listeners {
            wait_for_udp(&daemon, listener);
        }
        Coturn {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            other: rfc5780.then(|| SocketAddr::from(([127, 0, 0, 2], alt_port))),
            daemon,
            _dir: dir,
        }
    }

    /// `127.0.0.1:port`, as a probe's server entry.
    pub fn server(&self) -> String {
        self.addr.to_string()
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
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
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
