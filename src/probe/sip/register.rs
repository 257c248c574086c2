//! The REGISTER probe (DESIGN.md §3, `SipRegistered`): register an account as a phone would,
//! success only on a final 200 OK that shows our binding, then (by default) remove the binding
//! again so monitoring leaves nothing behind.
//!
//! Digest challenges (401/407) are answered as [`super::auth`] describes. A 423 is retried once with the server's Min-Expires (RFC 3261 §10.2.8).
//!
//! Which binding is ours: the Contact we send has a user part of its own for each run
//! (`alice-1f2e3d4c`), and a Contact of the 200 OK is ours when its user part is that one.
//! Host, port and parameters may differ: a registrar behind NAT handling rewrites them to the
//! address it saw (Kamailio's `fix_nated_register`, Asterisk's `rewrite_contact`), the user part
//! stays. "Registered" means the 200 OK lists our binding with an expiry above zero (RFC 3261
//! §10.2.4: the 200 lists every current binding of the address of record).

use super::auth::Auth;
use super::digest::DigestAlgorithm;
use super::flow::{Flow, FlowEntry};
use super::message::{Dialogue, Reply, RequestSpec, random_token};
use super::name_addr::NameAddr;
use super::transaction::{self, Exchange};
use super::transport::Connection;
use super::uri::{self, ServerUri};
use super::{StatusLine, Target, millis, session};
use crate::probe::attempts;
use crate::probe::dns::Dns;
use crate::probe::tls::CaSource;
use crate::probe::{ConfigError, Failure, NotBoundReason, Outcome, StatusHint};
use crate::secret::Secret;
use rsip::Header;
use rsip::prelude::*;
use serde::Serialize;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// The registration interval asked for unless configured (seconds).
pub const DEFAULT_EXPIRES: u32 = 300;

/// Requests one probe run may send for the registration itself: the first, the answer to a
/// challenge, one stale re-answer, one 423 retry, and a fresh answer should that retry be
/// challenged again. Anything past this is a server going in circles.
const MAX_REQUESTS: u32 = 5;

/// The time the un-REGISTER gets after a successful registration, whatever the registration
/// left of the probe's timeout (never more than the timeout itself): a slow registration must
/// not leave the monitoring binding behind, where calls could be forked to it. Over UDP it
/// allows the request and three retransmissions (RFC 3261 §17.1.2.2: 0.5 s, 1 s, 2 s).
pub const UNREGISTER_BUDGET: Duration = Duration::from_secs(3);

/// Which account to register where.
#[derive(Debug, Clone)]
pub struct RegisterConfig {
    /// The registrar: `sip:`/`sips:` URI, `;transport=udp|tcp|tls`; without a port RFC 3263.
    pub server: String,
    /// The user part of the address of record.
    pub username: String,
    /// The digest user name, when it differs from `username` (trunks often have one).
    pub auth_username: Option<String>,
    /// Domain of the address-of-record, and then the REGISTER's Request-URI (RFC 3261 §10.2);
    /// the server's host when `None`.
    pub domain: Option<String>,
    /// An outbound proxy (`sip:`/`sips:` URI): requests go there, with a Route header naming
    /// it (RFC 3261 §8.1.2, loose routing), instead of to `server`.
    pub proxy: Option<String>,
    pub password: Secret,
    /// Registration interval asked for, in seconds ([`DEFAULT_EXPIRES`]).
    pub expires: u32,
    /// Remove the binding (Expires: 0) after a successful registration.
    pub unregister: bool,
    /// Bounds DNS, connecting and registering; the un-REGISTER has [`UNREGISTER_BUDGET`] of
    /// its own.
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
    /// The registration interval the server granted our binding: our Contact's `expires` in
    /// the 200 OK, or its Expires header.
    #[serde(rename = "grantedExpiresSeconds")]
    pub granted_expires: Option<u32>,
    /// The removal of the binding after a successful registration; `None` when not tried.
    pub unregister: Option<UnregisterOutcome>,
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
    /// Over TLS: the earliest notAfter of the certificate chain the answering server presented
    /// (leaf and intermediates, as blackbox_exporter's `probe_ssl_earliest_cert_expiry`).
    #[serde(serialize_with = "crate::probe::timestamp::option::serialize")]
    pub cert_not_after: Option<SystemTime>,
    pub dns_fallbacks: Vec<Failure>,
    pub failure: Option<Failure>,
    /// The messages exchanged, credentials redacted (`probe -v`).
    #[serde(skip)]
    pub flow: Vec<FlowEntry>,
}

/// How the un-REGISTER went. Its failure does not fail the probe (the registration worked),
/// but it is shown: the binding may stay until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnregisterOutcome {
    /// The final response, when one came.
    pub response: Option<StatusLine>,
    /// `None` when the binding was removed (a 2xx).
    pub failure: Option<Failure>,
}

impl std::fmt::Display for UnregisterOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.failure {
            None => f.write_str("removed"),
            Some(failure) => write!(f, "failed: {failure}"),
        }
    }
}

impl RegisterConfig {
    /// Checks the URIs and user names before anything is sent (what [`register`] refuses with
    /// a [`ConfigError`], short of an unreadable CA file).
    pub fn validate(&self) -> Result<(), ConfigError> {
        uri::parse(&self.server)?;
        uri::parse_proxy(self.proxy.as_deref())?;
        plain_user("username", &self.username)?;
        if let Some(auth) = &self.auth_username {
            plain_user("authUsername", auth)?;
        }
        Ok(())
    }
}

pub(super) fn plain_user(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.contains(['@', ':', ' ', '<', '>', '"', ',', ';']) {
        return Err(ConfigError::new(field, "must be a plain SIP user name"));
    }
    Ok(())
}

/// Registers per `cfg`. `Err` only for bad input (an unusable URI or CA file).
pub async fn register(dns: &Dns, cfg: &RegisterConfig) -> Result<RegisterOutcome, ConfigError> {
    cfg.validate()?;
    let server = uri::parse(&cfg.server)?;
    let proxy = uri::parse_proxy(cfg.proxy.as_deref())?;
    let started = Instant::now();
    let attempt = Attempt {
        cfg,
        server: &server,
        proxy: proxy.as_ref(),
        outcome: RegisterOutcome::empty(),
        flow: Flow::new(started),
    };
    let ca = cfg.ca.as_ref();
    session::probe(
        dns,
        &server,
        proxy.as_ref(),
        ca,
        cfg.timeout,
        started,
        attempt,
    )
    .await
}

/// The registration on one destination's connection; `outcome` holds what the last
/// destination tried answered, `flow` the messages of all of them.
struct Attempt<'a> {
    cfg: &'a RegisterConfig,
    server: &'a ServerUri,
    proxy: Option<&'a ServerUri>,
    outcome: RegisterOutcome,
    flow: Flow,
}

impl session::Run for Attempt<'_> {
    type Outcome = RegisterOutcome;

    fn finish(self) -> (RegisterOutcome, Flow) {
        (self.outcome, self.flow)
    }
}

session::reached!(RegisterOutcome);

impl session::Exchange for Attempt<'_> {
    type Output = ();

    async fn on(&mut self, conn: Connection, until: Instant) -> Result<(), Failure> {
        // What an earlier destination answered (a 503) is not this one's.
        self.outcome = RegisterOutcome::empty();
        let mut run = Registration::new(self.cfg, conn, self.server, self.proxy, until);
        run.register(&mut self.outcome, &mut self.flow).await?;
        if self.cfg.unregister {
            let budget = UNREGISTER_BUDGET.min(self.cfg.timeout);
            run.deadline = Instant::now() + budget;
            run.timeout = budget;
            self.outcome.unregister = Some(run.unregister(&mut self.flow).await);
        }
        Ok(())
    }
}

/// A registration kept with its connection open: the hairpin call's callee, which receives its
/// call on that connection and removes its binding afterwards.
pub(super) struct Kept<'a>(Registration<'a>);

impl Kept<'_> {
    pub fn conn(&mut self) -> &mut Connection {
        &mut self.0.conn
    }

    /// Our address on the connection.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.0.conn.local_addr()
    }

    /// Our Contact URI, as registered.
    pub fn contact(&self) -> &str {
        &self.0.contact
    }

    /// Removes the binding (Expires: 0) within `budget`.
    pub async fn unregister(mut self, budget: Duration, flow: &mut Flow) -> UnregisterOutcome {
        self.0.deadline = Instant::now() + budget;
        self.0.timeout = budget;
        self.0.unregister(flow).await
    }
}

/// Registers per `cfg` (its `unregister` is the caller's business) on the first destination
/// that serves, and keeps the registration with its connection. The inner `Err` is why the
/// registration failed; the outer one bad input.
pub(super) async fn keep<'a>(
    dns: &Dns,
    cfg: &'a RegisterConfig,
    flow: &mut Flow,
) -> Result<Result<Kept<'a>, Failure>, ConfigError> {
    cfg.validate()?;
    let server = uri::parse(&cfg.server)?;
    let proxy = uri::parse_proxy(cfg.proxy.as_deref())?;
    let mut keeping = Keeping {
        cfg,
        server: &server,
        proxy: proxy.as_ref(),
        outcome: RegisterOutcome::empty(),
        flow,
    };
    let next_hop = proxy.as_ref().unwrap_or(&server);
    let deadline = Instant::now() + cfg.timeout;
    let ca = cfg.ca.as_ref();
    let tried = session::each(dns, next_hop, ca, deadline, cfg.timeout, &mut keeping).await?;
    Ok(tried.result)
}

/// The registration of [`keep`] on one destination.
struct Keeping<'a, 'f> {
    cfg: &'a RegisterConfig,
    server: &'f ServerUri,
    proxy: Option<&'f ServerUri>,
    outcome: RegisterOutcome,
    flow: &'f mut Flow,
}

impl<'a> session::Exchange for Keeping<'a, '_> {
    type Output = Kept<'a>;

    async fn on(&mut self, conn: Connection, until: Instant) -> Result<Kept<'a>, Failure> {
        let mut run = Registration::new(self.cfg, conn, self.server, self.proxy, until);
        run.register(&mut self.outcome, self.flow).await?;
        Ok(Kept(run))
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
            unregister: None,
            first_response: None,
            final_response: None,
            total: Duration::ZERO,
            attempts: Vec::new(),
            dns_fallbacks: Vec::new(),
            failure: None,
            cert_not_after: None,
            flow: Vec::new(),
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
    /// Our Contact's unique user part (see the module comment).
    contact_user: String,
    contact: String,
    /// `Route: <proxy;lr>` when an outbound proxy is used.
    route: Option<String>,
    deadline: Instant,
    /// What a timeout of the current phase reports.
    timeout: Duration,
    auth: Auth<'a>,
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
        server: &ServerUri,
        proxy: Option<&ServerUri>,
        deadline: Instant,
    ) -> Self {
        let dialogue = Dialogue::new(conn.local_addr(), conn.transport());
        let contact_user = format!("{}-{}", cfg.username, &random_token()[..8]);
        let contact = dialogue.contact_uri(&contact_user);
        let domain = cfg.domain.clone().unwrap_or_else(|| server.host_in_uri());
        // RFC 3261 §10.2: the Request-URI names the domain of the location service.
        let request_uri = match &cfg.domain {
            Some(domain) => server.uri_for(domain),
            None => server.domain_uri(),
        };
        Registration {
            cfg,
            conn,
            dialogue,
            request_uri,
            aor: format!("sip:{}@{domain}", cfg.username),
            contact_user,
            contact,
            route: proxy.map(ServerUri::loose_route),
            deadline,
            timeout: cfg.timeout,
            auth: Auth::new(
                cfg.auth_username.as_ref().unwrap_or(&cfg.username),
                &cfg.password,
            ),
        }
    }

    /// Registers until a final decision, recording what it sees in `outcome`.
    async fn register(
        &mut self,
        outcome: &mut RegisterOutcome,
        flow: &mut Flow,
    ) -> Result<(), Failure> {
        let mut expires = self.cfg.expires;
        let mut interval_retried = false;
        let first_sent = Instant::now();
        for _ in 0..MAX_REQUESTS {
            let exchange = match self.send(expires, flow).await {
                Ok(exchange) => exchange,
                // The server answered the request before (a challenge): it is alive, and "no
                // answer" would mislead.
                Err(Failure::Timeout { after }) if outcome.response.is_some() => {
                    let previous = outcome.response.as_ref().map(ToString::to_string);
                    return Err(Failure::NoFinalAnswer {
                        after,
                        arrived: format!(
                            "{} to the previous REGISTER",
                            previous.unwrap_or_default()
                        ),
                    });
                }
                Err(failure) => return Err(failure),
            };
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
            // RFC 3261 §8.2.6.2: a registrar tags its final responses.
            reply
                .check_to_tag()
                .map_err(|detail| Failure::Protocol { detail })?;
            let next = match reply.code {
                // issue 2: success only on a final 200 OK; issue 8: that shows our binding
                200 => Next::Done(self.binding(&exchange).map(|granted| {
                    outcome.granted_expires = granted;
                })),
                401 | 407 => match self.auth.take(&exchange.reply, true) {
                    Ok(()) => Next::Retry,
                    Err(failure) => Next::Done(Err(failure)),
                },
                423 => match min_expires(&exchange) {
                    Some(min) if !interval_retried && min > expires => {
                        interval_retried = true;
                        expires = min;
                        Next::Retry
                    }
                    _ => Next::Done(Err(status_failure(&exchange.reply))),
                },
                _ => Next::Done(Err(rejection(&exchange.reply, self.auth.answered()))),
            };
            outcome.auth_algorithm = self.auth.algorithm();
            match next {
                Next::Done(result) => return result,
                Next::Retry => continue,
            }
        }
        let code = outcome.response.as_ref().map_or(0, |r| r.code);
        Err(match code {
            401 | 407 => Failure::AuthRejected { code },
            code => Failure::SipStatus { code, hint: None },
        })
    }

    /// Sends one REGISTER (with credentials when a challenge is known) and waits for its final
    /// response.
    async fn send(&mut self, expires: u32, flow: &mut Flow) -> Result<Exchange, Failure> {
        let mut extra: Vec<Header> = Vec::new();
        if let Some(route) = &self.route {
            extra.push(rsip::headers::Route::new(route.clone()).into());
        }
        extra.push(rsip::headers::Contact::new(format!("<{}>", self.contact)).into());
        extra.push(rsip::headers::Expires::from(expires).into());
        extra.extend(self.auth.header("REGISTER", &self.request_uri));
        let request = self.dialogue.request(RequestSpec {
            method: rsip::Method::Register,
            request_uri: &self.request_uri,
            from: &self.aor,
            to: &self.aor,
            to_tag: None,
            extra,
            body: None,
        });
        transaction::run(&mut self.conn, &request, self.deadline, self.timeout, flow).await
    }

    /// Removes our binding (Expires: 0, RFC 3261 §10.2.2). A challenge is answered once, as for
    /// the registration.
    async fn unregister(&mut self, flow: &mut Flow) -> UnregisterOutcome {
        let mut result = UnregisterOutcome {
            response: None,
            failure: None,
        };
        for _ in 0..2 {
            let exchange = match self.send(0, flow).await {
                Ok(exchange) => exchange,
                Err(failure) => {
                    result.failure = Some(failure);
                    return result;
                }
            };
            result.response = Some(StatusLine {
                code: exchange.reply.code,
                reason: exchange.reply.reason.clone(),
            });
            match exchange.reply.code {
                200..=299 => return result,
                401 | 407 => {
                    if let Err(failure) = self.auth.take(&exchange.reply, false) {
                        result.failure = Some(failure);
                        return result;
                    }
                }
                _ => {
                    result.failure = Some(status_failure(&exchange.reply));
                    return result;
                }
            }
        }
        let code = result.response.as_ref().map_or(0, |r| r.code);
        result.failure = Some(Failure::AuthRejected { code });
        result
    }

    /// Our binding in a 200 OK and the expiry granted to it (RFC 3261 §10.2.4): its `expires`
    /// parameter, else the Expires header; `Ok(None)` when the registrar names none.
    fn binding(&self, exchange: &Exchange) -> Result<Option<u32>, Failure> {
        let not_bound = |reason| Failure::NotBound { reason };
        let contacts = exchange.reply.contacts();
        if contacts.is_empty() {
            return Err(not_bound(NotBoundReason::NoContact));
        }
        let ours: Option<NameAddr> = contacts
            .iter()
            .filter_map(|(_, parsed)| parsed.as_ref())
            .find(|c| c.user.as_deref() == Some(self.contact_user.as_str()))
            .cloned();
        let Some(ours) = ours else {
            return Err(not_bound(NotBoundReason::OtherBindingsOnly {
                count: contacts.len(),
            }));
        };
        let header = || {
            exchange
                .reply
                .header_values("Expires")
                .next()
                .and_then(|v| v.trim().parse::<u32>().ok())
        };
        let granted = ours
            .param("expires")
            .and_then(|v| v.parse::<u32>().ok())
            .or_else(header);
        match granted {
            Some(0) => Err(not_bound(NotBoundReason::ExpiresZero)),
            granted => Ok(granted),
        }
    }
}

/// What a final response that refuses a request means (REGISTER and INVITE alike): 403 is
/// [`Failure::Forbidden`], or [`Failure::AuthRejected`] when `credentials_sent`; 488 is
/// [`Failure::NotAcceptableHere`]; anything else [`status_failure`].
pub(super) fn rejection(reply: &Reply, credentials_sent: bool) -> Failure {
    match reply.code {
        403 if credentials_sent => Failure::AuthRejected { code: 403 },
        403 => Failure::Forbidden,
        488 => Failure::NotAcceptableHere,
        _ => status_failure(reply),
    }
}

/// A final response that is neither success nor one of the classes of its own, with what it
/// says about where to go (3xx Contact) or when to come back (Retry-After).
pub(super) fn status_failure(reply: &Reply) -> Failure {
    let contacts: Vec<String> = reply.contacts().into_iter().map(|(raw, _)| raw).collect();
    let redirect = ((300..400).contains(&reply.code) && !contacts.is_empty()).then(|| {
        let mut contact = contacts.join(", ");
        contact.truncate(contact.floor_char_boundary(200));
        StatusHint::RedirectTo { contact }
    });
    let retry_after = || {
        reply
            .header_values("Retry-After")
            .next()
            .and_then(|v| v.split([';', '(', ' ']).next()?.trim().parse().ok())
            .map(|seconds| StatusHint::RetryAfter { seconds })
    };
    Failure::SipStatus {
        code: reply.code,
        hint: redirect.or_else(retry_after),
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
                "unregister",
                or_dash(self.unregister.as_ref().map(ToString::to_string)),
            ),
            ("first response", millis(self.first_response)),
            ("final response", millis(self.final_response)),
            ("total", millis(Some(self.total))),
        ];
        if let Some(server) = &self.server {
            facts.push(("server", server.clone()));
        }
        facts.extend(crate::probe::tls::expiry_fact(self.cert_not_after));
        facts.extend(attempts::facts(&self.attempts, &self.dns_fallbacks));
        facts
    }
}
