//! Checks a spec completely, without a cluster.
//!
//! The API server enforces the CRD schema (patterns, ranges, CEL rules) before an object is
//! stored, but a file read by `voipcheck run -f` meets no API server, and some things no schema
//! can say (does the URL parse, does the regex compile, is the port in range). So [`validate`]
//! checks everything: the schema's rules again, from the same [`limits`] and [`patterns`], and
//! what only code can. The controller turns an error into `Ready=False` reason `InvalidSpec`.
//!
//! Messages name the field and what is wrong, never the value: a value may be a password pasted
//! into the wrong field.

use super::duration::{GoDuration, ParseDurationError};
use super::limits::{self, DurationRange, IntRange};
use super::patterns::compiled as pattern;
use super::spec::{
    CallAdvertise, CallAnswer, ControlProbe, HttpCheck, SecretKeyRef, SipCall, SipCheck, StunCheck,
    VoipCheckSpec,
};
use crate::probe::media::Mos;
use crate::probe::{ConfigError, http, sip, stun};
use regex::Regex;
use std::collections::HashSet;
use std::fmt;
use std::net::Ipv6Addr;
use std::time::Duration;
use url::Url;

/// One problem: `field` is the path (`spec.sip.server`), `reason` says what is wrong.
pub type SpecError = ConfigError;

/// Every problem found in a spec, in field order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidSpec(pub Vec<SpecError>);

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Checks `spec`; `Err` lists every problem, not just the first.
pub fn validate(spec: &VoipCheckSpec) -> Result<(), InvalidSpec> {
    let mut c = Checker::default();
    c.length(
        "spec.target.name",
        &spec.target.name,
        limits::MAX_NAME_LENGTH,
    );
    c.duration("spec.interval", spec.interval, limits::INTERVAL);
    c.duration("spec.timeout", spec.timeout, limits::TIMEOUT);
    c.duration(
        "spec.tlsExpiryWarning",
        spec.tls_expiry_warning,
        limits::TLS_EXPIRY_WARNING,
    );
    if spec.timeout >= spec.interval {
        c.fail("spec.timeout", "must be shorter than interval");
    }
    c.int(
        "spec.failureThreshold",
        spec.failure_threshold,
        limits::FAILURE_THRESHOLD,
    );
    c.int(
        "spec.successThreshold",
        spec.success_threshold,
        limits::SUCCESS_THRESHOLD,
    );
    if spec.sip.is_none() && spec.http.is_empty() && spec.stun.is_none() {
        c.fail("spec", "configure at least one probe: sip, http or stun");
    }
    if let Some(sip) = &spec.sip {
        c.sip(sip, spec);
    }
    c.http(&spec.http);
    if let Some(stun) = &spec.stun {
        c.stun(stun);
    }
    if let Some(control) = &spec.control {
        c.control(control);
    }
    if let Some(report) = &spec.report {
        let fields = [
            ("spec.report.cloudName", &report.cloud_name),
            ("spec.report.serverLicense", &report.server_license),
            ("spec.report.contact", &report.contact),
        ];
        for (field, value) in fields {
            if let Some(value) = value {
                c.max_length(field, value, limits::MAX_REPORT_FIELD_LENGTH);
            }
        }
        if let Some(min) = report.min_locations {
            c.int("spec.report.minLocations", min, limits::MIN_LOCATIONS);
        }
    }
    c.locations(&spec.locations);
    c.finish()
}

/// Parses an HTTP probe's (or the control probe's) URL: `http`/`https` with a host and without
/// credentials.
pub fn parse_http_url(text: &str) -> Result<Url, String> {
    const SHAPE: &str = "must be an http:// or https:// URL without user:password";
    if !pattern::HTTP_URL.is_match(text) {
        return Err(SHAPE.into());
    }
    let url = Url::parse(text).map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(SHAPE.into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SHAPE.into());
    }
    Ok(url)
}

/// A duration written as text (a command-line flag): the CRD's syntax, within the range its
/// spec field has.
pub fn parse_duration(text: &str, range: DurationRange) -> Result<Duration, String> {
    let value: GoDuration = text
        .parse()
        .map_err(|e: ParseDurationError| e.to_string())?;
    if range.contains(value) {
        Ok(value.get())
    } else {
        Err(range.requirement())
    }
}

/// An integer written as text, within the range its spec field has.
pub fn parse_int(text: &str, range: IntRange) -> Result<i32, String> {
    match text.trim().parse::<i32>() {
        Ok(value) if range.contains(value) => Ok(value),
        _ => Err(format!("{} (a whole number)", range.requirement())),
    }
}

/// A MOS threshold written as a decimal (`thresholds.mos`, `--min-mos`): 1.0 to 4.5 with at
/// most two decimals.
pub fn parse_mos(text: &str) -> Result<Mos, String> {
    const SHAPE: &str = "must be a MOS between 1.0 and 4.5 with at most two decimals, e.g. \"3.6\"";
    if !pattern::MOS.is_match(text) {
        return Err(SHAPE.into());
    }
    let value: f64 = text.parse().map_err(|_| SHAPE.to_owned())?;
    let mos = Mos::from_f64(value);
    let hundredths = (mos.as_f64() * 100.0).round() as i32;
    match limits::MOS_HUNDREDTHS.contains(hundredths) && (mos.as_f64() - value).abs() < 0.005 {
        true => Ok(mos),
        false => Err(SHAPE.into()),
    }
}

/// The longest a test call takes, as [`sip::CallConfig::bound`] computes it from the spec's
/// durations: the set-up (`timeout`), the ringing, the media and the hang-up.
pub fn call_bound(timeout: Duration, call: &SipCall) -> Duration {
    let media = call
        .media
        .as_ref()
        .map_or(Duration::ZERO, |m| m.duration.get());
    timeout + call.ring_timeout.get() + media + sip::HANGUP_BUDGET.min(timeout)
}

/// A SIP user name (`spec.sip.register.username`).
pub fn check_sip_user(text: &str) -> Result<(), String> {
    if text.is_empty() || text.len() > limits::MAX_USERNAME_LENGTH as usize {
        let max = limits::MAX_USERNAME_LENGTH;
        return Err(format!("must be 1 to {max} characters"));
    }
    if !pattern::SIP_USER.is_match(text) {
        return Err("must not contain whitespace, '@', ':' or ';'".into());
    }
    Ok(())
}

/// Compiles an HTTP probe's `bodyRegex`, with a bound on the compiled size (the pattern comes
/// from the resource author, the operator's memory is shared by all checks).
pub fn compile_body_regex(text: &str) -> Result<Regex, String> {
    const MAX_COMPILED_BYTES: usize = 1 << 20;
    regex::RegexBuilder::new(text)
        .size_limit(MAX_COMPILED_BYTES)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => "is too complex (compiles to over 1 MiB)".into(),
            other => format!("is not a valid regular expression: {other}"),
        })
}

/// Collects errors while walking the spec.
#[derive(Default)]
struct Checker {
    errors: Vec<SpecError>,
}

impl Checker {
    fn finish(self) -> Result<(), InvalidSpec> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(InvalidSpec(self.errors))
        }
    }

    fn fail(&mut self, field: impl Into<String>, reason: impl fmt::Display) {
        self.errors.push(SpecError::new(field, reason));
    }

    fn duration(&mut self, field: &str, value: GoDuration, range: DurationRange) {
        if !range.contains(value) {
            self.fail(field, range.requirement());
        }
    }

    fn int(&mut self, field: &str, value: i32, range: IntRange) {
        if !range.contains(value) {
            self.fail(field, range.requirement());
        }
    }

    /// Non-empty and at most `max` bytes.
    fn length(&mut self, field: &str, value: &str, max: u32) {
        if value.is_empty() {
            self.fail(field, "must not be empty");
        } else {
            self.max_length(field, value, max);
        }
    }

    fn max_length(&mut self, field: &str, value: &str, max: u32) {
        if value.len() > max as usize {
            self.fail(field, format!("must be at most {max} characters"));
        }
    }

    /// Non-empty, at most `max` bytes, matching `pattern`; `expected` says what that means.
    fn shaped(&mut self, field: &str, value: &str, max: u32, pattern: &Regex, expected: &str) {
        let before = self.errors.len();
        self.length(field, value, max);
        if self.errors.len() == before && !pattern.is_match(value) {
            self.fail(field, expected);
        }
    }

    fn secret_name(&mut self, field: &str, name: &str) {
        self.shaped(
            field,
            name,
            limits::MAX_NAME_LENGTH,
            &pattern::SECRET_NAME,
            "must be a Secret name (lower-case letters, digits, '-' and '.')",
        );
    }

    fn secret_ref(&mut self, field: &str, secret: &SecretKeyRef) {
        self.secret_name(&format!("{field}.name"), &secret.name);
        self.shaped(
            &format!("{field}.key"),
            &secret.key,
            limits::MAX_NAME_LENGTH,
            &pattern::SECRET_KEY,
            "must be a Secret key (letters, digits, '-', '_' and '.')",
        );
    }

    /// Distinct values, each within `range`.
    fn codes(&mut self, field: &str, codes: &[i32], range: IntRange) {
        if codes.len() > limits::MAX_STATUS_CODES as usize {
            let max = limits::MAX_STATUS_CODES;
            self.fail(field, format!("must list at most {max} codes"));
        }
        let mut seen = HashSet::new();
        for (i, &code) in codes.iter().enumerate() {
            self.int(&format!("{field}[{i}]"), code, range);
            if !seen.insert(code) {
                self.fail(format!("{field}[{i}]"), "duplicate code");
            }
        }
    }

    fn sip(&mut self, sip: &SipCheck, spec: &VoipCheckSpec) {
        if let Err(reason) = check_sip_uri(&sip.server) {
            self.fail("spec.sip.server", reason);
        }
        if let Some(proxy) = &sip.proxy
            && let Err(reason) = check_sip_uri(proxy)
        {
            self.fail("spec.sip.proxy", reason);
        }
        if sip.register.is_none() && sip.options.is_none() {
            self.fail("spec.sip", "needs register, options or both");
        }
        if let Some(register) = &sip.register {
            if let Err(reason) = check_sip_user(&register.username) {
                self.fail("spec.sip.register.username", reason);
            }
            if let Some(auth_username) = &register.auth_username
                && let Err(reason) = check_sip_user(auth_username)
            {
                self.fail("spec.sip.register.authUsername", reason);
            }
            if let Some(domain) = &register.domain {
                self.shaped(
                    "spec.sip.register.domain",
                    domain,
                    limits::MAX_NAME_LENGTH,
                    &pattern::HOST,
                    "must be a host name",
                );
            }
            self.secret_ref(
                "spec.sip.register.credentialsSecretRef",
                &register.credentials_secret_ref,
            );
            self.int(
                "spec.sip.register.expires",
                register.expires,
                limits::EXPIRES,
            );
        }
        if let Some(options) = &sip.options {
            let field = "spec.sip.options.laggedThreshold";
            self.duration(field, options.lagged_threshold, limits::LAGGED_THRESHOLD);
            if options.lagged_threshold.get() * 2 > spec.timeout.get() {
                self.fail(
                    "spec.timeout",
                    "must be at least twice sip.options.laggedThreshold: \
                     no answer within twice the threshold is UNREACHABLE",
                );
            }
        }
        if let Some(error_codes) = &sip.error_codes {
            if error_codes.codes.is_empty() {
                self.fail("spec.sip.errorCodes.codes", "must list at least one code");
            }
            self.codes(
                "spec.sip.errorCodes.codes",
                &error_codes.codes,
                limits::SIP_ERROR_CODE,
            );
            let field = "spec.sip.errorCodes.window";
            self.duration(field, error_codes.window, limits::ERROR_WINDOW);
            if error_codes.window < spec.interval {
                self.fail(field, "must be at least one interval");
            }
            self.int(
                "spec.sip.errorCodes.thresholdPercent",
                error_codes.threshold_percent,
                limits::PERCENT,
            );
            self.int(
                "spec.sip.errorCodes.minResponses",
                error_codes.min_responses,
                limits::MIN_RESPONSES,
            );
        }
        if let Some(ca) = &sip.ca_secret_ref {
            self.secret_ref("spec.sip.caSecretRef", ca);
        }
        if let Some(call) = &sip.call {
            if sip.register.is_none() {
                self.fail("spec.sip.call", "needs sip.register: the caller's account");
            }
            self.call(call, spec);
        }
    }

    fn call(&mut self, call: &SipCall, spec: &VoipCheckSpec) {
        match (&call.to, &call.callee) {
            (Some(to), None) => {
                if let Err(reason) = check_sip_uri(to) {
                    self.fail("spec.sip.call.to", reason);
                }
            }
            (None, Some(callee)) => {
                if let Err(reason) = check_sip_user(&callee.username) {
                    self.fail("spec.sip.call.callee.username", reason);
                }
                if let Some(auth_username) = &callee.auth_username
                    && let Err(reason) = check_sip_user(auth_username)
                {
                    self.fail("spec.sip.call.callee.authUsername", reason);
                }
                self.secret_ref(
                    "spec.sip.call.callee.credentialsSecretRef",
                    &callee.credentials_secret_ref,
                );
            }
            _ => self.fail("spec.sip.call", "set exactly one of to and callee"),
        }
        self.duration(
            "spec.sip.call.ringTimeout",
            call.ring_timeout,
            limits::RING_TIMEOUT,
        );
        if let Some(media) = &call.media {
            self.duration(
                "spec.sip.call.media.duration",
                media.duration,
                limits::MEDIA_DURATION,
            );
            if call.answer != CallAnswer::Required {
                self.fail(
                    "spec.sip.call.media",
                    "needs answer: Required (RingingIsEnough cancels the call before any audio)",
                );
            }
            if media.advertise == CallAdvertise::StunMapped && spec.stun.is_none() {
                self.fail(
                    "spec.sip.call.media.advertise",
                    "StunMapped needs spec.stun.servers (the first one maps the RTP address)",
                );
            }
        }
        if let Err(reason) = parse_mos(&call.thresholds.mos) {
            self.fail("spec.sip.call.thresholds.mos", reason);
        }
        self.duration(
            "spec.sip.call.thresholds.postDialDelay",
            call.thresholds.post_dial_delay,
            limits::POST_DIAL_DELAY,
        );
        if call_bound(spec.timeout.get(), call) >= spec.interval.get() {
            self.fail(
                "spec.interval",
                "must be longer than a test call can take: timeout + sip.call.ringTimeout + \
                 sip.call.media.duration + the hang-up (timeout, at most 3s)",
            );
        }
    }

    fn locations(&mut self, locations: &[String]) {
        if locations.len() > limits::MAX_LOCATIONS as usize {
            let max = limits::MAX_LOCATIONS;
            self.fail(
                "spec.locations",
                format!("must list at most {max} locations"),
            );
        }
        let mut seen = HashSet::new();
        for (i, location) in locations.iter().enumerate() {
            let field = format!("spec.locations[{i}]");
            self.shaped(
                &field,
                location,
                limits::MAX_PROBE_NAME_LENGTH,
                &pattern::PROBE_NAME,
                "must be lower-case letters, digits and '-', starting and ending with a letter or digit",
            );
            if !seen.insert(location.as_str()) {
                self.fail(field, "duplicate location");
            }
        }
    }

    fn http(&mut self, probes: &[HttpCheck]) {
        if probes.len() > limits::MAX_HTTP_PROBES as usize {
            let max = limits::MAX_HTTP_PROBES;
            self.fail("spec.http", format!("must list at most {max} probes"));
        }
        let mut names = HashSet::new();
        for (i, probe) in probes.iter().enumerate() {
            let field = |name: &str| format!("spec.http[{i}].{name}");
            self.shaped(
                &field("name"),
                &probe.name,
                limits::MAX_PROBE_NAME_LENGTH,
                &pattern::PROBE_NAME,
                "must be lower-case letters, digits and '-', starting and ending with a letter or digit",
            );
            if !names.insert(probe.name.as_str()) {
                self.fail(field("name"), "duplicate probe name");
            }
            self.max_length(&field("url"), &probe.url, limits::MAX_URI_LENGTH);
            if let Err(reason) = parse_http_url(&probe.url) {
                self.fail(field("url"), reason);
            }
            self.codes(
                &field("expectStatus"),
                &probe.expect_status,
                limits::HTTP_STATUS,
            );
            if let Some(text) = &probe.body_contains {
                self.length(&field("bodyContains"), text, limits::MAX_BODY_MATCH_LENGTH);
            }
            if let Some(text) = &probe.body_regex {
                self.length(&field("bodyRegex"), text, limits::MAX_BODY_MATCH_LENGTH);
                if let Err(reason) = compile_body_regex(text) {
                    self.fail(field("bodyRegex"), reason);
                }
            }
            if let Some(ca) = &probe.ca_secret_ref {
                self.secret_ref(&field("caSecretRef"), ca);
            }
            if let Some(auth) = &probe.basic_auth_secret_ref {
                self.secret_name(&field("basicAuthSecretRef.name"), &auth.name);
                let plain = parse_http_url(&probe.url).is_ok_and(|url| url.scheme() == "http");
                if plain && !probe.allow_insecure_basic_auth {
                    self.fail(field("basicAuthSecretRef"), http::INSECURE_BASIC_AUTH);
                }
            }
        }
    }

    fn stun(&mut self, stun: &StunCheck) {
        let max = limits::MAX_STUN_SERVERS;
        if stun.servers.is_empty() || stun.servers.len() > max as usize {
            self.fail("spec.stun.servers", format!("must list 1 to {max} servers"));
        }
        for (i, server) in stun.servers.iter().enumerate() {
            if let Err(reason) = check_stun_server(server) {
                self.fail(format!("spec.stun.servers[{i}]"), reason);
            }
        }
        if let Some(ca) = &stun.ca_secret_ref {
            self.secret_ref("spec.stun.caSecretRef", ca);
        }
        if let Some(nat) = &stun.nat_binding {
            self.duration(
                "spec.stun.natBinding.keepaliveInterval",
                nat.keepalive_interval,
                limits::KEEPALIVE_INTERVAL,
            );
        }
    }

    fn control(&mut self, control: &ControlProbe) {
        match (&control.url, &control.stun_server) {
            (Some(url), None) => {
                if let Err(reason) = parse_http_url(url) {
                    self.fail("spec.control.url", reason);
                }
            }
            (None, Some(server)) => {
                if let Err(reason) = check_host_port(server) {
                    self.fail("spec.control.stunServer", reason);
                }
            }
            _ => self.fail("spec.control", "set exactly one of url and stunServer"),
        }
    }
}

/// `host`, `host:port` or `[ipv6]:port` with a port from 1 to 65535.
pub fn check_host_port(text: &str) -> Result<(), String> {
    const SHAPE: &str = "must be host or host:port ([IPv6]:port for IPv6)";
    if text.len() > limits::MAX_NAME_LENGTH as usize || !pattern::HOST_PORT.is_match(text) {
        return Err(SHAPE.into());
    }
    check_authority(text)
}

/// A STUN server entry: `host[:port]` after an optional `stun:`/`stuns:` scheme.
pub fn check_stun_server(text: &str) -> Result<(), String> {
    const SHAPE: &str =
        "must be host, host:port ([IPv6]:port for IPv6) or stuns:host[:port] for TLS";
    if text.len() > limits::MAX_NAME_LENGTH as usize || !pattern::STUN_SERVER.is_match(text) {
        return Err(SHAPE.into());
    }
    check_authority(stun::split_scheme(text).1)
}

/// The parts of `host[:port]` the pattern cannot check: the port's range and the IPv6 literal.
fn check_authority(authority: &str) -> Result<(), String> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<Ipv6Addr>()
            .map_err(|_| "has an invalid IPv6 address".to_owned())?;
    }
    match port.map(str::parse::<u16>) {
        None | Some(Ok(1..)) => Ok(()),
        Some(_) => Err("has a port outside 1 to 65535".into()),
    }
}

/// A `sip:`/`sips:` URI the probes can use: the pattern, then port, IPv6 literal and transport.
pub fn check_sip_uri(text: &str) -> Result<(), String> {
    const SHAPE: &str = "must be a sip: or sips: URI like sip:pbx.example.com;transport=tls \
                         (no password, no headers)";
    if text.len() > limits::MAX_URI_LENGTH as usize || !pattern::SIP_URI.is_match(text) {
        return Err(SHAPE.into());
    }
    let (scheme, rest) = text.split_once(':').expect("the pattern requires a scheme");
    let mut parts = rest.split(';');
    let address = parts.next().unwrap_or_default();
    let authority = address.rsplit_once('@').map_or(address, |(_, host)| host);
    check_authority(authority)?;
    for param in parts {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if !name.eq_ignore_ascii_case("transport") {
            continue;
        }
        match value.to_ascii_lowercase().as_str() {
            "udp" if scheme == "sips" => return Err("sips: requires TLS, not transport=udp".into()),
            "udp" | "tcp" | "tls" => {}
            _ => return Err("transport must be udp, tcp or tls".into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// No text makes a value parser panic, whatever it holds (the same parsers read the
        /// CRD's fields, the file's and the command line's).
        #[test]
        fn value_parsers_never_panic(text in "\\PC{0,80}|(sips?:|https?://)[\\[\\]a-z0-9.:@;=%/]{0,40}") {
            let _ = check_sip_uri(&text);
            let _ = check_host_port(&text);
            let _ = check_stun_server(&text);
            let _ = check_sip_user(&text);
            let _ = parse_http_url(&text);
            let _ = parse_int(&text, limits::EXPIRES);
            let _ = parse_duration(&text, limits::TIMEOUT);
            let _ = compile_body_regex(&text);
            let _ = parse_mos(&text);
        }
    }
    use crate::api::spec::{CallCodec, NatBinding, SecretRef, SipErrorCodes};

    /// A spec using every probe, valid as it stands.
    fn full() -> VoipCheckSpec {
        serde_json::from_value(serde_json::json!({
            "target": { "kind": "Cloud", "name": "maxmuster.starface-cloud.com" },
            "interval": "1m",
            "sip": {
                "server": "sip:maxmuster.starface-cloud.com;transport=tls",
                "register": {
                    "username": "monitor",
                    "credentialsSecretRef": { "name": "maxmuster-sip", "key": "password" }
                },
                "options": {},
                "errorCodes": {},
                "call": {
                    "callee": {
                        "username": "monitor-b",
                        "credentialsSecretRef": { "name": "maxmuster-sip-b", "key": "password" }
                    },
                    "media": { "advertise": "StunMapped" }
                },
                "caSecretRef": { "name": "pbx-ca", "key": "ca.crt" }
            },
            "http": [
                { "name": "web-ui", "url": "https://maxmuster.starface-cloud.com/",
                  "expectStatus": [200], "bodyContains": "STARFACE", "bodyRegex": "STAR(FACE)?" }
            ],
            "stun": { "servers": ["stun.sipgate.net:3478", "[2001:db8::1]", "stuns:stun.example.org"], "natBinding": {} },
            "control": { "url": "https://example.org/" },
            "report": { "serverLicense": "ABC-123", "contact": "NOC +49 721 000" }
        }))
        .expect("the base spec deserializes")
    }

    #[test]
    fn the_full_spec_is_valid_and_defaults_apply() {
        let spec = full();
        assert_eq!(validate(&spec), Ok(()));
        assert_eq!(spec.timeout, GoDuration::from_secs(10));
        let minimal: VoipCheckSpec = serde_json::from_value(serde_json::json!({
            "target": { "kind": "Other", "name": "x" }, "stun": { "servers": ["stun.example.org"] }
        }))
        .unwrap();
        assert_eq!(minimal.interval, GoDuration::from_secs(30));
        assert_eq!((spec.failure_threshold, spec.success_threshold), (3, 1));
        let sip = spec.sip.unwrap();
        assert_eq!(sip.register.as_ref().unwrap().expires, 300);
        assert!(sip.register.unwrap().unregister);
        assert_eq!(
            sip.options.unwrap().lagged_threshold,
            GoDuration::from_secs(2)
        );
        assert_eq!(sip.error_codes.unwrap().codes, vec![404, 480, 500, 503]);
        assert!(spec.http[0].follow_redirects);
    }

    #[test]
    fn a_test_call_defaults_to_an_answered_call_with_pcma_and_the_usual_thresholds() {
        let spec = full();
        let call = spec.sip.unwrap().call.unwrap();
        assert_eq!(call.answer, CallAnswer::Required);
        assert_eq!(call.ring_timeout, GoDuration::from_secs(20));
        let media = call.media.unwrap();
        assert_eq!(media.duration, GoDuration::from_secs(5));
        assert_eq!(media.codec, CallCodec::Pcma);
        assert_eq!(call.thresholds.mos, "3.6");
        assert_eq!(parse_mos(&call.thresholds.mos), Ok(Mos::DEFAULT_THRESHOLD));
        assert_eq!(call.thresholds.post_dial_delay, GoDuration::from_secs(5));
    }

    #[test]
    fn mos_thresholds_are_decimals_on_the_e_models_scale() {
        for (text, hundredths) in [("1", 100), ("3.6", 360), ("4.05", 405), ("4.5", 450)] {
            let mos = parse_mos(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(mos, Mos::from_f64(f64::from(hundredths) / 100.0), "{text}");
        }
        for text in [
            "0.9", "4.51", "5", "3.", ".5", "3.605", "3,6", "", "NaN", "-3",
        ] {
            assert!(parse_mos(text).is_err(), "{text} accepted");
        }
    }

    /// The spec's bound is the probe's: a call configured from the spec takes what
    /// `CallConfig::bound` says, so the interval rule refuses exactly the calls that would
    /// outlast it.
    #[test]
    fn the_call_bound_of_the_spec_is_the_probes() {
        use crate::probe::media::{Codec, MediaConfig};
        use crate::probe::sip::{Account, AnswerPolicy, CallConfig, Callee, SdpAddress};
        use crate::secret::Secret;
        let spec = full();
        let call = spec.sip.as_ref().unwrap().call.as_ref().unwrap();
        for timeout in [Duration::from_secs(1), Duration::from_secs(10)] {
            let config = CallConfig {
                caller: Account {
                    server: "sip:pbx.example.com".into(),
                    username: "a".into(),
                    auth_username: None,
                    domain: None,
                    proxy: None,
                    password: Secret::new("-"),
                    ca: None,
                },
                callee: Callee::Number("sip:echo@pbx.example.com".into()),
                answer: AnswerPolicy::Required,
                ring_timeout: call.ring_timeout.get(),
                media: Some(MediaConfig {
                    duration: Duration::from_secs(5),
                    codec: Codec::Pcma,
                    mos_threshold: Mos::DEFAULT_THRESHOLD,
                }),
                advertise: SdpAddress::Local,
                timeout,
            };
            assert_eq!(call_bound(timeout, call), config.bound(), "{timeout:?}");
        }
    }

    type Edit = fn(&mut VoipCheckSpec);

    /// One row per rule: what is changed, which field is blamed, what the reason says.
    #[rustfmt::skip]
    const CASES: &[(&str, Edit, &str, &str)] = &[
        ("no probe at all", |s| { s.sip = None; s.http.clear(); s.stun = None; }, "spec", "at least one probe"),
        ("empty target name", |s| s.target.name.clear(), "spec.target.name", "must not be empty"),
        ("interval below 5s", |s| s.interval = GoDuration::from_secs(4), "spec.interval", "between 5s and 24h"),
        ("interval above a day", |s| s.interval = GoDuration::from_secs(90_000), "spec.interval", "between 5s and 24h"),
        ("timeout below 100ms", |s| s.timeout = GoDuration::from_millis(50), "spec.timeout", "between 100ms and 5m"),
        ("timeout not shorter than interval", |s| { s.interval = GoDuration::from_secs(10); }, "spec.timeout", "shorter than interval"),
        ("failureThreshold zero", |s| s.failure_threshold = 0, "spec.failureThreshold", "between 1 and 100"),
        ("successThreshold negative", |s| s.success_threshold = -1, "spec.successThreshold", "between 1 and 100"),
        ("http URL as SIP server", |s| sip(s).server = "https://pbx.example.com".into(), "spec.sip.server", "sip: or sips: URI"),
        ("SIP server without host", |s| sip(s).server = "sip:".into(), "spec.sip.server", "sip: or sips: URI"),
        ("SIP server with password", |s| sip(s).server = "sip:monitor:hunter2@pbx.example.com".into(), "spec.sip.server", "no password"),
        ("SIP port 0", |s| sip(s).server = "sip:pbx.example.com:0".into(), "spec.sip.server", "port outside 1 to 65535"),
        ("SIP port 70000", |s| sip(s).server = "sip:pbx.example.com:70000".into(), "spec.sip.server", "port outside 1 to 65535"),
        ("SIP bad IPv6", |s| sip(s).server = "sip:[2001:db8:::1]".into(), "spec.sip.server", "invalid IPv6"),
        ("sips over UDP", |s| sip(s).server = "sips:pbx.example.com;transport=UDP".into(), "spec.sip.server", "sips: requires TLS"),
        ("SIP over SCTP", |s| sip(s).server = "sip:pbx.example.com;transport=sctp".into(), "spec.sip.server", "udp, tcp or tls"),
        ("sip with neither register nor options", |s| { sip(s).register = None; sip(s).options = None; }, "spec.sip", "register, options or both"),
        ("username with @", |s| sip(s).register.as_mut().unwrap().username = "monitor@pbx".into(), "spec.sip.register.username", "'@'"),
        ("domain with a scheme", |s| sip(s).register.as_mut().unwrap().domain = Some("sip:pbx".into()), "spec.sip.register.domain", "host name"),
        ("Secret name with capitals", |s| sip(s).register.as_mut().unwrap().credentials_secret_ref.name = "Maxmuster".into(), "spec.sip.register.credentialsSecretRef.name", "Secret name"),
        ("Secret key empty", |s| sip(s).register.as_mut().unwrap().credentials_secret_ref.key.clear(), "spec.sip.register.credentialsSecretRef.key", "must not be empty"),
        ("expires below Asterisk's minexpiry", |s| sip(s).register.as_mut().unwrap().expires = 30, "spec.sip.register.expires", "between 60 and 86400"),
        ("lagged threshold above 30s", |s| sip(s).options.as_mut().unwrap().lagged_threshold = GoDuration::from_secs(31), "spec.sip.options.laggedThreshold", "between 100ms and 30s"),
        ("timeout shorter than twice lagged", |s| sip(s).options.as_mut().unwrap().lagged_threshold = GoDuration::from_secs(6), "spec.timeout", "twice sip.options.laggedThreshold"),
        ("no error codes", |s| error_codes(s).codes.clear(), "spec.sip.errorCodes.codes", "at least one code"),
        ("2xx as error code", |s| error_codes(s).codes = vec![200], "spec.sip.errorCodes.codes[0]", "between 300 and 699"),
        ("duplicate error code", |s| error_codes(s).codes = vec![503, 503], "spec.sip.errorCodes.codes[1]", "duplicate"),
        ("window shorter than interval", |s| { s.interval = GoDuration::from_secs(120); error_codes(s).window = GoDuration::from_secs(60); }, "spec.sip.errorCodes.window", "at least one interval"),
        ("window above a day", |s| error_codes(s).window = GoDuration::from_secs(90_000), "spec.sip.errorCodes.window", "between 1m and 24h"),
        ("threshold 0 percent", |s| error_codes(s).threshold_percent = 0, "spec.sip.errorCodes.thresholdPercent", "between 1 and 100"),
        ("minResponses 0", |s| error_codes(s).min_responses = 0, "spec.sip.errorCodes.minResponses", "between 1 and 10000"),
        ("CA Secret key with a slash", |s| sip(s).ca_secret_ref.as_mut().unwrap().key = "ca/crt".into(), "spec.sip.caSecretRef.key", "Secret key"),
        ("probe name with capitals", |s| s.http[0].name = "WebUI".into(), "spec.http[0].name", "lower-case"),
        ("duplicate probe name", |s| { let twin = s.http[0].clone(); s.http.push(twin); }, "spec.http[1].name", "duplicate probe name"),
        ("ftp URL", |s| s.http[0].url = "ftp://example.org/".into(), "spec.http[0].url", "http:// or https://"),
        ("basic auth over http", |s| { s.http[0].url = "http://example.org/".into(); s.http[0].basic_auth_secret_ref = Some(SecretRef { name: "login".into() }); }, "spec.http[0].basicAuthSecretRef", "allowInsecureBasicAuth"),
        ("basic-auth Secret name with a slash", |s| s.http[0].basic_auth_secret_ref = Some(SecretRef { name: "a/b".into() }), "spec.http[0].basicAuthSecretRef.name", "Secret name"),
        ("URL with credentials", |s| s.http[0].url = "https://admin:hunter2@example.org/".into(), "spec.http[0].url", "without user:password"),
        ("URL with a bad port", |s| s.http[0].url = "https://example.org:99999/".into(), "spec.http[0].url", "is not a URL"),
        ("status 600", |s| s.http[0].expect_status = vec![600], "spec.http[0].expectStatus[0]", "between 100 and 599"),
        ("regex that does not compile", |s| s.http[0].body_regex = Some("STAR(FACE".into()), "spec.http[0].bodyRegex", "not a valid regular expression"),
        ("regex too big", |s| s.http[0].body_regex = Some("\\w{1000}\\w{1000}".into()), "spec.http[0].bodyRegex", "too complex"),
        ("empty bodyContains", |s| s.http[0].body_contains = Some(String::new()), "spec.http[0].bodyContains", "must not be empty"),
        ("seventeen HTTP probes", |s| { s.http = (0..17).map(|i| { let mut p = s.http[0].clone(); p.name = format!("p{i}"); p }).collect(); }, "spec.http", "at most 16"),
        ("no STUN server", |s| stun(s).servers.clear(), "spec.stun.servers", "1 to 8"),
        ("STUN server as URL", |s| stun(s).servers[0] = "stun://stun.sipgate.net".into(), "spec.stun.servers[0]", "host, host:port"),
        ("location with capitals", |s| s.locations = vec!["Office".into()], "spec.locations[0]", "lower-case"),
        ("duplicate location", |s| s.locations = vec!["office".into(), "office".into()], "spec.locations[1]", "duplicate location"),
        ("minLocations 0", |s| s.report = Some(crate::api::Report { min_locations: Some(0), ..Default::default() }), "spec.report.minLocations", "between 1 and 16"),
        ("TURN server", |s| stun(s).servers[0] = "turn:stun.sipgate.net".into(), "spec.stun.servers[0]", "stuns:host[:port] for TLS"),
        ("STUN port 0", |s| stun(s).servers[0] = "stun.sipgate.net:0".into(), "spec.stun.servers[0]", "port outside"),
        ("TLS warning of 2 years", |s| s.tls_expiry_warning = GoDuration::from_secs(2 * 8760 * 3600), "spec.tlsExpiryWarning", "between 1h and 8760h"),
        ("keep-alive above 2h", |s| stun(s).nat_binding = Some(NatBinding { keepalive_interval: GoDuration::from_secs(7201) }), "spec.stun.natBinding.keepaliveInterval", "between 1s and 2h"),
        ("control with both", |s| s.control.as_mut().unwrap().stun_server = Some("stun.example.org".into()), "spec.control", "exactly one"),
        ("control with neither", |s| s.control.as_mut().unwrap().url = None, "spec.control", "exactly one"),
        ("control URL without host", |s| s.control.as_mut().unwrap().url = Some("https:///path".into()), "spec.control.url", "http:// or https://"),
        ("call without register", |s| sip(s).register = None, "spec.sip.call", "needs sip.register"),
        ("call with to and callee", |s| call(s).to = Some("sip:echo@pbx.example.com".into()), "spec.sip.call", "exactly one of to and callee"),
        ("call with neither to nor callee", |s| call(s).callee = None, "spec.sip.call", "exactly one of to and callee"),
        ("call to an http URL", |s| { call(s).callee = None; call(s).to = Some("https://pbx.example.com/".into()); }, "spec.sip.call.to", "sip: or sips: URI"),
        ("call to a URI with a password", |s| { call(s).callee = None; call(s).to = Some("sip:echo:hunter2@pbx.example.com".into()); }, "spec.sip.call.to", "no password"),
        ("callee with @", |s| call(s).callee.as_mut().unwrap().username = "b@pbx".into(), "spec.sip.call.callee.username", "'@'"),
        ("callee Secret name with capitals", |s| call(s).callee.as_mut().unwrap().credentials_secret_ref.name = "B".into(), "spec.sip.call.callee.credentialsSecretRef.name", "Secret name"),
        ("ring timeout above 3m", |s| { s.interval = GoDuration::from_secs(600); call(s).ring_timeout = GoDuration::from_secs(181); }, "spec.sip.call.ringTimeout", "between 1s and 3m"),
        ("media of 2 minutes", |s| { s.interval = GoDuration::from_secs(600); call(s).media.as_mut().unwrap().duration = GoDuration::from_secs(120); }, "spec.sip.call.media.duration", "between 1s and 1m"),
        ("media with RingingIsEnough", |s| call(s).answer = CallAnswer::RingingIsEnough, "spec.sip.call.media", "needs answer: Required"),
        ("StunMapped without STUN", |s| s.stun = None, "spec.sip.call.media.advertise", "needs spec.stun.servers"),
        ("MOS 5", |s| call(s).thresholds.mos = "5".into(), "spec.sip.call.thresholds.mos", "between 1.0 and 4.5"),
        ("MOS 4.6", |s| call(s).thresholds.mos = "4.6".into(), "spec.sip.call.thresholds.mos", "between 1.0 and 4.5"),
        ("MOS with a comma", |s| call(s).thresholds.mos = "3,6".into(), "spec.sip.call.thresholds.mos", "between 1.0 and 4.5"),
        ("post-dial delay of 2 minutes", |s| { s.interval = GoDuration::from_secs(600); call(s).thresholds.post_dial_delay = GoDuration::from_secs(120); }, "spec.sip.call.thresholds.postDialDelay", "between 100ms and 1m"),
        ("call longer than the interval", |s| s.interval = GoDuration::from_secs(38), "spec.interval", "longer than a test call can take"),
        ("report field too long", |s| s.report.as_mut().unwrap().contact = Some("x".repeat(257)), "spec.report.contact", "at most 256"),
    ];

    fn sip(spec: &mut VoipCheckSpec) -> &mut SipCheck {
        spec.sip.as_mut().unwrap()
    }

    fn call(spec: &mut VoipCheckSpec) -> &mut SipCall {
        sip(spec).call.as_mut().unwrap()
    }

    fn error_codes(spec: &mut VoipCheckSpec) -> &mut SipErrorCodes {
        sip(spec).error_codes.as_mut().unwrap()
    }

    fn stun(spec: &mut VoipCheckSpec) -> &mut StunCheck {
        spec.stun.as_mut().unwrap()
    }

    #[test]
    fn each_rule_names_the_field_and_the_reason() {
        for (case, edit, field, reason) in CASES {
            let mut spec = full();
            edit(&mut spec);
            let Err(InvalidSpec(errors)) = validate(&spec) else {
                panic!("{case}: accepted");
            };
            assert!(
                errors
                    .iter()
                    .any(|e| e.field == *field && e.reason.contains(reason)),
                "{case}: expected `{field}: …{reason}…`, got {errors:?}"
            );
        }
    }

    #[test]
    fn secret_keys_lists_every_reference_with_its_field() {
        let mut spec = full();
        spec.http[0].basic_auth_secret_ref = Some(SecretRef {
            name: "portal-login".into(),
        });
        let uses: Vec<(String, &str, &str)> = spec
            .secret_keys()
            .into_iter()
            .map(|u| (u.field, u.name, u.key))
            .collect();
        let expected = [
            (
                "spec.sip.register.credentialsSecretRef",
                "maxmuster-sip",
                "password",
            ),
            (
                "spec.sip.call.callee.credentialsSecretRef",
                "maxmuster-sip-b",
                "password",
            ),
            ("spec.sip.caSecretRef", "pbx-ca", "ca.crt"),
            (
                "spec.http[0].basicAuthSecretRef",
                "portal-login",
                "username",
            ),
            (
                "spec.http[0].basicAuthSecretRef",
                "portal-login",
                "password",
            ),
        ];
        let expected: Vec<(String, &str, &str)> = expected
            .into_iter()
            .map(|(field, name, key)| (field.to_owned(), name, key))
            .collect();
        assert_eq!(uses, expected);
    }

    #[test]
    fn accepts_what_the_probes_accept() {
        let servers = [
            "sip:pbx.example.com",
            "sips:pbx.example.com:5061",
            "sip:lagged@192.0.2.10:5080;transport=tcp",
            "sip:[2001:db8::1]:5070;transport=TLS",
            "sips:pbx.example.com;transport=tcp;lr",
        ];
        for server in servers {
            let mut spec = full();
            sip(&mut spec).server = server.into();
            assert_eq!(validate(&spec), Ok(()), "{server}");
        }
        for server in ["stun.example.org", "192.0.2.1:3478", "[2001:db8::1]:19302"] {
            let mut spec = full();
            stun(&mut spec).servers = vec![server.into()];
            assert_eq!(validate(&spec), Ok(()), "{server}");
        }
    }

    #[test]
    fn reports_every_problem_at_once() {
        let mut spec = full();
        spec.failure_threshold = 0;
        spec.http[0].url = "ftp://x/".into();
        stun(&mut spec).servers.clear();
        let errors = validate(&spec).unwrap_err();
        assert_eq!(errors.0.len(), 3, "{errors}");
        assert_eq!(
            errors.to_string(),
            "spec.failureThreshold: must be between 1 and 100; \
             spec.http[0].url: must be an http:// or https:// URL without user:password; \
             spec.stun.servers: must list 1 to 8 servers"
        );
    }

    #[test]
    fn errors_never_repeat_a_value_that_may_be_a_password() {
        let mut spec = full();
        spec.http[0].url = "https://admin:hunter2@example.org/".into();
        sip(&mut spec).server = "sip:monitor:hunter2@pbx.example.com".into();
        spec.control.as_mut().unwrap().url = Some("http://u:hunter2@[::1".into());
        let message = validate(&spec).unwrap_err().to_string();
        assert!(!message.contains("hunter2"), "{message}");
    }
}
