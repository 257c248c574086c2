//! What both probes do before their first request: resolve the server (RFC 3263) and open the
//! connection, all within the probe's deadline.

use super::Target;
use super::resolve;
use super::transport::{Connection, Dial, Transport};
use super::uri::ServerUri;
use crate::probe::dns::Dns;
use crate::probe::tls::CaSource;
use crate::probe::{ConfigError, DnsErrorKind, Failure, tls};
use std::time::Duration;
use tokio::time::Instant;

/// The result of opening: where it went (when resolution got that far) and the connection.
pub(super) struct Opened {
    pub target: Option<Target>,
    pub connection: Result<Connection, Failure>,
}

/// Resolves and connects. `Err` only for bad input found on the way (an unusable CA file, which
/// is read only when TLS is actually used).
pub(super) async fn open(
    dns: &Dns,
    server: &ServerUri,
    ca: Option<&CaSource>,
    deadline: Instant,
    timeout: Duration,
) -> Result<Opened, ConfigError> {
    let timed_out = || Failure::Timeout { after: timeout };
    let mut pick = |total: u32| rand::random_range(0..=total);
    let target =
        match tokio::time::timeout_at(deadline, resolve::resolve(dns, server, &mut pick)).await {
            Ok(Ok(target)) => target,
            Ok(Err(failure)) => return Ok(failed(failure)),
            // A resolver that does not answer in time is a DNS problem, not a slow SIP server.
            Err(_) => {
                return Ok(failed(Failure::DnsFailure {
                    name: server.host.clone(),
                    kind: DnsErrorKind::ResolverFailed,
                }));
            }
        };
    let dial = match target.transport {
        Transport::Udp => Dial::Udp,
        Transport::Tcp => Dial::Tcp,
        Transport::Tls => Dial::Tls {
            config: tls::client_config(ca, &[])?,
            name: tls::server_name(&server.host)?,
        },
    };
    let connection = tokio::time::timeout_at(deadline, Connection::open(target.address, dial))
        .await
        .unwrap_or_else(|_| Err(timed_out()));
    Ok(Opened {
        target: Some(target),
        connection,
    })
}

fn failed(failure: Failure) -> Opened {
    Opened {
        target: None,
        connection: Err(failure),
    }
}
