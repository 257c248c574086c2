//! Every address, in order: the one place where the probes (SIP, HTTP, STUN) turn the addresses
//! of a name into one connection, recording each address that failed on the way.
//!
//! Over TCP (and TLS on top of it) attempts race as RFC 8305 §5 describes ("Happy Eyeballs"):
//! the addresses interleaved by family (§4: IPv6 first), a new attempt started every
//! [`CONNECTION_ATTEMPT_DELAY`] or as soon as the previous one fails, the first connection to
//! complete wins and the others are dropped. Written here rather than taken from a crate: the
//! tokio crates that do it (`happy-eyeballs`, `happyeyeballs`) resolve the name themselves and
//! return only the winning stream, and hyper-util's `HttpConnector` does it inside its HTTP
//! client only, while the probes need their own resolver (it enforces the allow-list) and every
//! failed address in the outcome.
//!
//! Over UDP there is nothing to race: an address has failed only once the probe's transaction
//! on it has (no answer, ICMP unreachable). So addresses are tried one after another, and
//! [`udp_share`] bounds each try so that a dead first address cannot use up the budget: every
//! attempt but the last gets half of the time that remains, the last all of it. With the
//! default 10 s a dead primary costs 5 s and the backup still has 5 s, enough for SIP's
//! retransmissions (T1 = 500 ms) and STUN's (RTO = 500 ms).

use super::Failure;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::time::Instant;

/// RFC 8305 §5: the recommended Connection Attempt Delay.
pub const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// One destination that was tried and failed before the probe's answer (or before it gave up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// The name and port the address belongs to: an SRV target, the configured host, or an
    /// address as written.
    pub target: String,
    /// `None` when the name gave no address to try (its lookup failed or was not allowed).
    pub address: Option<SocketAddr>,
    pub failure: Failure,
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.address {
            Some(address) if address.to_string() != self.target => {
                write!(f, "{} ({address}): {}", self.target, self.failure)
            }
            _ => write!(f, "{}: {}", self.target, self.failure),
        }
    }
}

/// The attempts in one line, for a table or a condition message.
pub fn listing(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The lines a probe's table shows for its failover: what failed before the answer, and the
/// service discovery steps that were fallen back from. Nothing when all went as planned.
pub fn facts(attempts: &[Attempt], dns_fallbacks: &[Failure]) -> Vec<(&'static str, String)> {
    let mut facts = Vec::new();
    if !attempts.is_empty() {
        facts.push(("tried and failed", listing(attempts)));
    }
    if !dns_fallbacks.is_empty() {
        let notes: Vec<String> = dns_fallbacks.iter().map(ToString::to_string).collect();
        facts.push(("dns fallback", notes.join("; ")));
    }
    facts
}

/// RFC 8305 §4: the addresses with the families alternating, IPv6 first, each family's own
/// order kept (the resolver's).
pub fn interleave(ips: &[IpAddr]) -> Vec<IpAddr> {
    let (v6, v4): (Vec<IpAddr>, Vec<IpAddr>) = ips.iter().partition(|ip| ip.is_ipv6());
    let mut ordered = Vec::with_capacity(ips.len());
    let (mut v6, mut v4) = (v6.into_iter(), v4.into_iter());
    loop {
        match (v6.next(), v4.next()) {
            (None, None) => return ordered,
            (a, b) => ordered.extend(a.into_iter().chain(b)),
        }
    }
}

/// Until when one UDP attempt may run: the whole budget for the last address, else half of
/// what remains (see the module documentation).
pub fn udp_share(deadline: Instant, last: bool) -> Instant {
    let now = Instant::now();
    if last || now >= deadline {
        return deadline;
    }
    now + (deadline - now) / 2
}

/// Races `open` over `addresses` (already in the order to try, see [`interleave`]) as RFC 8305
/// §5 does: the next attempt starts after [`CONNECTION_ATTEMPT_DELAY`] or as soon as every
/// running one has failed. Returns the first success and its address, or `None`; either way
/// the attempts that failed, in the order they failed, with those still running at `deadline`
/// as [`Failure::Timeout`] (`timeout` is what that failure names).
pub async fn race<T, Fut>(
    addresses: &[SocketAddr],
    deadline: Instant,
    timeout: Duration,
    open: impl Fn(SocketAddr) -> Fut,
) -> (Option<(T, SocketAddr)>, Vec<(SocketAddr, Failure)>)
where
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut failed = Vec::new();
    let mut running = FuturesUnordered::new();
    let mut next = addresses.iter().copied();
    let mut started = Vec::new();
    let attempt = |address: SocketAddr| {
        let opening = open(address);
        async move { (address, opening.await) }
    };
    loop {
        if running.is_empty() {
            match next.next() {
                Some(address) => {
                    started.push(address);
                    running.push(attempt(address));
                }
                None => return (None, failed),
            }
        }
        let stagger =
            tokio::time::sleep_until(deadline.min(Instant::now() + CONNECTION_ATTEMPT_DELAY));
        tokio::select! {
            Some((address, result)) = running.next() => match result {
                Ok(value) => return (Some((value, address)), failed),
                Err(failure) => failed.push((address, failure)),
            },
            () = stagger => {
                if Instant::now() >= deadline {
                    let done: Vec<SocketAddr> = failed.iter().map(|(a, _)| *a).collect();
                    for address in started.into_iter().filter(|a| !done.contains(a)) {
                        failed.push((address, Failure::Timeout { after: timeout }));
                    }
                    return (None, failed);
                }
                if let Some(address) = next.next() {
                    started.push(address);
                    running.push(attempt(address));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn families_alternate_ipv6_first() {
        let ips = [
            ip("192.0.2.1"),
            ip("192.0.2.2"),
            ip("2001:db8::1"),
            ip("192.0.2.3"),
        ];
        assert_eq!(
            interleave(&ips),
            vec![
                ip("2001:db8::1"),
                ip("192.0.2.1"),
                ip("192.0.2.2"),
                ip("192.0.2.3")
            ]
        );
        assert_eq!(interleave(&[]), Vec::<IpAddr>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_first_address_does_not_delay_the_second_beyond_the_attempt_delay() {
        let started = Instant::now();
        let (first, second) = (addr("[2001:db8::1]:5061"), addr("192.0.2.1:5061"));
        let (won, failed) = race(
            &[first, second],
            started + Duration::from_secs(10),
            Duration::from_secs(10),
            |a| async move {
                if a == first {
                    std::future::pending::<()>().await;
                }
                Ok(a)
            },
        )
        .await;
        assert_eq!(won, Some((second, second)));
        assert!(failed.is_empty());
        assert_eq!(started.elapsed(), CONNECTION_ATTEMPT_DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_attempt_starts_the_next_at_once_and_is_recorded() {
        let started = Instant::now();
        let (first, second) = (addr("[2001:db8::1]:80"), addr("192.0.2.1:80"));
        let refused = Failure::ConnectRefused {
            peer: first.to_string(),
        };
        let (won, failed) = race(
            &[first, second],
            started + Duration::from_secs(10),
            Duration::from_secs(10),
            |a| {
                let refused = refused.clone();
                async move { if a == first { Err(refused) } else { Ok(()) } }
            },
        )
        .await;
        assert_eq!(won, Some(((), second)));
        assert_eq!(failed, vec![(first, refused)]);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_running_at_the_deadline_time_out() {
        let started = Instant::now();
        let addresses = [addr("192.0.2.1:80"), addr("192.0.2.2:80")];
        let timeout = Duration::from_secs(1);
        let (won, failed) = race(&addresses, started + timeout, timeout, |_| {
            std::future::pending::<Result<(), Failure>>()
        })
        .await;
        assert_eq!(won, None);
        assert_eq!(
            failed,
            addresses
                .iter()
                .map(|a| (*a, Failure::Timeout { after: timeout }))
                .collect::<Vec<_>>()
        );
        assert_eq!(started.elapsed(), timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn each_udp_attempt_but_the_last_gets_half_of_what_remains() {
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(
            udp_share(deadline, false),
            Instant::now() + Duration::from_secs(5)
        );
        assert_eq!(udp_share(deadline, true), deadline);
    }
}
