//! RFC 3263 §4: from a SIP URI to the destinations to try, in order (transport, host, port).
//!
//! An IP literal or an explicit port skips DNS service discovery; an explicit transport skips
//! NAPTR; otherwise NAPTR records choose the transports (order, then preference), SRV records
//! the hosts and ports (priority, then weighted choice, RFC 2782), and the caller looks up each
//! host's addresses when it comes to it. Where a step finds nothing, the next falls back to the
//! defaults of RFC 3263 §4.1/§4.2. Every destination is returned, so that the probe can fail
//! over to a backup as a phone does (§4.3, RFC 3261 §17.1.1).
//!
//! Service discovery must not use up the probe's budget: a resolver that drops NAPTR queries
//! would otherwise leave no time for the address lookup. Each NAPTR and SRV query may take at
//! most a quarter of the probe's timeout, and all of them together half of it; a query that
//! runs out, or fails otherwise short of NXDOMAIN, counts as "no records" for its step (RFC 3263
//! falls back then), and its failure is kept as a note for the outcome.

use super::transport::Transport;
use super::uri::ServerUri;
use crate::probe::dns::{Dns, Naptr, Srv};
use crate::probe::{DnsErrorKind, DnsRecord, Failure};
use std::net::IpAddr;
use std::time::Duration;
use tokio::time::Instant;

/// The DNS lookups RFC 3263 needs; [`Dns`] in the probes, fixed data in the unit tests.
pub(super) trait Records {
    async fn naptr(&self, name: &str) -> Result<Vec<Naptr>, Failure>;
    async fn srv(&self, name: &str) -> Result<Vec<Srv>, Failure>;
}

impl Records for Dns {
    async fn naptr(&self, name: &str) -> Result<Vec<Naptr>, Failure> {
        self.lookup_naptr(name).await
    }
    async fn srv(&self, name: &str) -> Result<Vec<Srv>, Failure> {
        self.lookup_srv(name).await
    }
}

/// One place to send requests to: a transport and a host (name or IP literal) with its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Destination {
    pub transport: Transport,
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// The destinations, best first, and the discovery steps that failed and were fallen back
/// from.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Resolved {
    pub destinations: Vec<Destination>,
    pub notes: Vec<Failure>,
}

/// Bounds the service discovery queries (see the module documentation).
struct Discovery {
    /// All of discovery ends here.
    until: Instant,
    /// The most one query may take.
    per_query: Duration,
}

impl Discovery {
    fn new(timeout: Duration) -> Self {
        Discovery {
            until: Instant::now() + timeout / 2,
            per_query: timeout / 4,
        }
    }

    /// Runs one query within its share; `Ok(None)` for NXDOMAIN (the name does not exist, so
    /// nothing below it does either, RFC 8020), an empty list for every other failure, which
    /// is noted.
    async fn query<T>(
        &self,
        name: &str,
        record: DnsRecord,
        lookup: impl Future<Output = Result<Vec<T>, Failure>>,
        notes: &mut Vec<Failure>,
    ) -> Option<Vec<T>> {
        let until = self.until.min(Instant::now() + self.per_query);
        let failure = match tokio::time::timeout_at(until, lookup).await {
            Ok(Ok(records)) => return Some(records),
            Ok(Err(Failure::DnsFailure {
                kind: DnsErrorKind::NxDomain,
                ..
            })) => return None,
            Ok(Err(failure)) => failure,
            Err(_) => Failure::DnsFailure {
                name: name.to_owned(),
                record,
                kind: DnsErrorKind::Timeout,
            },
        };
        notes.push(failure);
        Some(Vec::new())
    }
}

/// Resolves `uri` to the destinations to try, in order. `pick(total)` returns a number in
/// `0..=total` for the weighted SRV choice (random in the probes, fixed in tests); `timeout` is
/// the probe's, which the discovery queries take their shares of.
pub(super) async fn resolve<R: Records>(
    records: &R,
    uri: &ServerUri,
    pick: &mut impl FnMut(u32) -> u32,
    timeout: Duration,
) -> Resolved {
    let mut resolved = Resolved::default();
    let literal = uri.host.parse::<IpAddr>().ok();
    let fallback = |uri: &ServerUri, port: Option<u16>| {
        // §4.1: a numeric address or an explicit port means UDP for sip:, TLS for sips:
        let transport = uri.transport.unwrap_or(default_transport(uri.secure));
        Destination {
            transport,
            host: uri.host.clone(),
            port: port.unwrap_or(transport.default_port()),
        }
    };
    if literal.is_some() || uri.port.is_some() {
        resolved.destinations.push(fallback(uri, uri.port));
        return resolved;
    }
    let discovery = Discovery::new(timeout);
    let notes = &mut resolved.notes;
    let services = match uri.transport {
        Some(transport) => vec![(transport, srv_name(transport, &uri.host))],
        None => {
            let naptr = records.naptr(&uri.host);
            let Some(naptrs) = discovery
                .query(&uri.host, DnsRecord::Naptr, naptr, notes)
                .await
            else {
                // NXDOMAIN: the address lookup of the host says so in its own words.
                resolved.destinations.push(fallback(uri, None));
                return resolved;
            };
            let chosen = naptr_services(&naptrs, uri.secure);
            if chosen.is_empty() {
                // §4.1: no NAPTR, so SRV for every transport we support
                supported(uri.secure)
                    .iter()
                    .map(|t| (*t, srv_name(*t, &uri.host)))
                    .collect()
            } else {
                chosen
            }
        }
    };
    for (transport, name) in services {
        let srv = records.srv(&name);
        let srvs = discovery
            .query(&name, DnsRecord::Srv, srv, notes)
            .await
            .unwrap_or_default();
        resolved
            .destinations
            .extend(order_srv(srvs, pick).into_iter().map(|srv| Destination {
                transport,
                host: srv.target,
                port: srv.port,
            }));
    }
    if resolved.destinations.is_empty() {
        // §4.2: no SRV records, so the host's own address with the default port
        resolved.destinations.push(fallback(uri, None));
    }
    resolved
}

fn default_transport(secure: bool) -> Transport {
    if secure {
        Transport::Tls
    } else {
        Transport::Udp
    }
}

/// The transports a URI may use, in the order their SRV records are tried.
fn supported(secure: bool) -> &'static [Transport] {
    if secure {
        &[Transport::Tls]
    } else {
        &[Transport::Udp, Transport::Tcp, Transport::Tls]
    }
}

fn srv_name(transport: Transport, host: &str) -> String {
    match transport {
        Transport::Udp => format!("_sip._udp.{host}"),
        Transport::Tcp => format!("_sip._tcp.{host}"),
        Transport::Tls => format!("_sips._tcp.{host}"),
    }
}

/// The SRV names NAPTR points to, best first (§4.1): only terminal `S` records for services we
/// support (a `sips:` URI only `SIPS+D2T`), sorted by order, then preference.
fn naptr_services(naptrs: &[Naptr], secure: bool) -> Vec<(Transport, String)> {
    let mut usable: Vec<(&Naptr, Transport)> = naptrs
        .iter()
        .filter(|n| n.flags.eq_ignore_ascii_case("s"))
        .filter_map(|n| {
            let transport = match n.services.to_ascii_uppercase().as_str() {
                "SIP+D2U" => Transport::Udp,
                "SIP+D2T" => Transport::Tcp,
                "SIPS+D2T" => Transport::Tls,
                _ => return None,
            };
            supported(secure)
                .contains(&transport)
                .then_some((n, transport))
        })
        .collect();
    usable.sort_by_key(|(n, _)| (n.order, n.preference));
    usable
        .into_iter()
        .map(|(n, t)| (t, n.replacement.trim_end_matches('.').to_owned()))
        .collect()
}

/// Orders SRV records as RFC 2782 says to try them: by priority, and within one priority by a
/// weighted random choice, zero weights first in line. A lone `.` target means "no service".
fn order_srv(mut srvs: Vec<Srv>, pick: &mut impl FnMut(u32) -> u32) -> Vec<Srv> {
    srvs.retain(|s| s.target != "." && !s.target.is_empty());
    for srv in &mut srvs {
        srv.target = srv.target.trim_end_matches('.').to_owned();
    }
    srvs.sort_by_key(|s| (s.priority, s.weight != 0));
    let mut ordered = Vec::with_capacity(srvs.len());
    while !srvs.is_empty() {
        let priority = srvs[0].priority;
        let group_len = srvs.iter().take_while(|s| s.priority == priority).count();
        let mut group: Vec<Srv> = srvs.drain(..group_len).collect();
        while !group.is_empty() {
            let total: u32 = group.iter().map(|s| u32::from(s.weight)).sum();
            let chosen = pick(total).min(total);
            let mut running = 0;
            let index = group
                .iter()
                .position(|s| {
                    running += u32::from(s.weight);
                    running >= chosen
                })
                .unwrap_or(0);
            ordered.push(group.remove(index));
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::sip::uri;
    use std::collections::HashMap;

    /// DNS as data: names not listed do not exist; `silent` names never answer.
    #[derive(Default)]
    struct Zone {
        naptr: HashMap<&'static str, Vec<Naptr>>,
        srv: HashMap<&'static str, Vec<Srv>>,
        silent: Vec<&'static str>,
    }

    fn nx(name: &str, record: DnsRecord) -> Failure {
        Failure::DnsFailure {
            name: name.to_owned(),
            record,
            kind: DnsErrorKind::NxDomain,
        }
    }

    impl Zone {
        async fn answer<T: Clone>(
            &self,
            name: &str,
            table: &HashMap<&'static str, Vec<T>>,
            record: DnsRecord,
        ) -> Result<Vec<T>, Failure> {
            if self.silent.contains(&name) {
                std::future::pending::<()>().await;
            }
            table.get(name).cloned().ok_or_else(|| nx(name, record))
        }
    }

    impl Records for Zone {
        async fn naptr(&self, name: &str) -> Result<Vec<Naptr>, Failure> {
            match self.answer(name, &self.naptr, DnsRecord::Naptr).await {
                Err(_) if name.ends_with("example.com") => Ok(Vec::new()),
                other => other,
            }
        }
        async fn srv(&self, name: &str) -> Result<Vec<Srv>, Failure> {
            self.answer(name, &self.srv, DnsRecord::Srv).await
        }
    }

    fn naptr(order: u16, preference: u16, services: &str, replacement: &str) -> Naptr {
        Naptr {
            order,
            preference,
            flags: "S".into(),
            services: services.into(),
            replacement: replacement.into(),
        }
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    fn to(transport: Transport, host: &str, port: u16) -> Destination {
        Destination {
            transport,
            host: host.into(),
            port,
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(8);

    async fn run(zone: &Zone, server: &str) -> Resolved {
        let uri = uri::parse(server).unwrap();
        resolve(zone, &uri, &mut |_| 0, TIMEOUT).await
    }

    async fn destinations(zone: &Zone, server: &str) -> Vec<Destination> {
        let resolved = run(zone, server).await;
        assert_eq!(resolved.notes, vec![], "{server}");
        resolved.destinations
    }

    fn example_zone() -> Zone {
        let mut zone = Zone::default();
        zone.naptr.insert(
            "example.com",
            vec![
                naptr(50, 10, "SIP+D2U", "_sip._udp.example.com."),
                naptr(10, 20, "SIP+D2T", "_sip._tcp.example.com."),
                naptr(10, 10, "SIPS+D2T", "_sips._tcp.example.com."),
                naptr(5, 10, "E2U+sip", "ignored.example.com."),
            ],
        );
        zone.srv.insert(
            "_sips._tcp.example.com",
            vec![
                srv(20, 0, 5061, "backup.example.com."),
                srv(10, 0, 5061, "tls1.example.com."),
            ],
        );
        zone.srv.insert(
            "_sip._tcp.example.com",
            vec![srv(10, 0, 5060, "tcp.example.com.")],
        );
        zone
    }

    #[tokio::test]
    async fn naptr_order_then_preference_then_srv_priority_every_target_in_order() {
        // order 10 beats 50; within order 10, preference 10 (SIPS) beats 20 (TCP); the unknown
        // E2U service is skipped; SRV priority 10 beats 20; the UDP service has no SRV records.
        assert_eq!(
            destinations(&example_zone(), "sip:example.com").await,
            vec![
                to(Transport::Tls, "tls1.example.com", 5061),
                to(Transport::Tls, "backup.example.com", 5061),
                to(Transport::Tcp, "tcp.example.com", 5060),
            ]
        );
    }

    #[tokio::test]
    async fn explicit_transport_skips_naptr() {
        assert_eq!(
            destinations(&example_zone(), "sip:example.com;transport=tcp").await,
            vec![to(Transport::Tcp, "tcp.example.com", 5060)]
        );
    }

    #[tokio::test]
    async fn explicit_port_or_ip_literal_skips_srv() {
        let zone = example_zone();
        for (server, expected) in [
            (
                "sip:example.com:5070",
                to(Transport::Udp, "example.com", 5070),
            ),
            (
                "sips:example.com:5071",
                to(Transport::Tls, "example.com", 5071),
            ),
            ("sip:[2001:db8::1]", to(Transport::Udp, "2001:db8::1", 5060)),
            (
                "sip:198.51.100.7;transport=tcp",
                to(Transport::Tcp, "198.51.100.7", 5060),
            ),
        ] {
            assert_eq!(
                destinations(&zone, server).await,
                vec![expected],
                "{server}"
            );
        }
    }

    #[tokio::test]
    async fn without_naptr_srv_is_asked_per_transport_then_the_host() {
        let mut zone = example_zone();
        zone.naptr.clear();
        // no _sip._udp, so _sip._tcp; _sips._tcp too, as a sip: URI may use TLS
        assert_eq!(
            destinations(&zone, "sip:example.com").await,
            vec![
                to(Transport::Tcp, "tcp.example.com", 5060),
                to(Transport::Tls, "tls1.example.com", 5061),
                to(Transport::Tls, "backup.example.com", 5061),
            ]
        );
        // a sips: URI looks only at _sips._tcp
        assert_eq!(
            destinations(&zone, "sips:example.com").await,
            vec![
                to(Transport::Tls, "tls1.example.com", 5061),
                to(Transport::Tls, "backup.example.com", 5061),
            ]
        );
        zone.srv.clear();
        assert_eq!(
            destinations(&zone, "sip:example.com").await,
            vec![to(Transport::Udp, "example.com", 5060)]
        );
    }

    #[tokio::test]
    async fn a_sips_uri_ignores_plain_naptr_services() {
        let mut zone = example_zone();
        zone.naptr.insert(
            "example.com",
            vec![naptr(1, 1, "SIP+D2U", "_sip._udp.example.com.")],
        );
        assert_eq!(
            destinations(&zone, "sips:example.com").await[0],
            to(Transport::Tls, "tls1.example.com", 5061)
        );
    }

    #[tokio::test]
    async fn a_name_that_does_not_exist_goes_straight_to_its_address_lookup() {
        // NXDOMAIN for NAPTR: no SRV names below it can exist (RFC 8020).
        let resolved = run(&Zone::default(), "sip:no-such-host.invalid").await;
        assert_eq!(
            resolved,
            Resolved {
                destinations: vec![to(Transport::Udp, "no-such-host.invalid", 5060)],
                notes: vec![],
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_naptr_query_takes_a_quarter_of_the_timeout_then_srv_is_asked() {
        let mut zone = example_zone();
        zone.silent.push("example.com");
        let started = Instant::now();
        let resolved = run(&zone, "sip:example.com").await;
        assert_eq!(started.elapsed(), TIMEOUT / 4);
        assert_eq!(
            resolved.notes,
            vec![Failure::DnsFailure {
                name: "example.com".into(),
                record: DnsRecord::Naptr,
                kind: DnsErrorKind::Timeout,
            }]
        );
        assert_eq!(
            resolved.destinations[0],
            to(Transport::Tcp, "tcp.example.com", 5060)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn all_of_discovery_takes_at_most_half_of_the_timeout() {
        let mut zone = example_zone();
        zone.silent.extend([
            "example.com",
            "_sip._udp.example.com",
            "_sip._tcp.example.com",
        ]);
        let started = Instant::now();
        let resolved = run(&zone, "sip:example.com").await;
        assert_eq!(started.elapsed(), TIMEOUT / 2);
        // NAPTR and _sip._udp a quarter each, nothing left for _sip._tcp; an answer that is
        // there at once (as from the cache) still counts
        assert_eq!(resolved.notes.len(), 3, "{:?}", resolved.notes);
        assert_eq!(
            resolved.destinations,
            vec![
                to(Transport::Tls, "tls1.example.com", 5061),
                to(Transport::Tls, "backup.example.com", 5061),
            ]
        );
    }

    #[test]
    fn srv_weights_choose_within_a_priority() {
        let records = vec![
            srv(10, 60, 1, "a"),
            srv(10, 40, 2, "b"),
            srv(10, 0, 3, "zero"),
            srv(5, 0, 4, "first"),
        ];
        // total weight in priority 10 is 100; 0 picks the zero-weight record first (RFC 2782),
        // then a draw of 61..=100 lands on b, leaving a.
        let mut draws = vec![0, 0, 70, 0].into_iter();
        let ordered = order_srv(records, &mut |_| draws.next().unwrap());
        let ports: Vec<u16> = ordered.iter().map(|s| s.port).collect();
        assert_eq!(ports, vec![4, 3, 2, 1]);
    }

    #[test]
    fn a_dot_target_means_no_service() {
        assert!(order_srv(vec![srv(0, 0, 5060, ".")], &mut |_| 0).is_empty());
    }
}
