//! The STUN probe against real coturn on loopback.

mod support;

use std::time::Duration;
use support::coturn::Coturn;
use support::stund::Stund;
use voipcheck::probe::dns::Dns;
use voipcheck::probe::stun::{
    AddressClass, Behaviour, MappedVia, NatBindingMethod, PrivateKind, ServerAnswer, StunConfig,
    StunOutcome, StunRequire, StunTransport, probe,
};
use voipcheck::probe::tls::CaSource;
use voipcheck::probe::{Failure, Outcome};

const TIMEOUT: Duration = Duration::from_secs(3);

/// Server entries here are IP literals, which never reach the name server.
fn dns() -> Dns {
    Dns::with_nameserver("127.0.0.1:9".parse().unwrap())
}

fn config(servers: Vec<String>, transport: StunTransport) -> StunConfig {
    StunConfig {
        servers,
        transport,
        timeout: TIMEOUT,
        nat_binding: None,
        require: StunRequire::All,
        ca: None,
    }
}

fn binding(outcome: &StunOutcome, index: usize) -> &voipcheck::probe::stun::Binding {
    match &outcome.servers[index].answer {
        ServerAnswer::Binding(b) => b,
        ServerAnswer::Failure(f) => panic!("server {index} failed: {f}"),
    }
}

fn assert_loopback_mapping(outcome: &StunOutcome, index: usize) {
    let b = binding(outcome, index);
    assert_eq!(
        b.mapped, b.local,
        "no NAT on loopback: mapped is our own address"
    );
    assert_eq!(b.mapped.ip().to_string(), "127.0.0.1");
    assert_ne!(b.mapped.port(), 0);
    assert_eq!(b.class, AddressClass::Private(PrivateKind::Loopback));
    assert_eq!(b.mapped_via, MappedVia::XorMappedAddress);
    assert!(b.rtt > Duration::ZERO && b.rtt < TIMEOUT, "rtt {:?}", b.rtt);
    assert_eq!(b.retransmits, 0);
    let software = b.software.as_deref().unwrap_or_default();
    assert!(software.contains("Coturn"), "SOFTWARE {software:?}");
}

#[tokio::test]
async fn rfc3489_reference_server_is_understood() {
    let stund = Stund::start();
    let outcome = probe(&dns(), &config(vec![stund.server()], StunTransport::Udp))
        .await
        .expect("valid configuration");
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    let b = binding(&outcome, 0);
    assert_eq!(b.mapped, b.local);
    assert_eq!(b.source_address, Some(stund.addr));
    assert_eq!(b.changed_address, Some(stund.changed));
    let facts = outcome.facts();
    assert!(
        facts
            .iter()
            .any(|(k, v)| *k == "changed address (RFC 3489)" && *v == stund.changed.to_string()),
        "{facts:?}"
    );
}

#[tokio::test]
async fn udp_binding_maps_to_the_loopback_source() {
    let coturn = Coturn::start();
    let outcome = probe(&dns(), &config(vec![coturn.server()], StunTransport::Udp))
        .await
        .expect("valid configuration");
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    assert_eq!(outcome.servers[0].address, Some(coturn.addr));
    assert_loopback_mapping(&outcome, 0);
    assert_eq!(
        binding(&outcome, 0).other_address,
        None,
        "one IP: no RFC 5780"
    );
    assert_eq!(outcome.public_address(), None);
    eprintln!("UDP loopback coturn: {:?}", outcome.facts());
}

#[tokio::test]
async fn tcp_binding_maps_to_the_loopback_source() {
    let coturn = Coturn::start();
    let outcome = probe(&dns(), &config(vec![coturn.server()], StunTransport::Tcp))
        .await
        .expect("valid configuration");
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    assert_loopback_mapping(&outcome, 0);
    eprintln!("TCP loopback coturn: {:?}", outcome.facts());
}

#[tokio::test]
async fn two_servers_that_agree_are_no_mismatch() {
    let (one, two) = (Coturn::start(), Coturn::start());
    let outcome = probe(
        &dns(),
        &config(vec![one.server(), two.server()], StunTransport::Udp),
    )
    .await
    .expect("valid configuration");
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    assert_loopback_mapping(&outcome, 0);
    assert_loopback_mapping(&outcome, 1);
    assert_eq!(
        binding(&outcome, 0).mapped.ip(),
        binding(&outcome, 1).mapped.ip()
    );
}

#[tokio::test]
async fn one_dead_server_of_two_fails_unless_any_answer_will_do() {
    let mut stopped = Coturn::start();
    let running = Coturn::start();
    stopped.stop();
    let mut cfg = config(vec![running.server(), stopped.server()], StunTransport::Udp);
    cfg.timeout = Duration::from_secs(1);
    let outcome = probe(&dns(), &cfg).await.expect("valid configuration");
    let Some(Failure::StunServerFailed {
        server,
        answered: 1,
        of: 2,
        cause,
    }) = &outcome.failure
    else {
        panic!("expected the dead server named: {outcome:#?}");
    };
    assert_eq!(*server, stopped.server());
    assert!(
        matches!(**cause, Failure::ConnectRefused { .. }),
        "{cause:?}"
    );
    let message = outcome.failure.as_ref().unwrap().to_string();
    assert!(message.contains(&stopped.server()), "{message}");
    assert_loopback_mapping(&outcome, 0);

    cfg.require = StunRequire::Any;
    let outcome = probe(&dns(), &cfg).await.expect("valid configuration");
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    assert!(matches!(
        outcome.servers[1].answer,
        ServerAnswer::Failure(Failure::ConnectRefused { .. })
    ));
    assert_loopback_mapping(&outcome, 0);
}

#[tokio::test]
async fn stuns_entry_asks_coturn_over_tls() {
    let coturn = Coturn::start();
    let mut cfg = config(vec![coturn.tls_server()], StunTransport::Udp);
    cfg.ca = Some(CaSource::File(coturn.ca.cert_path().to_owned()));
    let outcome = probe(&dns(), &cfg).await.expect("valid configuration");
    assert_eq!(outcome.failure, None, "{outcome:#?}\n{}", coturn.log_text());
    assert_eq!(outcome.servers[0].transport, StunTransport::Tls);
    assert_eq!(outcome.servers[0].address, Some(coturn.tls_addr));
    let b = binding(&outcome, 0);
    assert_eq!(b.mapped, b.local, "the TLS connection's own address");
    assert_eq!(b.retransmits, 0);
    let facts = outcome.facts();
    assert!(
        facts
            .iter()
            .any(|(k, v)| *k == "server" && v.ends_with(", TLS)")),
        "{facts:?}"
    );

    // The same listener without the test CA: the certificate is refused, as TLS.
    cfg.ca = None;
    let outcome = probe(&dns(), &cfg).await.expect("valid configuration");
    assert!(
        matches!(outcome.failure, Some(Failure::Tls { .. })),
        "{outcome:#?}"
    );
}

/// UDP to a closed port: the kernel answers with ICMP port unreachable, which a connected UDP
/// socket reports as ECONNREFUSED, so the probe says ConnectRefused at once. (Across the
/// Internet, firewalls usually drop such datagrams silently: then it is Timeout.) TCP gets a
/// RST: ConnectRefused as well.
#[tokio::test]
async fn closed_port_is_refused_at_once() {
    let port = support::free_port();
    for transport in [StunTransport::Udp, StunTransport::Tcp] {
        let outcome = probe(
            &dns(),
            &config(vec![format!("127.0.0.1:{port}")], transport),
        )
        .await
        .expect("valid configuration");
        assert!(
            matches!(outcome.failure, Some(Failure::ConnectRefused { .. })),
            "{transport:?}: {outcome:#?}"
        );
        assert!(
            outcome.duration < Duration::from_millis(500),
            "{:?}",
            outcome.duration
        );
    }
}

#[tokio::test]
async fn nat_binding_survives_a_short_idle_on_loopback_via_response_port() {
    let coturn = Coturn::start_rfc5780();
    let mut cfg = config(vec![coturn.server()], StunTransport::Udp);
    cfg.nat_binding = Some(Duration::from_secs(1));
    let outcome = probe(&dns(), &cfg).await.expect("valid configuration");
    assert_eq!(outcome.failure, None, "{outcome:#?}\n{}", coturn.log_text());
    assert_eq!(binding(&outcome, 0).other_address, coturn.other);

    let nat = outcome.nat_binding.as_ref().expect("measured");
    assert!(nat.survived, "{nat:#?}");
    assert_eq!(nat.method, NatBindingMethod::ResponsePort);
    assert_eq!(nat.idle, Duration::from_secs(1));
    assert_eq!(nat.mapped_before.ip().to_string(), "127.0.0.1");
    assert!(outcome.duration >= Duration::from_secs(1));

    let behaviour = outcome
        .nat_behaviour
        .as_ref()
        .expect("coturn offers OTHER-ADDRESS");
    assert_eq!(Some(behaviour.other_address), coturn.other);
    assert_eq!(behaviour.nat_detected, Some(false));
    assert_eq!(behaviour.mapping, Some(Behaviour::EndpointIndependent));
    assert_eq!(behaviour.filtering, Some(Behaviour::EndpointIndependent));
    eprintln!("RFC 5780 loopback coturn: {:?}", outcome.facts());
}

/// A user-space UDP NAT in front of one server, to see bindings expire on loopback. Each client
/// address gets its own upstream socket (the mapping, endpoint-independent as RFC 4787 asks);
/// the mapping is forgotten once `lifetime` passed without outbound traffic (RFC 4787 REQ-6),
/// like an entry in a home router's NAT table, and its upstream port closes.
struct ToyNat {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ToyNat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ToyNat {
    async fn start(server: std::net::SocketAddr, lifetime: Duration) -> ToyNat {
        use std::collections::HashMap;
        use std::sync::Arc;
        use tokio::net::UdpSocket;
        use tokio::time::Instant;

        struct Mapping {
            upstream: Arc<UdpSocket>,
            last_out: Instant,
            inbound: tokio::task::JoinHandle<()>,
        }

        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut table: HashMap<std::net::SocketAddr, Mapping> = HashMap::new();
            let mut buffer = [0u8; 2048];
            loop {
                let Ok((size, client)) = front.recv_from(&mut buffer).await else {
                    continue;
                };
                let now = Instant::now();
                table.retain(|_, m| {
                    let alive = now - m.last_out < lifetime;
                    if !alive {
                        m.inbound.abort();
                    }
                    alive
                });
                let mapping = match table.entry(client) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let upstream = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                        let (up, front) = (upstream.clone(), front.clone());
                        let inbound = tokio::spawn(async move {
                            let mut buffer = [0u8; 2048];
                            while let Ok((size, _)) = up.recv_from(&mut buffer).await {
                                let _ = front.send_to(&buffer[..size], client).await;
                            }
                        });
                        e.insert(Mapping {
                            upstream,
                            last_out: now,
                            inbound,
                        })
                    }
                };
                mapping.last_out = now;
                let _ = mapping.upstream.send_to(&buffer[..size], server).await;
            }
        });
        ToyNat { addr, task }
    }
}

fn nat_config(nat: &ToyNat, idle: Duration) -> StunConfig {
    StunConfig {
        servers: vec![nat.addr.to_string()],
        transport: StunTransport::Udp,
        timeout: Duration::from_secs(1),
        nat_binding: Some(idle),
        require: StunRequire::All,
        ca: None,
    }
}

#[tokio::test]
async fn behind_a_nat_the_binding_survives_an_idle_shorter_than_its_lifetime() {
    let coturn = Coturn::start_rfc5780();
    let nat = ToyNat::start(coturn.addr, Duration::from_millis(1500)).await;
    let outcome = probe(&dns(), &nat_config(&nat, Duration::from_millis(300)))
        .await
        .expect("valid configuration");
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    let b = binding(&outcome, 0);
    assert_ne!(
        b.mapped, b.local,
        "the toy NAT maps to its own upstream port"
    );
    let result = outcome.nat_binding.as_ref().unwrap();
    assert!(result.survived, "{result:#?}");
    assert_eq!(result.method, NatBindingMethod::ResponsePort);
    let behaviour = outcome.nat_behaviour.as_ref().unwrap();
    assert_eq!(behaviour.nat_detected, Some(true));
}

/// Seeds 000/001: the NAT forgets the binding before the keep-alive comes. With RESPONSE-PORT
/// the answer goes to the forgotten port and never reaches the first socket.
#[tokio::test]
async fn behind_a_nat_the_binding_expires_after_an_idle_longer_than_its_lifetime() {
    let coturn = Coturn::start_rfc5780();
    let nat = ToyNat::start(coturn.addr, Duration::from_millis(400)).await;
    let outcome = probe(&dns(), &nat_config(&nat, Duration::from_secs(1)))
        .await
        .expect("valid configuration");
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    let result = outcome.nat_binding.as_ref().unwrap();
    assert!(!result.survived, "{result:#?}");
    assert_eq!(result.method, NatBindingMethod::ResponsePort);
    // Idle, then one transaction timeout waiting on the first socket, then the confirmation.
    assert!(
        outcome.duration < Duration::from_millis(2600),
        "{:?}",
        outcome.duration
    );
}

/// coturn with one IP ignores RESPONSE-PORT and answers the second socket: the probe falls back
/// to asking from the first socket again, and the NAT's new mapping gives the expiry away.
#[tokio::test]
async fn without_response_port_the_same_socket_fallback_sees_the_new_mapping() {
    let coturn = Coturn::start();
    let nat = ToyNat::start(coturn.addr, Duration::from_millis(400)).await;
    let outcome = probe(&dns(), &nat_config(&nat, Duration::from_secs(1)))
        .await
        .expect("valid configuration");
    assert_eq!(outcome.failure, None, "{outcome:#?}");
    let result = outcome.nat_binding.as_ref().unwrap();
    assert_eq!(result.method, NatBindingMethod::SameSocket);
    assert!(!result.survived, "{result:#?}");
    assert_ne!(result.mapped_after, Some(result.mapped_before));
    assert_eq!(outcome.nat_behaviour, None, "one IP: no OTHER-ADDRESS");

    let survived = probe(&dns(), &nat_config(&nat, Duration::from_millis(100)))
        .await
        .expect("valid configuration");
    let result = survived.nat_binding.as_ref().unwrap();
    assert_eq!(result.method, NatBindingMethod::SameSocket);
    assert!(result.survived, "{result:#?}");
    assert_eq!(result.mapped_after, Some(result.mapped_before));
}
