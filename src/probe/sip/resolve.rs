//! RFC 3263 §4: from a SIP URI to the transport, address and port to send to.
//!
//! An IP literal or an explicit port skips DNS service discovery; an explicit transport skips
//! NAPTR; otherwise NAPTR records choose the transport (order, then preference), SRV records the
//! host and port (priority, then weighted choice, RFC 2782), and A/AAAA the address. Where a step
//! finds nothing, the next falls back to the defaults of RFC 3263 §4.1/§4.2. The probe uses the
//! first destination this yields (it measures that server, it does not fail over).

use super::Target;
use super::transport::Transport;
use super::uri::ServerUri;
use crate::probe::dns::{Dns, Naptr, Srv};
use crate::probe::{DnsErrorKind, Failure};
use std::net::{IpAddr, SocketAddr};

/// The DNS lookups RFC 3263 needs; [`Dns`] in the probes, fixed data in the unit tests.
pub(super) trait Records {
    async fn naptr(&self, name: &str) -> Result<Vec<Naptr>, Failure>;
    async fn srv(&self, name: &str) -> Result<Vec<Srv>, Failure>;
    async fn ip(&self, host: &str) -> Result<Vec<IpAddr>, Failure>;
}

impl Records for Dns {
    async fn naptr(&self, name: &str) -> Result<Vec<Naptr>, Failure> {
        self.lookup_naptr(name).await
    }
    async fn srv(&self, name: &str) -> Result<Vec<Srv>, Failure> {
        self.lookup_srv(name).await
    }
    async fn ip(&self, host: &str) -> Result<Vec<IpAddr>, Failure> {
        self.lookup_ip(host).await
    }
}

/// Resolves `uri` to the destination to probe. `pick(total)` returns a number in `0..=total`
/// for the weighted SRV choice (random in the probes, fixed in tests).
pub(super) async fn resolve<R: Records>(
    records: &R,
    uri: &ServerUri,
    pick: &mut impl FnMut(u32) -> u32,
) -> Result<Target, Failure> {
    let literal = uri.host.parse::<IpAddr>().ok();
    if literal.is_some() || uri.port.is_some() {
        // §4.1: a numeric address or an explicit port means UDP for sip:, TLS for sips:
        let transport = uri.transport.unwrap_or(default_transport(uri.secure));
        let port = uri.port.unwrap_or(transport.default_port());
        return address(records, &uri.host, transport, port).await;
    }
    let services = match uri.transport {
        Some(transport) => vec![(transport, srv_name(transport, &uri.host))],
        None => {
            let naptrs = records.naptr(&uri.host).await?;
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
        let srvs = match records.srv(&name).await {
            Ok(srvs) => srvs,
            Err(Failure::DnsFailure {
                kind: DnsErrorKind::NxDomain | DnsErrorKind::NoRecords,
                ..
            }) => Vec::new(),
            Err(other) => return Err(other),
        };
        let mut last = None;
        for srv in order_srv(srvs, pick) {
            match address(records, &srv.target, transport, srv.port).await {
                Ok(target) => return Ok(target),
                Err(failure) => last = Some(failure),
            }
        }
        if let Some(failure) = last {
            return Err(failure);
        }
    }
    // §4.2: no SRV records, so the host's own address with the default port
    let transport = uri.transport.unwrap_or(default_transport(uri.secure));
    address(records, &uri.host, transport, transport.default_port()).await
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

async fn address<R: Records>(
    records: &R,
    host: &str,
    transport: Transport,
    port: u16,
) -> Result<Target, Failure> {
    let ips = records.ip(host).await?;
    let ip = ips.first().ok_or_else(|| Failure::DnsFailure {
        name: host.to_owned(),
        kind: DnsErrorKind::NoRecords,
    })?;
    Ok(Target {
        transport,
        address: SocketAddr::new(*ip, port),
    })
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

    /// DNS as data: names not listed do not exist.
    #[derive(Default)]
    struct Zone {
        naptr: HashMap<&'static str, Vec<Naptr>>,
        srv: HashMap<&'static str, Vec<Srv>>,
        ip: HashMap<&'static str, Vec<IpAddr>>,
    }

    fn nx(name: &str) -> Failure {
        Failure::DnsFailure {
            name: name.to_owned(),
            kind: DnsErrorKind::NxDomain,
        }
    }

    impl Records for Zone {
        async fn naptr(&self, name: &str) -> Result<Vec<Naptr>, Failure> {
            Ok(self.naptr.get(name).cloned().unwrap_or_default())
        }
        async fn srv(&self, name: &str) -> Result<Vec<Srv>, Failure> {
            self.srv.get(name).cloned().ok_or_else(|| nx(name))
        }
        async fn ip(&self, host: &str) -> Result<Vec<IpAddr>, Failure> {
            if let Ok(ip) = host.parse() {
                return Ok(vec![ip]);
            }
            self.ip.get(host).cloned().ok_or_else(|| nx(host))
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

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn target(transport: Transport, addr: &str) -> Target {
        Target {
            transport,
            address: addr.parse().unwrap(),
        }
    }

    async fn run(zone: &Zone, server: &str) -> Result<Target, Failure> {
        let uri = uri::parse(server).unwrap();
        resolve(zone, &uri, &mut |_| 0).await
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
        zone.ip.insert("tls1.example.com", vec![ip("192.0.2.11")]);
        zone.ip.insert("backup.example.com", vec![ip("192.0.2.12")]);
        zone.ip.insert("tcp.example.com", vec![ip("192.0.2.20")]);
        zone.ip.insert("example.com", vec![ip("192.0.2.1")]);
        zone
    }

    #[tokio::test]
    async fn naptr_order_then_preference_then_srv_priority() {
        // order 10 beats 50; within order 10, preference 10 (SIPS) beats 20 (TCP); the unknown
        // E2U service is skipped; SRV priority 10 beats 20.
        let got = run(&example_zone(), "sip:example.com").await.unwrap();
        assert_eq!(got, target(Transport::Tls, "192.0.2.11:5061"));
    }

    #[tokio::test]
    async fn an_srv_target_without_address_falls_to_the_next() {
        let mut zone = example_zone();
        zone.ip.remove("tls1.example.com");
        let got = run(&zone, "sip:example.com").await.unwrap();
        assert_eq!(got, target(Transport::Tls, "192.0.2.12:5061"));
    }

    #[tokio::test]
    async fn explicit_transport_skips_naptr() {
        let got = run(&example_zone(), "sip:example.com;transport=tcp")
            .await
            .unwrap();
        assert_eq!(got, target(Transport::Tcp, "192.0.2.20:5060"));
    }

    #[tokio::test]
    async fn explicit_port_or_ip_literal_skips_srv() {
        let zone = example_zone();
        assert_eq!(
            run(&zone, "sip:example.com:5070").await.unwrap(),
            target(Transport::Udp, "192.0.2.1:5070")
        );
        assert_eq!(
            run(&zone, "sips:example.com:5071").await.unwrap(),
            target(Transport::Tls, "192.0.2.1:5071")
        );
        assert_eq!(
            run(&zone, "sip:[2001:db8::1]").await.unwrap(),
            target(Transport::Udp, "[2001:db8::1]:5060")
        );
        assert_eq!(
            run(&zone, "sip:198.51.100.7;transport=tcp").await.unwrap(),
            target(Transport::Tcp, "198.51.100.7:5060")
        );
    }

    #[tokio::test]
    async fn without_naptr_srv_is_asked_per_transport_then_the_host() {
        let mut zone = example_zone();
        zone.naptr.clear();
        // no _sip._udp, so _sip._tcp is next
        assert_eq!(
            run(&zone, "sip:example.com").await.unwrap(),
            target(Transport::Tcp, "192.0.2.20:5060")
        );
        // a sips: URI looks only at _sips._tcp
        assert_eq!(
            run(&zone, "sips:example.com").await.unwrap(),
            target(Transport::Tls, "192.0.2.11:5061")
        );
        zone.srv.clear();
        assert_eq!(
            run(&zone, "sip:example.com").await.unwrap(),
            target(Transport::Udp, "192.0.2.1:5060")
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
            run(&zone, "sips:example.com").await.unwrap(),
            target(Transport::Tls, "192.0.2.11:5061")
        );
    }

    #[tokio::test]
    async fn a_name_that_does_not_exist_is_nxdomain() {
        let got = run(&Zone::default(), "sip:no-such-host.invalid").await;
        assert_eq!(got, Err(nx("no-such-host.invalid")));
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
