//! Debian stun-server's `stund`, the RFC 3489 reference server (Vovida 0.97), as a STUN peer:
//! an old server that answers with SOURCE-ADDRESS and CHANGED-ADDRESS. It needs two IP
//! addresses and two ports; all of 127/8 is on `lo`, so 127.0.0.1 and 127.0.0.2 serve.

use super::{Daemon, free_port, require_program};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Stund {
    /// The primary address, 127.0.0.1 and the primary port.
    pub addr: SocketAddr,
    /// The alternate address it announces in CHANGED-ADDRESS: 127.0.0.2 and the second port.
    pub changed: SocketAddr,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Stund {
    pub fn start() -> Stund {
        let program = require_program("stund");
        let dir = tempfile::tempdir().expect("create the stund directory");
        let (port, alt_port) = (free_port(), free_port());
        let mut command = Command::new(program);
        command.args(["-h", "127.0.0.1", "-a", "127.0.0.2"]).args([
            "-p",
            &port.to_string(),
            "-o",
            &alt_port.to_string(),
        ]);
        let daemon = Daemon::spawn("stund", command, &dir.path().join("stund.log"));
        let stund = Stund {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            changed: SocketAddr::from(([127, 0, 0, 2], alt_port)),
            daemon,
            _dir: dir,
        };
        stund.wait_until_answering();
        stund
    }

    /// `127.0.0.1:<port>`, as a server entry.
    pub fn server(&self) -> String {
        self.addr.to_string()
    }

    /// stund prints nothing when it is ready: waits until a Binding request gets any answer.
    fn wait_until_answering(&self) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut request = vec![0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        request.extend_from_slice(&[9; 12]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 1024];
        while Instant::now() < deadline {
            let _ = socket.send_to(&request, self.addr);
            if socket.recv_from(&mut buf).is_ok() {
                return;
            }
        }
        panic!(
            "stund did not answer within 10 s:\n{}",
            self.daemon.log_text()
        );
    }
}
