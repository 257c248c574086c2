//! Which hosts the operator's network may reach (`--allow-target`). The resource author chooses
//! where the operator connects, so a cluster admin can fence that in (DESIGN.md §8).
//!
//! Link-local addresses (169.254.0.0/16, fe80::/10) and cloud metadata endpoints are refused
//! whatever the list says, unless a pattern names them *explicitly*: an exact host, or a CIDR
//! range that lies inside the refused range. A broad pattern such as `0.0.0.0/0` or
//! `*.internal` does not open them, because whoever wrote it was thinking of the targets, not
//! of the instance metadata service that hands out the node's cloud credentials.
//!
//! Names are matched by name patterns and IP literals by CIDR ranges; a name is not resolved
//! here, so `--allow-target 10.0.0.0/8` allows `sip:10.1.2.3` but not `sip:pbx.internal`.
//!
//! Every address a probe contacts is checked once more with [`AllowList::allows`]: the
//! addresses a name resolves to (the configured host, SRV targets, redirect targets) are
//! allowed by a name pattern matching *that* name or by a range holding the address; an
//! address no name led to (a STUN server's OTHER-ADDRESS) only by a range. So `*.example.com`
//! allows whatever `pbx.example.com` resolves to, but only when reached as `pbx.example.com`,
//! not the same address written as a literal or found under another name.

use crate::probe::ConfigError;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Host patterns and CIDR ranges a check may target. Link-local and cloud metadata addresses
/// (169.254.0.0/16, fe80::/10) are refused unless a pattern allows them explicitly.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// An exact host name, lower-case, without a trailing dot.
    Host(String),
    /// `*.example.com`, stored as `.example.com`: any name below it, not the name itself.
    Below(String),
    /// An address range; a single address is a /32 or /128.
    Net(IpNet),
}

/// Ranges refused unless allowed explicitly: link-local, where every major cloud serves its
/// instance metadata (169.254.169.254, and AWS's IPv6 endpoint fd00:ec2::254).
const REFUSED_NETS: [IpNet; 3] = [
    IpNet::V4(ipnet::Ipv4Net::new_assert(
        Ipv4Addr::new(169, 254, 0, 0),
        16,
    )),
    IpNet::V6(ipnet::Ipv6Net::new_assert(
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
    )),
    IpNet::V6(ipnet::Ipv6Net::new_assert(
        Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
        128,
    )),
];

/// Metadata service names that resolve to a refused address inside the cloud.
const REFUSED_NAMES: [&str; 1] = ["metadata.google.internal"];

impl AllowList {
    /// Parses `--allow-target` values: exact hosts, `*.example.com` wildcards, CIDR ranges.
    /// No patterns means every host except link-local/metadata addresses.
    pub fn parse(patterns: &[String]) -> Result<Self, crate::probe::ConfigError> {
        let patterns = patterns
            .iter()
            .map(|p| parse_pattern(p).map_err(|why| ConfigError::new("--allow-target", why)))
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// Whether a host name as written in the spec may be probed (IP literals included).
    pub fn allows_host(&self, host: &str) -> bool {
        let host = normalise(host);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.allows_ip(ip);
        }
        let named = |p: &Pattern| matches!(p, Pattern::Host(h) if *h == host);
        if REFUSED_NAMES.contains(&host.as_str()) {
            return self.patterns.iter().any(named);
        }
        self.patterns.is_empty()
            || self.patterns.iter().any(|p| {
                named(p) || matches!(p, Pattern::Below(suffix) if host.ends_with(suffix.as_str()))
            })
    }

    /// Whether `ip`, reached by looking up `name` (or, for an address no name led to, with
    /// `name` its own text), may be contacted: a range holding it, or a name pattern matching
    /// `name`. A link-local or metadata address needs a range naming it explicitly or the
    /// exact host name, as for [`AllowList::allows_host`].
    pub fn allows(&self, name: &str, ip: IpAddr) -> bool {
        if self.allows_ip(ip) {
            return true;
        }
        let name = normalise(name);
        if name.parse::<IpAddr>().is_ok() {
            return false;
        }
        let refused = REFUSED_NETS
            .iter()
            .any(|refused| refused.contains(&ip.to_canonical()));
        if refused {
            return self
                .patterns
                .iter()
                .any(|p| matches!(p, Pattern::Host(h) if *h == name));
        }
        self.allows_host(&name)
    }

    /// Whether an address may be connected to by its address alone (ranges only).
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let nets = self.patterns.iter().filter_map(|p| match p {
            Pattern::Net(net) => Some(net),
            _ => None,
        });
        match REFUSED_NETS.iter().find(|refused| refused.contains(&ip)) {
            Some(refused) => nets
                .into_iter()
                .any(|net| refused.contains(net) && net.contains(&ip)),
            None => self.patterns.is_empty() || nets.into_iter().any(|net| net.contains(&ip)),
        }
    }
}

fn parse_pattern(text: &str) -> Result<Pattern, String> {
    let pattern = normalise(text.trim());
    if let Ok(net) = pattern.parse::<IpNet>() {
        // 10.1.2.3/8 means 10.0.0.0/8, as `ip route` reads it.
        return Ok(Pattern::Net(net.trunc()));
    }
    if let Ok(ip) = pattern.parse::<IpAddr>() {
        return Ok(Pattern::Net(IpNet::from(ip.to_canonical())));
    }
    let (below, name) = match pattern.strip_prefix("*.") {
        Some(name) => (true, name),
        None => (false, pattern.as_str()),
    };
    if !is_host_name(name) {
        return Err(format!(
            "{text:?} is not a host name, *.domain wildcard, IP address or CIDR range"
        ));
    }
    Ok(if below {
        Pattern::Below(format!(".{name}"))
    } else {
        Pattern::Host(name.to_owned())
    })
}

/// Lower-case, without IPv6 brackets, zone index (`%eth0`) and the root's trailing dot.
fn normalise(host: &str) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host
        .split_once('%')
        .map_or(host, |(address, _zone)| address);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Dot-separated labels of letters, digits and inner hyphens (RFC 1123).
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str]) -> AllowList {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        AllowList::parse(&patterns).unwrap()
    }

    #[test]
    fn hosts() {
        #[rustfmt::skip]
        let cases: &[(&[&str], &str, bool)] = &[
            // empty list: everything but link-local and metadata
            (&[], "pbx.example.com", true),
            (&[], "10.0.0.1", true),
            (&[], "[2001:db8::1]", true),
            (&[], "169.254.169.254", false),
            (&[], "169.254.1.1", false),
            (&[], "[fe80::1]", false),
            (&[], "fe80::1%eth0", false),
            (&[], "[::ffff:169.254.169.254]", false),
            (&[], "[fd00:ec2::254]", false),
            (&[], "metadata.google.internal", false),
            (&[], "METADATA.google.internal.", false),
            // exact names, case and trailing dot ignored
            (&["pbx.example.com"], "pbx.example.com", true),
            (&["pbx.example.com"], "PBX.Example.com.", true),
            (&["pbx.example.com"], "web.example.com", false),
            (&["pbx.example.com"], "10.0.0.1", false),
            // wildcards: names below, not the name itself, not look-alikes
            (&["*.example.com"], "pbx.example.com", true),
            (&["*.example.com"], "a.b.example.com", true),
            (&["*.example.com"], "example.com", false),
            (&["*.example.com"], "badexample.com", false),
            // CIDR ranges and single addresses
            (&["10.0.0.0/8"], "10.1.2.3", true),
            (&["10.0.0.0/8"], "11.0.0.1", false),
            (&["10.0.0.0/8"], "pbx.internal", false),
            (&["10.1.2.3/8"], "10.200.0.1", true),
            (&["192.0.2.7"], "192.0.2.7", true),
            (&["192.0.2.7"], "192.0.2.8", false),
            (&["2001:db8::/32"], "[2001:db8:1::5]", true),
            (&["2001:db8::/32"], "2001:db9::5", false),
            (&["10.0.0.0/8"], "[::ffff:10.0.0.1]", true),
            // broad patterns do not open the refused ranges and names
            (&["0.0.0.0/0"], "169.254.169.254", false),
            (&["0.0.0.0/0"], "192.0.2.1", true),
            (&["::/0"], "[fe80::1]", false),
            (&["*.internal"], "metadata.google.internal", false),
            (&["*.internal"], "pbx.internal", true),
            // explicit patterns do
            (&["169.254.169.254"], "169.254.169.254", true),
            (&["169.254.0.0/16"], "169.254.10.1", true),
            (&["169.254.169.254/32"], "169.254.169.253", false),
            (&["fe80::/64"], "[fe80::1]", true),
            (&["metadata.google.internal"], "metadata.google.internal", true),
        ];
        for (patterns, host, allowed) in cases {
            assert_eq!(
                list(patterns).allows_host(host),
                *allowed,
                "{patterns:?} allows {host}"
            );
        }
    }

    #[test]
    fn resolved_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(list(&[]).allows_ip(ip("192.0.2.1")));
        assert!(!list(&[]).allows_ip(ip("169.254.169.254")));
        assert!(!list(&["pbx.example.com"]).allows_ip(ip("192.0.2.1")));
        assert!(list(&["pbx.example.com", "192.0.2.0/24"]).allows_ip(ip("192.0.2.1")));
    }

    #[test]
    fn names_allow_what_they_resolve_to_only_when_reached_by_them() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        #[rustfmt::skip]
        let cases: &[(&[&str], &str, &str, bool)] = &[
            // the chart README's example: the names, and whatever they resolve to
            (&["*.starface-cloud.com"], "maxmuster.starface-cloud.com", "192.0.2.10", true),
            (&["*.starface-cloud.com"], "maxmuster.starface-cloud.com", "2001:db8::10", true),
            // the same address under another name, or as a literal, is not allowed
            (&["*.starface-cloud.com"], "sip.example.net", "192.0.2.10", false),
            (&["*.starface-cloud.com"], "192.0.2.10", "192.0.2.10", false),
            (&["pbx.example.com"], "pbx.example.com", "10.0.0.5", true),
            (&["pbx.example.com"], "PBX.example.com.", "10.0.0.5", true),
            // a name does not open link-local or metadata addresses ...
            (&["*.example.com"], "pbx.example.com", "169.254.169.254", false),
            (&["*.example.com"], "pbx.example.com", "fe80::1", false),
            (&[], "pbx.example.com", "169.254.169.254", false),
            // ... unless it names the host exactly
            (&["metadata.google.internal"], "metadata.google.internal", "169.254.169.254", true),
            // ranges allow the address whatever the name
            (&["10.0.0.0/8"], "pbx.internal", "10.1.2.3", true),
            (&["10.0.0.0/8"], "10.1.2.3", "10.1.2.3", true),
            (&["10.0.0.0/8"], "pbx.internal", "192.0.2.1", false),
            // no list: everything but link-local and metadata
            (&[], "anything.example", "192.0.2.1", true),
        ];
        for (patterns, name, address, allowed) in cases {
            assert_eq!(
                list(patterns).allows(name, ip(address)),
                *allowed,
                "{patterns:?} allows {address} via {name}"
            );
        }
    }

    #[test]
    fn bad_patterns_are_config_errors() {
        for bad in [
            "",
            "*",
            "*.",
            "a..b",
            "-a.example",
            "10.0.0.0/33",
            "http://x",
            "a b",
        ] {
            let err = AllowList::parse(&[bad.to_owned()]).unwrap_err();
            assert_eq!(err.field, "--allow-target", "{bad:?}");
        }
    }
}
