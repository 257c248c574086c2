//! The configured server: a `sip:` or `sips:` URI (RFC 3261 §19.1), read with rsip.

use super::transport::Transport;
use crate::probe::ConfigError;

/// What the probes need from the server URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServerUri {
    /// `sips:`: only TLS is acceptable (RFC 3261 §26.2.2).
    pub secure: bool,
    /// The user part, e.g. `lagged` in `sip:lagged@pbx.example.com` (OPTIONS targets a user).
    pub user: Option<String>,
    /// A host name or an IP literal (IPv6 without brackets).
    pub host: String,
    /// Explicit port; without one RFC 3263 looks up SRV records.
    pub port: Option<u16>,
    /// Explicit `;transport=`; without one RFC 3263 asks NAPTR.
    pub transport: Option<Transport>,
}

impl ServerUri {
    /// `host` or `host:port`, with brackets around IPv6, as it appears in a URI.
    pub fn host_port(&self) -> String {
        let host = self.host_in_uri();
        match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }

    /// The host as written in a URI: IPv6 in brackets.
    pub fn host_in_uri(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// The URI without user part: the Request-URI of a REGISTER (RFC 3261 §10.2).
    pub fn domain_uri(&self) -> String {
        self.uri_for(&self.host_port())
    }

    /// This URI's scheme and transport around another host: the Request-URI of a REGISTER
    /// for a separately configured domain (RFC 3261 §10.2: the domain of the location service).
    pub fn uri_for(&self, host: &str) -> String {
        format!("{}{host}", self.scheme()) + &self.transport_param()
    }

    /// The URI as configured, user part included: the Request-URI of an OPTIONS.
    pub fn request_uri(&self) -> String {
        let user = self
            .user
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        format!("{}{user}{}", self.scheme(), self.host_port()) + &self.transport_param()
    }

    /// The Route header value that sends a request through this URI as an outbound proxy
    /// (RFC 3261 §8.1.2, loose routing).
    pub fn loose_route(&self) -> String {
        format!("<{};lr>", self.domain_uri())
    }

    fn scheme(&self) -> &'static str {
        if self.secure { "sips:" } else { "sip:" }
    }

    fn transport_param(&self) -> String {
        self.transport
            .map(|t| format!(";transport={}", t.param()))
            .unwrap_or_default()
    }
}

/// Stands in for an IPv6 reference while rsip parses (`.invalid` never resolves, RFC 2606).
const IPV6_PLACEHOLDER: &str = "ipv6-reference.invalid";

/// Reads `server`; a missing scheme means `sip:` (so `pbx.example.com:5060` works too).
pub(super) fn parse(server: &str) -> Result<ServerUri, ConfigError> {
    parse_field("server", server)
}

/// Reads the optional outbound proxy URI (field `proxy`).
pub(super) fn parse_proxy(proxy: Option<&str>) -> Result<Option<ServerUri>, ConfigError> {
    proxy.map(|p| parse_field("proxy", p)).transpose()
}

/// Reads the URI given as `field` (`server`, `proxy`), as [`parse`] does.
pub(super) fn parse_field(field: &str, server: &str) -> Result<ServerUri, ConfigError> {
    let bad = |reason: String| ConfigError::new(field, reason);
    let text = server.trim();
    let lower = text.to_ascii_lowercase();
    let text = if lower.starts_with("sip:") || lower.starts_with("sips:") {
        text.to_owned()
    } else if lower.contains("://") {
        return Err(bad(format!("`{text}` is not a sip: or sips: URI")));
    } else {
        format!("sip:{text}")
    };
    // rsip 0.4 cannot parse an IPv6 reference (`[2001:db8::1]`): it is swapped for a
    // placeholder name while rsip reads the rest, and put back afterwards.
    let (for_rsip, ipv6) = match (text.find('['), text.find(']')) {
        (Some(open), Some(close)) if open < close => {
            let ip: std::net::Ipv6Addr = text[open + 1..close]
                .parse()
                .map_err(|e| bad(format!("`{text}`: bad IPv6 address: {e}")))?;
            let swapped = format!("{}{IPV6_PLACEHOLDER}{}", &text[..open], &text[close + 1..]);
            (swapped, Some(ip))
        }
        _ => (text.clone(), None),
    };
    let uri = rsip::Uri::try_from(for_rsip.as_str())
        .map_err(|e| bad(format!("`{text}` is not a SIP URI: {e}")))?;
    let secure = match &uri.scheme {
        Some(rsip::Scheme::Sip) => false,
        Some(rsip::Scheme::Sips) => true,
        _ => return Err(bad(format!("`{text}` is not a sip: or sips: URI"))),
    };
    let host = match (&uri.host_with_port.host, ipv6) {
        (_, Some(ip)) => ip.to_string(),
        (rsip::Host::Domain(domain), None) => domain.to_string(),
        (rsip::Host::IpAddr(ip), None) => ip.to_string(),
    };
    if host.is_empty() {
        return Err(bad(format!("`{text}` names no host")));
    }
    let port = uri.port().map(|p| *p.value());
    if port == Some(0) {
        return Err(bad(format!("`{text}`: port 0")));
    }
    let transport = match uri.transport() {
        None => None,
        Some(rsip::Transport::Udp) if secure => {
            return Err(bad(format!("`{text}`: sips: cannot use UDP")));
        }
        Some(rsip::Transport::Udp) => Some(Transport::Udp),
        // sips: over TCP means TLS (RFC 3261 §26.2.2)
        Some(rsip::Transport::Tcp) if secure => Some(Transport::Tls),
        Some(rsip::Transport::Tcp) => Some(Transport::Tcp),
        Some(rsip::Transport::Tls) => Some(Transport::Tls),
        Some(other) => {
            return Err(bad(format!(
                "`{text}`: transport {other} is not supported (udp, tcp, tls)"
            )));
        }
    };
    Ok(ServerUri {
        secure,
        user: uri.user().map(str::to_owned),
        host,
        port,
        transport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_scheme_host_port_and_transport() {
        let uri = parse("sip:127.0.0.1:5080;transport=tcp").unwrap();
        assert!(!uri.secure);
        assert_eq!(uri.host, "127.0.0.1");
        assert_eq!(uri.port, Some(5080));
        assert_eq!(uri.transport, Some(Transport::Tcp));
        assert_eq!(uri.domain_uri(), "sip:127.0.0.1:5080;transport=tcp");

        let uri = parse("sips:pbx.example.com").unwrap();
        assert!(uri.secure);
        assert_eq!((uri.port, uri.transport), (None, None));

        let uri = parse("sip:[2001:db8::1]:5070;transport=tls").unwrap();
        assert_eq!(uri.host, "2001:db8::1");
        assert_eq!(
            (uri.port, uri.transport),
            (Some(5070), Some(Transport::Tls))
        );
        assert_eq!(uri.domain_uri(), "sip:[2001:db8::1]:5070;transport=tls");

        let uri = parse("sip:lagged@example.com").unwrap();
        assert_eq!(uri.user.as_deref(), Some("lagged"));
        assert_eq!(uri.request_uri(), "sip:lagged@example.com");
        assert_eq!(uri.domain_uri(), "sip:example.com");
    }

    #[test]
    fn sips_over_tcp_is_tls_and_a_bare_host_is_sip() {
        assert_eq!(
            parse("sips:example.com;transport=tcp").unwrap().transport,
            Some(Transport::Tls)
        );
        let bare = parse("pbx.example.com:5060").unwrap();
        assert_eq!((bare.secure, bare.port), (false, Some(5060)));
        assert_eq!(parse("pbx.example.com").unwrap().port, None);
    }

    #[test]
    fn rejects_what_cannot_be_probed() {
        for bad in [
            "http://example.com/",
            "sips:example.com;transport=udp",
            "sip:example.com;transport=sctp",
            "sip:",
            "sip:example.com:0",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }
}
