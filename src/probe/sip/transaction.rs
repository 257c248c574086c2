//! One non-INVITE client transaction (RFC 3261 §17.1.2): send, retransmit over UDP, and wait
//! for the final response that matches, all within the probe's deadline.

use super::flow::{Direction, Flow};
use super::message::{self, Incoming, Outgoing, Reply};
use super::transport::Connection;
use crate::probe::Failure;
use std::time::Duration;
use tokio::time::Instant;

/// RFC 3261 §17.1.1.1: the RTT estimate the retransmission interval starts from.
const T1: Duration = Duration::from_millis(500);
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

/// Runs the transaction for `request` until a final response or `deadline`.
///
/// Responses whose Via branch or CSeq differ are someone else's and are ignored (§17.1.3);
/// provisional ones only stop the fast retransmissions (§17.1.2.2). Whether a final response
/// without To tag is acceptable is the probe's decision (an OPTIONS qualify only needs an
/// answer; a registrar must tag). Undecodable messages end a stream
/// transaction at once (the stream cannot be trusted after them); over UDP they are skipped,
/// as §18.1.2 asks, and reported as the failure if nothing better arrives by the deadline.
/// `timeout` is only what a [`Failure::Timeout`] reports; when only a provisional response
/// came, the failure says so ([`Failure::NoFinalAnswer`]). Every message sent and received goes
/// into `flow`.
pub(super) async fn run(
    conn: &mut Connection,
    request: &Outgoing,
    deadline: Instant,
    timeout: Duration,
    flow: &mut Flow,
) -> Result<Exchange, Failure> {
    let sent_at = Instant::now();
    flow.record(Direction::Sent, &request.bytes);
    conn.send(&request.bytes).await?;
    let reliable = conn.transport().is_reliable();
    let mut interval = T1;
    let mut retransmit_at = (!reliable).then_some(sent_at + T1);
    let mut first_response = None;
    let mut undecodable: Option<String> = None;
    let mut provisional: Option<String> = None;
    loop {
        let wake = retransmit_at.map_or(deadline, |at| at.min(deadline));
        let bytes = match tokio::time::timeout_at(wake, conn.recv()).await {
            Ok(received) => received?,
            Err(_) if Instant::now() >= deadline => {
                return Err(match (undecodable, provisional) {
                    (Some(detail), _) => Failure::Protocol { detail },
                    (None, Some(arrived)) => Failure::NoFinalAnswer {
                        after: timeout,
                        arrived,
                    },
                    (None, None) => Failure::Timeout { after: timeout },
                });
            }
            Err(_) => {
                flow.record(Direction::Sent, &request.bytes);
                conn.send(&request.bytes).await?;
                interval = (interval * 2).min(T2);
                retransmit_at = Some(Instant::now() + interval);
                continue;
            }
        };
        let received_at = Instant::now();
        flow.record(Direction::Received, &bytes);
        let reply = match message::parse(&bytes) {
            Ok(Incoming::Response(reply)) => reply,
            Ok(Incoming::Request) => continue,
            Err(detail) if reliable => return Err(Failure::Protocol { detail }),
            Err(detail) => {
                undecodable = Some(detail);
                continue;
            }
        };
        match reply.answers(request) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(detail) if reliable => return Err(Failure::Protocol { detail }),
            Err(detail) => {
                undecodable = Some(detail);
                continue;
            }
        }
        if !(100..=699).contains(&reply.code) {
            return Err(Failure::Protocol {
                detail: format!("status code {} outside 100-699", reply.code),
            });
        }
        let first = *first_response.get_or_insert(received_at - sent_at);
        if reply.code < 200 {
            provisional = Some(format!("{} {}", reply.code, reply.reason));
            if !reliable {
                retransmit_at = Some(received_at + T2);
            }
            continue;
        }
        return Ok(Exchange {
            reply,
            first_response: first,
            final_response: received_at - sent_at,
        });
    }
}
