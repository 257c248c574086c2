//! SIPp (Debian `sip-tester`) as a scripted UAS: each scenario in tests/peers/sipp/ answers
//! the probe's requests with one of the odd but valid answers real registrars give (a 200 that
//! binds nothing, a rewritten Contact, compact and folded headers, 302, 503, IPv6, ...).

use super::{Daemon, free_port, peers_dir, require_program};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

/// A running SIPp; stopped when dropped.
pub struct Sipp {
    daemon: Daemon,
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Sipp {
    /// Starts SIPp with `scenario` (a file name in tests/peers/sipp/) on a free port of `ip`
    /// (127.0.0.1 or ::1), ending after `calls` calls (Call-IDs), and waits until it listens.
    pub fn start(scenario: &str, ip: IpAddr, calls: u32) -> Sipp {
        Self::start_with(scenario, ip, calls, &[])
    }

    /// [`Sipp::start`] with more command line options (e.g. `-rtp_echo` with `-mp PORT`).
    pub fn start_with(scenario: &str, ip: IpAddr, calls: u32, options: &[&str]) -> Sipp {
        let program = require_program("sipp");
        let dir = tempfile::tempdir().expect("temp dir for sipp");
        let port = free_port();
        let mut command = Command::new(program);
        command
            .current_dir(dir.path())
            .arg("-sf")
            .arg(peers_dir().join("sipp").join(scenario))
            .args(["-i", &ip.to_string()])
            .args(["-p", &port.to_string()])
            .args(["-m", &calls.to_string()])
            .args([
                "-t",
                "u1",
                "-nostdin",
                "-trace_err",
                "-trace_msg",
                "-message_file",
            ])
            .arg(dir.path().join("messages.log"))
            .args(options);
        let daemon = Daemon::spawn("sipp", command, &dir.path().join("sipp.log"));
        let mut sipp = Sipp {
            daemon,
            addr: SocketAddr::new(ip, port),
            _dir: dir,
        };
        sipp.wait_listening();
        sipp
    }

    /// A `sip:` URI of this UAS over UDP, with `user` in front when given.
    pub fn uri(&self, user: Option<&str>) -> String {
        let user = user.map(|u| format!("{u}@")).unwrap_or_default();
        format!("sip:{user}{};transport=udp", self.addr)
    }

    /// Waits until SIPp has gone through its calls; panics with its log if it does not end
    /// within `within` or reports a failed call (an expected request that never came, or one
    /// it did not expect).
    pub fn assert_scenario_completes(&mut self, within: Duration) {
        match self.daemon.wait_exit(within) {
            Some(status) if status.success() => {}
            Some(status) => panic!("sipp ended with {status}:\n{}", self.daemon.log_text()),
            None => panic!(
                "sipp did not finish its scenario within {within:?}:\n{}",
                self.daemon.log_text()
            ),
        }
    }

    /// SIPp's message trace so far: every message it sent and received.
    pub fn messages(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("messages.log")).unwrap_or_default()
    }

    /// Waits until SIPp has received a message containing `text` (from its message trace).
    pub fn wait_for_message(&self, text: &str, within: Duration) {
        let path = self._dir.path().join("messages.log");
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            if log.contains(text) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "sipp got no message with {text:?} within {within:?}:\n{}",
            self.daemon.log_text()
        );
    }

    /// SIPp binds its UDP port when ready: until then the port can be bound here.
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if UdpSocket::bind(self.addr).is_err() {
                return;
            }
            if self.daemon.wait_exit(Duration::ZERO).is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "sipp did not listen on {} within 10 s:\n{}",
            self.addr,
            self.daemon.log_text()
        );
    }
}
