//! The INVITE client transaction (RFC 3261 §17.1.1): the INVITE retransmitted over UDP until a
//! response arrives (Timer A), every provisional response handed on (ringing, early media), a
//! non-2xx final response acknowledged inside the transaction (§17.1.1.3: the same branch, the
//! response's To), and the CANCEL that belongs to it (§9.1). A 2xx ends the transaction and
//! goes to the dialog ([`super::dialog`]), which acknowledges it itself (§13.2.2.4).

use super::flow::{Direction, Flow};
use super::message::{Body, Dialogue, Outgoing, Reply, RequestSpec};
use super::name_addr;
use super::transaction::{Pending, Retransmit, Strays, Wait};
use super::transport::Connection;
use crate::probe::Failure;
use rsip::Header;
use rsip::prelude::UntypedHeader;
use tokio::time::Instant;

/// Who is called, by whom, and how the request is routed: what the INVITE, its ACK and its
/// CANCEL share.
#[derive(Debug, Clone)]
pub(super) struct Addressing {
    pub request_uri: String,
    pub from: String,
    pub to: String,
    /// `Route: <proxy;lr>` when an outbound proxy is used.
    pub route: Option<String>,
}

impl Addressing {
    fn route_headers(&self) -> Vec<Header> {
        self.route
            .iter()
            .map(|r| rsip::headers::Route::new(r.clone()).into())
            .collect()
    }

    fn spec<'a>(&'a self, method: rsip::Method, to_tag: Option<&'a str>) -> RequestSpec<'a> {
        RequestSpec {
            method,
            request_uri: &self.request_uri,
            from: &self.from,
            to: &self.to,
            to_tag,
            extra: self.route_headers(),
            body: None,
        }
    }
}

/// An INVITE sent and waiting for its responses.
pub(super) struct Invite {
    pending: Pending,
    addressing: Addressing,
    /// A provisional response came: from now on the INVITE may be cancelled (§9.1).
    pub provisional: bool,
}

impl Invite {
    /// Sends an INVITE with `extra` headers (Contact, credentials) and the SDP `offer`.
    pub async fn send(
        conn: &mut Connection,
        dialogue: &mut Dialogue,
        addressing: &Addressing,
        extra: Vec<Header>,
        offer: Body<'_>,
        flow: &mut Flow,
    ) -> Result<Invite, Failure> {
        let mut spec = addressing.spec(rsip::Method::Invite, None);
        spec.extra.extend(extra);
        spec.body = Some(offer);
        let request = dialogue.request(spec);
        let pending = Pending::send(conn, request, Retransmit::Invite, flow).await?;
        Ok(Invite {
            pending,
            addressing: addressing.clone(),
            provisional: false,
        })
    }

    pub fn request(&self) -> &Outgoing {
        &self.pending.request
    }

    pub fn sent_at(&self) -> Instant {
        self.pending.sent_at
    }

    /// The next response until `until`; a non-2xx final response is acknowledged before it is
    /// returned. `Ok(None)`: time ran out.
    pub async fn next(
        &mut self,
        conn: &mut Connection,
        dialogue: &Dialogue,
        until: Instant,
        flow: &mut Flow,
        strays: &mut impl Strays,
    ) -> Result<Option<Reply>, Failure> {
        let reply = match self.pending.next(conn, until, flow, strays).await? {
            Wait::TimedOut => return Ok(None),
            Wait::Response(reply) => reply,
        };
        if reply.code < 200 {
            self.provisional = true;
        } else if reply.code >= 300 {
            self.acknowledge(conn, dialogue, &reply, flow).await?;
        }
        Ok(Some(reply))
    }

    /// Sends the ACK of a non-2xx final response (§17.1.1.3).
    pub async fn acknowledge(
        &self,
        conn: &mut Connection,
        dialogue: &Dialogue,
        reply: &Reply,
        flow: &mut Flow,
    ) -> Result<(), Failure> {
        let to_tag = to_tag(reply);
        let spec = self.addressing.spec(rsip::Method::Ack, to_tag.as_deref());
        let ack = dialogue.request_for(spec, &self.pending.request, true);
        flow.record(Direction::Sent, &ack.bytes);
        conn.send(&ack.bytes).await
    }

    /// The CANCEL of this INVITE (§9.1): its Request-URI, Call-ID, From, To, Route, CSeq
    /// number and branch.
    pub fn cancel(&self, dialogue: &Dialogue) -> Outgoing {
        let spec = self.addressing.spec(rsip::Method::Cancel, None);
        dialogue.request_for(spec, &self.pending.request, true)
    }

    /// What the INVITE ran out of time with, when no final response came (see
    /// [`Pending::expired`]).
    pub fn expired(&self, timeout: std::time::Duration) -> Failure {
        self.pending.expired(timeout)
    }
}

/// The tag of a response's To header.
pub(super) fn to_tag(reply: &Reply) -> Option<String> {
    let to = reply.header_values("To").next()?;
    name_addr::parse(&to).ok()?.param("tag").map(str::to_owned)
}
