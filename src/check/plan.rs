//! From a VoipCheck spec (plus its Secrets) to the probe configurations to run: everything that
//! can go wrong before a packet is sent is found here and named ([`PlanError`]).
//!
//! The order of the checks is the order a person fixing the resource would want: first the
//! spec itself ([`crate::api::validate`], `InvalidSpec`), then whether the operator may reach
//! its hosts (`TargetNotAllowed`), then its Secrets (`CredentialsMissing`), so no Secret is read
//! for a target that would be refused anyway.

use super::run::ProbeKind;
use super::{AllowList, CheckId};
use crate::api::{
    self, CallAdvertise, CallAnswer, CallCodec, InvalidSpec, SipCall, SpecError, StunRequire,
    StunTransport, VoipCheckSpec,
};
use crate::probe::media::{Codec, MediaConfig};
use crate::probe::tls::CaSource;
use crate::probe::{http, sip, stun};
use crate::secret::Secret;
use crate::verdict::{CallPolicy, ErrorCodePolicy, Policy};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

pub use super::secrets::{SecretLookup, SecretSource, StaticSecrets};

/// Everything one run of a check needs, resolved and validated.
#[derive(Debug, Clone)]
pub struct Plan {
    pub id: CheckId,
    pub interval: Duration,
    pub timeout: Duration,
    pub probes: Vec<PlannedProbe>,
    /// The independent probe that tells a local network problem from a provider outage.
    pub control: Option<PlannedProbe>,
    /// The NAT binding measurement (the STUN probe idling for the phones' keep-alive), when
    /// asked for. It lasts the keep-alive interval and more, so it runs on its own cadence, not
    /// in the check's runs: see [`super::run::measure_nat_binding`].
    pub nat_binding: Option<stun::StunConfig>,
    pub policy: Policy,
}

impl Plan {
    /// The sockets a run holds at most: those of each probe and the control probe (at least
    /// one, so every run counts against the scheduler's bound).
    pub fn sockets(&self) -> u32 {
        let sockets: usize = self
            .probes
            .iter()
            .chain(&self.control)
            .map(PlannedProbe::sockets)
            .sum();
        u32::try_from(sockets.max(1)).unwrap_or(u32::MAX)
    }
}

/// One probe to run, with its name as used in `status.lastRun.probes[].name` and metric labels
/// (`sip-register`, `sip-options`, `sip-call`, `http:<name>`, `stun`, `control`).
#[derive(Debug, Clone)]
pub enum PlannedProbe {
    SipRegister(sip::RegisterConfig),
    SipOptions(sip::OptionsConfig),
    Http {
        name: String,
        config: http::HttpConfig,
    },
    Stun(stun::StunConfig),
    /// Boxed: the largest configuration by far, and most checks make no call, while every
    /// probe of every plan is the size of the largest variant.
    SipCall(Box<sip::CallConfig>),
}

impl PlannedProbe {
    /// The probe's name in status and metrics when it is one of [`Plan::probes`]; the control
    /// probe is named `control` whatever its kind.
    pub fn name(&self) -> String {
        match self {
            PlannedProbe::SipRegister(_) => "sip-register".into(),
            PlannedProbe::SipOptions(_) => "sip-options".into(),
            PlannedProbe::Http { name, .. } => format!("http:{name}"),
            PlannedProbe::Stun(_) => "stun".into(),
            PlannedProbe::SipCall(_) => "sip-call".into(),
        }
    }

    /// The sockets the probe holds at once: one, but a test call holds its signalling socket
    /// and, with media, an RTP and an RTCP socket; twice that with its own callee.
    pub fn sockets(&self) -> usize {
        match self {
            PlannedProbe::SipCall(cfg) => {
                let leg = 1 + 2 * usize::from(cfg.media.is_some());
                match cfg.callee {
                    sip::Callee::Account { .. } => 2 * leg,
                    sip::Callee::Number(_) => leg,
                }
            }
            _ => 1,
        }
    }

    pub fn kind(&self) -> ProbeKind {
        match self {
            PlannedProbe::SipRegister(_) => ProbeKind::SipRegister,
            PlannedProbe::SipOptions(_) => ProbeKind::SipOptions,
            PlannedProbe::Http { .. } => ProbeKind::Http,
            PlannedProbe::Stun(_) => ProbeKind::Stun,
            PlannedProbe::SipCall(_) => ProbeKind::SipCall,
        }
    }
}

/// Why a check cannot run at all; becomes `Ready=False` with the matching reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// A referenced Secret or key does not exist (reason `CredentialsMissing`). Names the field
    /// and the Secret, never a value.
    #[error("{field}: Secret {secret} {}", match key { Some(k) => format!("has no key {k}"), None => "not found".to_owned() })]
    CredentialsMissing {
        field: String,
        secret: String,
        key: Option<String>,
    },
    /// The spec is invalid in a way the schema could not catch (reason `InvalidSpec`). Also a
    /// Secret value that exists but cannot be used: not UTF-8 text, or a CA key without a PEM
    /// certificate; the message names the field, Secret and key.
    #[error("{0}")]
    InvalidSpec(InvalidSpec),
    /// A host is outside the operator's `--allow-target` list (reason `TargetNotAllowed`).
    #[error("{field}: {host} is not allowed by the operator's --allow-target list")]
    TargetNotAllowed { field: String, host: String },
}

/// Builds the plan for `spec`, looking up Secrets in `id.namespace`.
pub fn plan(
    id: &CheckId,
    spec: &VoipCheckSpec,
    secrets: &dyn SecretSource,
    allow: &AllowList,
) -> Result<Plan, PlanError> {
    api::validate(spec).map_err(PlanError::InvalidSpec)?;
    check_targets(spec, allow)?;
    let secrets = Secrets {
        source: secrets,
        namespace: &id.namespace,
    };
    let timeout = spec.timeout.get();
    let mut probes = Vec::new();
    let mut call = None;
    if let Some(sip) = &spec.sip {
        let ca = match &sip.ca_secret_ref {
            Some(r) => Some(secrets.ca("spec.sip.caSecretRef", &r.name, &r.key)?),
            None => None,
        };
        if let Some(register) = &sip.register {
            let r = &register.credentials_secret_ref;
            let field = "spec.sip.register.credentialsSecretRef";
            let config = sip::RegisterConfig {
                server: sip.server.clone(),
                username: register.username.clone(),
                auth_username: register.auth_username.clone(),
                domain: register.domain.clone(),
                proxy: sip.proxy.clone(),
                password: secrets.credential(field, &r.name, &r.key)?,
                expires: positive(register.expires),
                unregister: register.unregister,
                timeout,
                ca: ca.clone(),
            };
            config.validate().map_err(|e| refused("spec.sip", e))?;
            if let Some(spec_call) = &sip.call {
                let caller = sip::Account {
                    server: config.server.clone(),
                    username: config.username.clone(),
                    auth_username: config.auth_username.clone(),
                    domain: config.domain.clone(),
                    proxy: config.proxy.clone(),
                    password: config.password.clone(),
                    ca: ca.clone(),
                };
                let config = call_config(spec, spec_call, caller, &secrets)?;
                config.validate().map_err(|e| refused("spec.sip", e))?;
                call = Some(PlannedProbe::SipCall(Box::new(config)));
            }
            probes.push(PlannedProbe::SipRegister(config));
        }
        if let Some(options) = &sip.options {
            let config = sip::OptionsConfig {
                server: sip.server.clone(),
                proxy: sip.proxy.clone(),
                lagged_threshold: options.lagged_threshold.get(),
                timeout,
                ca,
            };
            config.validate().map_err(|e| refused("spec.sip", e))?;
            probes.push(PlannedProbe::SipOptions(config));
        }
        probes.extend(call);
    }
    for (i, check) in spec.http.iter().enumerate() {
        let field = |name: &str| format!("spec.http[{i}].{name}");
        let mut config = http::HttpConfig::new(parsed_url(&check.url, field("url"))?);
        config.expect_status = http::ExpectStatus::from_codes(
            check.expect_status.iter().map(|&c| positive(c)).collect(),
        );
        config.body_contains = check.body_contains.clone();
        config.body_regex = match &check.body_regex {
            Some(text) => Some(
                api::compile_body_regex(text)
                    .map_err(|why| invalid(SpecError::new(field("bodyRegex"), why)))?,
            ),
            None => None,
        };
        config.follow_redirects = check.follow_redirects;
        config.allow_insecure_basic_auth = check.allow_insecure_basic_auth;
        config.timeout = timeout;
        if let Some(r) = &check.ca_secret_ref {
            config.ca = Some(secrets.ca(&field("caSecretRef"), &r.name, &r.key)?);
        }
        if let Some(r) = &check.basic_auth_secret_ref {
            let field = field("basicAuthSecretRef");
            let [user_key, password_key] = api::BASIC_AUTH_KEYS;
            let user = secrets.credential(&field, &r.name, user_key)?;
            let password = secrets.credential(&field, &r.name, password_key)?;
            set_basic_auth(&mut config.url, &user, &password)
                .map_err(|why| invalid(SpecError::new(field, why)))?;
        }
        probes.push(PlannedProbe::Http {
            name: check.name.clone(),
            config,
        });
    }
    let mut nat_binding = None;
    if let Some(stun_check) = &spec.stun {
        let config = stun::StunConfig {
            servers: stun_check.servers.clone(),
            transport: match stun_check.transport {
                StunTransport::Udp => stun::StunTransport::Udp,
                StunTransport::Tcp => stun::StunTransport::Tcp,
                StunTransport::Tls => stun::StunTransport::Tls,
            },
            timeout,
            nat_binding: stun_check
                .nat_binding
                .as_ref()
                .map(|n| n.keepalive_interval.get()),
            require: match stun_check.require {
                StunRequire::All => stun::StunRequire::All,
                StunRequire::Any => stun::StunRequire::Any,
            },
            ca: match &stun_check.ca_secret_ref {
                Some(r) => Some(secrets.ca("spec.stun.caSecretRef", &r.name, &r.key)?),
                None => None,
            },
        };
        config.validate().map_err(|e| refused("spec.stun", e))?;
        if config.nat_binding.is_some() {
            nat_binding = Some(config.clone());
        }
        probes.push(PlannedProbe::Stun(stun::StunConfig {
            nat_binding: None,
            ..config
        }));
    }
    let control = match &spec.control {
        Some(control) => Some(match (&control.url, &control.stun_server) {
            (Some(url), _) => {
                let mut config = http::HttpConfig::new(parsed_url(url, "spec.control.url")?);
                config.timeout = timeout;
                // The control asks whether this location reaches the internet: any response
                // answers yes, and the first one is enough (a redirect's target is another host).
                config.expect_status = http::ExpectStatus::AnyResponse;
                config.follow_redirects = false;
                PlannedProbe::Http {
                    name: "control".into(),
                    config,
                }
            }
            (None, Some(server)) => {
                let config = stun::StunConfig {
                    servers: vec![server.clone()],
                    transport: stun::StunTransport::Udp,
                    timeout,
                    nat_binding: None,
                    require: stun::StunRequire::All,
                    ca: None,
                };
                config.validate().map_err(|e| refused("spec.control", e))?;
                PlannedProbe::Stun(config)
            }
            (None, None) => unreachable!("validate() demands exactly one of url and stunServer"),
        }),
        None => None,
    };
    // A plan lives as long as its check: no spare room for probes never added.
    probes.shrink_to_fit();
    Ok(Plan {
        id: id.clone(),
        interval: spec.interval.get(),
        timeout,
        probes,
        control,
        nat_binding,
        policy: policy(spec),
    })
}

/// The test call of `call`, from the `sip.register` account `caller`.
fn call_config(
    spec: &VoipCheckSpec,
    call: &SipCall,
    caller: sip::Account,
    secrets: &Secrets<'_>,
) -> Result<sip::CallConfig, PlanError> {
    let callee = match (&call.to, &call.callee) {
        (Some(to), _) => sip::Callee::Number(to.clone()),
        (None, Some(callee)) => {
            let r = &callee.credentials_secret_ref;
            let field = "spec.sip.call.callee.credentialsSecretRef";
            sip::Callee::Account {
                username: callee.username.clone(),
                auth_username: callee.auth_username.clone(),
                password: secrets.credential(field, &r.name, &r.key)?,
            }
        }
        (None, None) => unreachable!("validate() demands one of to and callee"),
    };
    let mos_threshold = api::parse_mos(&call.thresholds.mos)
        .map_err(|why| invalid(SpecError::new("spec.sip.call.thresholds.mos", why)))?;
    let advertise = match call.media.as_ref().map(|m| m.advertise) {
        Some(CallAdvertise::StunMapped) => {
            let first = spec.stun.as_ref().and_then(|s| s.servers.first());
            let server = first.expect("validate() demands spec.stun.servers for StunMapped");
            sip::SdpAddress::StunMapped {
                server: stun::split_scheme(server).1.to_owned(),
            }
        }
        Some(CallAdvertise::Local) | None => sip::SdpAddress::Local,
    };
    Ok(sip::CallConfig {
        caller,
        callee,
        answer: match call.answer {
            CallAnswer::Required => sip::AnswerPolicy::Required,
            CallAnswer::RingingIsEnough => sip::AnswerPolicy::RingingIsEnough,
        },
        ring_timeout: call.ring_timeout.get(),
        media: call.media.as_ref().map(|m| MediaConfig {
            duration: m.duration.get(),
            codec: match m.codec {
                CallCodec::Pcma => Codec::Pcma,
                CallCodec::Pcmu => Codec::Pcmu,
            },
            mos_threshold,
        }),
        advertise,
        timeout: spec.timeout.get(),
    })
}

/// The parts of the spec the verdict reads.
fn policy(spec: &VoipCheckSpec) -> Policy {
    let error_codes = spec
        .sip
        .as_ref()
        .and_then(|sip| sip.error_codes.as_ref())
        .map(|e| ErrorCodePolicy {
            codes: e.codes.iter().map(|&c| positive(c)).collect(),
            window: e.window.get(),
            threshold_percent: positive(e.threshold_percent),
            min_responses: positive(e.min_responses),
        });
    Policy {
        target: spec.target.kind,
        failure_threshold: positive(spec.failure_threshold),
        success_threshold: positive(spec.success_threshold),
        error_codes,
        keepalive: spec
            .stun
            .as_ref()
            .and_then(|s| s.nat_binding.as_ref())
            .map(|n| n.keepalive_interval.get()),
        cert_expiry_warning: spec.tls_expiry_warning.get(),
        call: spec
            .sip
            .as_ref()
            .and_then(|sip| sip.call.as_ref())
            .map(|call| CallPolicy {
                destination: match (&call.to, &call.callee) {
                    (Some(to), _) => to.clone(),
                    (None, Some(callee)) => format!("callee:{}", callee.username),
                    (None, None) => unreachable!("validate() demands one of to and callee"),
                },
                post_dial_delay: call.thresholds.post_dial_delay.get(),
                media: call.media.is_some(),
            }),
    }
}

/// Converts a validated integer field; `validate()` has already held it to its range, which
/// fits every target type.
fn positive<T: TryFrom<i32>>(value: i32) -> T {
    T::try_from(value).unwrap_or_else(|_| unreachable!("validate() checked the range of {value}"))
}

/// Every host the probes will connect to, against the allow-list.
fn check_targets(spec: &VoipCheckSpec, allow: &AllowList) -> Result<(), PlanError> {
    let mut targets: Vec<(String, String)> = Vec::new();
    if let Some(sip) = &spec.sip {
        targets.push(("spec.sip.server".into(), sip_host(&sip.server).into()));
        if let Some(to) = sip.call.as_ref().and_then(|c| c.to.as_ref()) {
            targets.push(("spec.sip.call.to".into(), sip_host(to).into()));
        }
        if let Some(proxy) = &sip.proxy {
            targets.push(("spec.sip.proxy".into(), sip_host(proxy).into()));
        }
    }
    for (i, check) in spec.http.iter().enumerate() {
        let field = format!("spec.http[{i}].url");
        targets.push((field.clone(), url_host(&check.url, &field)?));
    }
    if let Some(stun) = &spec.stun {
        for (i, server) in stun.servers.iter().enumerate() {
            targets.push((
                format!("spec.stun.servers[{i}]"),
                authority_host(stun::split_scheme(server).1).into(),
            ));
        }
    }
    if let Some(control) = &spec.control {
        if let Some(url) = &control.url {
            targets.push((
                "spec.control.url".into(),
                url_host(url, "spec.control.url")?,
            ));
        }
        if let Some(server) = &control.stun_server {
            let host = authority_host(server).into();
            targets.push(("spec.control.stunServer".into(), host));
        }
    }
    match targets
        .into_iter()
        .find(|(_, host)| !allow.allows_host(host))
    {
        Some((field, host)) => Err(PlanError::TargetNotAllowed { field, host }),
        None => Ok(()),
    }
}

/// The host of a validated `sip:`/`sips:` URI (`sip:user@host:port;params`).
fn sip_host(uri: &str) -> &str {
    let rest = uri.split_once(':').map_or(uri, |(_scheme, rest)| rest);
    let address = rest.split(';').next().unwrap_or(rest);
    let authority = address
        .rsplit_once('@')
        .map_or(address, |(_user, host)| host);
    authority_host(authority)
}

/// The host of a validated `host`, `host:port` or `[v6]:port`.
fn authority_host(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => authority.split(':').next().unwrap_or(authority),
    }
}

fn url_host(text: &str, field: &str) -> Result<String, PlanError> {
    let url = parsed_url(text, field)?;
    Ok(url.host_str().unwrap_or_default().to_owned())
}

fn parsed_url(text: &str, field: impl Into<String>) -> Result<Url, PlanError> {
    api::parse_http_url(text).map_err(|why| invalid(SpecError::new(field, why)))
}

/// A probe configuration the probe itself would refuse: checked here, so that a run never
/// meets a [`crate::probe::ConfigError`] (see [`super::run`]).
fn refused(field: &str, error: crate::probe::ConfigError) -> PlanError {
    invalid(SpecError::new(field, error))
}

fn invalid(error: SpecError) -> PlanError {
    PlanError::InvalidSpec(InvalidSpec(vec![error]))
}

/// Puts the credentials into the URL's userinfo, which the HTTP probe sends as Basic auth (to
/// the configured origin only) and strips from everything it reports. The `url` crate
/// percent-encodes them; the probe decodes them again (RFC 3986 §3.2.1).
fn set_basic_auth(url: &mut Url, user: &Secret, password: &Secret) -> Result<(), String> {
    // RFC 7617 §2: the user-id ends at the first colon.
    if user.expose().contains(':') {
        return Err("the username must not contain ':' (RFC 7617)".into());
    }
    url.set_username(user.expose())
        .and_then(|()| url.set_password(Some(password.expose())))
        .map_err(|()| "this URL cannot carry credentials".to_owned())
}

/// Secret lookups in the check's namespace, turned into [`PlanError`]s that name the field.
struct Secrets<'a> {
    source: &'a dyn SecretSource,
    namespace: &'a str,
}

impl Secrets<'_> {
    fn get(&self, field: &str, name: &str, key: &str) -> Result<Secret, PlanError> {
        let missing = |key: Option<&str>| PlanError::CredentialsMissing {
            field: field.to_owned(),
            secret: name.to_owned(),
            key: key.map(str::to_owned),
        };
        match self.source.lookup(self.namespace, name, key) {
            SecretLookup::Found(secret) => Ok(secret),
            SecretLookup::SecretMissing => Err(missing(None)),
            SecretLookup::KeyMissing => Err(missing(Some(key))),
            SecretLookup::NotUtf8 => Err(invalid(SpecError::new(
                field,
                format!("Secret {name} key {key} is not UTF-8 text"),
            ))),
        }
    }

    /// A user name or password. One trailing line break is dropped: `kubectl create secret
    /// --from-file` keeps the newline most editors add, and no SIP or web password ends in one
    /// (the CLI's `--password-file` reads the same way).
    fn credential(&self, field: &str, name: &str, key: &str) -> Result<Secret, PlanError> {
        let secret = self.get(field, name, key)?;
        let value = secret.expose();
        let trimmed = value
            .strip_suffix("\r\n")
            .or_else(|| value.strip_suffix('\n'))
            .unwrap_or(value);
        Ok(if trimmed.len() == value.len() {
            secret
        } else {
            Secret::new(trimmed)
        })
    }

    /// PEM CA certificates, checked now so a broken CA Secret is reported before any run.
    fn ca(&self, field: &str, name: &str, key: &str) -> Result<CaSource, PlanError> {
        let pem = self.get(field, name, key)?;
        let ca = CaSource::Pem {
            origin: format!("{field} (Secret {name} key {key})"),
            pem: Arc::from(pem.expose()),
        };
        ca.certificates().map_err(|e| {
            invalid(SpecError::new(
                field,
                format!("Secret {name} key {key}: {}", e.reason),
            ))
        })?;
        Ok(ca)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{TargetKind, VoipCheck};
    use k8s_openapi::api::core::v1::Secret as K8sSecret;
    use serde_json::{Value, json};
    use std::path::Path;

    /// The VoipChecks and Secrets of one example file.
    fn example(file: &str) -> (Vec<VoipCheck>, StaticSecrets) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(file);
        let text = std::fs::read_to_string(path).unwrap();
        let documents: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        let mut checks = Vec::new();
        let mut secrets = StaticSecrets::new();
        for document in documents {
            match document["kind"].as_str() {
                Some("VoipCheck") => checks.push(serde_json::from_value(document).unwrap()),
                Some("Secret") => {
                    let secret: K8sSecret = serde_json::from_value(document).unwrap();
                    secrets.insert_k8s(&secret, "default").unwrap();
                }
                other => panic!("{file}: unexpected kind {other:?}"),
            }
        }
        (checks, secrets)
    }

    fn plan_example(file: &str) -> Plan {
        let (checks, secrets) = example(file);
        let check = &checks[0];
        let id = CheckId::new(
            check.metadata.namespace.clone().unwrap(),
            check.metadata.name.clone().unwrap(),
        );
        plan(&id, &check.spec, &secrets, &AllowList::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    fn names(plan: &Plan) -> Vec<String> {
        plan.probes.iter().map(PlannedProbe::name).collect()
    }

    #[test]
    fn cloud_example_plans_every_probe() {
        let plan = plan_example("cloud.yaml");
        assert_eq!(plan.id.to_string(), "telephony/maxmuster-cloud");
        assert_eq!(plan.interval, Duration::from_secs(30));
        assert_eq!(plan.timeout, Duration::from_secs(10));
        assert_eq!(
            names(&plan),
            ["sip-register", "sip-options", "http:web-ui", "stun"]
        );
        let PlannedProbe::SipRegister(register) = &plan.probes[0] else {
            panic!("{:?}", plan.probes[0]);
        };
        assert_eq!(
            register.server,
            "sip:maxmuster.starface-cloud.com;transport=tls"
        );
        assert_eq!(register.username, "monitor");
        assert_eq!(register.password.expose(), "change-me");
        assert_eq!((register.expires, register.unregister), (300, true));
        assert_eq!(register.timeout, plan.timeout);
        let PlannedProbe::SipOptions(options) = &plan.probes[1] else {
            panic!("{:?}", plan.probes[1]);
        };
        assert_eq!(options.lagged_threshold, Duration::from_secs(2));
        let PlannedProbe::Http { config, .. } = &plan.probes[2] else {
            panic!("{:?}", plan.probes[2]);
        };
        assert_eq!(config.expect_status, http::ExpectStatus::OneOf(vec![200]));
        assert_eq!(config.body_contains.as_deref(), Some("STARFACE"));
        assert_eq!(config.timeout, plan.timeout);
        let PlannedProbe::Stun(stun) = &plan.probes[3] else {
            panic!("{:?}", plan.probes[3]);
        };
        assert_eq!(stun.servers.len(), 2);
        // The NAT binding is measured apart from the runs, with the same servers.
        assert_eq!(stun.nat_binding, None);
        let nat = plan
            .nat_binding
            .as_ref()
            .expect("a NAT binding measurement");
        assert_eq!(nat.nat_binding, Some(Duration::from_secs(60)));
        assert_eq!(nat.servers, stun.servers);
        let Some(PlannedProbe::Http { name, config }) = &plan.control else {
            panic!("{:?}", plan.control);
        };
        assert_eq!(
            (name.as_str(), config.url.as_str()),
            ("control", "https://example.org/")
        );
        // Any answer, the first one (not a redirect's target), proves this location's network.
        assert_eq!(config.expect_status, http::ExpectStatus::AnyResponse);
        assert!(!config.follow_redirects);
        assert_eq!(
            plan.policy,
            Policy {
                target: TargetKind::Cloud,
                failure_threshold: 3,
                success_threshold: 1,
                error_codes: None,
                keepalive: Some(Duration::from_secs(60)),
                cert_expiry_warning: Duration::from_secs(14 * 24 * 3600),
                call: None,
            }
        );
        assert!(!format!("{plan:?}").contains("change-me"));
    }

    #[test]
    fn the_tls_expiry_warning_is_the_checks_own() {
        let plan = try_plan(
            &spec(json!({ "tlsExpiryWarning": "720h" })),
            &secrets(),
            &[],
        )
        .unwrap();
        assert_eq!(
            plan.policy.cert_expiry_warning,
            Duration::from_secs(30 * 24 * 3600)
        );
        let default = try_plan(&spec(json!({})), &secrets(), &[]).unwrap();
        assert_eq!(
            default.policy.cert_expiry_warning,
            Duration::from_secs(14 * 24 * 3600)
        );
    }

    #[test]
    fn connect_trunk_example_has_error_codes_and_a_stun_control() {
        let plan = plan_example("connect-trunk.yaml");
        assert_eq!(names(&plan), ["sip-register"]);
        let PlannedProbe::SipRegister(register) = &plan.probes[0] else {
            panic!();
        };
        assert_eq!(register.domain.as_deref(), Some("connect.example.net"));
        assert_eq!(register.expires, 600);
        let Some(PlannedProbe::Stun(control)) = &plan.control else {
            panic!("{:?}", plan.control);
        };
        assert_eq!(control.servers, ["stun.sipgate.net:3478"]);
        assert_eq!(control.nat_binding, None);
        assert_eq!(
            plan.policy.error_codes,
            Some(ErrorCodePolicy {
                codes: vec![404, 480, 500, 503],
                window: Duration::from_secs(600),
                threshold_percent: 20,
                min_responses: 10,
            })
        );
    }

    #[test]
    fn portal_example_sends_basic_auth_from_its_secret() {
        let plan = plan_example("partner-portal.yaml");
        let PlannedProbe::Http { name, config } = &plan.probes[0] else {
            panic!();
        };
        assert_eq!(name, "portal");
        assert!(
            config
                .body_regex
                .as_ref()
                .unwrap()
                .is_match("Partner  Portal")
        );
        // The url crate percent-encodes the userinfo; the probe decodes it.
        assert_eq!(config.url.username(), "monitoring%40maxmuster.example");
        assert_eq!(config.url.password(), Some("change-me"));
        assert!(!format!("{plan:?}").contains("change-me"));
        assert_eq!(plan.policy.target, TargetKind::Portal);
    }

    #[test]
    fn push_server_example_keeps_its_redirect_policy() {
        let plan = plan_example("push-server.yaml");
        let PlannedProbe::Http { config, .. } = &plan.probes[0] else {
            panic!();
        };
        assert_eq!(
            config.expect_status,
            http::ExpectStatus::OneOf(vec![200, 404])
        );
        assert!(!config.follow_redirects);
        assert_eq!(plan.policy.target, TargetKind::PushServer);
    }

    /// A spec with every Secret reference, over `overrides`.
    fn spec(overrides: Value) -> VoipCheckSpec {
        let mut spec = json!({
            "target": { "kind": "Cloud", "name": "pbx.example.com" },
            "sip": {
                "server": "sip:pbx.example.com:5061;transport=tls",
                "register": {
                    "username": "monitor",
                    "credentialsSecretRef": { "name": "sip", "key": "password" }
                },
                "caSecretRef": { "name": "ca", "key": "ca.crt" }
            },
            "http": [{
                "name": "web", "url": "https://web.example.com/",
                "basicAuthSecretRef": { "name": "login" }
            }],
            "stun": { "servers": ["stun.example.com", "[2001:db8::1]:3478"] },
            "control": { "stunServer": "stun.other.example:3478" }
        });
        merge(&mut spec, overrides);
        serde_json::from_value(spec).unwrap()
    }

    fn merge(base: &mut Value, overrides: Value) {
        match (base, overrides) {
            (Value::Object(base), Value::Object(overrides)) => {
                for (key, value) in overrides {
                    merge(base.entry(key).or_insert(Value::Null), value);
                }
            }
            (base, overrides) => *base = overrides,
        }
    }

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    /// The Secrets [`spec`] references, without Secret `skip.0` (or only without its key
    /// `skip.1`).
    fn secrets_without(skip: (&str, Option<&str>)) -> StaticSecrets {
        let ca = ca_pem();
        let values = [
            ("sip", "password", "s3cret\n"),
            ("sip", "other", "-"),
            ("ca", "ca.crt", ca.as_str()),
            ("login", "username", "web-user"),
            ("login", "password", "p@ss:w/rd"),
        ];
        let mut secrets = StaticSecrets::new();
        for (name, key, value) in values {
            let skipped = name == skip.0 && skip.1.is_none_or(|k| k == key);
            if !skipped {
                secrets.insert("ns", name, key, Secret::new(value));
            }
        }
        secrets
    }

    fn secrets() -> StaticSecrets {
        secrets_without(("", None))
    }

    fn try_plan(
        spec: &VoipCheckSpec,
        secrets: &StaticSecrets,
        allow: &[&str],
    ) -> Result<Plan, PlanError> {
        let allow: Vec<String> = allow.iter().map(|p| p.to_string()).collect();
        plan(
            &CheckId::new("ns", "check"),
            spec,
            secrets,
            &AllowList::parse(&allow).unwrap(),
        )
    }

    #[test]
    fn secrets_become_the_probes_credentials_and_trust_anchors() {
        let plan = try_plan(&spec(json!({})), &secrets(), &[]).unwrap();
        let PlannedProbe::SipRegister(register) = &plan.probes[0] else {
            panic!();
        };
        assert_eq!(
            register.password.expose(),
            "s3cret",
            "trailing newline dropped"
        );
        let Some(CaSource::Pem { origin, .. }) = &register.ca else {
            panic!("{:?}", register.ca);
        };
        assert_eq!(origin, "spec.sip.caSecretRef (Secret ca key ca.crt)");
        let PlannedProbe::Http { config, .. } = &plan.probes[1] else {
            panic!();
        };
        assert_eq!(config.url.username(), "web-user");
        assert_eq!(config.url.password(), Some("p%40ss%3Aw%2Frd"));
        let debug = format!("{plan:?}");
        for secret in ["s3cret", "p@ss", "p%40ss", "BEGIN CERTIFICATE"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
    }

    #[test]
    fn a_test_call_is_planned_from_the_register_account_with_the_callees_secret() {
        use crate::probe::media::{Codec, MediaConfig, Mos};
        let call = json!({ "interval": "1m", "sip": { "call": {
            "callee": { "username": "monitor-b",
                        "credentialsSecretRef": { "name": "sip", "key": "other" } },
            "ringTimeout": "15s",
            "media": { "duration": "3s", "codec": "PCMU", "advertise": "StunMapped" },
            "thresholds": { "mos": "4.1" }
        } } });
        let plan = try_plan(&spec(call), &secrets(), &[]).unwrap();
        assert_eq!(
            names(&plan),
            ["sip-register", "sip-call", "http:web", "stun"]
        );
        let PlannedProbe::SipCall(call) = &plan.probes[1] else {
            panic!("{:?}", plan.probes[1]);
        };
        assert_eq!(call.caller.server, "sip:pbx.example.com:5061;transport=tls");
        assert_eq!(call.caller.username, "monitor");
        assert_eq!(call.caller.password.expose(), "s3cret");
        assert!(call.caller.ca.is_some(), "the SIP CA serves the call too");
        let sip::Callee::Account {
            username, password, ..
        } = &call.callee
        else {
            panic!("{:?}", call.callee);
        };
        assert_eq!((username.as_str(), password.expose()), ("monitor-b", "-"));
        assert_eq!(call.answer, sip::AnswerPolicy::Required);
        assert_eq!(call.ring_timeout, Duration::from_secs(15));
        assert_eq!(
            call.media,
            Some(MediaConfig {
                duration: Duration::from_secs(3),
                codec: Codec::Pcmu,
                mos_threshold: Mos::from_f64(4.1),
            })
        );
        assert_eq!(
            call.advertise,
            sip::SdpAddress::StunMapped {
                server: "stun.example.com".into()
            }
        );
        assert_eq!(call.timeout, plan.timeout);
        let bound = super::super::run::probe_bound(&plan.probes[1], plan.timeout);
        assert_eq!(bound, Duration::from_secs(10 + 15 + 3 + 3));
        // REGISTER, the call's two legs (SIP, RTP, RTCP each), HTTP, STUN and the control.
        assert_eq!(plan.sockets(), 1 + 6 + 1 + 1 + 1);
        assert_eq!(
            plan.policy.call,
            Some(CallPolicy {
                destination: "callee:monitor-b".into(),
                post_dial_delay: Duration::from_secs(5),
                media: true,
            })
        );
        assert!(!format!("{plan:?}").contains("s3cret"));

        let signalling = json!({ "interval": "1m", "sip": { "call": {
            "to": "sip:echo@pbx.example.com", "answer": "RingingIsEnough"
        } } });
        let plan = try_plan(&spec(signalling), &secrets(), &[]).unwrap();
        let PlannedProbe::SipCall(call) = &plan.probes[1] else {
            panic!("{:?}", plan.probes[1]);
        };
        assert!(
            matches!(&call.callee, sip::Callee::Number(to) if to == "sip:echo@pbx.example.com"),
            "{:?}",
            call.callee
        );
        assert_eq!(
            (call.answer, &call.media),
            (sip::AnswerPolicy::RingingIsEnough, &None)
        );
        assert_eq!(plan.sockets(), 1 + 1 + 1 + 1 + 1);
        let policy = plan.policy.call.unwrap();
        assert_eq!(
            (policy.destination.as_str(), policy.media),
            ("sip:echo@pbx.example.com", false)
        );

        // The number's host is a target like the server; the callee's Secret is looked up.
        let elsewhere = json!({ "interval": "1m", "sip": { "call": {
            "to": "sip:echo@media.example.net"
        } } });
        let everything = EVERY_TARGET;
        match try_plan(&spec(elsewhere), &secrets(), &everything) {
            Err(PlanError::TargetNotAllowed { field, host }) => {
                assert_eq!(
                    (field.as_str(), host.as_str()),
                    ("spec.sip.call.to", "media.example.net")
                );
            }
            other => panic!("{other:?}"),
        }
        let missing = json!({ "interval": "1m", "sip": { "call": { "callee": {
            "username": "monitor-b", "credentialsSecretRef": { "name": "callee", "key": "password" }
        } } } });
        let err = try_plan(&spec(missing), &secrets(), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.sip.call.callee.credentialsSecretRef: Secret callee not found"
        );
    }

    #[test]
    fn invalid_spec_lists_the_field() {
        let bad = spec(json!({ "timeout": "1m", "interval": "30s" }));
        match try_plan(&bad, &secrets(), &[]) {
            Err(PlanError::InvalidSpec(InvalidSpec(errors))) => {
                assert_eq!(errors[0].field, "spec.timeout");
            }
            other => panic!("{other:?}"),
        }
    }

    /// An allow-list holding every host of [`spec`].
    const EVERY_TARGET: [&str; 5] = [
        "pbx.example.com",
        "web.example.com",
        "stun.example.com",
        "2001:db8::/32",
        "stun.other.example",
    ];

    #[test]
    fn each_target_field_is_checked_against_the_allow_list() {
        let everything = EVERY_TARGET;
        assert!(try_plan(&spec(json!({})), &secrets(), &everything).is_ok());
        let cases = [
            ("pbx.example.com", "spec.sip.server", "pbx.example.com"),
            ("web.example.com", "spec.http[0].url", "web.example.com"),
            (
                "stun.example.com",
                "spec.stun.servers[0]",
                "stun.example.com",
            ),
            ("2001:db8::/32", "spec.stun.servers[1]", "2001:db8::1"),
            (
                "stun.other.example",
                "spec.control.stunServer",
                "stun.other.example",
            ),
        ];
        for (left_out, field, refused) in cases {
            let allow: Vec<&str> = everything.into_iter().filter(|p| *p != left_out).collect();
            match try_plan(&spec(json!({})), &secrets(), &allow) {
                Err(PlanError::TargetNotAllowed { field: f, host }) => {
                    assert_eq!(f, field);
                    assert_eq!(host, refused);
                }
                other => panic!("{left_out}: {other:?}"),
            }
        }
        let metadata = spec(
            json!({ "control": { "stunServer": null, "url": "http://169.254.169.254/latest/" } }),
        );
        let err = try_plan(&metadata, &secrets(), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.control.url: 169.254.169.254 is not allowed by the operator's --allow-target list"
        );
    }

    #[test]
    fn configurations_the_probe_would_refuse_are_invalid_specs() {
        // The schema's user pattern allows '<', the SIP probe does not: plan() asks the probe.
        let bad = spec(json!({ "sip": { "register": { "username": "a<b" } } }));
        let err = try_plan(&bad, &secrets(), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.sip: username: must be a plain SIP user name"
        );
    }

    #[test]
    fn missing_secrets_and_keys_name_field_and_secret() {
        let cases = [
            (
                ("sip", None),
                "spec.sip.register.credentialsSecretRef: Secret sip not found",
            ),
            (
                ("sip", Some("password")),
                "spec.sip.register.credentialsSecretRef: Secret sip has no key password",
            ),
            (("ca", None), "spec.sip.caSecretRef: Secret ca not found"),
            (
                ("login", Some("username")),
                "spec.http[0].basicAuthSecretRef: Secret login has no key username",
            ),
            (
                ("login", Some("password")),
                "spec.http[0].basicAuthSecretRef: Secret login has no key password",
            ),
        ];
        for (skip, message) in cases {
            let secrets = secrets_without(skip);
            let err = try_plan(&spec(json!({})), &secrets, &[]).unwrap_err();
            assert!(
                matches!(err, PlanError::CredentialsMissing { .. }),
                "{err:?}"
            );
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn secrets_are_looked_up_in_the_checks_namespace() {
        let err = plan(
            &CheckId::new("other", "check"),
            &spec(json!({})),
            &secrets(),
            &AllowList::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, PlanError::CredentialsMissing { key: None, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn unusable_secret_values_are_invalid_and_named() {
        let mut not_pem = secrets();
        not_pem.insert("ns", "ca", "ca.crt", Secret::new("s3cret-not-a-cert"));
        let err = try_plan(&spec(json!({})), &not_pem, &[]).unwrap_err();
        assert!(matches!(err, PlanError::InvalidSpec(_)), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with("spec.sip.caSecretRef: Secret ca key ca.crt:"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");

        let mut binary = secrets();
        let mut secret = K8sSecret::default();
        secret.metadata.name = Some("sip".into());
        secret.metadata.namespace = Some("ns".into());
        secret.data = Some(
            [(
                "password".to_owned(),
                k8s_openapi::ByteString(vec![0xc3, 0x28]),
            )]
            .into(),
        );
        binary.insert_k8s(&secret, "ns").unwrap();
        let err = try_plan(&spec(json!({})), &binary, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.sip.register.credentialsSecretRef: Secret sip key password is not UTF-8 text"
        );

        let mut colon = secrets();
        colon.insert("ns", "login", "username", Secret::new("a:b"));
        let err = try_plan(&spec(json!({})), &colon, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.http[0].basicAuthSecretRef: the username must not contain ':' (RFC 7617)"
        );
    }
}
