//! Name resolution for the probes (hickory), with failures mapped to [`Failure::DnsFailure`].
//!
//! The resolver is passed to each probe explicitly rather than kept in a global, so tests can
//! point it at their own name server and the operator can share one cache across all checks.

use super::{DnsErrorKind, Failure};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A shared, caching DNS resolver. Cloning is cheap and shares the cache.
///
/// Every address a probe connects to comes from [`Dns::lookup_ip`], so that is where an
/// operator's allow-list is enforced on resolved names too (a name may point at a cloud
/// metadata address even when the spec only shows a harmless host name).
#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
    allowed: Option<Arc<dyn Fn(IpAddr) -> bool + Send + Sync>>,
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
    pub fn system() -> Result<Self, super::ConfigError> {
        let builder = TokioResolver::builder_tokio()
            .map_err(|e| super::ConfigError::new("/etc/resolv.conf", e))?;
        let resolver = builder
            .build()
            .map_err(|e| super::ConfigError::new("/etc/resolv.conf", e))?;
        Ok(Self {
            resolver,
            allowed: None,
        })
    }

    /// The same resolver, handing out only addresses `allowed` accepts; a name whose every
    /// address is refused fails with [`Failure::TargetNotAllowed`].
    pub fn restricted(self, allowed: impl Fn(IpAddr) -> bool + Send + Sync + 'static) -> Self {
        Self {
            allowed: Some(Arc::new(allowed)),
            ..self
        }
    }

    /// A resolver that asks only the given name server (UDP and TCP), e.g. a test's own.
    pub fn with_nameserver(server: SocketAddr) -> Self {
        let mut ns = NameServerConfig::udp_and_tcp(server.ip());
        for conn in &mut ns.connections {
            conn.port = server.port();
        }
        let config = ResolverConfig::from_parts(None, vec![], vec![ns]);
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .build()
            .expect("a resolver with a fixed name server and no TLS always builds");
        Self {
            resolver,
            allowed: None,
        }
    }

    /// Addresses of `host`; an IP literal is returned as it is, without a query.
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, Failure> {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let ips: Vec<IpAddr> = match literal.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self
                .resolver
                .lookup_ip(host)
                .await
                .map_err(|e| failure(host, &e))?
                .iter()
                .collect(),
        };
        let Some(first) = ips.first().copied() else {
            return Err(no_records(host));
        };
        let Some(allowed) = &self.allowed else {
            return Ok(ips);
        };
        let permitted: Vec<IpAddr> = ips.into_iter().filter(|ip| allowed(*ip)).collect();
        if permitted.is_empty() {
            return Err(Failure::TargetNotAllowed {
                name: host.to_owned(),
                address: first.to_string(),
            });
        }
        Ok(permitted)
    }

    /// SRV records of `name` (e.g. `_sip._udp.example.com`); an empty list when there are none.
    pub async fn lookup_srv(&self, name: &str) -> Result<Vec<Srv>, Failure> {
        self.records(name, RecordType::SRV, |data| match data {
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
        self.records(name, RecordType::NAPTR, |data| match data {
            RData::NAPTR(naptr) => Some(Naptr {
                order: naptr.order,
                preference: naptr.preference,
                flags: String::from_utf8_lossy(&naptr.flags).to_ascii_uppercase(),
                services: String::from_utf8_lossy(&naptr.services).to_ascii_uppercase(),
                replacement: naptr.replacement.to_utf8(),
            }),
            _ => None,
        })
        .await
    }

    /// The records of one type, converted by `convert`. "No records" is an empty list, since
    /// RFC 3263 then falls back to the next step; a name that does not exist is a failure.
    async fn records<T>(
        &self,
        name: &str,
        record_type: RecordType,
        convert: impl Fn(&RData) -> Option<T>,
    ) -> Result<Vec<T>, Failure> {
        let lookup = match self.resolver.lookup(name, record_type).await {
            Ok(lookup) => lookup,
            Err(e) if e.is_no_records_found() && !e.is_nx_domain() => return Ok(Vec::new()),
            Err(e) => return Err(failure(name, &e)),
        };
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|record| convert(&record.data))
            .collect())
    }
}

fn no_records(name: &str) -> Failure {
    Failure::DnsFailure {
        name: name.to_owned(),
        kind: DnsErrorKind::NoRecords,
    }
}

fn failure(name: &str, err: &NetError) -> Failure {
    let kind = if err.is_nx_domain() {
        DnsErrorKind::NxDomain
    } else if err.is_no_records_found() {
        DnsErrorKind::NoRecords
    } else {
        DnsErrorKind::ResolverFailed
    };
    Failure::DnsFailure {
        name: name.to_owned(),
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
        let dns = nowhere().restricted(|ip| !ip.is_loopback());
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

    #[tokio::test]
    async fn unrestricted_literals_need_no_query() {
        assert_eq!(
            nowhere().lookup_ip("169.254.169.254").await,
            Ok(vec!["169.254.169.254".parse::<IpAddr>().unwrap()])
        );
    }
}
