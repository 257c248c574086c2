//! What the NAT in front of the probe does, measured with RFC 5780 against a STUN server:
//! how long it keeps a UDP binding that carries no traffic (§4.6), and how it maps and filters
//! (§4.3, §4.4).
//!
//! Seeds 000/001: the phones send a keep-alive every 60 s; a router that forgets the binding
//! sooner makes them unreachable ("peer ... is now UNREACHABLE"). The probe idles for that
//! interval and then checks whether the binding is still there.

use super::message::{Mapping, Request, Response};
use super::transport::{self, Deadline, Reply};
use crate::probe::{Failure, secs};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;

/// Whether a NAT binding outlived an idle interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NatBindingResult {
    /// The server asked (over UDP).
    pub server: SocketAddr,
    /// How long the binding carried no traffic.
    #[serde(rename = "idleSeconds", serialize_with = "secs::serialize")]
    pub idle: Duration,
    pub survived: bool,
    pub method: NatBindingMethod,
    /// The mapping before the idle interval.
    pub mapped_before: SocketAddr,
    /// The mapping seen afterwards from the same socket ([`NatBindingMethod::SameSocket`]).
    pub mapped_after: Option<SocketAddr>,
}

/// How survival was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NatBindingMethod {
    /// RFC 5780 §4.6: a second socket asked the server to answer to the first socket's mapped
    /// port (RESPONSE-PORT); the answer reached the first socket only if the binding was alive.
    /// Sending from the second socket leaves the first binding untouched, so this is exact.
    ResponsePort,
    /// The server lacks RESPONSE-PORT: the first socket asked again and the mappings were
    /// compared. The new request refreshes or recreates the binding, so a NAT that happens to
    /// hand out the same port again looks like a survivor.
    SameSocket,
}

/// RFC 5780 §4.3/§4.4 behaviour; the same three classes for mapping and filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Behaviour {
    EndpointIndependent,
    AddressDependent,
    AddressAndPortDependent,
}

/// The NAT's mapping and filtering behaviour, measured against a server with OTHER-ADDRESS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NatBehaviour {
    pub server: SocketAddr,
    pub other_address: SocketAddr,
    /// The mapped address differs from the socket's own: there is a NAT (RFC 5780 §4.3 test
    /// I). Without one, mapping is endpoint-independent by definition; the tests run anyway.
    pub nat_detected: Option<bool>,
    /// `None`: the server (or its other address) did not answer, so it could not be told.
    pub mapping: Option<Behaviour>,
    /// `None`: the server did not answer the plain request, or answered a CHANGE-REQUEST from
    /// an address that does not match the request, so it could not be told.
    pub filtering: Option<Behaviour>,
}

impl NatBindingResult {
    pub(super) fn facts(&self) -> Vec<(&'static str, String)> {
        let verdict = if self.survived { "survived" } else { "expired" };
        vec![
            (
                "NAT binding",
                format!(
                    "{verdict} {} idle ({:?}, {})",
                    humantime::format_duration(self.idle),
                    self.method,
                    self.server
                ),
            ),
            ("mapping before idle", self.mapped_before.to_string()),
        ]
        .into_iter()
        .chain(
            self.mapped_after
                .map(|after| ("mapping after idle", after.to_string())),
        )
        .collect()
    }
}

impl NatBehaviour {
    pub(super) fn facts(&self) -> Vec<(&'static str, String)> {
        let told = |b: Option<Behaviour>| b.map_or("undetermined".to_owned(), |b| format!("{b:?}"));
        let nat = match self.nat_detected {
            Some(true) => "yes",
            Some(false) => "no (mapped address is our own)",
            None => "undetermined",
        };
        vec![
            ("NAT detected", nat.to_owned()),
            ("NAT mapping (RFC 5780)", told(self.mapping)),
            ("NAT filtering (RFC 5780)", told(self.filtering)),
        ]
    }
}

/// RFC 5780 §4.6 with the fallback for servers without RESPONSE-PORT.
pub(super) async fn binding_lifetime(
    server: SocketAddr,
    idle: Duration,
    timeout: Duration,
) -> Result<NatBindingResult, Failure> {
    let a = transport::connected_udp(server).await?;
    let before =
        mapping(transport::udp(&a, server, &Request::binding(), &Deadline::after(timeout)).await?)?;
    tokio::time::sleep(idle).await;

    let b = transport::connected_udp(server).await?;
    let probe = Request::response_port(before.mapped.port());
    let deadline = Deadline::after(timeout);
    let result = |survived, method, mapped_after| NatBindingResult {
        server,
        idle,
        survived,
        method,
        mapped_before: before.mapped,
        mapped_after,
    };
    let on_b = tokio::select! {
        on_a = transport::receive(&a, server, &probe.txid) => {
            // Any answer to the second socket's request on the first socket proves the
            // mapping alive, whatever the answer says.
            on_a?;
            return Ok(result(true, NatBindingMethod::ResponsePort, None));
        }
        on_b = transport::udp(&b, server, &probe, &deadline) => on_b,
    };
    match on_b {
        Ok(reply) if reply.response.lacks_response_port() => {}
        Ok(Reply {
            response: Response::Success(on_b),
            ..
        }) => {
            if on_b.mapped.port() == before.mapped.port() {
                // The NAT gave the second socket the first one's port: the first binding is
                // gone, and the server did honour RESPONSE-PORT.
                return Ok(result(false, NatBindingMethod::ResponsePort, None));
            }
            // Answered to the second socket's own port: RESPONSE-PORT was ignored.
        }
        Ok(Reply {
            response: Response::Error { code, .. },
            ..
        }) => return Err(Failure::StunError { code }),
        Err(Failure::Timeout { .. }) => {
            // Nothing reached the first socket. Expired, if the server still answers at all.
            transport::udp(&b, server, &Request::binding(), &Deadline::after(timeout)).await?;
            return Ok(result(false, NatBindingMethod::ResponsePort, None));
        }
        Err(failure) => return Err(failure),
    }

    let after =
        mapping(transport::udp(&a, server, &Request::binding(), &Deadline::after(timeout)).await?)?;
    Ok(result(
        after.mapped == before.mapped,
        NatBindingMethod::SameSocket,
        Some(after.mapped),
    ))
}

fn mapping(reply: Reply) -> Result<Mapping, Failure> {
    match reply.response {
        Response::Success(mapping) => Ok(mapping),
        Response::Error { code, .. } => Err(Failure::StunError { code }),
    }
}

/// RFC 5780 §4.3 (mapping) and §4.4 (filtering), each from a fresh socket so the filtering
/// test is not helped by bindings the mapping test opened towards the other address.
pub(super) async fn behaviour(
    server: SocketAddr,
    other: SocketAddr,
    timeout: Duration,
) -> NatBehaviour {
    let ((nat_detected, mapping), filtering) = tokio::join!(
        mapping_behaviour(server, other, timeout),
        filtering_behaviour(server, other, timeout),
    );
    NatBehaviour {
        server,
        other_address: other,
        nat_detected,
        mapping,
        filtering,
    }
}

/// §4.3: the mapping towards the primary address (test I), the other IP with the primary port
/// (test II) and the other IP and port (test III), all from one socket.
async fn mapping_behaviour(
    server: SocketAddr,
    other: SocketAddr,
    timeout: Duration,
) -> (Option<bool>, Option<Behaviour>) {
    let Ok(socket) = transport::unconnected_udp(server).await else {
        return (None, None);
    };
    let ask = |to| ask(&socket, to, Request::binding(), timeout);
    let Some(test1) = ask(server).await else {
        return (None, None);
    };
    let nat_detected = socket.local_addr().ok().map(|local| local != test1.mapped);
    let Some(test2) = ask(SocketAddr::new(other.ip(), server.port())).await else {
        return (nat_detected, None);
    };
    if test2.mapped == test1.mapped {
        return (nat_detected, Some(Behaviour::EndpointIndependent));
    }
    let Some(test3) = ask(other).await else {
        return (nat_detected, None);
    };
    let mapping = if test3.mapped == test2.mapped {
        Behaviour::AddressDependent
    } else {
        Behaviour::AddressAndPortDependent
    };
    (nat_detected, Some(mapping))
}

/// §4.4: after a plain request (test I), ask the server to answer from its other IP and port
/// (test II), then from its other port only (test III). Silence is the finding here, so each
/// of tests II and III may take the full timeout.
async fn filtering_behaviour(
    server: SocketAddr,
    other: SocketAddr,
    timeout: Duration,
) -> Option<Behaviour> {
    let socket = transport::unconnected_udp(server).await.ok()?;
    ask(&socket, server, Request::binding(), timeout).await?;
    let changed = |ip, port| {
        let request = Request::change_request(ip, port);
        let socket = &socket;
        async move {
            let deadline = Deadline::after(timeout);
            transport::udp(socket, server, &request, &deadline).await
        }
    };
    match changed(true, true).await {
        Ok(reply) if reply.from == other => return Some(Behaviour::EndpointIndependent),
        Err(Failure::Timeout { .. }) => {}
        _ => return None,
    }
    match changed(false, true).await {
        Ok(reply) if reply.from == SocketAddr::new(server.ip(), other.port()) => {
            Some(Behaviour::AddressDependent)
        }
        Err(Failure::Timeout { .. }) => Some(Behaviour::AddressAndPortDependent),
        _ => None,
    }
}

/// One Binding transaction whose success is all that matters; `None` for anything else.
async fn ask(
    socket: &UdpSocket,
    to: SocketAddr,
    request: Request,
    timeout: Duration,
) -> Option<Mapping> {
    let reply = transport::udp(socket, to, &request, &Deadline::after(timeout))
        .await
        .ok()?;
    mapping(reply).ok()
}
