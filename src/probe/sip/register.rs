//! The REGISTER probe (DESIGN.md §3, `SipRegistered`): register an account as a phone would,
//! success only on a final 200 OK, then (by default) remove the binding again so monitoring
//! leaves nothing behind.
//!
//! Digest challenges (401/407) are answered once; a second challenge after an answer is a
//! rejection, except one `stale=true` re-challenge, which only says the nonce aged (RFC 2617
//! §3.2.1). A 423 is retried once with the server's Min-Expires (RFC 3261 §10.2.8).

use super::digest::{Answer, Challenge, DigestAlgorithm};
use super::message::{Dialogue, RequestSpec, random_token};
use super::transaction::{self, Exchange};
use super::transport::Connection;
use super::{StatusLine, Target, millis, session, uri};
use crate::probe::attempts;
use crate::probe::dns::Dns;
use crate::probe::tls::CaSource;
use crate::probe::{ConfigError, Failure, Outcome};
use crate::secret::Secret;
use rsip::Header;
use rsip::prelude::*;
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// The registration interval asked for unless configured (seconds).
pub const DEFAULT_EXPIRES: u32 = 300;

/// Requests one probe run may send for the registration itself: the first, the answer to a
/// challenge, one stale re-answer, one 423 retry, and a fresh answer should that retry be
/// challenged again. Anything past this is a server going in circles.
const MAX_REQUESTS: u32 = 5;

/// Which account to register where.
#[derive(Debug, Clone)]
pub struct RegisterConfig {
    /// The registrar: `sip:`/`sips:` URI, `;transport=udp|tcp|tls`; without a port RFC 3263.
    pub server: String,
    pub username: String,
    /// Domain of the address-of-record; the server's host when `None`.
    pub domain: Option<String>,
    pub password: Secret,
    /// Registration interval asked for, in seconds ([`DEFAULT_EXPIRES`]).
    pub expires: u32,
    /// Remove the binding (Expires: 0) after a successful registration.
    pub unregister: bool,
    /// Bounds the whole probe: DNS, connecting, registering and un-registering.
    pub timeout: Duration,
    /// Extra trust anchors (PEM) for TLS, e.g. a private PBX CA.
    pub ca: Option<CaSource>,
}

/// The result of one registration attempt.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterOutcome {
    pub target: Option<Target>,
    /// The final response that decided the outcome.
    pub response: Option<StatusLine>,
    /// Server (or User-Agent) header of that response.
    pub server: Option<String>,
    /// The digest algorithm used to answer the challenge, if there was one.
    pub auth_algorithm: Option<DigestAlgorithm>,
    /// The registration interval the server granted: our Contact's `expires` in the 200 OK,
    /// or its Expires header.
    #[serde(rename = "grantedExpiresSeconds")]
    pub granted_expires: Option<u32>,
    /// Whether the binding was removed again; `None` when not tried.
    pub unregistered: Option<bool>,
    /// From the first REGISTER to its first response.
    #[serde(
        rename = "firstResponseSeconds",
        serialize_with = "crate::probe::secs::option::serialize"
    )]
    pub first_response: Option<Duration>,
    /// From the first REGISTER to the final response that decided the outcome.
    #[serde(
        rename = "finalResponseSeconds",
        serialize_with = "crate::probe::secs::option::serialize"
    )]
    pub final_response: Option<Duration>,
    /// The whole probe, DNS and un-registering included.
    #[serde(
        rename = "totalSeconds",
        serialize_with = "crate::probe::secs::serialize"
    )]
    pub total: Duration,
    /// The destinations and addresses that failed before `target` answered (or, when none
    /// did, all that were tried), in the order tried.
    pub attempts: Vec<attempts::Attempt>,
    /// Service discovery queries (NAPTR, SRV) that failed and were fallen back from.
    pub dns_fallbacks: Vec<Failure>,
    pub failure: Option<Failure>,
}

impl RegisterConfig {
    /// Checks the server URI and user name before anything is sent (what [`register`] refuses
    /// with a [`ConfigError`], short of an unreadable CA file).
    pub fn validate(&self) -> Result<(), ConfigError> {
        uri::parse(&self.server)?;
        if self.username.is_empty() || self.username.contains(['@', ':', ' ', '<', '>', '"']) {
            return Err(ConfigError::new(
                "username",
                "must be a plain SIP user name",
            ));
        }
        Ok(())
    }
}

/// Registers per `cfg`. `Err` only for bad input (an unusable URI or CA file).
pub async fn register(dns: &Dns, cfg: &RegisterConfig) -> Result<RegisterOutcome, ConfigError> {
    cfg.validate()?;
    let server = uri::parse(&cfg.server)?;
    let started = Instant::now();
    let deadline = started + cfg.timeout;
    let domain = cfg.domain.clone().unwrap_or_else(|| server.host_in_uri());
    let mut attempt = Attempt {
        cfg,
        request_uri: server.domain_uri(),
        domain,
        outcome: RegisterOutcome::empty(),
    };
    let ca = cfg.ca.as_ref();
    let tried = session::each(dns, &server, ca, deadline, cfg.timeout, &mut attempt).await?;
    let mut outcome = attempt.outcome;
    outcome.target = tried.target;
    outcome.attempts = tried.attempts;
    outcome.dns_fallbacks = tried.dns_fallbacks;
    outcome.failure = tried.result.err();
    outcome.total = started.elapsed();
    Ok(outcome)
}

/// The registration on one destination's connection; `outcome` holds what the last
/// destination tried answered.
struct Attempt<'a> {
    cfg: &'a RegisterConfig,
    request_uri: String,
    domain: String,
    outcome: RegisterOutcome,
}

impl session::Exchange for Attempt<'_> {
    type Output = ();

    async fn on(&mut self, conn: Connection, until: Instant) -> Result<(), Failure> {
        // What an earlier destination answered (a 503) is not this one's.
        self.outcome = RegisterOutcome::empty();
        let request_uri = self.request_uri.clone();
        let mut run = Registration::new(self.cfg, conn, request_uri, &self.domain, until);
        run.register(&mut self.outcome).await?;
        if self.cfg.unregister {
            self.outcome.unregistered = Some(run.unregister().await);
        }
        Ok(())
    }
}

impl RegisterOutcome {
    fn empty() -> Self {
        RegisterOutcome {
            target: None,
            response: None,
            server: None,
            auth_algorithm: None,
            granted_expires: None,
            unregistered: None,
            first_response: None,
            final_response: None,
            total: Duration::ZERO,
            attempts: Vec::new(),
            dns_fallbacks: Vec::new(),
            failure: None,
        }
    }
}

/// One probe run's registration state: the connection, the request identity, and the
/// challenge being answered.
struct Registration<'a> {
    cfg: &'a RegisterConfig,
    conn: Connection,
    dialogue: Dialogue,
    request_uri: String,
    aor: String,
    contact: String,
    deadline: Instant,
    auth: Option<AuthState>,
}

/// The challenge currently answered, and how often its nonce was used (nc).
struct AuthState {
    challenge: Challenge,
    proxy: bool,
    nonce_count: u32,
    cnonce: String,
}

/// What a REGISTER's answer means for the next step.
enum Next {
    Done(Result<(), Failure>),
    Retry,
}

impl<'a> Registration<'a> {
    fn new(
        cfg: &'a RegisterConfig,
        conn: Connection,
        request_uri: String,
        domain: &str,
        deadline: Instant,
    ) -> Self {
        let dialogue = Dialogue::new(conn.local_addr(), conn.transport());
        let contact = dialogue.contact_uri(&cfg.username);
        Registration {
            cfg,
            conn,
            dialogue,
            request_uri,
            aor: format!("sip:{}@{domain}", cfg.username),
            contact,
            deadline,
            auth: None,
        }
    }

    /// Registers until a final decision, recording what it sees in `outcome`.
    async fn register(&mut self, outcome: &mut RegisterOutcome) -> Result<(), Failure> {
        let mut expires = self.cfg.expires;
        let mut stale_retried = false;
        let mut interval_retried = false;
        let first_sent = Instant::now();
        for _ in 0..MAX_REQUESTS {
            let answered_fresh = self.auth.as_ref().is_some_and(|a| a.nonce_count == 0);
            let exchange = self.send(expires).await?;
            outcome.final_response = Some(first_sent.elapsed());
            outcome
                .first_response
                .get_or_insert(exchange.first_response);
            let reply = &exchange.reply;
            outcome.response = Some(StatusLine {
                code: reply.code,
                reason: reply.reason.clone(),
            });
            outcome.server = reply.server();
            let next = match reply.code {
                // issue 2: success only on a final 200 OK
                200 => {
                    outcome.granted_expires = self.granted_expires(&exchange);
                    Next::Done(Ok(()))
                }
                401 | 407 => self.take_challenge(&exchange, answered_fresh, &mut stale_retried),
                423 => match min_expires(&exchange) {
                    Some(min) if !interval_retried && min > expires => {
                        interval_retried = true;
                        expires = min;
                        Next::Retry
                    }
                    _ => Next::Done(Err(Failure::SipStatus { code: 423 })),
                },
                403 if self.auth.is_some() => Next::Done(Err(Failure::AuthRejected { code: 403 })),
                403 => Next::Done(Err(Failure::Forbidden)),
                488 => Next::Done(Err(Failure::NotAcceptableHere)),
                code => Next::Done(Err(Failure::SipStatus { code })),
            };
            outcome.auth_algorithm = self.auth.as_ref().map(|a| a.challenge.algorithm);
            match next {
                Next::Done(result) => return result,
                Next::Retry => continue,
            }
        }
        let code = outcome.response.as_ref().map_or(0, |r| r.code);
        Err(match code {
            401 | 407 => Failure::AuthRejected { code },
            code => Failure::SipStatus { code },
        })
    }

    /// Decides what a 401/407 means: a first challenge (answer it), a stale nonce (answer once
    /// more), or a rejection of the credentials just sent.
    fn take_challenge(
        &mut self,
        exchange: &Exchange,
        answered_fresh: bool,
        stale_retried: &mut bool,
    ) -> Next {
        let code = exchange.reply.code;
        let proxy = code == 407;
        let header = if proxy {
            "Proxy-Authenticate"
        } else {
            "WWW-Authenticate"
        };
        let challenge = match Challenge::choose(exchange.reply.header_values(header)) {
            Ok(challenge) => challenge,
            Err(detail) => return Next::Done(Err(Failure::Protocol { detail })),
        };
        if answered_fresh {
            if !challenge.stale || *stale_retried {
                return Next::Done(Err(Failure::AuthRejected { code }));
            }
            *stale_retried = true;
        }
        self.auth = Some(AuthState {
            challenge,
            proxy,
            nonce_count: 0,
            cnonce: random_token(),
        });
        Next::Retry
    }

    /// Sends one REGISTER (with credentials when a challenge is known) and waits for its final
    /// response.
    async fn send(&mut self, expires: u32) -> Result<Exchange, Failure> {
        let mut extra: Vec<Header> = vec![
            rsip::headers::Contact::new(format!("<{}>", self.contact)).into(),
            rsip::headers::Expires::from(expires).into(),
        ];
        if let Some(auth) = &mut self.auth {
            auth.nonce_count += 1;
            let value = Answer {
                username: &self.cfg.username,
                password: &self.cfg.password,
                method: "REGISTER",
                uri: &self.request_uri,
                nonce_count: auth.nonce_count,
                cnonce: &auth.cnonce,
            }
            .header(&auth.challenge);
            extra.push(if auth.proxy {
                rsip::headers::ProxyAuthorization::new(value).into()
            } else {
                rsip::headers::Authorization::new(value).into()
            });
        }
        let request = self.dialogue.request(RequestSpec {
            method: rsip::Method::Register,
            request_uri: &self.request_uri,
            from: &self.aor,
            to: &self.aor,
            extra,
        });
        transaction::run(&mut self.conn, &request, self.deadline, self.cfg.timeout).await
    }

    /// Removes our binding (Expires: 0, RFC 3261 §10.2.2); `true` on a 2xx. A challenge is
    /// answered once, as for the registration.
    async fn unregister(&mut self) -> bool {
        for _ in 0..2 {
            let answered_fresh = self.auth.as_ref().is_some_and(|a| a.nonce_count == 0);
            let Ok(exchange) = self.send(0).await else {
                return false;
            };
            match exchange.reply.code {
                200..=299 => return true,
                401 | 407 => {
                    let mut stale_retried = true;
                    if let Next::Done(_) =
                        self.take_challenge(&exchange, answered_fresh, &mut stale_retried)
                    {
                        return false;
                    }
                }
                _ => return false,
            }
        }
        false
    }

    /// The expiry granted to our Contact in a 200 OK (RFC 3261 §10.2.4): its `expires`
    /// parameter, else the Expires header.
    fn granted_expires(&self, exchange: &Exchange) -> Option<u32> {
        let ours = exchange
            .reply
            .header_values("Contact")
            .flat_map(|value| split_list(&value))
            .find_map(|contact| {
                let typed = rsip::headers::Contact::new(contact).typed().ok()?;
                let same = typed.uri.host_with_port.to_string()
                    == self.conn.local_addr().to_string()
                    && typed.uri.user() == Some(self.cfg.username.as_str());
                if !same {
                    return None;
                }
                typed.params.iter().find_map(|p| match p {
                    rsip::Param::Expires(e) => e.to_string().parse().ok(),
                    _ => None,
                })
            });
        ours.or_else(|| {
            exchange
                .reply
                .header_values("Expires")
                .next()
                .and_then(|v| v.trim().parse().ok())
        })
    }
}

/// The Min-Expires of a 423 (RFC 3261 §20.23).
fn min_expires(exchange: &Exchange) -> Option<u32> {
    exchange
        .reply
        .header_values("Min-Expires")
        .next()
        .and_then(|v| v.trim().parse().ok())
}

/// Splits a header value holding a comma-separated list (several Contacts in one header),
/// leaving commas inside `<...>` and quoted strings alone.
fn split_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let (mut in_angle, mut in_quote) = (false, false);
    for c in value.chars() {
        match c {
            '"' => in_quote = !in_quote,
            '<' if !in_quote => in_angle = true,
            '>' if !in_quote => in_angle = false,
            ',' if !in_quote && !in_angle => {
                items.push(std::mem::take(&mut current).trim().to_owned());
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    items.push(current.trim().to_owned());
    items.retain(|i| !i.is_empty());
    items
}

impl Outcome for RegisterOutcome {
    fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    fn facts(&self) -> Vec<(&'static str, String)> {
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let mut facts = vec![
            (
                "target",
                or_dash(self.target.as_ref().map(ToString::to_string)),
            ),
            (
                "response",
                or_dash(self.response.as_ref().map(ToString::to_string)),
            ),
            ("auth", or_dash(self.auth_algorithm.map(|a| a.to_string()))),
            (
                "granted expiry",
                or_dash(self.granted_expires.map(|s| format!("{s} s"))),
            ),
            (
                "unregistered",
                or_dash(
                    self.unregistered
                        .map(|u| if u { "yes" } else { "no" }.into()),
                ),
            ),
            ("first response", millis(self.first_response)),
            ("final response", millis(self.final_response)),
            ("total", millis(Some(self.total))),
        ];
        if let Some(server) = &self.server {
            facts.push(("server", server.clone()));
        }
        facts.extend(attempts::facts(&self.attempts, &self.dns_fallbacks));
        facts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_contact_lists_outside_brackets_and_quotes() {
        assert_eq!(
            split_list(r#"<sip:a@h;x=1,2>;expires=60, "B, b" <sip:b@h>;expires=30"#),
            vec![
                "<sip:a@h;x=1,2>;expires=60".to_owned(),
                r#""B, b" <sip:b@h>;expires=30"#.to_owned()
            ]
        );
    }
}
