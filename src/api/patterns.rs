//! Regular expressions for string fields, used as the CRD schema's `pattern`s and by
//! [`crate::api::validate`]. They are written in the common subset of RE2 (the API server's
//! engine) and the `regex` crate.

use regex::Regex;
use std::sync::LazyLock;

/// A host name or IPv4 address (no IPv6: `domain` of a SIP account).
pub const HOST: &str = r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$";

/// The body of [`HOST_PORT`], shared with [`STUN_SERVER`].
macro_rules! host_port {
    () => {
        r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:[0-9]{1,5})?"
    };
}

/// `host` or `host:port`, IPv6 literals in brackets (`[2001:db8::1]:3478`).
pub const HOST_PORT: &str = concat!("^", host_port!(), "$");

/// A STUN server entry: [`HOST_PORT`], optionally after a `stun:` or `stuns:` scheme (RFC 7064;
/// `stuns:` means STUN over TLS).
pub const STUN_SERVER: &str = concat!("^([Ss][Tt][Uu][Nn][Ss]?:)?", host_port!(), "$");

/// A `sip:` or `sips:` URI (RFC 3261 §19.1) with an optional user part, a host (IPv6 in
/// brackets), an optional port and `;name=value` parameters; no headers. The user part cannot
/// hold a `:`, so `sip:user:password@host` is refused: passwords belong in Secrets.
pub const SIP_URI: &str = r"^sips?:([^@\s:;/?]+@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:[0-9]{1,5})?(;[^\s;=?]+(=[^\s;?]*)?)*$";

/// The user part of a SIP address of record.
pub const SIP_USER: &str = r"^[^\s@:;]+$";

/// A MOS threshold as a decimal: 1 to 4 with up to two decimals (the range 1.0 to 4.5 is a
/// separate rule).
pub const MOS: &str = r"^[1-4](\.[0-9]{1,2})?$";

/// An `http://` or `https://` URL without userinfo (no `@` before the path).
pub const HTTP_URL: &str = r"^https?://[^\s/?#@]+([/?#]\S*)?$";

/// A DNS label (RFC 1123), as Kubernetes names many things.
pub const PROBE_NAME: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A Kubernetes Secret name (DNS subdomain, RFC 1123).
pub const SECRET_NAME: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A key of a Secret's data.
pub const SECRET_KEY: &str = r"^[-._a-zA-Z0-9]+$";

macro_rules! compiled {
    ($name:ident) => {
        pub(crate) static $name: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(super::$name).expect("a valid pattern"));
    };
}

/// The patterns above, compiled once.
pub(crate) mod compiled {
    use super::*;
    compiled!(HOST);
    compiled!(HOST_PORT);
    compiled!(STUN_SERVER);
    compiled!(SIP_URI);
    compiled!(SIP_USER);
    compiled!(HTTP_URL);
    compiled!(MOS);
    compiled!(PROBE_NAME);
    compiled!(SECRET_NAME);
    compiled!(SECRET_KEY);
}
