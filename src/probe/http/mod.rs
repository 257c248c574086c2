//! HTTP(S) URL probe: DESIGN.md §3's `WebReachable` (cloud web UI, customer center, partner
//! portal, push server). One GET, with redirects followed by policy, timed per phase the way
//! blackbox_exporter times it (resolve, connect, tls, processing, transfer; §5's
//! `http_phase_duration_seconds{phase}`), the status and body checked against expectations, and
//! the TLS certificate verified with the precise reason it was refused, or its expiry reported.
//!
//! One deadline (`timeout`) bounds everything, all phases of all hops. The response head is
//! bounded by hyper (64 KiB here), the body by `max_body_bytes`.
//!
//! The final body is decoded first when it has a content coding (gzip, deflate, br: what
//! `Accept-Encoding` offers; see [`coding`]); the limit applies to the encoded bytes read and to
//! the decoded bytes. A body longer than `max_body_bytes` is not a failure: reading stops at the limit, the outcome
//! says `bodyTruncated`, and `body_contains` / `body_regex` are matched against the prefix read.
//! A web UI check asks "is it up and is it the right page?", which the first MiB answers; failing
//! on size would turn a growing page into a false outage. (blackbox_exporter's `body_size_limit`
//! fails instead; put the marker text near the top when it matters.)
//!
//! Credentials in the URL's userinfo are sent as Basic auth to the configured origin only (a
//! redirect to another origin goes without them) and appear nowhere in the outcome, its errors,
//! `Debug` output or logs. Over plain `http://` they would cross the network readable by anyone
//! on the path, so such a configuration is refused before anything is sent unless
//! `allow_insecure_basic_auth` says the check author wants exactly that.

mod auth;
mod coding;
mod hop;
mod outcome;

pub use coding::{ContentCoding, MAX_RATIO};
pub use outcome::{HttpOutcome, HttpPhases};

use super::dns::Dns;
use super::tls::CaSource;
use super::{ConfigError, Failure, tls};
use auth::{BasicAuth, redacted};
use hyper::StatusCode;
use hyper::header::{LOCATION, SERVER};
use regex::Regex;
use std::fmt;
use std::time::{Duration, Instant};
use url::Url;

/// Default probe timeout (the whole probe, all redirects).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default redirect limit, as Go's HTTP client and so blackbox_exporter.
pub const DEFAULT_MAX_REDIRECTS: u8 = 10;
/// Default limit of body bytes read.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// The `Server` header is reported up to this many characters.
const SERVER_MAX_CHARS: usize = 200;

/// Which final statuses a probe accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectStatus {
    /// Any 2xx.
    Success,
    /// Exactly these codes.
    OneOf(Vec<u16>),
    /// Any response: the control probe asks whether this location reaches the internet, and
    /// any answer (a 404 or 503 included) says it does.
    AnyResponse,
}

impl ExpectStatus {
    /// The expectation a list of codes states: the codes, or any 2xx when there are none (the
    /// spec's and the CLI's `expectStatus`).
    pub fn from_codes(codes: Vec<u16>) -> Self {
        match codes.is_empty() {
            true => ExpectStatus::Success,
            false => ExpectStatus::OneOf(codes),
        }
    }

    fn accepts(&self, status: StatusCode) -> bool {
        match self {
            ExpectStatus::Success => status.is_success(),
            ExpectStatus::OneOf(codes) => codes.contains(&status.as_u16()),
            ExpectStatus::AnyResponse => true,
        }
    }
}

/// What to fetch and what to expect. `Debug` shows the URL without userinfo.
#[derive(Clone)]
pub struct HttpConfig {
    /// `http` or `https`; userinfo becomes Basic auth.
    pub url: Url,
    /// Which final statuses count as success.
    pub expect_status: ExpectStatus,
    /// Text the body must contain.
    pub body_contains: Option<String>,
    /// Pattern the body must match.
    pub body_regex: Option<Regex>,
    /// Follow 301/302/303/307/308 with a `Location`; otherwise the 3xx is the final response.
    pub follow_redirects: bool,
    /// More redirects than this fail the probe (`Protocol`).
    pub max_redirects: u8,
    /// Additional trusted CA certificates (PEM), on top of the system's roots.
    pub ca: Option<CaSource>,
    /// Deadline for the whole probe.
    pub timeout: Duration,
    /// Body bytes read at most, before and after decoding (see the module documentation).
    pub max_body_bytes: usize,
    /// Send the URL's credentials over plain `http://` too (spec `allowInsecureBasicAuth`).
    pub allow_insecure_basic_auth: bool,
}

impl HttpConfig {
    /// `url` with the defaults: any 2xx, no body check, redirects followed, system roots.
    pub fn new(url: Url) -> Self {
        HttpConfig {
            url,
            expect_status: ExpectStatus::Success,
            body_contains: None,
            body_regex: None,
            follow_redirects: true,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            ca: None,
            timeout: DEFAULT_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            allow_insecure_basic_auth: false,
        }
    }
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("url", &redacted(&self.url).as_str())
            .field("expect_status", &self.expect_status)
            .field("body_contains", &self.body_contains)
            .field("body_regex", &self.body_regex)
            .field("follow_redirects", &self.follow_redirects)
            .field("max_redirects", &self.max_redirects)
            .field("ca", &self.ca)
            .field("timeout", &self.timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("allow_insecure_basic_auth", &self.allow_insecure_basic_auth)
            .finish()
    }
}

/// Runs the probe. `Err` only for a configuration that cannot be probed (a scheme other than
/// http/https, an unreadable CA file): the caller's mistake, found before any packet is
/// sent. Everything the network does ends up in the outcome.
pub async fn probe(dns: &Dns, cfg: &HttpConfig) -> Result<HttpOutcome, ConfigError> {
    check_target(&cfg.url).map_err(|reason| ConfigError::new("url", reason))?;
    check_basic_auth(cfg).map_err(|reason| ConfigError::new("basicAuth", reason))?;
    // Also for plain HTTP: a redirect may lead to HTTPS, and a bad CA file is a configuration
    // error whatever the scheme.
    // HTTP/2 first, as browsers offer it: web UIs behind modern load balancers may speak only h2.
    let (config, demand) =
        tls::client_config_noting_demand(cfg.ca.as_ref(), &[b"h2", b"http/1.1"])?;
    let tls_config = hop::TlsClient { config, demand };

    let mut outcome = HttpOutcome::new(redacted(&cfg.url).to_string());
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + cfg.timeout);
    let result = tokio::time::timeout_at(deadline, run(dns, cfg, &tls_config, &mut outcome));
    let failure = match result.await {
        Ok(Ok(())) => None,
        Ok(Err(failure)) => Some(failure),
        Err(_) => Some(Failure::Timeout { after: cfg.timeout }),
    };
    outcome.duration = started.elapsed();
    outcome.failure = failure;
    tracing::debug!(url = %outcome.url, failure = ?outcome.failure.as_ref().map(Failure::class), "HTTP probe done");
    Ok(outcome)
}

/// The hops of one probe, until the final response is checked.
async fn run(
    dns: &Dns,
    cfg: &HttpConfig,
    tls_config: &hop::TlsClient,
    outcome: &mut HttpOutcome,
) -> Result<(), Failure> {
    let mut url = cfg.url.clone();
    let credentials = BasicAuth::from_url(&cfg.url);
    loop {
        outcome.start_hop(redacted(&url).to_string());
        // Only the configured origin gets the credentials, as curl and browsers do.
        let auth = credentials
            .as_ref()
            .filter(|_| url.origin() == cfg.url.origin());
        let mut received = hop::request(
            dns,
            &url,
            auth,
            tls_config,
            &mut outcome.phases,
            &mut outcome.peer,
            &mut outcome.attempts,
        )
        .await?;
        let head = &received.response;
        outcome.status = Some(head.status().as_u16());
        outcome.http_version = Some(hop::version_name(head.version()));
        outcome.server = head
            .headers()
            .get(SERVER)
            .map(|v| hop::header_text(v, SERVER_MAX_CHARS));
        outcome.cert_not_after = received.cert_not_after;

        if cfg.follow_redirects
            && let Some(next) = redirect_target(&url, &received.response)?
        {
            if outcome.redirects >= cfg.max_redirects {
                return Err(Failure::Protocol {
                    detail: format!("more than {} redirects", cfg.max_redirects),
                });
            }
            outcome.redirects += 1;
            url = next;
            continue;
        }

        let codings = coding::codings(received.response.headers())?;
        outcome.content_encoding = codings.clone();
        let started = Instant::now();
        let (encoded, cut) = hop::read_body(&mut received, cfg.max_body_bytes).await?;
        HttpPhases::add(&mut outcome.phases.transfer, started.elapsed());
        outcome.body_encoded_bytes = encoded.len();
        let (body, full) = coding::decode(&codings, &encoded, cfg.max_body_bytes)?;
        let truncated = cut || full;
        outcome.body_bytes = body.len();
        outcome.body_truncated = truncated;
        return check_response(cfg, received.response.status(), &body, truncated);
    }
}

/// Only http and https can be probed (the url crate guarantees those a non-empty host).
fn check_target(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(format!("scheme {other} is not http or https")),
    }
}

/// Basic auth is refused over plain HTTP unless explicitly allowed: the password would be
/// readable on the network (RFC 7617 §4).
fn check_basic_auth(cfg: &HttpConfig) -> Result<(), &'static str> {
    let plain = cfg.url.scheme() == "http";
    match BasicAuth::from_url(&cfg.url) {
        Some(_) if plain && !cfg.allow_insecure_basic_auth => Err(INSECURE_BASIC_AUTH),
        _ => Ok(()),
    }
}

/// Why Basic auth over `http://` is refused, for the probe and the spec's validation.
pub const INSECURE_BASIC_AUTH: &str = "Basic auth over plain http:// would send the password \
    readable by anyone on the path; use https:// or set allowInsecureBasicAuth: true";

/// Where a redirect points, resolved against `url` (RFC 9110 §10.2.2 allows a relative
/// `Location`). `None` when the response is not a redirect; a 3xx without `Location` is then
/// the final response.
fn redirect_target(
    url: &Url,
    response: &hyper::Response<hyper::body::Incoming>,
) -> Result<Option<Url>, Failure> {
    let redirect = matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308);
    let Some(location) = response.headers().get(LOCATION).filter(|_| redirect) else {
        return Ok(None);
    };
    let invalid = |why: &str| Failure::Protocol {
        detail: format!("redirect with an unusable Location: {why}"),
    };
    let location = location.to_str().map_err(|_| invalid("not text"))?;
    let next = url.join(location).map_err(|e| invalid(&e.to_string()))?;
    check_target(&next).map_err(|why| invalid(&why))?;
    Ok(Some(next))
}

/// Status first (the more telling failure), then the body.
fn check_response(
    cfg: &HttpConfig,
    status: StatusCode,
    body: &[u8],
    truncated: bool,
) -> Result<(), Failure> {
    if !cfg.expect_status.accepts(status) {
        return Err(Failure::HttpStatus {
            code: status.as_u16(),
        });
    }
    let text = String::from_utf8_lossy(body);
    let within = if truncated {
        format!(" (in the first {} bytes)", body.len())
    } else {
        String::new()
    };
    if let Some(needle) = &cfg.body_contains
        && !text.contains(needle.as_str())
    {
        return Err(Failure::BodyMismatch {
            detail: format!("does not contain {needle:?}{within}"),
        });
    }
    if let Some(pattern) = &cfg.body_regex
        && !pattern.is_match(&text)
    {
        return Err(Failure::BodyMismatch {
            detail: format!("does not match /{pattern}/{within}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HttpConfig {
        HttpConfig::new(Url::parse("https://user:hunter2@example.com/").unwrap())
    }

    #[test]
    fn debug_hides_userinfo() {
        let text = format!("{:?}", cfg());
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("user"), "{text}");
        assert!(text.contains("https://example.com/"), "{text}");
    }

    #[test]
    fn basic_auth_over_http_needs_an_explicit_yes() {
        let mut c = HttpConfig::new(Url::parse("http://user:pw@example.com/").unwrap());
        assert_eq!(check_basic_auth(&c), Err(INSECURE_BASIC_AUTH));
        c.allow_insecure_basic_auth = true;
        assert_eq!(check_basic_auth(&c), Ok(()));
        assert_eq!(check_basic_auth(&cfg()), Ok(()));
        let anonymous = HttpConfig::new(Url::parse("http://example.com/").unwrap());
        assert_eq!(check_basic_auth(&anonymous), Ok(()));
    }

    #[test]
    fn only_http_and_https() {
        assert!(check_target(&Url::parse("ftp://example.com/").unwrap()).is_err());
        assert!(check_target(&Url::parse("https://example.com/").unwrap()).is_ok());
    }

    #[test]
    fn status_expectations() {
        let mut c = cfg();
        assert!(check_response(&c, StatusCode::NO_CONTENT, b"", false).is_ok());
        assert_eq!(
            check_response(&c, StatusCode::FOUND, b"", false),
            Err(Failure::HttpStatus { code: 302 })
        );
        c.expect_status = ExpectStatus::from_codes(vec![503]);
        assert!(check_response(&c, StatusCode::SERVICE_UNAVAILABLE, b"", false).is_ok());
        assert_eq!(
            check_response(&c, StatusCode::OK, b"", false),
            Err(Failure::HttpStatus { code: 200 })
        );
        c.expect_status = ExpectStatus::AnyResponse;
        for status in [
            StatusCode::NOT_FOUND,
            StatusCode::BAD_GATEWAY,
            StatusCode::FOUND,
        ] {
            assert!(check_response(&c, status, b"", false).is_ok(), "{status}");
        }
    }

    #[test]
    fn body_expectations() {
        let mut c = cfg();
        c.body_contains = Some("STARFACE".into());
        c.body_regex = Some(Regex::new(r"login\s+page").unwrap());
        assert!(check_response(&c, StatusCode::OK, b"STARFACE login  page", false).is_ok());
        let Err(Failure::BodyMismatch { detail }) =
            check_response(&c, StatusCode::OK, b"starface login page", true)
        else {
            panic!("expected a body mismatch");
        };
        assert!(
            detail.contains("STARFACE") && detail.contains("first 19 bytes"),
            "{detail}"
        );
        let Err(Failure::BodyMismatch { detail }) =
            check_response(&c, StatusCode::OK, b"STARFACE login", false)
        else {
            panic!("expected a body mismatch");
        };
        assert!(detail.contains("login"), "{detail}");
    }
}
