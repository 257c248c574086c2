//! The test call probe (issue 9, [`super::call`] holds its types): an INVITE with an SDP offer
//! from the caller's account, through the destinations RFC 3263 gives for its server (with the
//! failover of [`super::session`]), digest challenges answered ([`super::auth`]), ringing
//! watched, and the call ended whatever happens: CANCEL while it rings (§9.1), ACK and BYE once
//! it is answered, within [`HANGUP_BUDGET`] after the rest.
//!
//! Why not rsipstack, the SIP stack on top of rsip: it owns an endpoint with its own transport
//! layer and event loop (sockets it binds and serves, transactions it times), so the probe's
//! calls would bypass what every SIP probe here shares: RFC 3263 resolution through the
//! allow-listed resolver, the address failover, connections whose every read is bounded in
//! size and time, and one deadline over DNS, transport and transactions. The dialog a test
//! call needs is small (one INVITE, its ACK, CANCEL or BYE, and answering the far end), so it
//! is written here ([`super::invite`], [`super::dialog`]) on the probe's own transport.

use super::auth::Auth;
use super::call::{
    AnswerPolicy, CallConfig, CallOutcome, Callee, HANGUP_BUDGET, Hangup, Party, SdpAddress,
};
use super::dialog::{self, Answering, CallerStrays, Dialog};
use super::flow::{Direction, Flow};
use super::invite::{Addressing, Invite};
use super::message::{Body, Dialogue, Reply};
use super::register::{self, DEFAULT_EXPIRES, RegisterConfig, rejection};
use super::transaction;
use super::transport::Connection;
use super::uri::{self, ServerUri};
use super::{StatusLine, callee, sdp, session};
use crate::probe::dns::Dns;
use crate::probe::media::{self, Codec, DRAIN, Leg, LegReport, MediaReport};
use crate::probe::{ConfigError, Failure, stun};
use rsip::Header;
use rsip::prelude::UntypedHeader;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long the callee keeps going once the caller is done: the caller's BYE (or CANCEL) was
/// answered by then, so only the callee's media leg may still be draining its last packets.
const CALLEE_GRACE: Duration = Duration::from_millis(500);

/// INVITEs one call may send: the first, the answer to a challenge, and one more should a
/// proxy and the registrar both challenge (407 then 401).
const MAX_INVITES: u32 = 3;

/// Places one test call per `cfg`. `Err` only for bad input (an unusable URI or CA file).
pub async fn call(dns: &Dns, cfg: &CallConfig) -> Result<CallOutcome, ConfigError> {
    cfg.validate()?;
    let server = uri::parse(&cfg.caller.server)?;
    let proxy = uri::parse_proxy(cfg.caller.proxy.as_deref())?;
    let started = Instant::now();
    let callee_account = callee_registration(cfg);
    let mut callee = match &callee_account {
        None => None,
        Some(account) => {
            let mut flow = Flow::new(started);
            let kept = match register::keep(dns, account, &mut flow).await? {
                Ok(kept) => kept,
                Err(cause) => return Ok(not_registered(cause, flow, started)),
            };
            let ip = kept.local_addr().ip();
            match Leg::bind(ip) {
                Ok(leg) => Some(callee::Callee::new(kept, dns, leg, flow, cfg.answer)),
                Err(e) => {
                    kept.unregister(HANGUP_BUDGET.min(cfg.timeout), &mut flow)
                        .await;
                    let failure = Failure::Network {
                        detail: format!("binding the callee's RTP and RTCP sockets on {ip}: {e}"),
                    };
                    return Ok(not_registered(failure, flow, started));
                }
            }
        }
    };
    let attempt = Attempt {
        dns,
        cfg,
        server: &server,
        proxy: proxy.as_ref(),
        callee: callee.as_mut(),
        outcome: CallOutcome::empty(),
        flow: Flow::new(started),
    };
    let ca = cfg.caller.ca.as_ref();
    let mut outcome = session::probe(
        dns,
        &server,
        proxy.as_ref(),
        ca,
        cfg.timeout,
        started,
        attempt,
    )
    .await?;
    if let Some(callee) = callee {
        // What is left of the call's bound, and never more than the hang-up's budget.
        let left = (started + cfg.bound()).saturating_duration_since(Instant::now());
        let flow = callee
            .unregister(HANGUP_BUDGET.min(cfg.timeout).min(left))
            .await;
        outcome.flow.extend(flow.entries);
        outcome.flow.sort_by_key(|entry| entry.at);
        outcome.total = started.elapsed();
    }
    Ok(outcome)
}

/// The registration of the hairpin call's callee: its account at the caller's server.
fn callee_registration(cfg: &CallConfig) -> Option<RegisterConfig> {
    let Callee::Account {
        username,
        auth_username,
        password,
    } = &cfg.callee
    else {
        return None;
    };
    Some(RegisterConfig {
        server: cfg.caller.server.clone(),
        username: username.clone(),
        auth_username: auth_username.clone(),
        domain: cfg.caller.domain.clone(),
        proxy: cfg.caller.proxy.clone(),
        password: password.clone(),
        expires: DEFAULT_EXPIRES,
        unregister: true,
        timeout: cfg.timeout,
        ca: cfg.caller.ca.clone(),
    })
}

/// The outcome of a hairpin call whose callee could not be registered: no call was made.
fn not_registered(cause: Failure, flow: Flow, started: Instant) -> CallOutcome {
    let mut outcome = CallOutcome::empty();
    outcome.failure = Some(Failure::CalleeNotRegistered {
        cause: Box::new(cause),
    });
    outcome.flow = flow.entries;
    outcome.total = started.elapsed();
    outcome
}

/// The call on one destination's connection; `outcome` holds what the last destination tried
/// answered, `flow` the messages of all of them.
struct Attempt<'a, 'c> {
    dns: &'a Dns,
    cfg: &'a CallConfig,
    server: &'a ServerUri,
    proxy: Option<&'a ServerUri>,
    /// The hairpin call's callee, answering at the same time as the call is made.
    callee: Option<&'c mut callee::Callee<'a>>,
    outcome: CallOutcome,
    flow: Flow,
}

impl session::Run for Attempt<'_, '_> {
    type Outcome = CallOutcome;

    fn finish(self) -> (CallOutcome, Flow) {
        (self.outcome, self.flow)
    }
}

session::reached!(CallOutcome);

impl session::Exchange for Attempt<'_, '_> {
    type Output = ();

    async fn on(&mut self, conn: Connection, until: Instant) -> Result<(), Failure> {
        // What an earlier destination answered (a 503) is not this one's.
        self.outcome = CallOutcome::empty();
        let mut call = Call::new(self.dns, self.cfg, conn, self.server, self.proxy, until).await?;
        let Attempt {
            cfg,
            callee,
            outcome,
            flow,
            ..
        } = self;
        let caller_done = Notify::new();
        let calling = async {
            let result = call.run(outcome, flow, until).await;
            caller_done.notify_one();
            result
        };
        let answering = async {
            let Some(callee) = callee.as_deref_mut() else {
                return;
            };
            let media = cfg.media.as_ref();
            let until = until + cfg.ring_timeout + media.map_or(Duration::ZERO, |m| m.duration);
            tokio::select! {
                () = callee.answer(media, until + HANGUP_BUDGET) => {}
                () = async {
                    caller_done.notified().await;
                    tokio::time::sleep(CALLEE_GRACE).await;
                } => {}
            }
        };
        let (result, ()) = tokio::join!(calling, answering);
        let callee = callee.as_deref_mut();
        if let (Some(callee), Some(sent)) = (&callee, call.invite_sent) {
            outcome.callee_reached = callee.reached.map(|at| at.saturating_duration_since(sent));
        }
        // Our own callee's refusal is the call's failure, not the 488 it answered with.
        if let Some(refused) = callee.as_ref().and_then(|c| c.refused.clone()) {
            return Err(refused);
        }
        result?;
        match call.media_report(callee.and_then(|c| c.heard.take())) {
            Some((report, failure)) => {
                outcome.media = Some(report);
                failure.map_or(Ok(()), Err)
            }
            None => Ok(()),
        }
    }
}

impl CallOutcome {
    fn empty() -> Self {
        CallOutcome {
            target: None,
            response: None,
            ringing: None,
            server: None,
            auth_algorithm: None,
            post_dial_delay: None,
            setup_time: None,
            callee_reached: None,
            hangup: None,
            media: None,
            total: Duration::ZERO,
            attempts: Vec::new(),
            dns_fallbacks: Vec::new(),
            cert_not_after: None,
            failure: None,
            flow: Vec::new(),
        }
    }
}

/// How the ringing ended.
enum Rang {
    /// 401/407: answer the challenge with a new INVITE.
    Challenged(Reply),
    /// A 2xx: the call is up.
    Answered(Reply),
    /// Cancel the INVITE; the call's result is this.
    Cancel(Result<(), Failure>),
}

/// One call's state on its connection.
struct Call<'a> {
    /// Checks the media address the far end answers with (DESIGN.md §8: every address a probe
    /// contacts is on the allow-list, not only those a name of ours led to).
    dns: &'a Dns,
    cfg: &'a CallConfig,
    conn: Connection,
    dialogue: Dialogue,
    addressing: Addressing,
    contact: String,
    auth: Auth<'a>,
    strays: CallerStrays,
    offer: Vec<u8>,
    /// The RTP and RTCP sockets whose port the offer names, held for the call until its media
    /// runs on them.
    leg: Option<Leg>,
    /// The media ends by then at the latest, so the hang-up stays within the call's bound:
    /// the set-up's deadline, the ring timeout and the media's duration.
    media_until: Instant,
    /// What the media leg measured, and in which codec.
    heard: Option<(Codec, LegReport)>,
    /// When the last INVITE (the one answered) was sent.
    invite_sent: Option<Instant>,
}

impl<'a> Call<'a> {
    async fn new(
        dns: &'a Dns,
        cfg: &'a CallConfig,
        conn: Connection,
        server: &ServerUri,
        proxy: Option<&ServerUri>,
        until: Instant,
    ) -> Result<Call<'a>, Failure> {
        let caller = &cfg.caller;
        let dialogue = Dialogue::new(conn.local_addr(), conn.transport());
        let domain = caller
            .domain
            .clone()
            .unwrap_or_else(|| server.host_in_uri());
        let to = match &cfg.callee {
            Callee::Number(uri) => uri.clone(),
            Callee::Account { username, .. } => format!("sip:{username}@{domain}"),
        };
        let addressing = Addressing {
            request_uri: to.clone(),
            from: format!("sip:{}@{domain}", caller.username),
            to,
            route: proxy.map(ServerUri::loose_route),
        };
        let contact = dialogue.contact_uri(&caller.username);
        let local_ip = conn.local_addr().ip();
        let leg = Leg::bind(local_ip).map_err(|e| Failure::Network {
            detail: format!("binding the RTP and RTCP sockets on {local_ip}: {e}"),
        })?;
        let rtp_addr = match &cfg.advertise {
            SdpAddress::Local => leg.local_addr(),
            // Not a failure of the SIP server: another destination would not mend it.
            SdpAddress::StunMapped { server } => {
                let left = until.saturating_duration_since(Instant::now());
                stun::mapped_address(dns, leg.socket(), server, left)
                    .await
                    .map_err(|failure| Failure::MediaNotNegotiated {
                        detail: format!("no STUN mapping of the RTP port from {server}: {failure}"),
                    })?
            }
        };
        let codec = cfg.media.as_ref().map_or(Codec::Pcma, |m| m.codec);
        let session_id = rand::random::<u32>().into();
        let answering = Answering {
            call_id: dialogue.call_id().to_owned(),
            contact: contact.clone(),
            rtp: rtp_addr,
            codec,
            session_id,
        };
        Ok(Call {
            dns,
            cfg,
            conn,
            dialogue,
            addressing,
            contact,
            auth: Auth::new(
                caller.auth_username.as_ref().unwrap_or(&caller.username),
                &caller.password,
            ),
            strays: CallerStrays {
                answering,
                invite: None,
                ack: None,
                invite_final: None,
                hung_up: false,
            },
            offer: sdp::offer(rtp_addr, codec, session_id),
            leg: Some(leg),
            media_until: until
                + cfg.ring_timeout
                + cfg.media.as_ref().map_or(Duration::ZERO, |m| m.duration),
            heard: None,
            invite_sent: None,
        })
    }

    /// Calls until the call is decided and ended, recording what it sees in `outcome`.
    async fn run(
        &mut self,
        outcome: &mut CallOutcome,
        flow: &mut Flow,
        until: Instant,
    ) -> Result<(), Failure> {
        for _ in 0..MAX_INVITES {
            // A challenge answered is not this INVITE's final response.
            outcome.response = None;
            outcome.server = None;
            let mut extra: Vec<Header> = vec![
                rsip::headers::Contact::new(format!("<{}>", self.contact)).into(),
                rsip::headers::Allow::new("INVITE, ACK, CANCEL, BYE, OPTIONS").into(),
            ];
            extra.extend(self.auth.header("INVITE", &self.addressing.request_uri));
            let offer = Body {
                content_type: sdp::CONTENT_TYPE,
                bytes: &self.offer,
            };
            let flow_ref = &mut *flow;
            let mut invite = Invite::send(
                &mut self.conn,
                &mut self.dialogue,
                &self.addressing,
                extra,
                offer,
                flow_ref,
            )
            .await?;
            self.strays.invite = Some(invite.request().clone());
            self.invite_sent = Some(invite.sent_at());
            let rang = self.ring(&mut invite, outcome, flow, until).await;
            outcome.auth_algorithm = self.auth.algorithm();
            match rang? {
                Rang::Challenged(reply) => self.auth.take(&reply, true)?,
                Rang::Answered(reply) => return self.talk(&invite, &reply, outcome, flow).await,
                Rang::Cancel(result) => {
                    self.cancel(&mut invite, outcome, flow).await;
                    return result;
                }
            }
        }
        let code = outcome.response.as_ref().map_or(0, |r| r.code);
        Err(Failure::AuthRejected { code })
    }

    /// Waits for the INVITE's answer: the first 18x within `until` (the set-up's share of the
    /// timeout), then the answer within the ring timeout from the INVITE.
    async fn ring(
        &mut self,
        invite: &mut Invite,
        outcome: &mut CallOutcome,
        flow: &mut Flow,
        until: Instant,
    ) -> Result<Rang, Failure> {
        let answer_by = invite.sent_at() + self.cfg.ring_timeout;
        loop {
            let wait_until = if outcome.ringing.is_some() {
                answer_by
            } else {
                until
            };
            let next = invite
                .next(
                    &mut self.conn,
                    &self.dialogue,
                    wait_until,
                    flow,
                    &mut self.strays,
                )
                .await?;
            let Some(reply) = next else {
                return if outcome.ringing.is_some() {
                    Ok(Rang::Cancel(Err(Failure::NotAnswered {
                        after: self.cfg.ring_timeout,
                    })))
                } else if invite.provisional {
                    Ok(Rang::Cancel(Err(Failure::NoRinging {
                        after: self.cfg.timeout,
                    })))
                } else {
                    // Nothing came, so nothing can be cancelled (§9.1).
                    Err(invite.expired(self.cfg.timeout))
                };
            };
            let status = StatusLine {
                code: reply.code,
                reason: reply.reason.clone(),
            };
            let elapsed = invite.sent_at().elapsed();
            match reply.code {
                180..=189 => {
                    if outcome.ringing.is_none() {
                        outcome.ringing = Some(status);
                        outcome.post_dial_delay = Some(elapsed);
                    }
                    if self.cfg.answer == AnswerPolicy::RingingIsEnough {
                        return Ok(Rang::Cancel(Ok(())));
                    }
                }
                100..=199 => {}
                code => {
                    outcome.response = Some(status);
                    outcome.server = reply.server();
                    return match code {
                        200..=299 => {
                            outcome.setup_time = Some(elapsed);
                            Ok(Rang::Answered(reply))
                        }
                        401 | 407 => Ok(Rang::Challenged(reply)),
                        // A 403 to an authenticated INVITE is a refusal of the call (a daily
                        // limit, a barred destination: seed 002), not of the credentials,
                        // which would be challenged again.
                        _ => Err(rejection(&reply, false)),
                    };
                }
            }
        }
    }

    /// The answered call: ACK, the media agreed, BYE.
    async fn talk(
        &mut self,
        invite: &Invite,
        reply: &Reply,
        outcome: &mut CallOutcome,
        flow: &mut Flow,
    ) -> Result<(), Failure> {
        let answered_at = Instant::now();
        let dialog = self.acknowledge(invite, reply, flow).await?;
        let result = match sdp::read(reply.sdp()) {
            Ok(negotiated) => self.media(negotiated, flow).await,
            Err(detail) => Err(Failure::MediaNotNegotiated { detail }),
        };
        let result = match result {
            Ok(()) if self.strays.hung_up && self.cfg.media.is_some() => {
                Err(Failure::DroppedEarly {
                    after: answered_at.elapsed(),
                })
            }
            result => result,
        };
        outcome.hangup = Some(self.hang_up(&dialog, flow).await);
        result
    }

    /// Runs the media leg (when the call has media) while answering what the far end sends;
    /// a BYE from the far end stops it ([`CallerStrays::hung_up`]).
    async fn media(&mut self, negotiated: sdp::Negotiated, flow: &mut Flow) -> Result<(), Failure> {
        let (Some(cfg), Some(leg)) = (&self.cfg.media, self.leg.take()) else {
            return Ok(());
        };
        self.dns.check_address(negotiated.remote)?;
        let until = (Instant::now() + cfg.duration + DRAIN).min(self.media_until);
        let run = leg.run(negotiated.remote, cfg, until);
        tokio::pin!(run);
        let report = tokio::select! {
            report = &mut run => Some(report),
            heard = dialog::listen(&mut self.conn, until, flow, &mut self.strays) => match heard {
                Ok(()) if self.strays.hung_up => None,
                _ => Some(run.await),
            },
        };
        self.heard = report.map(|report| (negotiated.codec, report));
        Ok(())
    }

    /// The media report of the call, `callee` being the hairpin callee's leg, and its
    /// verdict on the audio.
    fn media_report(
        &mut self,
        callee: Option<LegReport>,
    ) -> Option<(MediaReport, Option<Failure>)> {
        let (codec, caller) = self.heard.take()?;
        let threshold = self.cfg.media.as_ref()?.mos_threshold;
        // Our own packets came back: the far end echoes.
        let echo = callee.is_none() && !caller.echo_round_trips.is_empty();
        let report = media::report(codec, caller, callee, echo);
        let failure = report.failure(threshold);
        Some((report, failure))
    }

    /// Establishes the dialog of a 2xx and sends its ACK.
    async fn acknowledge(
        &mut self,
        invite: &Invite,
        reply: &Reply,
        flow: &mut Flow,
    ) -> Result<Dialog, Failure> {
        let dialog = Dialog::establish(reply, &self.addressing);
        let ack = dialog.ack(&self.dialogue, invite.request());
        flow.record(Direction::Sent, &ack.bytes);
        self.conn.send(&ack.bytes).await?;
        self.strays.ack = Some(ack.bytes);
        Ok(dialog)
    }

    /// Our BYE, unless the far end hung up already.
    async fn hang_up(&mut self, dialog: &Dialog, flow: &mut Flow) -> Hangup {
        if self.strays.hung_up {
            return Hangup {
                by: Party::FarEnd,
                method: "BYE".into(),
                response: None,
            };
        }
        let budget = self.budget();
        let bye = dialog.bye(&mut self.dialogue);
        let deadline = Instant::now() + budget;
        let answer = transaction::run_with(
            &mut self.conn,
            bye,
            deadline,
            budget,
            flow,
            &mut self.strays,
        )
        .await;
        Hangup {
            by: Party::Caller,
            method: "BYE".into(),
            response: answer.ok().map(|exchange| StatusLine {
                code: exchange.reply.code,
                reason: exchange.reply.reason,
            }),
        }
    }

    /// Cancels the INVITE and waits for its final response (487, or a 2xx that crossed the
    /// CANCEL: then ACK and BYE), all within the hang-up budget.
    async fn cancel(&mut self, invite: &mut Invite, outcome: &mut CallOutcome, flow: &mut Flow) {
        let budget = self.budget();
        let deadline = Instant::now() + budget;
        let cancel = invite.cancel(&self.dialogue);
        let answer = transaction::run_with(
            &mut self.conn,
            cancel,
            deadline,
            budget,
            flow,
            &mut self.strays,
        )
        .await;
        outcome.hangup = Some(Hangup {
            by: Party::Caller,
            method: "CANCEL".into(),
            response: answer.ok().map(|exchange| StatusLine {
                code: exchange.reply.code,
                reason: exchange.reply.reason,
            }),
        });
        let reply = match self.strays.invite_final.take() {
            Some(reply) => {
                // It came while the CANCEL was under way, past the transaction's own ACK.
                if reply.code >= 300 {
                    let _ = invite
                        .acknowledge(&mut self.conn, &self.dialogue, &reply, flow)
                        .await;
                }
                reply
            }
            None => loop {
                let next = invite
                    .next(
                        &mut self.conn,
                        &self.dialogue,
                        deadline,
                        flow,
                        &mut self.strays,
                    )
                    .await;
                match next {
                    Ok(Some(reply)) if reply.code >= 200 => break reply,
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => return,
                }
            },
        };
        outcome.response = Some(StatusLine {
            code: reply.code,
            reason: reply.reason.clone(),
        });
        if (200..300).contains(&reply.code)
            && let Ok(dialog) = self.acknowledge(invite, &reply, flow).await
        {
            outcome.hangup = Some(self.hang_up(&dialog, flow).await);
        }
    }

    /// The time the hang-up gets ([`HANGUP_BUDGET`], never more than the timeout).
    fn budget(&self) -> Duration {
        HANGUP_BUDGET.min(self.cfg.timeout)
    }
}
