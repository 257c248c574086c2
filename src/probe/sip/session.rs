//! What both probes do around their requests: resolve the server (RFC 3263) and try its
//! destinations and their addresses in order until one answers, all within the probe's
//! deadline (RFC 3263 §4.3, RFC 3261 §17.1.1: a transaction that times out or fails at the
//! transport goes to the next destination; so does a 503, RFC 3263 §4.3).
//!
//! Over TCP and TLS the addresses of one destination race as RFC 8305 describes; over UDP each
//! gets a bounded share of the time left (see [`crate::probe::attempts`]).

use super::Target;
use super::flow::{Flow, FlowEntry};
use super::resolve::{self, Destination};
use super::transport::{Connection, Dial, Transport};
use super::uri::ServerUri;
use crate::probe::attempts::{self, Attempt};
use crate::probe::dns::Dns;
use crate::probe::tls::CaSource;
use crate::probe::{ConfigError, DnsErrorKind, DnsRecord, Failure, tls};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// What trying the destinations gave.
pub(super) struct Tried<T> {
    /// The destination that answered; when none did, the last one tried (`None` when no
    /// address was found at all).
    pub target: Option<Target>,
    /// The destinations and addresses that failed before, in the order tried.
    pub attempts: Vec<Attempt>,
    /// Service discovery queries (NAPTR, SRV) that failed and were fallen back from.
    pub dns_fallbacks: Vec<Failure>,
    /// Over TLS: the earliest expiry in the certificate chain of the last server that
    /// completed a handshake (the one that answered, when one did).
    pub cert_not_after: Option<SystemTime>,
    /// The exchange's result on the destination that answered, else the last failure.
    pub result: Result<T, Failure>,
}

/// What a probe does on one destination's connection, until `until` (the end of that
/// attempt's share of the budget). A trait rather than an async closure: the futures of async
/// closures that borrow their surroundings are not provably `Send` (rust-lang/rust#110338),
/// and the scheduler runs probes on a multi-threaded runtime.
pub(super) trait Exchange {
    type Output;
    async fn on(&mut self, conn: Connection, until: Instant) -> Result<Self::Output, Failure>;
}

/// Whether a failure on one destination leaves the next one worth trying: it did not answer
/// (timeout, also after a provisional response or a challenge: the transaction timed out,
/// transport error) or said it cannot serve now (503).
fn next_may_serve(failure: &Failure) -> bool {
    matches!(
        failure,
        Failure::Timeout { .. }
            | Failure::NoFinalAnswer { .. }
            | Failure::ConnectRefused { .. }
            | Failure::Network { .. }
            | Failure::Tls { .. }
            | Failure::SipStatus { code: 503, .. }
    )
}

/// A probe that runs on one destination at a time (REGISTER, the test call): what it keeps of
/// the destination that answered (or the last one tried) and the messages of all of them.
pub(super) trait Run: Exchange<Output = ()> {
    type Outcome: Reached;
    fn finish(self) -> (Self::Outcome, Flow);
}

/// The fields of an outcome that say where the probe went, filled in by [`probe`].
pub(super) trait Reached {
    fn reached(&mut self, tried: Tried<()>, flow: Vec<FlowEntry>, total: Duration);
}

/// Implements [`Reached`] for an outcome with the usual fields (`target`, `attempts`,
/// `dns_fallbacks`, `cert_not_after`, `failure`, `flow`, `total`).
macro_rules! reached {
    ($outcome:ty) => {
        impl $crate::probe::sip::session::Reached for $outcome {
            fn reached(
                &mut self,
                tried: $crate::probe::sip::session::Tried<()>,
                flow: Vec<$crate::probe::sip::FlowEntry>,
                total: std::time::Duration,
            ) {
                self.target = tried.target;
                self.attempts = tried.attempts;
                self.dns_fallbacks = tried.dns_fallbacks;
                self.cert_not_after = tried.cert_not_after;
                self.failure = tried.result.err();
                self.flow = flow;
                self.total = total;
            }
        }
    };
}
pub(super) use reached;

/// Runs `run` on the destinations of `server`, or of the outbound `proxy` when there is one
/// (tried as the server's would be), within `timeout` from `started`.
pub(super) async fn probe<R: Run>(
    dns: &Dns,
    server: &ServerUri,
    proxy: Option<&ServerUri>,
    ca: Option<&CaSource>,
    timeout: Duration,
    started: Instant,
    mut run: R,
) -> Result<R::Outcome, ConfigError> {
    let next_hop = proxy.unwrap_or(server);
    let tried = each(dns, next_hop, ca, started + timeout, timeout, &mut run).await?;
    let (mut outcome, flow) = run.finish();
    outcome.reached(tried, flow.entries, started.elapsed());
    Ok(outcome)
}

/// Resolves `server` and runs `exchange` on each destination in turn until one gives a result
/// that is not a reason to try the next. `Err` only for bad input found on the way (an
/// unusable CA file, read only when TLS is actually used).
pub(super) async fn each<E: Exchange>(
    dns: &Dns,
    server: &ServerUri,
    ca: Option<&CaSource>,
    deadline: Instant,
    timeout: Duration,
    exchange: &mut E,
) -> Result<Tried<E::Output>, ConfigError> {
    let mut pick = |total: u32| rand::random_range(0..=total);
    let resolved = resolve::resolve(dns, server, &mut pick, timeout).await;
    let mut tried = Tried {
        target: None,
        attempts: Vec::new(),
        dns_fallbacks: resolved.notes,
        cert_not_after: None,
        result: Err(Failure::Timeout { after: timeout }),
    };
    let count = resolved.destinations.len();
    for (index, destination) in resolved.destinations.iter().enumerate() {
        let last = index + 1 == count;
        let addresses = match lookup(dns, destination, deadline).await {
            Ok(addresses) => addresses,
            Err(failure) => {
                tried.fail(destination, None, failure);
                continue;
            }
        };
        let dial = match destination.transport {
            Transport::Udp => Dial::Udp,
            Transport::Tcp => Dial::Tcp,
            Transport::Tls => Dial::Tls {
                config: tls::client_config(ca, &[])?,
                name: tls::server_name(&server.host)?,
            },
        };
        if destination.transport == Transport::Udp {
            for (position, address) in addresses.iter().enumerate() {
                let until = attempts::udp_share(deadline, last && position + 1 == addresses.len());
                tried.target = Some(target(destination, *address));
                let result = match Connection::open(*address, Dial::Udp).await {
                    Ok(conn) => exchange.on(conn, until).await,
                    Err(failure) => Err(failure),
                };
                if tried.settle(destination, *address, result) {
                    return Ok(tried);
                }
            }
            continue;
        }
        let open = |address| {
            let dial = dial.clone();
            async move {
                tokio::time::timeout_at(deadline, Connection::open(address, dial))
                    .await
                    .unwrap_or(Err(Failure::Timeout { after: timeout }))
            }
        };
        let (won, failed) = attempts::race(&addresses, deadline, timeout, open).await;
        for (address, failure) in failed {
            tried.target = Some(target(destination, address));
            tried.fail(destination, Some(address), failure);
        }
        if let Some((conn, address)) = won {
            tried.target = Some(target(destination, address));
            tried.cert_not_after = conn.cert_not_after();
            let result = exchange.on(conn, attempts::udp_share(deadline, last)).await;
            if tried.settle(destination, address, result) {
                return Ok(tried);
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Ok(tried)
}

impl<T> Tried<T> {
    /// Records a failed attempt; its failure is the result until another replaces it.
    fn fail(&mut self, destination: &Destination, address: Option<SocketAddr>, failure: Failure) {
        self.attempts.push(Attempt {
            target: destination.to_string(),
            address,
            failure: failure.clone(),
        });
        self.result = Err(failure);
    }

    /// Takes an exchange's result: `true` when it is final (an answer, or a failure the next
    /// destination would not mend), `false` when it was recorded as a failed attempt.
    fn settle(
        &mut self,
        destination: &Destination,
        address: SocketAddr,
        result: Result<T, Failure>,
    ) -> bool {
        match result {
            Err(failure) if next_may_serve(&failure) => {
                self.fail(destination, Some(address), failure);
                false
            }
            result => {
                self.result = result;
                true
            }
        }
    }
}

/// The destination's addresses in the order to try (RFC 8305 §4), within the deadline.
async fn lookup(
    dns: &Dns,
    destination: &Destination,
    deadline: Instant,
) -> Result<Vec<SocketAddr>, Failure> {
    let ips = match tokio::time::timeout_at(deadline, dns.lookup_ip(&destination.host)).await {
        Ok(ips) => ips?,
        // A resolver that does not answer in time is a DNS problem, not a slow SIP server.
        Err(_) => {
            return Err(Failure::DnsFailure {
                name: destination.host.clone(),
                record: DnsRecord::Address,
                kind: DnsErrorKind::Timeout,
            });
        }
    };
    Ok(attempts::interleave(&ips)
        .into_iter()
        .map(|ip| SocketAddr::new(ip, destination.port))
        .collect())
}

fn target(destination: &Destination, address: SocketAddr) -> Target {
    Target {
        transport: destination.transport,
        name: destination.to_string(),
        address,
    }
}
