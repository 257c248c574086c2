//! `VoipCheck.spec`: what to probe, how often, and what to tell the hotline (DESIGN.md §3, §4).
//!
//! The doc comments on the fields are the CRD's descriptions (`kubectl explain vc.spec.sip`),
//! so they are written for the person filling in the manifest. Limits live in [`limits`] and
//! patterns in [`patterns`]: the CRD schema and [`crate::api::validate`] both read them, so a
//! manifest applied to a cluster and a file run with `voipcheck run -f` meet the same rules.

use super::duration::GoDuration;
use super::limits;
use super::patterns;
use super::status::VoipCheckStatus;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A synthetic check of one telephony service: the SIP, HTTP and STUN probes to run against it,
/// and how their results turn into conditions and hotline reports.
// Each printcolumn(...) repeats `type_ = "string"`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "voipcheck.io",
    version = "v1alpha1",
    kind = "VoipCheck",
    namespaced,
    shortname = "vc",
    category = "voipcheck",
    status = "VoipCheckStatus",
    derive = "PartialEq",
    doc = "VoipCheck probes one telephony service (a STARFACE Cloud instance, a Connect SIP trunk, a push server, a portal) and reports whether a failure is an outage the provider's hotline accepts.",
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.target.kind",
        description = "What kind of service is checked"
    ),
    printcolumn(
        name = "Service",
        type_ = "string",
        json_path = ".spec.target.name",
        description = "The service's name",
        priority = 1
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Every probe passes"
    ),
    printcolumn(
        name = "Reportable",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"HotlineReportable\")].status",
        description = "A provider outage the hotline accepts"
    ),
    printcolumn(
        name = "Failing",
        type_ = "integer",
        json_path = ".status.failingLocations",
        description = "How many locations see a provider-side failure"
    ),
    printcolumn(
        name = "SIP",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"SipRegistered\")].reason",
        description = "SIP registration"
    ),
    printcolumn(
        name = "Qualify",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"SipReachable\")].reason",
        description = "SIP OPTIONS qualify",
        priority = 1
    ),
    printcolumn(
        name = "Call",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"CallPossible\")].reason",
        description = "The test call"
    ),
    printcolumn(
        name = "Web",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"WebReachable\")].reason",
        description = "HTTP(S) probes"
    ),
    printcolumn(
        name = "STUN",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"StunReachable\")].reason",
        description = "STUN probes"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.sip) || (has(self.http) && size(self.http) > 0) || has(self.stun)")
    .message("configure at least one probe: sip, http or stun"))]
#[x_kube(validation = Rule::new("duration(self.timeout) < duration(self.interval)")
    .message("timeout must be shorter than interval")
    .field_path(".timeout"))]
#[x_kube(validation = Rule::new("!has(self.sip) || !has(self.sip.options) || duration(self.sip.options.laggedThreshold) + duration(self.sip.options.laggedThreshold) <= duration(self.timeout)")
    .message("timeout must be at least twice sip.options.laggedThreshold: no answer within twice the threshold is UNREACHABLE")
    .field_path(".timeout"))]
#[x_kube(validation = Rule::new("!has(self.sip) || !has(self.sip.errorCodes) || duration(self.sip.errorCodes.window) >= duration(self.interval)")
    .message("sip.errorCodes.window must be at least one interval")
    .field_path(".sip.errorCodes.window"))]
#[x_kube(validation = Rule::new(CALL_FITS_INTERVAL)
    .message("interval must be longer than a test call can take: timeout + sip.call.ringTimeout + sip.call.media.duration + the hang-up (timeout, at most 3s)")
    .field_path(".interval"))]
#[x_kube(validation = Rule::new("!has(self.sip) || !has(self.sip.call) || !has(self.sip.call.media) || self.sip.call.media.advertise != 'StunMapped' || has(self.stun)")
    .message("sip.call.media.advertise StunMapped needs spec.stun.servers (the first one maps the RTP address)")
    .field_path(".sip.call.media.advertise"))]
#[serde(rename_all = "camelCase")]
pub struct VoipCheckSpec {
    /// The service this check watches; it names the service in conditions, metrics and in the
    /// hotline report.
    pub target: Target,

    /// How often the probes run, as a duration like 30s, 2m or 1h (5s to 24h).
    #[serde(default = "defaults::interval")]
    #[x_kube(validation = limits::INTERVAL.rule())]
    pub interval: GoDuration,

    /// How long one probe may take, DNS and TLS included, before it counts as Timeout
    /// (100ms to 5m, shorter than interval).
    #[serde(default = "defaults::timeout")]
    #[x_kube(validation = limits::TIMEOUT.rule())]
    pub timeout: GoDuration,

    /// A TLS certificate the HTTPS probes see (leaf or intermediate) that expires within this
    /// turns WebReachable to TlsCertificateExpiring (still True), as a duration (1h to 8760h;
    /// default 336h, two weeks).
    #[serde(default = "defaults::tls_expiry_warning")]
    #[x_kube(validation = limits::TLS_EXPIRY_WARNING.rule())]
    pub tls_expiry_warning: GoDuration,

    /// Consecutive failed runs before a condition turns False (and before a failure can become
    /// reportable).
    #[serde(default = "defaults::failure_threshold")]
    #[schemars(range(min = limits::FAILURE_THRESHOLD.min, max = limits::FAILURE_THRESHOLD.max))]
    pub failure_threshold: i32,

    /// Consecutive successful runs before a False condition turns True again.
    #[serde(default = "defaults::success_threshold")]
    #[schemars(range(min = limits::SUCCESS_THRESHOLD.min, max = limits::SUCCESS_THRESHOLD.max))]
    pub success_threshold: i32,

    /// SIP probes against one server: REGISTER, OPTIONS qualify and error-code statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip: Option<SipCheck>,

    /// HTTP(S) probes: web UI, customer center, partner portal, push server endpoints. Each entry
    /// is one URL with its expected answer; names must be unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_HTTP_PROBES))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub http: Vec<HttpCheck>,

    /// STUN probes: is a public address mapped, do servers agree on it, does the NAT binding
    /// outlive the phones' keep-alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stun: Option<StunCheck>,

    /// An independent probe (a URL or a STUN server of another provider) that tells a provider
    /// outage from a problem of this location's network: while it fails, failures are reported
    /// as LocalNetworkProblem and are not reportable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlProbe>,

    /// What the hotline asks for in an outage report; copied into status.incident while the
    /// failure is reportable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,

    /// The locations (an operator instance's --location) that run this check, each a DNS
    /// label; empty: every location. Each writes its own entry of status.locations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = limits::MAX_LOCATIONS),
        inner(length(min = 1, max = limits::MAX_PROBE_NAME_LENGTH), pattern(patterns::PROBE_NAME))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub locations: Vec<String>,
}

/// The CEL form of [`crate::probe::sip::CallConfig::bound`] against the interval (the hang-up
/// budget is the smaller of the timeout and 3 s, `HANGUP_BUDGET`).
const CALL_FITS_INTERVAL: &str = "!has(self.sip) || !has(self.sip.call) || \
    duration(self.timeout) + duration(self.sip.call.ringTimeout) \
    + (has(self.sip.call.media) ? duration(self.sip.call.media.duration) : duration('0s')) \
    + (duration(self.timeout) < duration('3s') ? duration(self.timeout) : duration('3s')) \
    < duration(self.interval)";

/// The service a check watches.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Cloud (a STARFACE Cloud instance), ConnectTrunk (a STARFACE Connect SIP trunk),
    /// PushServer (the push notification service), Portal (customer center, partner portal) or
    /// Other. Only the first four are provider services the hotline accepts reports for.
    pub kind: TargetKind,
    /// The service's name as the provider knows it, e.g. the cloud's host name or the trunk's
    /// account.
    #[schemars(length(min = 1, max = limits::MAX_NAME_LENGTH))]
    pub name: String,
}

/// What kind of service a check watches.
#[derive(
    JsonSchema, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum TargetKind {
    Cloud,
    ConnectTrunk,
    PushServer,
    Portal,
    Other,
}

impl TargetKind {
    /// Whether the provider's hotline takes outage reports for this kind of service.
    pub fn is_provider_service(self) -> bool {
        self != TargetKind::Other
    }
}

/// A key of a Secret in the VoipCheck's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = limits::MAX_NAME_LENGTH), pattern(patterns::SECRET_NAME))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = limits::MAX_NAME_LENGTH), pattern(patterns::SECRET_KEY))]
    pub key: String,
}

/// A Secret in the VoipCheck's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = limits::MAX_NAME_LENGTH), pattern(patterns::SECRET_NAME))]
    pub name: String,
}

/// SIP probes against one server.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new("has(self.register) || has(self.options)")
    .message("sip needs register, options or both"))]
#[x_kube(validation = Rule::new("!has(self.call) || has(self.register)")
    .message("sip.call needs sip.register: the caller's account")
    .field_path(".call"))]
#[serde(rename_all = "camelCase")]
pub struct SipCheck {
    /// The SIP server: a sip: or sips: URI such as sip:pbx.example.com;transport=tls or
    /// sips:pbx.example.com:5061. transport is udp, tcp or tls (sips: means TLS). Without a
    /// port the server is found via DNS NAPTR/SRV records (RFC 3263). A user part
    /// (sip:user@host) is used as the OPTIONS target; passwords never go here.
    #[schemars(length(min = 1, max = limits::MAX_URI_LENGTH), pattern(patterns::SIP_URI))]
    #[x_kube(validation = Rule::new("!(self.startsWith('sips:') && self.lowerAscii().contains(';transport=udp'))")
        .message("sips: requires TLS, not transport=udp"))]
    #[x_kube(validation = Rule::new("!self.lowerAscii().contains(';transport=') || self.lowerAscii().matches(';transport=(udp|tcp|tls)(;|$)')")
        .message("transport must be udp, tcp or tls"))]
    pub server: String,

    /// An outbound proxy, as a sip: or sips: URI like server: every request goes to it (found
    /// the same way as server), with a Route header naming it, instead of to server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_URI_LENGTH), pattern(patterns::SIP_URI))]
    pub proxy: Option<String>,

    /// Register an account (digest authentication) and count only a final 200 OK as success.
    // Boxed, as `call`: the two largest parts of a spec, which every cached object and every
    // schedule entry would carry at full size, set or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<Box<SipRegister>>,

    /// Qualify the server with OPTIONS requests as Asterisk's chan_sip does (qualify=yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<SipOptions>,

    /// A test call from the register account: an INVITE to a number that answers (to) or to a
    /// second account the check registers and answers itself (callee: the call proves outgoing
    /// and incoming calls), then RTP both ways and the hang-up. Its final responses count for
    /// errorCodes too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<Box<SipCall>>,

    /// Watch the share of final responses with error codes 404, 480, 500 and 503 (or those
    /// given) over a window (STARFACE Connect: such codes "very often" are reportable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_codes: Option<SipErrorCodes>,

    /// A Secret key holding PEM CA certificates to trust for TLS in addition to the system's,
    /// e.g. for a PBX with a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

/// Register an account.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SipRegister {
    /// The account's user name (the user part of the address of record).
    #[schemars(length(min = 1, max = limits::MAX_USERNAME_LENGTH), pattern(patterns::SIP_USER))]
    pub username: String,
    /// The user name for digest authentication, when it differs from username (trunks often
    /// have one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_USERNAME_LENGTH), pattern(patterns::SIP_USER))]
    pub auth_username: Option<String>,
    /// The domain of the address of record when it differs from the server's host; the
    /// REGISTER's Request-URI then names it (RFC 3261 §10.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_NAME_LENGTH), pattern(patterns::HOST))]
    pub domain: Option<String>,
    /// The Secret key holding the account's password. Credentials are only ever read from
    /// Secrets.
    pub credentials_secret_ref: SecretKeyRef,
    /// Registration interval asked for, in seconds (60 to 86400; 60 is Asterisk's default
    /// minexpiry, RFC 3261 §10.2.8 lets servers refuse shorter ones).
    #[serde(default = "defaults::expires")]
    #[schemars(range(min = limits::EXPIRES.min, max = limits::EXPIRES.max))]
    pub expires: i32,
    /// Remove the registration again (Expires: 0) after each successful probe, so the probe
    /// account does not receive calls.
    #[serde(default = "defaults::unregister")]
    pub unregister: bool,
}

/// A test call. Set exactly one of to and callee.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new("has(self.to) != has(self.callee)")
    .message("set exactly one of to and callee"))]
#[x_kube(validation = Rule::new("!has(self.media) || self.answer == 'Required'")
    .message("media needs answer: Required (RingingIsEnough cancels the call before any audio)")
    .field_path(".media"))]
#[serde(rename_all = "camelCase")]
pub struct SipCall {
    /// The number to call, as a sip: or sips: URI like sip:+4930123456@pbx.example.com: one
    /// that answers by itself (an echo service, an IVR, a DID of your own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_URI_LENGTH), pattern(patterns::SIP_URI))]
    pub to: Option<String>,
    /// A second account at the same server, which the check registers, answers and hangs up
    /// itself: one call then proves outgoing and incoming calls (the hairpin test call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callee: Option<SipCallee>,
    /// Required (default): only an answer (2xx) is success, the media runs after it.
    /// RingingIsEnough: success at the first 180/183, then CANCEL, so nothing is charged.
    #[serde(default)]
    pub answer: CallAnswer,
    /// How long the call may ring before it counts as NotAnswered and is cancelled, as a
    /// duration (1s to 3m; default 20s).
    #[serde(default = "defaults::ring_timeout")]
    #[x_kube(validation = limits::RING_TIMEOUT.rule())]
    pub ring_timeout: GoDuration,
    /// Audio after the answer, measured per direction (loss, jitter, round trip, MOS).
    /// Omitted: signalling only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<CallMedia>,
    /// What a good call is.
    #[serde(default)]
    pub thresholds: CallThresholds,
}

/// The account a hairpin test call rings.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SipCallee {
    /// The callee account's user name (the user part of its address of record).
    #[schemars(length(min = 1, max = limits::MAX_USERNAME_LENGTH), pattern(patterns::SIP_USER))]
    pub username: String,
    /// The user name for digest authentication, when it differs from username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_USERNAME_LENGTH), pattern(patterns::SIP_USER))]
    pub auth_username: Option<String>,
    /// The Secret key holding the callee account's password.
    pub credentials_secret_ref: SecretKeyRef,
}

/// When a test call counts as possible.
#[derive(JsonSchema, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CallAnswer {
    #[default]
    Required,
    RingingIsEnough,
}

/// The audio of a test call.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CallMedia {
    /// How long RTP is sent after the answer, as a duration (1s to 1m; default 5s).
    #[serde(default = "defaults::media_duration")]
    #[x_kube(validation = limits::MEDIA_DURATION.rule())]
    pub duration: GoDuration,
    /// The G.711 codec offered first: PCMA (default, A-law, European networks) or PCMU.
    #[serde(default)]
    pub codec: CallCodec,
    /// The address the SDP offer names for our RTP: Local (default, the socket's own) or
    /// StunMapped, the public address the first of spec.stun.servers maps it to (seed 004:
    /// behind NAT, a client that offers only a private address gets no audio).
    #[serde(default)]
    pub advertise: CallAdvertise,
}

/// The G.711 codec a test call offers first.
#[derive(JsonSchema, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CallCodec {
    #[default]
    #[serde(rename = "PCMA")]
    Pcma,
    #[serde(rename = "PCMU")]
    Pcmu,
}

/// Which address a test call's SDP offer names.
#[derive(JsonSchema, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CallAdvertise {
    #[default]
    Local,
    StunMapped,
}

/// What a good test call is.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CallThresholds {
    /// The lowest acceptable MOS (ITU-T G.107 E-model, 1.0 to 4.5), as a decimal string such as
    /// "3.6" (default): below it MediaQuality is Degraded. A string, as Kubernetes writes
    /// quantities, because the API conventions keep floats out of specs (they do not
    /// round-trip exactly between languages).
    #[serde(default = "defaults::mos")]
    #[schemars(length(min = 1, max = 4), pattern(patterns::MOS))]
    #[x_kube(validation = Rule::new("double(self) >= 1.0 && double(self) <= 4.5")
        .message("must be a MOS between 1.0 and 4.5"))]
    pub mos: String,
    /// A post-dial delay (INVITE to the first ringing) above this leaves CallPossible True
    /// with reason SlowPostDialDelay, a ticket rather than an outage (100ms to 1m; default 5s).
    #[serde(default = "defaults::post_dial_delay")]
    #[x_kube(validation = limits::POST_DIAL_DELAY.rule())]
    pub post_dial_delay: GoDuration,
}

impl Default for CallThresholds {
    fn default() -> Self {
        CallThresholds {
            mos: defaults::mos(),
            post_dial_delay: defaults::post_dial_delay(),
        }
    }
}

/// OPTIONS qualify settings.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SipOptions {
    /// chan_sip's maxms: an answer slower than this is LAGGED, no answer within twice this is
    /// UNREACHABLE (100ms to 30s; the check's timeout must be at least twice this).
    #[serde(default = "defaults::lagged_threshold")]
    #[x_kube(validation = limits::LAGGED_THRESHOLD.rule())]
    pub lagged_threshold: GoDuration,
}

/// Error-code statistics over the final responses of the SIP probes.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SipErrorCodes {
    /// The final response codes counted as errors.
    #[serde(default = "defaults::error_codes")]
    #[schemars(
        length(min = 1, max = limits::MAX_STATUS_CODES),
        inner(range(min = limits::SIP_ERROR_CODE.min, max = limits::SIP_ERROR_CODE.max))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub codes: Vec<i32>,
    /// The time span the share is computed over, as a duration (1m to 24h, at least one
    /// interval).
    #[serde(default = "defaults::error_window")]
    #[x_kube(validation = limits::ERROR_WINDOW.rule())]
    pub window: GoDuration,
    /// The condition SipErrorRate turns False when more than this percentage of the window's
    /// final responses carry one of the codes (1 to 100).
    #[serde(default = "defaults::threshold_percent")]
    #[schemars(range(min = limits::PERCENT.min, max = limits::PERCENT.max))]
    pub threshold_percent: i32,
    /// Final responses the window must hold before the share counts, so a single error right
    /// after a start does not count as 100%.
    #[serde(default = "defaults::min_responses")]
    #[schemars(range(min = limits::MIN_RESPONSES.min, max = limits::MIN_RESPONSES.max))]
    pub min_responses: i32,
}

/// One HTTP(S) probe.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.basicAuthSecretRef) || self.url.lowerAscii().startsWith('https://') || (has(self.allowInsecureBasicAuth) && self.allowInsecureBasicAuth)")
    .message("basicAuthSecretRef over plain http:// sends the password readable on the network: use https:// or set allowInsecureBasicAuth: true")
    .field_path(".basicAuthSecretRef"))]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    /// Name of this probe, unique within the check (lower-case letters, digits and '-'); it is
    /// the probe label of its metrics.
    #[schemars(length(min = 1, max = limits::MAX_PROBE_NAME_LENGTH), pattern(patterns::PROBE_NAME))]
    pub name: String,
    /// The http:// or https:// URL to GET. It must not contain user:password: no credentials
    /// outside Secrets.
    #[schemars(length(min = 1, max = limits::MAX_URI_LENGTH), pattern(patterns::HTTP_URL))]
    pub url: String,
    /// Status codes that count as success; empty means any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = limits::MAX_STATUS_CODES),
        inner(range(min = limits::HTTP_STATUS.min, max = limits::HTTP_STATUS.max))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub expect_status: Vec<i32>,
    /// Text the response body must contain (the first MiB is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_BODY_MATCH_LENGTH))]
    pub body_contains: Option<String>,
    /// A regular expression (Rust regex syntax, RE2-like) the response body must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_BODY_MATCH_LENGTH))]
    pub body_regex: Option<String>,
    /// Follow redirects (up to 10); when false a 3xx is the final answer.
    #[serde(default = "defaults::follow_redirects")]
    pub follow_redirects: bool,
    /// A Secret key holding PEM CA certificates to trust in addition to the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// A Secret of type kubernetes.io/basic-auth (keys username and password) to log in with
    /// HTTP Basic authentication, e.g. to a portal behind a login. Only over https:// unless
    /// allowInsecureBasicAuth is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth_secret_ref: Option<SecretRef>,
    /// Send basicAuthSecretRef's credentials over plain http:// too, where anyone on the path
    /// can read them (false: such a check is refused as InvalidSpec).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure_basic_auth: bool,
}

/// STUN probes.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StunCheck {
    /// STUN servers as host or host:port ([IPv6]:port for IPv6 literals; the port defaults to
    /// 3478), or stuns:host[:port] for STUN over TLS (port 5349 by default). With two or more,
    /// differing public addresses are reported as AddressMismatch, and each must answer unless
    /// require is Any.
    #[schemars(
        length(min = 1, max = limits::MAX_STUN_SERVERS),
        inner(length(min = 1, max = limits::MAX_NAME_LENGTH), pattern(patterns::STUN_SERVER))
    )]
    pub servers: Vec<String>,
    /// Transport of the Binding requests: UDP (what phones use), TCP, or TLS (over TCP, RFC
    /// 8489 §6.2.2; the same as writing every server as stuns:).
    #[serde(default)]
    pub transport: StunTransport,
    /// All (default): every server must answer; one that does not makes StunReachable False,
    /// naming it. Any: the servers are alternatives and one answer is enough.
    #[serde(default)]
    pub require: StunRequire,
    /// A Secret key holding PEM CA certificates to trust for STUN over TLS in addition to the
    /// system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Measure whether the NAT binding outlives the phones' keep-alive interval
    /// (RFC 5780 §4.6); always over UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_binding: Option<NatBinding>,
}

/// Transport of STUN Binding requests.
#[derive(JsonSchema, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StunTransport {
    #[default]
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "TLS")]
    Tls,
}

/// How many of several STUN servers must answer.
#[derive(JsonSchema, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StunRequire {
    #[default]
    All,
    Any,
}

/// NAT binding lifetime measurement.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NatBinding {
    /// The phones' keep-alive interval: the binding must still exist after this much idle time
    /// (1s to 2h; STARFACE documents 60 seconds in one place and 60 minutes in another, so set
    /// what the phones use). A run of the check takes at least this long.
    #[serde(default = "defaults::keepalive_interval")]
    #[x_kube(validation = limits::KEEPALIVE_INTERVAL.rule())]
    pub keepalive_interval: GoDuration,
}

/// The control probe: exactly one of url and stunServer.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new("has(self.url) != has(self.stunServer)")
    .message("set exactly one of url and stunServer"))]
#[serde(rename_all = "camelCase")]
pub struct ControlProbe {
    /// An http:// or https:// URL of an independent service. Any HTTP response, whatever its
    /// status, proves that this location reaches the internet; only DNS, connection, TLS and
    /// timeout failures make the control fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_URI_LENGTH), pattern(patterns::HTTP_URL))]
    pub url: Option<String>,
    /// An independent STUN server as host or host:port. Any Binding answer proves that this
    /// location reaches the internet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_NAME_LENGTH), pattern(patterns::HOST_PORT))]
    pub stun_server: Option<String>,
}

/// What the hotline asks for in an outage report.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The cloud instance's name, for a Cloud target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::MAX_REPORT_FIELD_LENGTH))]
    pub cloud_name: Option<String>,
    /// The server licence key of the affected system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::MAX_REPORT_FIELD_LENGTH))]
    pub server_license: Option<String>,
    /// Who the hotline calls back (name, phone number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::MAX_REPORT_FIELD_LENGTH))]
    pub contact: Option<String>,
    /// From how many locations a provider-side failure must be seen (while no location reaches
    /// the service) before it is reportable (1 to 16; default 1). Seed 002 asks "is it
    /// reachable from another location?": with several locations, a failure seen from some
    /// while another one succeeds is LocalNetworkProblem whatever this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = limits::MIN_LOCATIONS.min, max = limits::MIN_LOCATIONS.max))]
    pub min_locations: Option<i32>,
}

/// One Secret key a check reads, and the spec field that references it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKeyUse<'a> {
    /// The referencing field, e.g. `spec.sip.register.credentialsSecretRef`.
    pub field: String,
    pub name: &'a str,
    pub key: &'a str,
}

impl VoipCheckSpec {
    /// Every Secret key the probes need, in field order: what the controller fetches (and
    /// watches), and what it names in a `CredentialsMissing` condition when one is absent.
    pub fn secret_keys(&self) -> Vec<SecretKeyUse<'_>> {
        fn key_ref<'a>(field: String, r: &'a SecretKeyRef) -> SecretKeyUse<'a> {
            SecretKeyUse {
                field,
                name: &r.name,
                key: &r.key,
            }
        }
        let mut uses = Vec::new();
        if let Some(sip) = &self.sip {
            if let Some(register) = &sip.register {
                let field = "spec.sip.register.credentialsSecretRef".to_owned();
                uses.push(key_ref(field, &register.credentials_secret_ref));
            }
            if let Some(callee) = sip.call.as_ref().and_then(|c| c.callee.as_ref()) {
                let field = "spec.sip.call.callee.credentialsSecretRef".to_owned();
                uses.push(key_ref(field, &callee.credentials_secret_ref));
            }
            if let Some(ca) = &sip.ca_secret_ref {
                uses.push(key_ref("spec.sip.caSecretRef".to_owned(), ca));
            }
        }
        for (i, http) in self.http.iter().enumerate() {
            if let Some(ca) = &http.ca_secret_ref {
                uses.push(key_ref(format!("spec.http[{i}].caSecretRef"), ca));
            }
            if let Some(auth) = &http.basic_auth_secret_ref {
                for key in BASIC_AUTH_KEYS {
                    uses.push(SecretKeyUse {
                        field: format!("spec.http[{i}].basicAuthSecretRef"),
                        name: &auth.name,
                        key,
                    });
                }
            }
        }
        if let Some(ca) = self.stun.as_ref().and_then(|s| s.ca_secret_ref.as_ref()) {
            uses.push(key_ref("spec.stun.caSecretRef".to_owned(), ca));
        }
        uses
    }
}

/// The keys of a Secret of type `kubernetes.io/basic-auth`.
pub const BASIC_AUTH_KEYS: [&str; 2] = ["username", "password"];

/// Default values, as the schema's `default`s and serde's.
mod defaults {
    use super::GoDuration;

    pub fn interval() -> GoDuration {
        GoDuration::from_secs(30)
    }
    pub fn timeout() -> GoDuration {
        GoDuration::from_secs(10)
    }
    pub fn failure_threshold() -> i32 {
        3
    }
    pub fn success_threshold() -> i32 {
        1
    }
    /// As the SIP probe's default (and Asterisk's `defaultexpiry` order of magnitude).
    pub fn expires() -> i32 {
        300
    }
    pub fn unregister() -> bool {
        true
    }
    /// chan_sip's default `maxms` (2000 ms).
    pub fn lagged_threshold() -> GoDuration {
        GoDuration::from_secs(2)
    }
    /// The codes seed 002 names for STARFACE Connect.
    pub fn error_codes() -> Vec<i32> {
        vec![404, 480, 500, 503]
    }
    pub fn error_window() -> GoDuration {
        GoDuration::from_secs(600)
    }
    pub fn threshold_percent() -> i32 {
        20
    }
    pub fn min_responses() -> i32 {
        10
    }
    pub fn follow_redirects() -> bool {
        true
    }
    /// Seed 000: phones send a keep-alive every 60 seconds.
    pub fn keepalive_interval() -> GoDuration {
        GoDuration::from_secs(60)
    }
    /// As long as a caller lets a phone ring before giving up.
    pub fn ring_timeout() -> GoDuration {
        GoDuration::from_secs(20)
    }
    /// Enough 20 ms packets (250) for loss and jitter figures, short enough to cost little.
    pub fn media_duration() -> GoDuration {
        GoDuration::from_secs(5)
    }
    /// `Mos::DEFAULT_THRESHOLD`: below it some users are dissatisfied (G.107 Annex B).
    pub fn mos() -> String {
        "3.6".to_owned()
    }
    /// ITU-T E.721 puts the mean post-dial delay of a national call at 3 to 5 s.
    pub fn post_dial_delay() -> GoDuration {
        GoDuration::from_secs(5)
    }
    /// Two weeks leave time to renew by hand, and match the common blackbox_exporter alert.
    pub fn tls_expiry_warning() -> GoDuration {
        GoDuration::from_secs(14 * 24 * 3600)
    }
}
