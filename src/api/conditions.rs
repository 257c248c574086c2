//! The condition types and reasons a VoipCheck's status carries (DESIGN.md §3).
//!
//! This is the one place their names are spelled: status writing, Events, metric labels and
//! alert rules all take them from here. The names are API: alerts match on them, so a name
//! once released is never changed, only added.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A name that is not one of an enum's stable names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{name}`")]
pub struct UnknownName {
    pub kind: &'static str,
    pub name: String,
}

/// Declares an enum of unit variants whose names are their stable CamelCase strings, with
/// `ALL`, `as_str`, `Display`, `FromStr` and serde (as that same string).
macro_rules! stable_names {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident, )+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $( $(#[$vmeta])* $variant, )+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The stable name, as written to the API and used in alert rules.
            pub const fn as_str(self) -> &'static str {
                match self { $( $name::$variant => stringify!($variant), )+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownName { kind: stringify!($name), name: s.to_owned() })
            }
        }
    };
}

stable_names! {
    /// A condition in `status.conditions`. All have positive polarity: `True` is the good state,
    /// except [`ConditionType::HotlineReportable`], where `True` means "call the hotline now".
    pub enum ConditionType {
        /// Summary of all probes and of the spec itself.
        Ready,
        /// SIP REGISTER with digest authentication ends in a final 200 OK (seed 002: "is the line
        /// registered?", Connect: "regular 200 OK between PBX and line").
        SipRegistered,
        /// SIP OPTIONS qualify with Asterisk chan_sip's semantics: an answer within the lagged
        /// threshold (seeds 000/001/002: `UNREACHABLE` / `LAGGED` in the PBX log).
        SipReachable,
        /// A test call from the monitoring account is answered (or rings, with
        /// `answer: RingingIsEnough`): seed 002's first criterion, "no calls can be made,
        /// incoming or outgoing", observed instead of inferred from REGISTER.
        CallPossible,
        /// The test call's audio arrives both ways with a MOS at or above the threshold (seed
        /// 004: calls connect, but without audio). Only with `sip.call.media`.
        MediaQuality,
        /// The share of 404/480/500/503 final responses over the window stays below the
        /// threshold (seed 002, Connect: these codes found "very often"). `True` is normal.
        SipErrorRate,
        /// Every HTTP(S) probe answers with an expected status and body (cloud web UI, customer
        /// center, partner portal, push server).
        WebReachable,
        /// STUN Binding requests get a public mapped address (seed 004).
        StunReachable,
        /// The NAT binding outlives the phones' keep-alive interval (seeds 000/001/002).
        NatBindingStable,
        /// `True` when the failure is an outage the vendor's hotline accepts: persisted for
        /// `failureThreshold` runs, control probe passing, on the provider side, for a provider
        /// service. `status.incident` then carries what the hotline asks for.
        HotlineReportable,
    }
}

stable_names! {
    /// Why a condition has its status. See [`ConditionType::reasons`] for which condition uses
    /// which reason; the details (codes, timings) go into the condition's message.
    pub enum Reason {
        // --- Ready ---
        /// Every probe passes.
        Healthy,
        /// No probe run has finished yet.
        Pending,
        /// At least one probe fails (the probe's own condition says why).
        ProbesFailing,
        /// Web and SIP probes of one cloud both fail: the cloud is not started or not
        /// responding (seed 002).
        ServiceNotResponding,
        /// A referenced Secret or key does not exist.
        CredentialsMissing,
        /// The spec passed the schema but cannot be probed; the message names the field.
        InvalidSpec,
        /// The operator's allow-list does not include the target (DESIGN.md §8).
        TargetNotAllowed,
        /// No location that runs the check has written within its bound: nothing is known
        /// (Ready and HotlineReportable Unknown; the stale entries are marked `stale`).
        LocationsStale,

        // --- SIP ---
        /// REGISTER answered with a final 200 OK.
        Registered,
        /// 401/407 (or 403) even after sending credentials: wrong credentials, configuration.
        AuthRejected,
        /// Another final error response; the code is in the message.
        Rejected,
        /// A 200 OK to REGISTER that does not hold our binding for more than zero seconds
        /// (expires=0, other bindings only, no Contact): calls cannot reach the line.
        NotBound,
        /// 403 Forbidden without an auth exchange; seed 004: usually an ACL.
        Forbidden,
        /// 488 Not Acceptable Here; seed 004: usually an ACL or transport/codec configuration.
        NotAcceptableHere,
        /// The first RFC 3263 target (the primary) failed and a later one (a backup) served:
        /// still True, a ticket rather than an outage; the message names the failed target.
        BackupServing,
        /// OPTIONS answered within the lagged threshold (chan_sip `Reachable`).
        Reachable,
        /// OPTIONS answered, but slower than the lagged threshold (chan_sip `LAGGED`).
        Lagged,
        /// No OPTIONS answer within twice the lagged threshold (chan_sip `UNREACHABLE`).
        Unreachable,
        /// The error-code share is at or below the threshold.
        WithinThreshold,

        // --- test calls ---
        /// The test call was answered (2xx); the timings are in the message.
        Answered,
        /// The test call rang (180/183) and `answer: RingingIsEnough` counts that as success.
        Ringing,
        /// The call went through, but it rang later than `thresholds.postDialDelay`: still True,
        /// a ticket rather than an outage.
        SlowPostDialDelay,
        /// The INVITE got no ringing (18x) and no final response in time.
        NoRinging,
        /// The call rang and was not answered within `ringTimeout`; it was cancelled.
        NotAnswered,
        /// The far end hung up before the media ended.
        DroppedEarly,
        /// The call was answered without a usable SDP answer (none, unreadable, no common codec).
        MediaNotNegotiated,
        /// The check's own callee account could not be registered, so the call could not reach it.
        CalleeNotRegistered,
        /// RTP arrived both ways with a MOS at or above the threshold.
        Good,
        /// RTP arrived, with a MOS below the threshold (loss, jitter, delay).
        Degraded,
        /// RTP arrived in one direction only (seed 004: NAT, firewall, ALG).
        OneWayAudio,
        /// No RTP arrived in either direction.
        NoAudio,
        /// No audio could be measured: the latest test call was not answered (see CallPossible).
        NotMeasured,
        /// 404/480/500/503 make up more than the threshold of the window's final responses.
        FrequentErrorCodes,

        // --- shared by the network probes ---
        /// No answer within the probe timeout.
        Timeout,
        /// The server's name could not be resolved.
        DnsFailure,
        /// Connection refused, reset or another socket error.
        TransportError,
        /// The TLS handshake failed or the certificate is not valid for the name.
        TlsCertificateInvalid,

        // --- HTTP ---
        /// An HTTP status outside the expected ones; the code is in the message.
        HttpStatus,
        /// The body lacks the expected text or does not match the expected pattern.
        BodyMismatch,
        /// The certificate is valid but expires soon.
        TlsCertificateExpiring,

        // --- STUN ---
        /// A STUN server reported a public mapped address.
        PublicAddress,
        /// Only private addresses seen: no server reached or behind carrier-grade NAT (seed 004).
        PrivateAddressOnly,
        /// The STUN servers report different public addresses (seed 004: two public IPs).
        AddressMismatch,
        /// The NAT binding survived the keep-alive interval.
        Stable,
        /// The NAT binding expired before the keep-alive interval; the message gives the
        /// measured lifetime and the advice: NAT timeout >= keep-alive + 1.
        ExpiresBeforeKeepalive,

        // --- HotlineReportable ---
        /// A provider-side failure persisted for `failureThreshold` runs with the control probe
        /// passing: call the hotline.
        ProviderOutage,
        /// The failure is caused by configuration (credentials, ACLs, NXDOMAIN of the configured
        /// name): not the provider's outage.
        ConfigurationProblem,
        /// The control probe fails too: the problem is this location's network.
        LocalNetworkProblem,
        /// The target is not a provider service (`target.kind: Other`).
        NotAProviderService,
        /// A provider-side failure seen from fewer locations than `spec.report.minLocations`
        /// asks for, and from no location the service works: not reportable yet.
        TooFewLocations,
    }
}

/// `status` of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    /// As written in `status.conditions[].status`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl FromStr for ConditionStatus {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ConditionStatus::True,
            ConditionStatus::False,
            ConditionStatus::Unknown,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or_else(|| UnknownName {
            kind: "ConditionStatus",
            name: s.to_owned(),
        })
    }
}

impl From<bool> for ConditionStatus {
    fn from(ok: bool) -> Self {
        if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

impl fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ConditionType {
    /// Whether `reason` is this condition's plain good state, nothing worth a note: its first
    /// reason, and `Ringing` for a call that only has to ring.
    pub fn is_plain_success(self, reason: Reason) -> bool {
        reason == self.reasons()[0]
            || (self == ConditionType::CallPossible && reason == Reason::Ringing)
    }

    /// The reasons this condition is written with. The first is the one for `True`.
    pub fn reasons(self) -> &'static [Reason] {
        use Reason::*;
        match self {
            ConditionType::Ready => &[
                Healthy,
                Pending,
                ProbesFailing,
                ServiceNotResponding,
                LocalNetworkProblem,
                CredentialsMissing,
                InvalidSpec,
                TargetNotAllowed,
                LocationsStale,
            ],
            ConditionType::SipRegistered => &[
                Registered,
                BackupServing,
                AuthRejected,
                Rejected,
                NotBound,
                Forbidden,
                NotAcceptableHere,
                Timeout,
                DnsFailure,
                TransportError,
                TlsCertificateInvalid,
            ],
            ConditionType::SipReachable => &[
                Reachable,
                BackupServing,
                Lagged,
                Unreachable,
                Forbidden,
                NotAcceptableHere,
                DnsFailure,
                TransportError,
                TlsCertificateInvalid,
            ],
            ConditionType::CallPossible => &[
                Answered,
                Ringing,
                SlowPostDialDelay,
                Rejected,
                Forbidden,
                NotAcceptableHere,
                AuthRejected,
                NoRinging,
                NotAnswered,
                DroppedEarly,
                MediaNotNegotiated,
                CalleeNotRegistered,
                Timeout,
                DnsFailure,
                TransportError,
                TlsCertificateInvalid,
            ],
            ConditionType::MediaQuality => &[Good, Degraded, OneWayAudio, NoAudio, NotMeasured],
            ConditionType::SipErrorRate => &[WithinThreshold, FrequentErrorCodes],
            ConditionType::WebReachable => &[
                Reachable,
                HttpStatus,
                BodyMismatch,
                TlsCertificateInvalid,
                TlsCertificateExpiring,
                Timeout,
                DnsFailure,
                TransportError,
            ],
            ConditionType::StunReachable => &[
                PublicAddress,
                PrivateAddressOnly,
                AddressMismatch,
                Timeout,
                DnsFailure,
                TransportError,
            ],
            ConditionType::NatBindingStable => {
                &[Stable, ExpiresBeforeKeepalive, Timeout, TransportError]
            }
            ConditionType::HotlineReportable => &[
                ProviderOutage,
                Healthy,
                ConfigurationProblem,
                LocalNetworkProblem,
                NotAProviderService,
                TooFewLocations,
                LocationsStale,
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_variant_names_and_parse_back() {
        assert_eq!(Reason::NotAcceptableHere.as_str(), "NotAcceptableHere");
        assert_eq!(
            ConditionType::HotlineReportable.to_string(),
            "HotlineReportable"
        );
        for reason in Reason::ALL {
            assert_eq!(reason.as_str().parse::<Reason>(), Ok(*reason));
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                serde_json::json!(reason.as_str())
            );
        }
        assert_eq!(
            "Registred".parse::<Reason>(),
            Err(UnknownName {
                kind: "Reason",
                name: "Registred".into()
            })
        );
    }

    #[test]
    fn every_reason_belongs_to_a_condition() {
        for reason in Reason::ALL {
            assert!(
                ConditionType::ALL
                    .iter()
                    .any(|t| t.reasons().contains(reason)),
                "{reason} is used by no condition"
            );
        }
    }

    #[test]
    fn names_are_camel_case_as_kubernetes_conventions_ask() {
        let names = Reason::ALL
            .iter()
            .map(|r| r.as_str())
            .chain(ConditionType::ALL.iter().map(|t| t.as_str()));
        for name in names {
            assert!(name.starts_with(|c: char| c.is_ascii_uppercase()), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
        }
    }
}
