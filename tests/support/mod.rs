//! Shared test harness: real peers (Kamailio, SIPp, coturn, nginx, unbound) started on free
//! loopback ports, stopped when their guard is dropped. Each peer has its own module; this one
//! holds the process and port plumbing they share.
//!
//! Every test binary compiles this module but uses only part of it.
#![allow(dead_code)]

pub mod certs;
pub mod coturn;
pub mod dns;
pub mod fake_api;
pub mod kamailio;
pub mod nghttpd;
pub mod nginx;
pub mod operator;
pub mod relay;
pub mod sipp;
pub mod stund;

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A loopback port that is free for both UDP and TCP right now. The peer binds it a moment
/// later; the window for another process to take it is small and accepted. Within this test
/// process a port is handed out once only: the kernel may offer a just-released port again, and
/// two peers (e.g. nginx's HTTP and HTTPS listeners) given the same port would silently share it.
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind a TCP port on loopback");
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && HANDED_OUT
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(port)
        {
            return port;
        }
    }
}

/// The ports [`free_port`] and [`free_media_port`] handed out in this test process.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// An even loopback UDP port whose next three are free too, for SIPp's `-mp` (with
/// `-rtp_echo` it binds the audio port and the video port two above it): with any free port,
/// SIPp failed now and then with "Address already in use" on the port next to it.
pub fn free_media_port() -> u16 {
    loop {
        let probe = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port on loopback");
        let port = probe.local_addr().unwrap().port();
        if !port.is_multiple_of(2) || port > u16::MAX - 3 {
            continue;
        }
        let held: Vec<UdpSocket> = (1..=3)
            .filter_map(|n| UdpSocket::bind(("127.0.0.1", port + n)).ok())
            .collect();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() == 3 && (port..=port + 3).all(|p| !handed_out.contains(&p)) {
            handed_out.extend(port..=port + 3);
            return port;
        }
    }
}

/// The path of a program the README's test command installs; panics with that advice if missing.
pub fn require_program(name: &str) -> PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/sbin",
        "/bin",
    ] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("{name} is not installed: run scripts/test, which installs the test peers");
}

/// A running peer process. Dropping it stops the process and everything it forked.
pub struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `command` in its own process group with output going to `log`. If the test
    /// process dies without dropping the guard, the kernel sends the daemon SIGTERM.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Daemon {
        let out = std::fs::File::create(log).expect("create daemon log");
        let err = out.try_clone().unwrap();
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Daemon {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        }
    }

    /// Waits until `addr` accepts TCP connections, or panics with the daemon's log.
    pub fn wait_for_tcp(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status} before listening:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{} did not listen on {addr} within 15 s:\n{}",
            self.name,
            self.log_text()
        );
    }

    /// Waits up to `within` for the process to exit by itself; its exit status, or `None`
    /// while it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return None,
            }
        }
    }

    /// The daemon's process id (e.g. to read its CPU time from /proc).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What the daemon printed so far, for failure messages.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Stops the daemon now (e.g. to simulate an outage); dropping afterwards is harmless.
    pub fn stop(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child's process group.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; forked workers that ignored SIGTERM go too.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory with the peers' configuration templates (`tests/peers/`).
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}
