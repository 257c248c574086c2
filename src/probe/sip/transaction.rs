//! Client transactions (RFC 3261 §17.1): send, retransmit over UDP, and wait for the responses
//! that match, all within the probe's deadline. [`run`] is a whole non-INVITE transaction
//! (§17.1.2); [`Pending`] is the part both kinds share, which the INVITE transaction
//! ([`super::invite`]) drives itself, since it hands on every provisional response.

use super::flow::{Direction, Flow};
use super::message::{self, Incoming, Outgoing, Reply};
use super::transport::Connection;
use crate::probe::Failure;
use std::time::Duration;
use tokio::time::Instant;

/// RFC 3261 §17.1.1.1: the RTT estimate the retransmission interval starts from.
pub(super) const T1: Duration = Duration::from_millis(500);
/// RFC 3261 §17.1.2.2: the cap on the interval for non-INVITE requests.
const T2: Duration = Duration::from_secs(4);

/// The outcome of a transaction that got its final response.
#[derive(Debug)]
pub(super) struct Exchange {
    pub reply: Reply,
    /// From the first transmission to the first response (provisional or final).
    pub first_response: Duration,
    /// From the first transmission to the final response.
    pub final_response: Duration,
}

/// What a transaction does with the messages on its connection that are not its responses:
/// requests, and responses to other transactions. Inside a call they matter (a BYE from the
/// far end crossing ours, a retransmitted 2xx that needs its ACK again); for REGISTER and
/// OPTIONS they do not.
pub(super) trait Strays {
    /// Takes one such message; returns what to send in answer, if anything.
    fn take(&mut self, message: Incoming) -> Option<Vec<u8>>;
}

/// Strays ignored.
pub(super) struct Ignore;

impl Strays for Ignore {
    fn take(&mut self, _: Incoming) -> Option<Vec<u8>> {
        None
    }
}

/// How a request is retransmitted over UDP until it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retransmit {
    /// §17.1.2.2: T1 doubling up to T2, and every T2 once a provisional response came.
    NonInvite,
    /// §17.1.1.2 (Timer A): T1 doubling, until any response came.
    Invite,
}

/// A request sent and waiting for its responses.
pub(super) struct Pending {
    pub request: Outgoing,
    pub sent_at: Instant,
    kind: Retransmit,
    interval: Duration,
    retransmit_at: Option<Instant>,
    /// From the first transmission to the first response.
    pub first_response: Option<Duration>,
    /// The last undecodable message over UDP, reported if nothing better arrives.
    pub undecodable: Option<String>,
    /// The status line of the last provisional response.
    pub provisional: Option<String>,
}

/// What waiting for a response gave.
pub(super) enum Wait {
    Response(Reply),
    /// `until` passed first.
    TimedOut,
}

impl Pending {
    /// Sends `request` for the first time.
    pub async fn send(
        conn: &mut Connection,
        request: Outgoing,
        kind: Retransmit,
        flow: &mut Flow,
    ) -> Result<Pending, Failure> {
        let sent_at = Instant::now();
        flow.record(Direction::Sent, &request.bytes);
        conn.send(&request.bytes).await?;
        let reliable = conn.transport().is_reliable();
        Ok(Pending {
            request,
            sent_at,
            kind,
            interval: T1,
            retransmit_at: (!reliable).then_some(sent_at + T1),
            first_response: None,
            undecodable: None,
            provisional: None,
        })
    }

    /// The next response to the request, retransmitting it meanwhile, until `until`.
    ///
    /// Responses whose Via branch or CSeq differ are someone else's and go to `strays` with
    /// the requests (§17.1.3). Undecodable messages end a stream transaction at once (the
    /// stream cannot be trusted after them); over UDP they are skipped, as §18.1.2 asks.
    pub async fn next(
        &mut self,
        conn: &mut Connection,
        until: Instant,
        flow: &mut Flow,
        strays: &mut impl Strays,
    ) -> Result<Wait, Failure> {
        let reliable = conn.transport().is_reliable();
        loop {
            let wake = self.retransmit_at.map_or(until, |at| at.min(until));
            let bytes = match tokio::time::timeout_at(wake, conn.recv()).await {
                Ok(received) => received?,
                Err(_) if Instant::now() >= until => return Ok(Wait::TimedOut),
                Err(_) => {
                    flow.record(Direction::Sent, &self.request.bytes);
                    conn.send(&self.request.bytes).await?;
                    self.interval = match self.kind {
                        Retransmit::NonInvite => (self.interval * 2).min(T2),
                        Retransmit::Invite => self.interval * 2,
                    };
                    self.retransmit_at = Some(Instant::now() + self.interval);
                    continue;
                }
            };
            let received_at = Instant::now();
            flow.record(Direction::Received, &bytes);
            let reply = match message::parse(&bytes) {
                Ok(Incoming::Response(reply)) => reply,
                Ok(request) => {
                    answer_stray(conn, flow, strays.take(request)).await?;
                    continue;
                }
                Err(detail) if reliable => return Err(Failure::Protocol { detail }),
                Err(detail) => {
                    self.undecodable = Some(detail);
                    continue;
                }
            };
            match reply.answers(&self.request) {
                Ok(true) => {}
                Ok(false) => {
                    answer_stray(conn, flow, strays.take(Incoming::Response(reply))).await?;
                    continue;
                }
                Err(detail) if reliable => return Err(Failure::Protocol { detail }),
                Err(detail) => {
                    self.undecodable = Some(detail);
                    continue;
                }
            }
            if !(100..=699).contains(&reply.code) {
                return Err(Failure::Protocol {
                    detail: format!("status code {} outside 100-699", reply.code),
                });
            }
            self.first_response
                .get_or_insert(received_at - self.sent_at);
            if reply.code < 200 {
                self.provisional = Some(format!("{} {}", reply.code, reply.reason));
                self.retransmit_at = match (self.kind, reliable) {
                    (Retransmit::NonInvite, false) => Some(received_at + T2),
                    _ => None,
                };
            } else {
                self.retransmit_at = None;
            }
            return Ok(Wait::Response(reply));
        }
    }

    /// What a transaction that ran out of time reports: an undecodable answer, the
    /// provisional response that came ([`Failure::NoFinalAnswer`]), or nothing (`timeout` is
    /// what [`Failure::Timeout`] reports).
    pub fn expired(&self, timeout: Duration) -> Failure {
        match (&self.undecodable, &self.provisional) {
            (Some(detail), _) => Failure::Protocol {
                detail: detail.clone(),
            },
            (None, Some(arrived)) => Failure::NoFinalAnswer {
                after: timeout,
                arrived: arrived.clone(),
            },
            (None, None) => Failure::Timeout { after: timeout },
        }
    }
}

/// Runs the non-INVITE transaction for `request` until a final response or `deadline`.
///
/// Provisional responses only stop the fast retransmissions (§17.1.2.2). Whether a final
/// response without To tag is acceptable is the probe's decision (an OPTIONS qualify only needs
/// an answer; a registrar must tag). `timeout` is only what a [`Failure::Timeout`] reports;
/// when only a provisional response came, the failure says so ([`Failure::NoFinalAnswer`]).
/// Every message sent and received goes into `flow`.
pub(super) async fn run(
    conn: &mut Connection,
    request: &Outgoing,
    deadline: Instant,
    timeout: Duration,
    flow: &mut Flow,
) -> Result<Exchange, Failure> {
    run_with(conn, request.clone(), deadline, timeout, flow, &mut Ignore).await
}

/// [`run`], handing what is not the transaction's to `strays`.
pub(super) async fn run_with(
    conn: &mut Connection,
    request: Outgoing,
    deadline: Instant,
    timeout: Duration,
    flow: &mut Flow,
    strays: &mut impl Strays,
) -> Result<Exchange, Failure> {
    let mut pending = Pending::send(conn, request, Retransmit::NonInvite, flow).await?;
    loop {
        match pending.next(conn, deadline, flow, strays).await? {
            Wait::TimedOut => return Err(pending.expired(timeout)),
            Wait::Response(reply) if reply.code < 200 => continue,
            Wait::Response(reply) => {
                let final_response = Instant::now() - pending.sent_at;
                return Ok(Exchange {
                    reply,
                    first_response: pending.first_response.unwrap_or(final_response),
                    final_response,
                });
            }
        }
    }
}

/// Sends what [`Strays::take`] answered, if anything.
pub(super) async fn answer_stray(
    conn: &mut Connection,
    flow: &mut Flow,
    answer: Option<Vec<u8>>,
) -> Result<(), Failure> {
    if let Some(bytes) = answer {
        flow.record(Direction::Sent, &bytes);
        conn.send(&bytes).await?;
    }
    Ok(())
}
