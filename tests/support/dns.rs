//! unbound as the tests' DNS server (tests/peers/unbound.conf): authoritative for the test zone
//! `voipcheck.test.` (tests/peers/voipcheck.test.zone, NAPTR/SRV/A/AAAA), with subtrees that
//! answer REFUSED, SERVFAIL or nothing at all, on a free loopback port. It recurses for nothing
//! and asks no one outside. [`DropNaptr`] puts a relay in front that loses NAPTR queries, as
//! some resolvers and middleboxes do.

use super::{Daemon, free_port, peers_dir, require_program};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

/// A running unbound; stopped when dropped.
pub struct Unbound {
    pub addr: SocketAddr,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Unbound {
    /// Serves the test zone with its `@NAME@` port placeholders filled from `ports`; a
    /// placeholder not given becomes a port nothing listens on.
    pub fn start(ports: &[(&str, u16)]) -> Unbound {
        let program = require_program("unbound");
        let dir = tempfile::tempdir().expect("temp dir for unbound");
        let port = free_port();
        let mut zone = std::fs::read_to_string(peers_dir().join("voipcheck.test.zone")).unwrap();
        for (name, value) in ports {
            zone = zone.replace(&format!("@{name}@"), &value.to_string());
        }
        let placeholder = regex::Regex::new("@[A-Z_]+@").unwrap();
        zone = placeholder
            .replace_all(&zone, |_: &regex::Captures| free_port().to_string())
            .into_owned();
        std::fs::write(dir.path().join("voipcheck.test.zone"), zone).unwrap();
        let conf = std::fs::read_to_string(peers_dir().join("unbound.conf"))
            .unwrap()
            .replace("@PORT@", &port.to_string())
            .replace("@DIR@", &dir.path().display().to_string());
        let conf_path = dir.path().join("unbound.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut command = Command::new(program);
        command.arg("-d").arg("-c").arg(&conf_path);
        let daemon = Daemon::spawn("unbound", command, &dir.path().join("unbound.log"));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until_answering(&daemon, addr);
        Unbound {
            addr,
            daemon,
            _dir: dir,
        }
    }

    /// A resolver asking this server only.
    pub fn dns(&self) -> voipcheck::probe::dns::Dns {
        voipcheck::probe::dns::Dns::with_nameserver(self.addr)
    }

    pub fn log_text(&self) -> String {
        self.daemon.log_text()
    }
}

/// The type code of the question in a DNS query (RFC 1035 §4.1.2), if it has one.
fn question_type(query: &[u8]) -> Option<u16> {
    let mut at = 12;
    while *query.get(at)? != 0 {
        at += usize::from(query[at]) + 1;
    }
    Some(u16::from_be_bytes([
        *query.get(at + 1)?,
        *query.get(at + 2)?,
    ]))
}

/// A query for `ns.voipcheck.test A`, to see that unbound serves the zone.
fn probe_query() -> Vec<u8> {
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["ns", "voipcheck", "test"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

fn wait_until_answering(daemon: &Daemon, addr: SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut answer = [0u8; 512];
    while Instant::now() < deadline {
        let _ = socket.send_to(&probe_query(), addr);
        // An answer with RCODE 0 (NOERROR): the zone is loaded.
        if let Ok(n) = socket.recv(&mut answer)
            && n > 3
            && answer[3] & 0x0f == 0
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "unbound did not answer on {addr} within 15 s:\n{}",
        daemon.log_text()
    );
}

/// A UDP relay to a name server that forwards every query and its answer, except NAPTR
/// queries, which it drops. Runs on the test's tokio runtime until dropped.
pub struct DropNaptr {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// RFC 3403: the NAPTR record type.
const NAPTR: u16 = 35;

impl DropNaptr {
    pub async fn start(upstream: SocketAddr) -> DropNaptr {
        let socket = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buffer = [0u8; 4096];
            while let Ok((n, client)) = socket.recv_from(&mut buffer).await {
                let query = buffer[..n].to_vec();
                if question_type(&query) == Some(NAPTR) {
                    continue;
                }
                let socket = socket.clone();
                tokio::spawn(async move {
                    let relay = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    relay.send_to(&query, upstream).await.unwrap();
                    let mut answer = [0u8; 4096];
                    let wait =
                        tokio::time::timeout(Duration::from_secs(2), relay.recv(&mut answer));
                    if let Ok(Ok(n)) = wait.await {
                        let _ = socket.send_to(&answer[..n], client).await;
                    }
                });
            }
        });
        DropNaptr { addr, task }
    }
}

impl Drop for DropNaptr {
    fn drop(&mut self) {
        self.task.abort();
    }
}
