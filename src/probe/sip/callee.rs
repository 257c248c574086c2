//! The hairpin call's callee (issue 9, `call.callee`): the second account, registered on its
//! own connection at the same server ([`super::register::keep`]), receives the caller's INVITE
//! through the provider and answers it as a phone does (RFC 3261 §13.3): 100 and 180, then
//! 200 with the SDP answer, retransmitted over UDP until the ACK (§13.3.1.4); it runs its own
//! media leg at the same time as the caller's and answers the caller's BYE. With
//! `RingingIsEnough` it only rings, and answers the CANCEL 200 and the INVITE 487 (§9.2).

use super::call::AnswerPolicy;
use super::dialog::Answering;
use super::flow::{Direction, Flow};
use super::message::{self, Body, Inbound, Incoming, ResponseSpec, random_token};
use super::register::Kept;
use super::sdp;
use super::transaction::T1;
use crate::probe::Failure;
use crate::probe::dns::Dns;
use crate::probe::media::{Codec, Leg, LegReport, MediaConfig};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;

/// RFC 3261 §13.3.1.4: the cap on the interval of a 2xx's retransmissions.
const T2: Duration = Duration::from_secs(4);

/// The callee of one call.
pub(super) struct Callee<'a> {
    kept: Kept<'a>,
    /// Checks where the offer asks our RTP to go (DESIGN.md §8: a proxy may rewrite it).
    dns: &'a Dns,
    pub flow: Flow,
    policy: AnswerPolicy,
    leg: Option<Leg>,
    /// Our RTP address, for the SDP answer.
    rtp: SocketAddr,
    tag: String,
    /// When the INVITE reached the callee.
    pub reached: Option<Instant>,
    /// What the callee's media leg measured.
    pub heard: Option<LegReport>,
    /// Why the callee refused the offer (488) though it could answer it: its media address is
    /// not on the allow-list. The call's failure, rather than the 488 the caller sees.
    pub refused: Option<Failure>,
}

/// The media leg, once running.
type Running<'m> = Pin<Box<dyn Future<Output = LegReport> + Send + 'm>>;

impl<'a> Callee<'a> {
    /// The callee on its registration, with its RTP leg (bound on the connection's local
    /// address).
    pub fn new(kept: Kept<'a>, dns: &'a Dns, leg: Leg, flow: Flow, policy: AnswerPolicy) -> Self {
        Callee {
            rtp: leg.local_addr(),
            kept,
            dns,
            flow,
            policy,
            leg: Some(leg),
            tag: random_token(),
            reached: None,
            heard: None,
            refused: None,
        }
    }

    /// Removes the callee's binding within `budget`.
    pub async fn unregister(self, budget: Duration) -> Flow {
        let mut flow = self.flow;
        self.kept.unregister(budget, &mut flow).await;
        flow
    }

    /// Answers the call that comes, until the caller's BYE (or CANCEL) is answered or `until`.
    pub async fn answer(&mut self, media: Option<&MediaConfig>, until: Instant) {
        let mut invite: Option<Inbound> = None;
        let mut answering: Option<Answering> = None;
        // The final response to the INVITE, resent when the INVITE or (for a 2xx) nothing
        // arrives: the retransmission timer and its interval until the ACK.
        let mut last: Option<Vec<u8>> = None;
        let mut retransmit: Option<(Instant, Duration)> = None;
        let mut remote: Option<SocketAddr> = None;
        let mut running: Option<Running<'_>> = None;
        let reliable = self.kept.conn().transport().is_reliable();
        loop {
            let wake = retransmit.map_or(until, |(at, _)| at.min(until));
            let received = tokio::select! {
                report = async {
                    match running.as_mut() {
                        Some(run) => run.await,
                        None => std::future::pending().await,
                    }
                }, if running.is_some() => {
                    self.heard = Some(report);
                    running = None;
                    continue;
                }
                received = tokio::time::timeout_at(wake, self.kept.conn().recv()) => received,
            };
            let bytes = match received {
                Err(_) if Instant::now() >= until => return,
                Err(_) => {
                    if let (Some(bytes), Some((_, interval))) = (&last, retransmit) {
                        let bytes = bytes.clone();
                        let interval = (interval * 2).min(T2);
                        retransmit = Some((Instant::now() + interval, interval));
                        if self.send(bytes).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                Ok(Err(_)) => return,
                Ok(Ok(bytes)) => bytes,
            };
            self.flow.record(Direction::Received, &bytes);
            let Ok(Incoming::Request(request)) = message::parse(&bytes) else {
                continue;
            };
            let sent = match (&request.method, &invite) {
                (rsip::Method::Invite, None) => {
                    self.reached = Some(Instant::now());
                    let (replies, negotiated, refused) = self.ring(&request);
                    self.refused = refused;
                    remote = negotiated;
                    answering = Some(Answering {
                        call_id: request.call_id().unwrap_or_default(),
                        contact: self.kept.contact().to_owned(),
                        rtp: self.rtp,
                        codec: Codec::Pcma,
                        session_id: rand::random::<u32>().into(),
                    });
                    invite = Some(request);
                    let final_sent = replies.len() == 3;
                    let mut result = Ok(());
                    for reply in replies {
                        result = result.and(self.send(reply.clone()).await);
                        last = Some(reply);
                    }
                    if final_sent && !reliable {
                        retransmit = Some((Instant::now() + T1, T1));
                    }
                    result
                }
                // A retransmitted INVITE gets the last response again (§17.2.1).
                (rsip::Method::Invite, Some(first)) if first.call_id() == request.call_id() => {
                    match last.clone() {
                        Some(bytes) => self.send(bytes).await,
                        None => Ok(()),
                    }
                }
                (rsip::Method::Ack, Some(_)) => {
                    retransmit = None;
                    if let (Some(cfg), Some(remote), Some(leg)) = (media, remote, self.leg.take()) {
                        let media_until =
                            (Instant::now() + cfg.duration + crate::probe::media::DRAIN).min(until);
                        running = Some(Box::pin(leg.run(remote, cfg, media_until)));
                    }
                    Ok(())
                }
                (rsip::Method::Cancel, Some(first)) => {
                    let ok = request.response(self.spec(200, "OK", false, &[], None));
                    let mut result = self.send(ok).await;
                    if remote.is_none() || self.policy == AnswerPolicy::RingingIsEnough {
                        let terminated =
                            first.response(self.spec(487, "Request Terminated", false, &[], None));
                        result = result.and(self.send(terminated.clone()).await);
                        last = Some(terminated);
                    }
                    result
                }
                _ => {
                    let Some(answering) = &answering else {
                        continue;
                    };
                    let answered = answering.answer(&request);
                    let result = match answered.bytes {
                        Some(bytes) => self.send(bytes).await,
                        None => Ok(()),
                    };
                    if answered.hung_up {
                        // The caller's media is over: let ours finish receiving it.
                        if let Some(run) = running.take() {
                            self.heard = tokio::time::timeout_at(until, run).await.ok();
                        }
                        return;
                    }
                    result
                }
            };
            if sent.is_err() {
                return;
            }
        }
    }

    /// The responses to the INVITE: 100 and 180, then (unless only ringing is wanted) 200 with
    /// our SDP answer, or 488 when the offer cannot be answered; and where the caller's RTP
    /// goes.
    fn ring(&self, invite: &Inbound) -> (Vec<Vec<u8>>, Option<SocketAddr>, Option<Failure>) {
        let contact = [format!("Contact: <{}>", self.kept.contact())];
        let mut replies = vec![
            invite.response(self.spec(100, "Trying", false, &[], None)),
            invite.response(self.spec(180, "Ringing", true, &contact, None)),
        ];
        if self.policy == AnswerPolicy::RingingIsEnough {
            return (replies, None, None);
        }
        let session_id = rand::random::<u32>().into();
        let answered = sdp::answer(invite.sdp(), self.rtp, session_id).map_err(|_| None);
        let answered = answered.and_then(|(answer, negotiated)| {
            match self.dns.check_address(negotiated.remote) {
                Ok(()) => Ok((answer, negotiated)),
                Err(refused) => Err(Some(refused)),
            }
        });
        match answered {
            Ok((answer, negotiated)) => {
                let body = Body {
                    content_type: sdp::CONTENT_TYPE,
                    bytes: &answer,
                };
                replies.push(invite.response(self.spec(200, "OK", true, &contact, Some(body))));
                (replies, Some(negotiated.remote), None)
            }
            Err(refused) => {
                replies.push(invite.response(self.spec(
                    488,
                    "Not Acceptable Here",
                    false,
                    &[],
                    None,
                )));
                (replies, None, refused)
            }
        }
    }

    fn spec<'s>(
        &'s self,
        code: u16,
        reason: &'s str,
        record_route: bool,
        extra: &'s [String],
        body: Option<Body<'s>>,
    ) -> ResponseSpec<'s> {
        ResponseSpec {
            code,
            reason,
            to_tag: Some(&self.tag),
            record_route,
            extra,
            body,
        }
    }

    async fn send(&mut self, bytes: Vec<u8>) -> Result<(), Failure> {
        self.flow.record(Direction::Sent, &bytes);
        self.kept.conn().send(&bytes).await
    }
}
