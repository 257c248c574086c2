//! Protocol probes: SIP, STUN and HTTP. Nothing here knows of Kubernetes.
//!
//! Every probe returns a typed outcome (timings, facts seen, and on failure one [`Failure`] from
//! a closed set). What an outcome *means* (reportable outage or local problem) is decided above
//! this module, in the verdict logic.

pub mod attempts;
pub mod dns;
pub mod http;
pub mod media;
pub mod sip;
pub mod stun;
pub mod tls;

use serde::Serialize;
use std::time::Duration;

/// Why a probe failed. One class per cause the verdict logic and the alerts distinguish; the
/// free-text `detail` fields are for humans and never used as metric labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "class")]
pub enum Failure {
    /// The name could not be resolved: which name, which record type was asked, and how the
    /// lookup failed.
    #[error("DNS {record} lookup of {name}: {kind}")]
    DnsFailure {
        name: String,
        record: DnsRecord,
        kind: DnsErrorKind,
    },
    /// The peer actively refused the connection (TCP RST, ICMP port unreachable).
    #[error("connection refused by {peer}")]
    ConnectRefused { peer: String },
    /// Any other socket error before a response (network unreachable, reset, ...).
    #[error("network error: {detail}")]
    Network { detail: String },
    /// No (final) answer within the probe timeout.
    #[error("no answer within {}", in_ms(*after))]
    Timeout {
        #[serde(rename = "afterSeconds", serialize_with = "secs::serialize")]
        after: Duration,
    },
    /// A SIP OPTIONS answer came, but later than the threshold: Asterisk chan_sip's `LAGGED`
    /// (seeds 000/002).
    #[error("answered after {}, slower than the {} threshold (LAGGED)", in_ms(*rtt), in_ms(*threshold))]
    Lagged {
        #[serde(rename = "rttSeconds", serialize_with = "secs::serialize")]
        rtt: Duration,
        #[serde(rename = "thresholdSeconds", serialize_with = "secs::serialize")]
        threshold: Duration,
    },
    /// The TLS handshake failed or the certificate was not acceptable.
    #[error("TLS: {detail}")]
    Tls { detail: TlsFailure },
    /// Credentials were sent and the server still answered 401/407 (or 403 after auth).
    #[error("authentication rejected with {code} after sending credentials")]
    AuthRejected { code: u16 },
    /// 403 Forbidden without an auth exchange; seed 004: usually an ACL on the server side.
    #[error("403 Forbidden (seed 004: often an ACL or IP restriction on the server)")]
    Forbidden,
    /// 488 Not Acceptable Here; seed 004: usually an ACL or codec/transport configuration.
    #[error("488 Not Acceptable Here (seed 004: often an ACL or transport/codec configuration)")]
    NotAcceptableHere,
    /// Any other final SIP status that is not success; with what the response says about
    /// where to go or when to come back (a redirect's Contact, a 503's Retry-After).
    #[error("SIP final response {code}{}", hint.as_ref().map(|h| format!(", {h}")).unwrap_or_default())]
    SipStatus {
        code: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        hint: Option<StatusHint>,
    },
    /// A REGISTER was answered 200 OK, but the answer does not show our binding held for more
    /// than zero seconds: the registrar accepted the request and will not route calls to us.
    #[error("200 OK without our binding: {reason}")]
    NotBound { reason: NotBoundReason },
    /// No final answer in time, although the server did answer something before (a
    /// provisional response, or a challenge whose answer then went unanswered): not "no
    /// answer", since the server is alive.
    #[error("no final answer within {}; before that the server sent {arrived}", in_ms(*after))]
    NoFinalAnswer {
        #[serde(rename = "afterSeconds", serialize_with = "secs::serialize")]
        after: Duration,
        /// The status line of the last response that did arrive, e.g. `401 Unauthorized`.
        arrived: String,
    },
    /// A test call's INVITE got a provisional answer (100 Trying) but neither ringing (18x)
    /// nor a final response within the probe timeout.
    #[error("the call did not ring: no 18x or final response within {}", in_ms(*after))]
    NoRinging {
        #[serde(rename = "afterSeconds", serialize_with = "secs::serialize")]
        after: Duration,
    },
    /// A test call rang (18x) and was not answered within the ring timeout; it was cancelled.
    #[error("rang, but not answered within the {} ring timeout", in_ms(*after))]
    NotAnswered {
        #[serde(rename = "afterSeconds", serialize_with = "secs::serialize")]
        after: Duration,
    },
    /// The far end hung up (BYE) before the test call's media ended.
    #[error("the far end hung up {} after the answer, before the media ended", in_ms(*after))]
    DroppedEarly {
        #[serde(rename = "afterSeconds", serialize_with = "secs::serialize")]
        after: Duration,
    },
    /// The call was answered but its media could not be agreed: no SDP answer, an SDP that
    /// cannot be read, or none of the offered codecs.
    #[error("media not negotiated: {detail}")]
    MediaNotNegotiated { detail: String },
    /// The hairpin test call's own callee could not be registered, so no call could reach it.
    #[error("the callee could not be registered: {cause}")]
    CalleeNotRegistered { cause: Box<Failure> },
    /// RTP arrived in one direction only (seed 004: NAT, firewall, ALG); `silent` is the
    /// direction in which nothing arrived.
    #[error("one-way audio: no RTP {silent}")]
    OneWayAudio { silent: media::MediaDirection },
    /// The call was answered and no RTP arrived in either direction.
    #[error("no audio: no RTP arrived in either direction")]
    NoAudio,
    /// Audio arrived, but its MOS is below the threshold.
    #[error("MOS {mos} below the {threshold} threshold")]
    PoorQuality {
        mos: media::Mos,
        threshold: media::Mos,
    },
    /// An HTTP status outside the expected set.
    #[error("HTTP status {code} not among the expected statuses")]
    HttpStatus { code: u16 },
    /// The HTTP body did not contain the expected text or match the expected pattern.
    #[error("response body does not match: {detail}")]
    BodyMismatch { detail: String },
    /// The HTTP body's content coding could not be undone: unknown, corrupt, or a
    /// decompression bomb.
    #[error("response body: {detail}")]
    ContentDecoding { detail: DecodingFailure },
    /// One of several STUN servers gave no answer while the check needs all of them
    /// (`stun.require: All`); `cause` is that server's failure.
    #[error("STUN server {server} failed ({answered} of {of} answered): {cause}")]
    StunServerFailed {
        server: String,
        answered: usize,
        of: usize,
        cause: Box<Failure>,
    },
    /// STUN servers disagree about our public address (seed 004: two public IPs).
    #[error("STUN servers report different public addresses: {addresses}")]
    AddressMismatch { addresses: String },
    /// A STUN server answered a Binding request with an error response (RFC 8489 §6.3.4), e.g.
    /// 400 Bad Request, 401 Unauthorized (the server wants credentials), 420 Unknown Attribute.
    #[error("STUN error response {code}")]
    StunError { code: u16 },
    /// Every address of the name lies outside the operator's `--allow-target` list, so nothing
    /// was sent (DESIGN.md §8).
    #[error("{name} resolves to {address}, outside the operator's allow-list")]
    TargetNotAllowed { name: String, address: String },
    /// The peer answered with something that is not valid for the protocol.
    #[error("protocol error: {detail}")]
    Protocol { detail: String },
}

impl Failure {
    /// A short, stable name for the class (CamelCase): what the verdict logic and metric labels
    /// use, never the free text.
    pub fn class(&self) -> &'static str {
        match self {
            Failure::DnsFailure { .. } => "DnsFailure",
            Failure::ConnectRefused { .. } => "ConnectRefused",
            Failure::Network { .. } => "Network",
            Failure::Timeout { .. } => "Timeout",
            Failure::Lagged { .. } => "Lagged",
            Failure::Tls { .. } => "Tls",
            Failure::AuthRejected { .. } => "AuthRejected",
            Failure::Forbidden => "Forbidden",
            Failure::NotAcceptableHere => "NotAcceptableHere",
            Failure::SipStatus { .. } => "SipStatus",
            Failure::NotBound { .. } => "NotBound",
            Failure::NoFinalAnswer { .. } => "NoFinalAnswer",
            Failure::NoRinging { .. } => "NoRinging",
            Failure::NotAnswered { .. } => "NotAnswered",
            Failure::DroppedEarly { .. } => "DroppedEarly",
            Failure::MediaNotNegotiated { .. } => "MediaNotNegotiated",
            Failure::CalleeNotRegistered { .. } => "CalleeNotRegistered",
            Failure::OneWayAudio { .. } => "OneWayAudio",
            Failure::NoAudio => "NoAudio",
            Failure::PoorQuality { .. } => "PoorQuality",
            Failure::HttpStatus { .. } => "HttpStatus",
            Failure::BodyMismatch { .. } => "BodyMismatch",
            Failure::ContentDecoding { .. } => "ContentDecoding",
            Failure::StunServerFailed { .. } => "StunServerFailed",
            Failure::AddressMismatch { .. } => "AddressMismatch",
            Failure::StunError { .. } => "StunError",
            Failure::TargetNotAllowed { .. } => "TargetNotAllowed",
            Failure::Protocol { .. } => "Protocol",
        }
    }

    /// Classifies a socket error that happened while talking to `peer`.
    pub fn from_io(err: &std::io::Error, peer: impl std::fmt::Display) -> Self {
        match err.kind() {
            std::io::ErrorKind::ConnectionRefused => Failure::ConnectRefused {
                peer: peer.to_string(),
            },
            _ => Failure::Network {
                detail: format!("{peer}: {err}"),
            },
        }
    }
}

/// A duration for messages, to the millisecond ("2s 3ms", not "2s 3ms 41us 12ns").
fn in_ms(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
}

/// What a final SIP error response says beyond its code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
pub enum StatusHint {
    /// A 3xx's Contact: where the server sends us instead (RFC 3261 §8.1.3.4).
    #[error("redirecting to {contact}")]
    RedirectTo { contact: String },
    /// A 503's (or 3xx/4xx's) Retry-After: when the server expects to serve again (§20.33).
    #[error("retry after {seconds} s")]
    RetryAfter { seconds: u32 },
}

/// Why a 200 OK to REGISTER did not bind us (RFC 3261 §10.2.4: the 200 lists every binding of
/// the address of record with its expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind")]
pub enum NotBoundReason {
    /// Our Contact is listed with `expires=0` (or, without a parameter, `Expires: 0`).
    #[error("our Contact is granted 0 seconds")]
    ExpiresZero,
    /// Bindings are listed, ours is not among them.
    #[error("it lists {count} other binding(s) but not ours")]
    OtherBindingsOnly { count: usize },
    /// The 200 OK carries no Contact at all.
    #[error("it lists no Contact at all")]
    NoContact,
}

/// How a DNS lookup failed, one kind per answer a resolver gives (RFC 1035 §4.1.1, RFC 2308).
/// NXDOMAIN and NODATA are kept apart from the rest because a name that does not exist or has
/// no such record is a configuration problem, while a failing resolver is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DnsErrorKind {
    /// NXDOMAIN: the name does not exist.
    NxDomain,
    /// NODATA: the name exists but has no record of the type asked for.
    NoRecords,
    /// SERVFAIL: the resolver could not get an answer (the authoritative servers failed or
    /// DNSSEC validation did).
    ServFail,
    /// REFUSED: the name server refuses to answer this client or this name.
    Refused,
    /// No answer within the lookup's share of the probe timeout.
    Timeout,
    /// Any other failure: the resolver is unreachable, or an answer that is none of the above.
    ResolverFailed,
}

impl std::fmt::Display for DnsErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DnsErrorKind::NxDomain => "no such name (NXDOMAIN)",
            DnsErrorKind::NoRecords => "the name exists but has no such record (NODATA)",
            DnsErrorKind::ServFail => "the resolver failed to get an answer (SERVFAIL)",
            DnsErrorKind::Refused => "the name server refused the query (REFUSED)",
            DnsErrorKind::Timeout => "no answer from the name server in time (timeout)",
            DnsErrorKind::ResolverFailed => "the resolver gave no usable answer",
        })
    }
}

/// The record type a failed lookup asked for: A/AAAA for an address, SRV and NAPTR for RFC
/// 3263's service discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DnsRecord {
    #[serde(rename = "A/AAAA")]
    Address,
    #[serde(rename = "SRV")]
    Srv,
    #[serde(rename = "NAPTR")]
    Naptr,
}

impl std::fmt::Display for DnsRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DnsRecord::Address => "A/AAAA",
            DnsRecord::Srv => "SRV",
            DnsRecord::Naptr => "NAPTR",
        })
    }
}

/// The precise reason a TLS handshake failed, named as a person would check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "reason")]
pub enum TlsFailure {
    #[error("certificate expired{}", not_after.map(|t| format!(" at {}", humantime::format_rfc3339_seconds(t))).unwrap_or_default())]
    Expired {
        #[serde(rename = "notAfter", serialize_with = "timestamp::option::serialize")]
        not_after: Option<std::time::SystemTime>,
    },
    #[error("certificate not yet valid")]
    NotYetValid,
    #[error("certificate issued by an unknown or untrusted authority")]
    UnknownIssuer,
    #[error("certificate not valid for {name}")]
    HostnameMismatch { name: String },
    #[error("certificate rejected: {detail}")]
    BadCertificate { detail: String },
    /// The server wants a client certificate (mutual TLS), which the probe does not present:
    /// it asked for one and then ended the connection (e.g. with a `certificate_required` or
    /// `bad_certificate` alert).
    #[error(
        "the server demands a client certificate (mutual TLS), which the probe does not present"
    )]
    ClientCertificateRequired,
    #[error("handshake failed: {detail}")]
    Handshake { detail: String },
}

/// Why an HTTP body's content coding (RFC 9110 §8.4) could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "reason")]
pub enum DecodingFailure {
    /// A coding the probe does not offer in `Accept-Encoding` (gzip, deflate, br).
    #[error("unsupported content coding {coding:?}")]
    Unsupported { coding: String },
    /// The bytes are not valid for the coding.
    #[error("invalid {coding} data: {detail}")]
    Corrupt { coding: String, detail: String },
    /// The body expands beyond the body limit at a ratio no real page has.
    #[error(
        "decompression bomb: {encoded_bytes} {coding} bytes expand beyond the {limit_bytes}-byte body limit"
    )]
    Bomb {
        coding: String,
        #[serde(rename = "encodedBytes")]
        encoded_bytes: usize,
        #[serde(rename = "limitBytes")]
        limit_bytes: usize,
    },
}

/// The input to a probe is unusable (bad URI, unreadable CA file, ...). Unlike [`Failure`] this
/// is the caller's mistake, reported before any packet is sent (CLI exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// The option or spec field at fault, e.g. `--ca-file` or `sip.server`.
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self {
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

/// Serialises points in time as RFC 3339 strings (UTC, whole seconds).
pub mod timestamp {
    use serde::Serializer;
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*t))
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.collect_str(&humantime::format_rfc3339_seconds(*t)),
                None => s.serialize_none(),
            }
        }
    }
}

/// Serialises durations as fractional seconds, the unit Prometheus and blackbox_exporter use.
pub mod secs {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&d.as_secs_f64()),
                None => s.serialize_none(),
            }
        }
    }
}

/// What every probe outcome offers its readers: the CLI table, JSON output and, later, metrics.
pub trait Outcome: Serialize {
    /// `None` when the probe succeeded.
    fn failure(&self) -> Option<&Failure>;

    /// Label and value pairs for the human-readable table, in reading order (e.g.
    /// `("final response", "200 OK")`, `("rtt", "1.2 ms")`). Never a credential.
    fn facts(&self) -> Vec<(&'static str, String)>;
}
