//! The INVITE dialog (RFC 3261 §12) as the test call needs it: established by a 2xx (the far
//! end's tag, the remote target from its Contact, the route set from its Record-Route,
//! reversed for the caller), the ACK of that 2xx as a request of its own (§13.2.2.4), our BYE,
//! and the answers to what the far end sends inside the dialog: BYE (200, the call ends),
//! re-INVITE (200 with an SDP answer, or our offer when it brought none), OPTIONS (200), and
//! anything else 501 (§8.2.1).
//!
//! Every request goes out on the connection the call was set up on, whatever the remote
//! target: the probe has no listener of its own, like a phone behind NAT that keeps one flow to
//! its provider (RFC 5626), and the provider's proxy, which record-routes, forwards by the
//! Request-URI and the Route headers. Loose routing (`;lr`, §16.12) is assumed of the route set.

use super::flow::{Direction, Flow};
use super::invite::{Addressing, to_tag};
use super::message::{
    self, Body, Dialogue, Inbound, Incoming, Outgoing, Reply, RequestSpec, ResponseSpec,
    random_token,
};
use super::name_addr;
use super::sdp;
use super::transaction::{Strays, answer_stray};
use super::transport::Connection;
use crate::probe::Failure;
use crate::probe::media::Codec;
use rsip::Header;
use rsip::prelude::UntypedHeader;
use std::net::SocketAddr;
use tokio::time::Instant;

/// An established dialog, seen from the caller.
pub(super) struct Dialog {
    remote_tag: Option<String>,
    remote_target: String,
    /// Route header values, in the order to send them.
    route_set: Vec<String>,
    addressing: Addressing,
}

impl Dialog {
    /// The dialog a 2xx to `invite` establishes. A 2xx without Contact or To tag breaks RFC
    /// 3261 §12.1.1, but the call is up and must still be ended: the INVITE's Request-URI then
    /// stands in for the remote target, and the requests go without a tag.
    pub fn establish(reply: &Reply, addressing: &Addressing) -> Dialog {
        let remote_target = reply
            .contacts()
            .into_iter()
            .find_map(|(_, contact)| contact.map(|c| c.uri))
            .unwrap_or_else(|| addressing.request_uri.clone());
        let mut route_set: Vec<String> = reply
            .header_values("Record-Route")
            .flat_map(|value| {
                name_addr::split_list(&value)
                    .into_iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        route_set.reverse();
        // Without a route set the outbound proxy (if any) still comes first (§8.1.2).
        if route_set.is_empty() {
            route_set.extend(addressing.route.clone());
        }
        Dialog {
            remote_tag: to_tag(reply),
            remote_target,
            route_set,
            addressing: addressing.clone(),
        }
    }

    fn spec(&self, method: rsip::Method) -> RequestSpec<'_> {
        RequestSpec {
            method,
            request_uri: &self.remote_target,
            from: &self.addressing.from,
            to: &self.addressing.to,
            to_tag: self.remote_tag.as_deref(),
            extra: self
                .route_set
                .iter()
                .map(|r| -> Header { rsip::headers::Route::new(r.clone()).into() })
                .collect(),
            body: None,
        }
    }

    /// The ACK of the 2xx: a new branch, the INVITE's CSeq number (§13.2.2.4).
    pub fn ack(&self, dialogue: &Dialogue, invite: &Outgoing) -> Outgoing {
        dialogue.request_for(self.spec(rsip::Method::Ack), invite, false)
    }

    /// Our BYE.
    pub fn bye(&self, dialogue: &mut Dialogue) -> Outgoing {
        dialogue.request(self.spec(rsip::Method::Bye))
    }
}

/// What the probe answers with inside a call: its Contact and its media, for a re-INVITE.
#[derive(Debug, Clone)]
pub(super) struct Answering {
    pub call_id: String,
    /// Our Contact URI.
    pub contact: String,
    /// Our RTP address as advertised, and the codec offered first.
    pub rtp: SocketAddr,
    pub codec: Codec,
    pub session_id: u64,
}

/// How a request from the far end was answered.
pub(super) struct Answered {
    pub bytes: Option<Vec<u8>>,
    /// It was a BYE of this call.
    pub hung_up: bool,
}

impl Answering {
    /// Answers one request: of this call as the module comment says; outside it OPTIONS (a
    /// keep-alive of the server) 200 and anything else 481 (§12.2.2). ACKs are never answered.
    pub fn answer(&self, request: &Inbound) -> Answered {
        let ours = request.call_id().as_deref() == Some(self.call_id.as_str());
        let none = Answered {
            bytes: None,
            hung_up: false,
        };
        let tag = random_token();
        let contact = [format!("Contact: <{}>", self.contact)];
        let respond = |code, reason, extra: &[String], body| {
            Some(request.response(ResponseSpec {
                code,
                reason,
                to_tag: Some(&tag),
                record_route: false,
                extra,
                body,
            }))
        };
        use rsip::Method;
        match (&request.method, ours) {
            (Method::Ack, _) => none,
            (Method::Options, _) => Answered {
                bytes: respond(200, "OK", &[], None),
                hung_up: false,
            },
            (Method::Bye, true) => Answered {
                bytes: respond(200, "OK", &[], None),
                hung_up: true,
            },
            (Method::Invite, true) => {
                let sdp = match request.sdp() {
                    Some(offer) => {
                        sdp::answer(Some(offer), self.rtp, self.session_id).map(|(a, _)| a)
                    }
                    None => Ok(sdp::offer(self.rtp, self.codec, self.session_id)),
                };
                let bytes = match &sdp {
                    Ok(sdp) => respond(
                        200,
                        "OK",
                        &contact,
                        Some(Body {
                            content_type: sdp::CONTENT_TYPE,
                            bytes: sdp,
                        }),
                    ),
                    Err(_) => respond(488, "Not Acceptable Here", &[], None),
                };
                Answered {
                    bytes,
                    hung_up: false,
                }
            }
            (_, true) => Answered {
                bytes: respond(501, "Not Implemented", &[], None),
                hung_up: false,
            },
            (_, false) => Answered {
                bytes: respond(481, "Call/Transaction Does Not Exist", &[], None),
                hung_up: false,
            },
        }
    }
}

/// The caller's side of everything on the connection that is not the response awaited: the
/// far end's requests, retransmissions of the 2xx (answered with the ACK again, §13.2.2.4),
/// and the INVITE's final response while a CANCEL is under way.
pub(super) struct CallerStrays {
    pub answering: Answering,
    /// The INVITE, to recognise its responses.
    pub invite: Option<Outgoing>,
    /// The ACK sent for the 2xx.
    pub ack: Option<Vec<u8>>,
    /// The INVITE's final response, when it arrived as a stray (during a CANCEL).
    pub invite_final: Option<Reply>,
    /// The far end sent BYE.
    pub hung_up: bool,
}

impl Strays for CallerStrays {
    fn take(&mut self, message: Incoming) -> Option<Vec<u8>> {
        match message {
            Incoming::Request(request) => {
                let answered = self.answering.answer(&request);
                self.hung_up |= answered.hung_up;
                answered.bytes
            }
            Incoming::Response(reply) => {
                let invite = self.invite.as_ref()?;
                if reply.code < 200 || reply.answers(invite) != Ok(true) {
                    return None;
                }
                if (200..300).contains(&reply.code) && self.ack.is_some() {
                    return self.ack.clone();
                }
                self.invite_final.get_or_insert(reply);
                None
            }
        }
    }
}

/// Reads the connection until `until` or until the far end hangs up, answering what comes
/// through `strays`. Undecodable messages are skipped over UDP and end a stream.
pub(super) async fn listen(
    conn: &mut Connection,
    until: Instant,
    flow: &mut Flow,
    strays: &mut CallerStrays,
) -> Result<(), Failure> {
    while !strays.hung_up {
        let Ok(received) = tokio::time::timeout_at(until, conn.recv()).await else {
            return Ok(());
        };
        let bytes = received?;
        flow.record(Direction::Received, &bytes);
        match message::parse(&bytes) {
            Ok(message) => answer_stray(conn, flow, strays.take(message)).await?,
            Err(detail) if conn.transport().is_reliable() => {
                return Err(Failure::Protocol { detail });
            }
            Err(_) => {}
        }
    }
    Ok(())
}
