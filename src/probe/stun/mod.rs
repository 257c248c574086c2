//! STUN probe: Binding requests to one or more servers (RFC 8489), the class of the mapped
//! address, agreement between servers (seed 004), and, on request, the NAT's binding lifetime
//! and behaviour (RFC 5780).
//!
//! What it answers, in the words of the seeds: is the STUN server reached at all (else a client
//! offers only private candidates, seed 004)? Do two servers see the same public address (seed
//! 004: "two public IPs")? Does the NAT keep a mapping for as long as the phones' keep-alive
//! interval (seeds 000/001: keep-alive every 60 s, NAT lifetime must be >= 61)?
//!
//! Facts are not failures: a private mapped address or a binding that expired is reported as
//! what was seen, and the verdict logic decides what it means. Failures are what kept the probe
//! from seeing: no answer, a broken answer, servers that contradict each other.

mod classify;
mod message;
mod nat;
mod transport;

pub use classify::{AddressClass, PrivateKind, classify};
pub use message::MappedVia;
pub use nat::{Behaviour, NatBehaviour, NatBindingMethod, NatBindingResult};

use super::attempts::{self, Attempt};
use super::dns::Dns;
use super::tls::CaSource;
use super::{ConfigError, DnsErrorKind, DnsRecord, Failure, Outcome, secs};
use message::{Request, Response};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};
use transport::Deadline;

/// The port a server entry without one uses (RFC 8489 §18.5: "stun" on 3478).
pub const DEFAULT_PORT: u16 = 3478;
/// The port of a TLS server entry without one (RFC 8489 §18.5: "stuns" on 5349).
pub const DEFAULT_TLS_PORT: u16 = 5349;

/// What to probe.
#[derive(Debug, Clone)]
pub struct StunConfig {
    /// `host`, `host:port`, `ip:port` or `[ipv6]:port`; the port defaults to 3478. A `stuns:`
    /// prefix (RFC 7064) asks that server over TLS (port 5349 by default), `stun:` is the plain
    /// form. Asked in parallel; the NAT measurements use the first one (in this order) that
    /// answered without TLS.
    pub servers: Vec<String>,
    /// Transport of the Binding requests to servers without `stuns:`. The NAT measurements
    /// always use UDP: UDP mappings are the ones that expire between the phones' keep-alives.
    pub transport: StunTransport,
    /// Whether every server must answer (a dead one fails the probe) or one answer is enough.
    pub require: StunRequire,
    /// Extra trust anchors for TLS servers, on top of the system's.
    pub ca: Option<CaSource>,
    /// Bounds each server's Binding (name resolution included) and each transaction of the
    /// NAT measurements. With `nat_binding` set to `T`, the probe takes up to `T + 4 x timeout`
    /// (the Bindings, then up to three transactions besides the idle wait).
    pub timeout: Duration,
    /// The idle interval `T` (the phones' keep-alive, seeds 000/001: 60 s) after which the NAT
    /// binding must still exist; also enables the RFC 5780 behaviour tests. `None`: neither.
    pub nat_binding: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StunTransport {
    Udp,
    Tcp,
    /// STUN over TLS over TCP (RFC 8489 §6.2.2), framed as over TCP.
    Tls,
}

/// How many of several servers must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum StunRequire {
    /// Each server is a dependency (the phones are configured with it): a dead one fails the
    /// probe, naming it.
    #[default]
    All,
    /// The servers are alternatives: one answer is enough.
    Any,
}

impl StunConfig {
    /// Checks the server list before anything is sent (the CLI's exit code 2).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.servers.is_empty() {
            return Err(ConfigError::new("stun.servers", "at least one server"));
        }
        for server in &self.servers {
            self.entry(server)
                .map_err(|reason| ConfigError::new("stun.servers", reason))?;
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be more than zero"));
        }
        if let Some(ca) = &self.ca {
            ca.certificates()?;
        }
        Ok(())
    }

    /// A server entry's transport, host and port.
    fn entry<'a>(&self, server: &'a str) -> Result<(StunTransport, &'a str, u16), String> {
        let (tls, rest) = split_scheme(server);
        let transport = if tls {
            StunTransport::Tls
        } else {
            self.transport
        };
        let (host, port) = parse_server(rest)?;
        let port = match (port, transport) {
            (Some(port), _) => port,
            (None, StunTransport::Tls) => DEFAULT_TLS_PORT,
            (None, _) => DEFAULT_PORT,
        };
        Ok((transport, host, port))
    }
}

/// Splits off a server entry's RFC 7064 scheme: `true` for `stuns:` (TLS), and the entry
/// without `stun:`/`stuns:`. `stun:3478` is the host `stun` (e.g. a Kubernetes Service of that
/// name) with a port, not a scheme before the host `3478`.
pub fn split_scheme(entry: &str) -> (bool, &str) {
    match entry.split_once(':') {
        Some((scheme, rest)) if rest.parse::<u16>().is_err() => {
            match scheme.to_ascii_lowercase().as_str() {
                "stuns" => (true, rest),
                "stun" => (false, rest),
                _ => (false, entry),
            }
        }
        _ => (false, entry),
    }
}

/// Splits a server entry (without scheme) into host and port, if it names one.
pub(crate) fn parse_server(server: &str) -> Result<(&str, Option<u16>), String> {
    let bad = |why: &str| format!("{server:?}: {why}");
    let (host, port) = if let Some(rest) = server.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("missing ']' after an IPv6 address"))?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("expected ':port' after ']'"))?,
                ),
            ),
        }
    } else if server.parse::<std::net::Ipv6Addr>().is_ok() {
        (server, None)
    } else {
        match server.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (server, None),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad("no host name"));
    }
    let port = match port {
        None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(0) | Err(_) => return Err(bad("port must be 1-65535")),
            Ok(port) => Some(port),
        },
    };
    Ok((host, port))
}

/// The address `server` (`host[:port]`, UDP; port [`DEFAULT_PORT`] when none) maps `socket`
/// to: one Binding sent from the socket itself, so that the answer names the public side of
/// exactly that port (a test call's RTP socket, whose mapping its SDP offer then advertises).
/// Within `timeout`.
pub async fn mapped_address(
    dns: &Dns,
    socket: &UdpSocket,
    server: &str,
    timeout: Duration,
) -> Result<SocketAddr, Failure> {
    let (host, port) = parse_server(server).map_err(|detail| Failure::Protocol { detail })?;
    let port = port.unwrap_or(DEFAULT_PORT);
    let deadline = Deadline::after(timeout);
    let local = socket.local_addr().map_err(|e| Failure::Network {
        detail: format!("the socket's address: {e}"),
    })?;
    let addresses = resolve(dns, host, port, &deadline).await?;
    let address = addresses
        .into_iter()
        .find(|a| a.is_ipv4() == local.is_ipv4())
        .ok_or_else(|| Failure::Network {
            detail: format!("{host} has no address of the RTP socket's family"),
        })?;
    let reply = transport::udp(socket, address, &Request::binding(), &deadline).await?;
    match reply.response {
        Response::Success(mapping) => Ok(mapping.mapped),
        Response::Error { code, .. } => Err(Failure::StunError { code }),
    }
}

/// The result of a STUN probe.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StunOutcome {
    pub transport: StunTransport,
    /// One entry per configured server, in the configured order.
    pub servers: Vec<ServerResult>,
    /// RFC 5780 §4.6 against the first server that answered, when `nat_binding` was set.
    pub nat_binding: Option<NatBindingResult>,
    /// RFC 5780 §4.3/§4.4, when `nat_binding` was set and that server offers OTHER-ADDRESS.
    pub nat_behaviour: Option<NatBehaviour>,
    /// No server answered (the first server's failure), one did not while all must
    /// (`StunServerFailed`), the answers disagree (`AddressMismatch`), or the requested NAT
    /// binding measurement could not be made.
    pub failure: Option<Failure>,
    #[serde(rename = "durationSeconds", serialize_with = "secs::serialize")]
    pub duration: Duration,
}

/// What one server said.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerResult {
    /// The entry as configured.
    pub server: String,
    /// The address that answered, or the last one asked when none did; `None` when the name
    /// did not resolve.
    pub address: Option<SocketAddr>,
    /// The addresses that did not answer, in the order asked.
    pub attempts: Vec<Attempt>,
    /// How this server was asked (`stuns:` entries over TLS).
    pub transport: StunTransport,
    #[serde(flatten)]
    pub answer: ServerAnswer,
}

/// A server's Binding response, or why there was none.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ServerAnswer {
    Binding(Binding),
    Failure(Failure),
}

/// A successful Binding.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    /// The probe's own address for this request; `mapped` differs from it behind a NAT.
    pub local: SocketAddr,
    /// Our address as the server saw it (XOR-MAPPED-ADDRESS or MAPPED-ADDRESS).
    pub mapped: SocketAddr,
    pub mapped_via: MappedVia,
    pub class: AddressClass,
    #[serde(rename = "rttSeconds", serialize_with = "secs::serialize")]
    pub rtt: Duration,
    /// UDP retransmissions before the answer (RFC 8489 §6.2.1); 0 over TCP.
    pub retransmits: u32,
    /// The server's SOFTWARE attribute, if it sent one.
    pub software: Option<String>,
    /// RFC 5780 OTHER-ADDRESS: the server supports NAT behaviour discovery.
    pub other_address: Option<SocketAddr>,
    /// RFC 3489 SOURCE-ADDRESS: where an RFC 3489 server says it answered from.
    pub source_address: Option<SocketAddr>,
    /// RFC 3489 CHANGED-ADDRESS: an RFC 3489 server's alternate IP and port.
    pub changed_address: Option<SocketAddr>,
}

impl StunOutcome {
    /// The first public address a server reported, if any.
    pub fn public_address(&self) -> Option<IpAddr> {
        self.bindings()
            .map(|b| b.mapped.ip())
            .find(|ip| classify(*ip) == AddressClass::Public)
    }

    fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.servers.iter().filter_map(|s| match &s.answer {
            ServerAnswer::Binding(b) => Some(b),
            ServerAnswer::Failure(_) => None,
        })
    }
}

/// Runs the probe: all servers in parallel, then the NAT measurements (if asked for) against
/// the first server that answered. Whatever the peers do, the outcome is typed and bounded in
/// time; only an unusable configuration (see [`StunConfig::validate`]) is an error.
pub async fn probe(dns: &Dns, cfg: &StunConfig) -> Result<StunOutcome, ConfigError> {
    cfg.validate()?;
    Ok(run(dns, cfg).await)
}

async fn run(dns: &Dns, cfg: &StunConfig) -> StunOutcome {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, server) in cfg.servers.iter().enumerate() {
        let (dns, cfg, server) = (dns.clone(), cfg.clone(), server.clone());
        tasks.spawn(async move {
            let deadline = Deadline::after(cfg.timeout);
            (index, probe_server(&dns, &cfg, server, &deadline).await)
        });
    }
    let mut results: Vec<Option<ServerResult>> = vec![None; cfg.servers.len()];
    while let Some(joined) = tasks.join_next().await {
        // Tasks are never aborted, so an error here is a panic inside one: a bug, re-raised.
        let (index, result) = joined.expect("a server probe panicked");
        results[index] = Some(result);
    }
    let servers: Vec<ServerResult> = results.into_iter().flatten().collect();

    let mut failure = overall_failure(&servers, cfg.require);
    let (mut nat_binding, mut nat_behaviour) = (None, None);
    let first_answer = servers
        .iter()
        .filter(|s| s.transport != StunTransport::Tls)
        .find_map(|s| match (&s.answer, s.address) {
            (ServerAnswer::Binding(b), Some(address)) => Some((address, b)),
            _ => None,
        });
    if let (None, Some(idle), Some((address, binding))) = (&failure, cfg.nat_binding, first_answer)
    {
        // The server chooses its OTHER-ADDRESS: the allow-list decides whether it is asked.
        let other = binding
            .other_address
            .map(|other| (other, dns.check_address(other)));
        let (lifetime, behaviour) =
            tokio::join!(nat::binding_lifetime(address, idle, cfg.timeout), async {
                match other {
                    Some((other, Ok(()))) => {
                        Some(nat::behaviour(address, other, cfg.timeout).await)
                    }
                    _ => None,
                }
            });
        match lifetime {
            Ok(result) => nat_binding = Some(result),
            Err(f) => failure = Some(f),
        }
        nat_behaviour = behaviour;
        if let Some((_, Err(refused))) = other {
            failure.get_or_insert(refused);
        }
    }
    StunOutcome {
        transport: cfg.transport,
        servers,
        nat_binding,
        nat_behaviour,
        failure,
        duration: start.elapsed(),
    }
}

async fn probe_server(
    dns: &Dns,
    cfg: &StunConfig,
    server: String,
    deadline: &Deadline,
) -> ServerResult {
    let mut attempts = Vec::new();
    // validate() rejects an entry that does not parse; one that reaches here names no host.
    let Ok((transport, host, port)) = cfg.entry(&server) else {
        let failure = Failure::DnsFailure {
            name: server.clone(),
            record: DnsRecord::Address,
            kind: DnsErrorKind::NxDomain,
        };
        return ServerResult {
            transport: cfg.transport,
            server,
            address: None,
            attempts,
            answer: ServerAnswer::Failure(failure),
        };
    };
    let tls = (transport == StunTransport::Tls).then_some((host, cfg.ca.as_ref()));
    let (address, answer) = match resolve(dns, host, port, deadline).await {
        Err(failure) => (None, ServerAnswer::Failure(failure)),
        Ok(addresses) => {
            let how = How { transport, tls };
            let (address, result) =
                each_address(&server, &addresses, how, deadline, &mut attempts).await;
            let answer = match result {
                Ok(binding) => ServerAnswer::Binding(binding),
                Err(failure) => ServerAnswer::Failure(failure),
            };
            (address, answer)
        }
    };
    ServerResult {
        server,
        address,
        attempts,
        transport,
        answer,
    }
}

/// How to ask a server: the transport, and for TLS the name its certificate must carry and
/// the extra trust anchors.
#[derive(Clone, Copy)]
struct How<'a> {
    transport: StunTransport,
    tls: Option<(&'a str, Option<&'a CaSource>)>,
}

/// Asks the server's addresses in turn until one answers (see [`crate::probe::attempts`]):
/// over UDP one after another, each with its share of the time left, over TCP and TLS racing.
/// Returns the address that answered (or the last one tried) and the answer; the addresses
/// that did not answer go to `attempts`.
async fn each_address(
    server: &str,
    addresses: &[SocketAddr],
    how: How<'_>,
    deadline: &Deadline,
    attempts: &mut Vec<Attempt>,
) -> (Option<SocketAddr>, Result<Binding, Failure>) {
    let mut failed = |address: SocketAddr, failure: &Failure| {
        attempts.push(Attempt {
            target: server.to_owned(),
            address: Some(address),
            failure: failure.clone(),
        });
    };
    let mut last = (None, Err(deadline.expired()));
    match how.transport {
        StunTransport::Udp => {
            for (index, address) in addresses.iter().copied().enumerate() {
                let share = Deadline {
                    at: attempts::udp_share(deadline.at, index + 1 == addresses.len()),
                    timeout: deadline.timeout,
                };
                match exchange(address, how, &share).await {
                    Err(failure) if answers_elsewhere(&failure) => {
                        failed(address, &failure);
                        last = (Some(address), Err(failure));
                    }
                    result => return (Some(address), result),
                }
            }
            last
        }
        StunTransport::Tcp | StunTransport::Tls => {
            let ask = |address| exchange(address, how, deadline);
            let (won, lost) = attempts::race(addresses, deadline.at, deadline.timeout, ask).await;
            for (address, failure) in lost {
                failed(address, &failure);
                last = (Some(address), Err(failure));
            }
            match won {
                Some((binding, address)) => (Some(address), Ok(binding)),
                None => last,
            }
        }
    }
}

/// Whether another address of the server may still answer after this failure: this one did
/// not answer at all. An error response or a broken answer is the server's word.
fn answers_elsewhere(failure: &Failure) -> bool {
    matches!(
        failure,
        Failure::Timeout { .. } | Failure::ConnectRefused { .. } | Failure::Network { .. }
    )
}

/// The addresses to ask, in the order to ask them (RFC 8305 §4).
async fn resolve(
    dns: &Dns,
    host: &str,
    port: u16,
    deadline: &Deadline,
) -> Result<Vec<SocketAddr>, Failure> {
    let no_such = |name: &str, kind| Failure::DnsFailure {
        name: name.to_owned(),
        record: DnsRecord::Address,
        kind,
    };
    // A resolver still busy at the deadline is a DNS failure: the server was never asked.
    let ips = timeout_at(deadline.at, dns.lookup_ip(host))
        .await
        .map_err(|_| no_such(host, DnsErrorKind::Timeout))??;
    Ok(attempts::interleave(&ips)
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// One Binding with `address`, as `how` says.
async fn exchange(
    address: SocketAddr,
    how: How<'_>,
    deadline: &Deadline,
) -> Result<Binding, Failure> {
    let request = Request::binding();
    let (reply, local) = match how.transport {
        StunTransport::Udp => {
            let socket = transport::connected_udp(address).await?;
            let local = socket
                .local_addr()
                .map_err(|e| Failure::from_io(&e, address))?;
            (
                transport::udp(&socket, address, &request, deadline).await?,
                local,
            )
        }
        StunTransport::Tcp | StunTransport::Tls => {
            let tls = match how.tls {
                Some((host, ca)) => Some(transport::TlsPeer::new(host, ca)?),
                None => None,
            };
            transport::tcp(address, tls, &request, deadline).await?
        }
    };
    let mapping = match reply.response {
        Response::Success(mapping) => mapping,
        Response::Error { code, .. } => return Err(Failure::StunError { code }),
    };
    Ok(Binding {
        local,
        mapped: mapping.mapped,
        mapped_via: mapping.via,
        class: classify(mapping.mapped.ip()),
        rtt: reply.rtt,
        retransmits: reply.retransmits,
        software: mapping.software,
        other_address: mapping.other_address,
        source_address: mapping.source_address,
        changed_address: mapping.changed_address,
    })
}

/// The probe's failure from the servers' results: none answered (the first server's failure),
/// those that answered disagree about the public address, or (with [`StunRequire::All`]) one
/// did not answer, named.
fn overall_failure(servers: &[ServerResult], require: StunRequire) -> Option<Failure> {
    let mut mapped = Vec::new();
    let mut first_failure = None;
    for server in servers {
        match &server.answer {
            ServerAnswer::Binding(b) => mapped.push(b.mapped.ip()),
            ServerAnswer::Failure(f) => {
                first_failure.get_or_insert((server, f));
            }
        }
    }
    if mapped.is_empty() {
        return first_failure.map(|(_, f)| f.clone());
    }
    address_mismatch(&mapped).or_else(|| match (require, first_failure) {
        (StunRequire::All, Some((server, failure))) => Some(Failure::StunServerFailed {
            server: server.server.clone(),
            answered: mapped.len(),
            of: servers.len(),
            cause: Box::new(failure.clone()),
        }),
        _ => None,
    })
}

/// Seed 004: "multiple public IP addresses at the customer" — one server sees address A, another
/// B, and media does not meet. Only public addresses count (a private one is a fact of its own),
/// and only within one address family (a server asked over IPv6 sees our IPv6 address).
pub fn address_mismatch(mapped: &[IpAddr]) -> Option<Failure> {
    let mut public: Vec<IpAddr> = mapped
        .iter()
        .copied()
        .filter(|ip| classify(*ip) == AddressClass::Public)
        .collect();
    public.sort();
    public.dedup();
    let disagree = public
        .iter()
        .any(|a| public.iter().any(|b| a != b && a.is_ipv4() == b.is_ipv4()));
    disagree.then(|| Failure::AddressMismatch {
        addresses: public
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

impl Outcome for StunOutcome {
    fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    fn facts(&self) -> Vec<(&'static str, String)> {
        let mut facts = vec![("transport", transport_name(self.transport).to_owned())];
        for server in &self.servers {
            let over = match server.transport == self.transport {
                true => String::new(),
                false => format!(", {}", transport_name(server.transport)),
            };
            let asked = match server.address {
                Some(address) => format!("{} ({address}{over})", server.server),
                None => server.server.clone(),
            };
            facts.push(("server", asked));
            facts.extend(attempts::facts(&server.attempts, &[]));
            match &server.answer {
                ServerAnswer::Binding(b) => {
                    facts.push((
                        "mapped address",
                        format!("{} ({})", b.mapped, class_text(b.class)),
                    ));
                    if b.mapped_via == MappedVia::MappedAddress {
                        facts.push(("mapped via", "MAPPED-ADDRESS (RFC 3489 server)".to_owned()));
                    }
                    facts.push(("rtt", millis(b.rtt)));
                    if b.retransmits > 0 {
                        facts.push(("retransmits", b.retransmits.to_string()));
                    }
                    if let Some(software) = &b.software {
                        facts.push(("software", software.clone()));
                    }
                    if let Some(other) = b.other_address {
                        facts.push(("other address (RFC 5780)", other.to_string()));
                    }
                    if let Some(source) = b.source_address {
                        facts.push(("source address (RFC 3489)", source.to_string()));
                    }
                    if let Some(changed) = b.changed_address {
                        facts.push(("changed address (RFC 3489)", changed.to_string()));
                    }
                }
                ServerAnswer::Failure(f) => facts.push(("failure", f.to_string())),
            }
        }
        if let Some(nat) = &self.nat_binding {
            facts.extend(nat.facts());
        }
        if let Some(behaviour) = &self.nat_behaviour {
            facts.extend(behaviour.facts());
        }
        facts.push(("duration", millis(self.duration)));
        facts
    }
}

fn transport_name(transport: StunTransport) -> &'static str {
    match transport {
        StunTransport::Udp => "UDP",
        StunTransport::Tcp => "TCP",
        StunTransport::Tls => "TLS",
    }
}

fn class_text(class: AddressClass) -> String {
    match class {
        AddressClass::Public => "public".to_owned(),
        AddressClass::Private(kind) => format!("private: {kind:?}"),
    }
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|ip| ip.parse().unwrap()).collect()
    }

    #[test]
    fn servers_that_agree_or_see_private_addresses_do_not_mismatch() {
        for agree in [
            &["203.0.113.1"][..],
            &["217.10.68.152", "217.10.68.152"],
            &["217.10.68.152", "192.168.1.20"],
            &["100.64.3.4", "10.0.0.1"],
            &["217.10.68.152", "2a00:1450:4001:82b::200e"],
            &[],
        ] {
            assert_eq!(address_mismatch(&ips(agree)), None, "{agree:?}");
        }
    }

    #[test]
    fn two_public_addresses_mismatch() {
        let failure = address_mismatch(&ips(&["217.10.68.152", "8.8.8.8", "217.10.68.152"]));
        assert_eq!(
            failure,
            Some(Failure::AddressMismatch {
                addresses: "8.8.8.8, 217.10.68.152".to_owned()
            })
        );
        let v6 = address_mismatch(&ips(&["2a00:1450::1", "2a00:1450::2", "8.8.8.8"]));
        assert_eq!(v6.unwrap().class(), "AddressMismatch");
    }

    #[test]
    fn server_entries_parse() {
        let ok = [
            ("stun.sipgate.net", ("stun.sipgate.net", None)),
            ("stun.sipgate.net:10000", ("stun.sipgate.net", Some(10000))),
            ("127.0.0.1:3479", ("127.0.0.1", Some(3479))),
            ("[::1]:5349", ("::1", Some(5349))),
            ("[2001:db8::1]", ("2001:db8::1", None)),
            ("2001:db8::1", ("2001:db8::1", None)),
        ];
        for (entry, want) in ok {
            assert_eq!(parse_server(entry), Ok(want), "{entry}");
        }
        for bad in [
            "",
            ":3478",
            "host:0",
            "host:70000",
            "host:x",
            "[::1",
            "[::1]x",
            "a b",
        ] {
            assert!(parse_server(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validate_names_the_field() {
        let mut cfg = StunConfig {
            servers: vec!["stun.example.org".into(), "stun.example.org:x".into()],
            transport: StunTransport::Udp,
            timeout: Duration::from_secs(2),
            nat_binding: None,
            require: StunRequire::All,
            ca: None,
        };
        assert_eq!(cfg.validate().unwrap_err().field, "stun.servers");
        cfg.servers.pop();
        assert_eq!(cfg.validate(), Ok(()));
        cfg.servers.clear();
        assert!(cfg.validate().is_err());
    }

    fn answered(mapped: &str) -> ServerResult {
        let mapped: SocketAddr = mapped.parse().unwrap();
        ServerResult {
            server: "s".into(),
            address: Some("192.0.2.1:3478".parse().unwrap()),
            attempts: Vec::new(),
            transport: StunTransport::Udp,
            answer: ServerAnswer::Binding(Binding {
                local: "10.0.0.2:5000".parse().unwrap(),
                mapped,
                mapped_via: MappedVia::XorMappedAddress,
                class: classify(mapped.ip()),
                rtt: Duration::from_millis(3),
                retransmits: 0,
                software: None,
                other_address: None,
                source_address: None,
                changed_address: None,
            }),
        }
    }

    fn failed(failure: Failure) -> ServerResult {
        ServerResult {
            server: "dead".into(),
            address: None,
            attempts: Vec::new(),
            transport: StunTransport::Udp,
            answer: ServerAnswer::Failure(failure),
        }
    }

    #[test]
    fn overall_failure_names_a_dead_server_unless_any_answer_will_do() {
        use StunRequire::{All, Any};
        let timeout = Failure::Timeout {
            after: Duration::from_secs(1),
        };
        let refused = Failure::ConnectRefused { peer: "x".into() };
        for require in [All, Any] {
            assert_eq!(
                overall_failure(&[failed(refused.clone()), failed(timeout.clone())], require),
                Some(refused.clone())
            );
            assert_eq!(
                overall_failure(
                    &[answered("8.8.4.4:4000"), answered("8.8.8.8:4000")],
                    require
                )
                .unwrap()
                .class(),
                "AddressMismatch"
            );
        }
        let one_dead = [failed(timeout.clone()), answered("198.51.7.1:4000")];
        assert_eq!(overall_failure(&one_dead, Any), None);
        let failure = overall_failure(&one_dead, All).unwrap();
        assert_eq!(
            failure,
            Failure::StunServerFailed {
                server: "dead".into(),
                answered: 1,
                of: 2,
                cause: Box::new(timeout),
            }
        );
        assert_eq!(
            failure.to_string(),
            "STUN server dead failed (1 of 2 answered): no answer within 1s"
        );
    }

    #[test]
    fn stuns_entries_use_tls_and_port_5349() {
        let cfg = StunConfig {
            servers: vec![],
            transport: StunTransport::Udp,
            timeout: Duration::from_secs(1),
            nat_binding: None,
            require: StunRequire::All,
            ca: None,
        };
        let cases = [
            (
                "stuns:stun.example.org",
                (StunTransport::Tls, "stun.example.org", 5349),
            ),
            ("STUNS:[::1]:443", (StunTransport::Tls, "::1", 443)),
            (
                "stun:stun.example.org",
                (StunTransport::Udp, "stun.example.org", 3478),
            ),
            ("127.0.0.1:3479", (StunTransport::Udp, "127.0.0.1", 3479)),
            ("::1", (StunTransport::Udp, "::1", 3478)),
            ("stun:3478", (StunTransport::Udp, "stun", 3478)),
            ("stuns:5349", (StunTransport::Udp, "stuns", 5349)),
        ];
        for (entry, want) in cases {
            assert_eq!(cfg.entry(entry), Ok(want), "{entry}");
        }
        let tls = StunConfig {
            transport: StunTransport::Tls,
            ..cfg.clone()
        };
        assert_eq!(
            tls.entry("stun.example.org"),
            Ok((StunTransport::Tls, "stun.example.org", 5349))
        );
        assert!(cfg.entry("stuns:").is_err());
    }

    #[test]
    fn outcome_serialises_camel_case_with_flattened_answers() {
        let outcome = StunOutcome {
            transport: StunTransport::Udp,
            servers: vec![
                answered("100.64.0.7:4000"),
                failed(Failure::Timeout {
                    after: Duration::from_secs(2),
                }),
            ],
            nat_binding: None,
            nat_behaviour: None,
            failure: None,
            duration: Duration::from_millis(1500),
        };
        let json = serde_json::to_value(&outcome).unwrap();
        assert_eq!(json["durationSeconds"], 1.5);
        let first = &json["servers"][0];
        assert_eq!(first["binding"]["mapped"], "100.64.0.7:4000");
        assert_eq!(first["binding"]["class"]["Private"], "Cgnat");
        assert_eq!(first["binding"]["mappedVia"], "XorMappedAddress");
        assert_eq!(first["binding"]["rttSeconds"], 0.003);
        assert_eq!(json["servers"][1]["failure"]["class"], "Timeout");
        assert_eq!(outcome.public_address(), None);
        let facts = outcome.facts();
        assert!(facts.contains(&("mapped address", "100.64.0.7:4000 (private: Cgnat)".into())));
    }
}
