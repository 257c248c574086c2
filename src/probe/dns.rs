//! Name resolution for the probes (hickory), with failures mapped to [`Failure::DnsFailure`].
//!
//! The resolver is passed to each probe explicitly rather than kept in a global, so tests can
//! point it at their own name server and the operator can share one cache across all checks.

use super::{ConfigError, DnsErrorKind, DnsRecord, Failure};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The port of `--nameserver` when none is given.
pub const DNS_PORT: u16 = 53;

/// Decides whether an address may be contacted: the name it was reached by (the looked-up
/// name, or the address itself as text when no name led to it) and the address.
type Allowed = dyn Fn(&str, IpAddr) -> bool + Send + Sync;

/// A shared, caching DNS resolver. Cloning is cheap and shares the cache. Both address
/// families are asked for in parallel (AAAA and A), so that every address of a dual-stack name
/// can be tried, IPv6 first as RFC 8305 §4 prefers.
///
/// Every address a probe connects to comes from [`Dns::lookup_ip`] or is checked with
/// [`Dns::check_address`], so that is where an operator's allow-list is enforced on resolved
/// names too (a name may point at a cloud metadata address even when the spec only shows a
/// harmless host name).
#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
    allowed: Option<Arc<Allowed>>,
}

/// One SRV record (RFC 2782), as RFC 3263 §4.2 consumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// One NAPTR record (RFC 3403), as RFC 3263 §4.1 consumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naptr {
    pub order: u16,
    pub preference: u16,
    pub flags: String,
    pub services: String,
    pub replacement: String,
}

impl Dns {
    /// The system's resolver configuration (`/etc/resolv.conf`, `/etc/hosts`).
    pub fn system() -> Result<Self, ConfigError> {
        let mut builder =
            TokioResolver::builder_tokio().map_err(|e| ConfigError::new("/etc/resolv.conf", e))?;
        builder.options_mut().ip_strategy = LookupIpStrategy::Ipv6AndIpv4;
        let resolver = builder
            .build()
            .map_err(|e| ConfigError::new("/etc/resolv.conf", e))?;
        Ok(Self {
            resolver,
            allowed: None,
        })
    }

    /// `--nameserver`: that server when given, else the system's configuration.
    pub fn new(nameserver: Option<SocketAddr>) -> Result<Self, ConfigError> {
        match nameserver {
            Some(server) => Ok(Self::with_nameserver(server)),
            None => Self::system(),
        }
    }

    /// The same resolver, handing out only addresses `allowed` accepts for the name they were
    /// looked up by; a name whose every address is refused fails with
    /// [`Failure::TargetNotAllowed`].
    pub fn restricted(
        self,
        allowed: impl Fn(&str, IpAddr) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            allowed: Some(Arc::new(allowed)),
            ..self
        }
    }

    /// A resolver that asks only the given name server (UDP and TCP), e.g. a test's own or
    /// `--nameserver`'s.
    pub fn with_nameserver(server: SocketAddr) -> Self {
        let mut ns = NameServerConfig::udp_and_tcp(server.ip());
        for conn in &mut ns.connections {
            conn.port = server.port();
        }
        let config = ResolverConfig::from_parts(None, vec![], vec![ns]);
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        builder.options_mut().ip_strategy = LookupIpStrategy::Ipv6AndIpv4;
        let resolver = builder
            .build()
            .expect("a resolver with a fixed name server and no TLS always builds");
        Self {
            resolver,
            allowed: None,
        }
    }

    /// Addresses of `host` (A and AAAA); an IP literal is returned as it is, without a query.
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, Failure> {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let ips: Vec<IpAddr> = match literal.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self
                .resolver
                .lookup_ip(host)
                .await
                .map_err(|e| failure(host, DnsRecord::Address, &e))?
                .iter()
                .collect(),
        };
        let Some(first) = ips.first().copied() else {
            return Err(no_records(host));
        };
        let Some(allowed) = &self.allowed else {
            return Ok(ips);
        };
        let permitted: Vec<IpAddr> = ips.into_iter().filter(|ip| allowed(host, *ip)).collect();
        if permitted.is_empty() {
            return Err(Failure::TargetNotAllowed {
                name: host.to_owned(),
                address: first.to_string(),
            });
        }
        Ok(permitted)
    }

    /// Whether an address that no name of ours led to (a STUN server's OTHER-ADDRESS or
    /// RESPONSE-ORIGIN) may be contacted: the allow-list's address ranges decide, since no
    /// name was used to reach it.
    pub fn check_address(&self, address: SocketAddr) -> Result<(), Failure> {
        match &self.allowed {
            Some(allowed) if !allowed(&address.ip().to_string(), address.ip()) => {
                Err(Failure::TargetNotAllowed {
                    name: address.to_string(),
                    address: address.ip().to_string(),
                })
            }
            _ => Ok(()),
        }
    }

    /// SRV records of `name` (e.g. `_sip._udp.example.com`); an empty list when there are none.
    pub async fn lookup_srv(&self, name: &str) -> Result<Vec<Srv>, Failure> {
        self.records(name, DnsRecord::Srv, RecordType::SRV, |data| match data {
            RData::SRV(srv) => Some(Srv {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: srv.target.to_utf8(),
            }),
            _ => None,
        })
        .await
    }

    /// NAPTR records of `name`; an empty list when there are none.
    pub async fn lookup_naptr(&self, name: &str) -> Result<Vec<Naptr>, Failure> {
        self.records(
            name,
            DnsRecord::Naptr,
            RecordType::NAPTR,
            |data| match data {
                RData::NAPTR(naptr) => Some(Naptr {
                    order: naptr.order,
                    preference: naptr.preference,
                    flags: String::from_utf8_lossy(&naptr.flags).to_ascii_uppercase(),
                    services: String::from_utf8_lossy(&naptr.services).to_ascii_uppercase(),
                    replacement: naptr.replacement.to_utf8(),
                }),
                _ => None,
            },
        )
        .await
    }

    /// The records of one type, converted by `convert`. NODATA is an empty list, since RFC
    /// 3263 then falls back to the next step; every other failure, NXDOMAIN included, is a
    /// failure the caller decides about.
    async fn records<T>(
        &self,
        name: &str,
        record: DnsRecord,
        record_type: RecordType,
        convert: impl Fn(&RData) -> Option<T>,
    ) -> Result<Vec<T>, Failure> {
        let lookup = match self.resolver.lookup(name, record_type).await {
            Ok(lookup) => lookup,
            Err(e) if e.is_no_records_found() && !e.is_nx_domain() => return Ok(Vec::new()),
            Err(e) => return Err(failure(name, record, &e)),
        };
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|record| convert(&record.data))
            .collect())
    }
}

/// Reads `--nameserver ADDR[:PORT]`: an IPv4 or IPv6 address, the port 53 unless given
/// (`192.0.2.53`, `192.0.2.53:5353`, `2001:db8::53`, `[2001:db8::53]:5353`).
pub fn parse_nameserver(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'));
    match bare.unwrap_or(text).parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, DNS_PORT)),
        Err(_) => Err(format!(
            "{text:?} is not an IP address with an optional port (192.0.2.53, [2001:db8::53]:5353)"
        )),
    }
}

fn no_records(name: &str) -> Failure {
    Failure::DnsFailure {
        name: name.to_owned(),
        record: DnsRecord::Address,
        kind: DnsErrorKind::NoRecords,
    }
}

fn failure(name: &str, record: DnsRecord, err: &NetError) -> Failure {
    let kind = match err {
        _ if err.is_nx_domain() => DnsErrorKind::NxDomain,
        _ if err.is_no_records_found() => DnsErrorKind::NoRecords,
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => DnsErrorKind::ServFail,
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => DnsErrorKind::Refused,
        NetError::Timeout => DnsErrorKind::Timeout,
        _ => DnsErrorKind::ResolverFailed,
    };
    Failure::DnsFailure {
        name: name.to_owned(),
        record,
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nowhere() -> Dns {
        Dns::with_nameserver("127.0.0.1:9".parse().unwrap())
    }

    #[tokio::test]
    async fn restriction_refuses_addresses_outside_the_allow_list() {
        let dns = nowhere().restricted(|_, ip| !ip.is_loopback());
        assert_eq!(
            dns.lookup_ip("127.0.0.1").await,
            Err(Failure::TargetNotAllowed {
                name: "127.0.0.1".into(),
                address: "127.0.0.1".into()
            })
        );
        assert_eq!(
            dns.lookup_ip("[2001:db8::1]").await,
            Ok(vec!["2001:db8::1".parse::<IpAddr>().unwrap()])
        );
    }

    #[test]
    fn nameserver_addresses_take_port_53_unless_given() {
        for (text, expected) in [
            ("192.0.2.53", "192.0.2.53:53"),
            ("192.0.2.53:5353", "192.0.2.53:5353"),
            ("2001:db8::53", "[2001:db8::53]:53"),
            ("[2001:db8::53]", "[2001:db8::53]:53"),
            ("[2001:db8::53]:5353", "[2001:db8::53]:5353"),
        ] {
            assert_eq!(
                parse_nameserver(text),
                Ok(expected.parse().unwrap()),
                "{text}"
            );
        }
        for bad in [
            "",
            "ns.example.com",
            "192.0.2.53:",
            "192.0.2.53:99999",
            "[::1",
        ] {
            assert!(parse_nameserver(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_address_no_name_led_to_is_checked_as_itself() {
        let dns = nowhere().restricted(|name, ip| name == ip.to_string() && !ip.is_loopback());
        assert!(dns.check_address("192.0.2.1:3479".parse().unwrap()).is_ok());
        assert_eq!(
            dns.check_address("127.0.0.2:3479".parse().unwrap()),
            Err(Failure::TargetNotAllowed {
                name: "127.0.0.2:3479".into(),
                address: "127.0.0.2".into()
            })
        );
        assert!(
            nowhere()
                .check_address("127.0.0.2:3479".parse().unwrap())
                .is_ok()
        );
    }

    #[tokio::test]
    async fn unrestricted_literals_need_no_query() {
        assert_eq!(
            nowhere().lookup_ip("169.254.169.254").await,
            Ok(vec!["169.254.169.254".parse::<IpAddr>().unwrap()])
        );
    }
}
