//! The address headers of a response — To, From and Contact (RFC 3261 §20.10, §25.1) — read by
//! hand.
//!
//! Written here because rsip 0.4 (the newest release) cannot hold an IPv6 reference in a URI:
//! its host tokenizer splits `[::1]:5060` at the first colon, so `To: <sip:[::1]:5060>;tag=x`
//! fails to parse and a Contact `sip:alice@[2001:db8::1]:5060` loses its expiry. The only
//! crates that parse these headers with IPv6 (`sip-header`/`sip-uri`) exist in pre-release
//! versions only; a second SIP parser beside rsip for three headers is not worth that.
//! The grammar read is small: `[display-name] <URI> *(;param)` or `URI *(;param)`, several
//! values separated by commas.

/// One address of a To, From or Contact header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NameAddr {
    /// The URI as written, without the angle brackets: a dialog's remote target (RFC 3261
    /// §12.1.2) is a Contact's URI exactly as sent.
    pub uri: String,
    /// The URI's user part, e.g. `alice` in `sip:alice@[::1]:5060`.
    pub user: Option<String>,
    /// Host as written, IPv6 without brackets, lower case.
    pub host: String,
    pub port: Option<u16>,
    /// The header parameters after the URI (`tag`, `expires`, ...): names in lower case,
    /// values unquoted.
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    /// The value of header parameter `name` (lower case), if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref().unwrap_or_default())
    }
}

/// Parses one address (`"Bob" <sip:bob@[::1]:5060;transport=tcp>;tag=1`).
pub(super) fn parse(value: &str) -> Result<NameAddr, String> {
    let value = value.trim();
    let (uri, rest) = match find_outside_quotes(value, '<') {
        Some(open) => {
            let inner = &value[open + 1..];
            let close = inner
                .find('>')
                .ok_or_else(|| format!("`{}`: no closing `>`", shorten(value)))?;
            (&inner[..close], &inner[close + 1..])
        }
        // Without angle brackets every `;` starts a header parameter (RFC 3261 §20.10).
        None => value.split_at(value.find(';').unwrap_or(value.len())),
    };
    let uri = uri.trim();
    let (user, host, port) = sip_uri_parts(uri)?;
    let params = split_outside_quotes(rest, ';')
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (
                n.trim().to_ascii_lowercase(),
                Some(v.trim().trim_matches('"').to_owned()),
            ),
            None => (p.to_ascii_lowercase(), None),
        })
        .collect();
    Ok(NameAddr {
        uri: uri.to_owned(),
        user,
        host,
        port,
        params,
    })
}

/// Splits a header value that holds several addresses (`<sip:a@h>, "B, b" <sip:b@h>`),
/// leaving commas inside `<...>` and quoted strings alone.
pub(super) fn split_list(value: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut start, mut in_angle, mut in_quote) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            '"' => in_quote = !in_quote,
            '<' if !in_quote => in_angle = true,
            '>' if !in_quote => in_angle = false,
            ',' if !in_quote && !in_angle => {
                items.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(value[start..].trim());
    items.retain(|i| !i.is_empty());
    items
}

/// User, host and port of a `sip:`/`sips:` URI; other schemes (`tel:`) have no host.
fn sip_uri_parts(uri: &str) -> Result<(Option<String>, String, Option<u16>), String> {
    let bad = |why: &str| format!("`{}`: {why}", shorten(uri));
    let lower = uri.to_ascii_lowercase();
    let rest = if lower.starts_with("sip:") {
        &uri[4..]
    } else if lower.starts_with("sips:") {
        &uri[5..]
    } else {
        return Err(bad("not a sip: or sips: URI"));
    };
    // URI parameters and headers (`;transport=tcp`, `?x=y`) follow the host-port.
    let rest = &rest[..rest.find('?').unwrap_or(rest.len())];
    let (user, host_part) = match rest.rfind('@') {
        Some(at) => (Some(rest[..at].to_owned()), &rest[at + 1..]),
        None => (None, rest),
    };
    let host_port = &host_part[..host_part.find(';').unwrap_or(host_part.len())];
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let close = v6.find(']').ok_or_else(|| bad("no closing `]`"))?;
            let ip: std::net::Ipv6Addr =
                v6[..close].parse().map_err(|_| bad("bad IPv6 reference"))?;
            let port = v6[close + 1..].strip_prefix(':');
            (ip.to_string(), port)
        }
        None => match host_port.split_once(':') {
            Some((host, port)) => (host.to_ascii_lowercase(), Some(port)),
            None => (host_port.to_ascii_lowercase(), None),
        },
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = port
        .map(|p| p.parse::<u16>().map_err(|_| bad("bad port")))
        .transpose()?;
    Ok((user, host, port))
}

fn find_outside_quotes(text: &str, wanted: char) -> Option<usize> {
    let mut in_quote = false;
    text.char_indices().find_map(|(i, c)| {
        if c == '"' {
            in_quote = !in_quote;
        }
        (c == wanted && !in_quote).then_some(i)
    })
}

/// Splits `text` at every `separator` outside a quoted string.
pub(super) fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut in_quote) = (0, false);
    for (i, c) in text.char_indices() {
        if c == '"' {
            in_quote = !in_quote;
        } else if c == separator && !in_quote {
            parts.push(&text[start..i]);
            start = i + 1;
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A peer's text quoted in an error, cut to a length worth reading.
pub(super) fn shorten(text: &str) -> &str {
    &text[..text.floor_char_boundary(80)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ipv6_and_ipv4_addresses_with_their_parameters() {
        let to = parse("<sip:[::1]:5070>;tag=abc").unwrap();
        assert_eq!((to.host.as_str(), to.port), ("::1", Some(5070)));
        assert_eq!(to.param("tag"), Some("abc"));
        let contact =
            parse(r#""Alice, A" <sip:alice-1f@[2001:DB8::1]:5060;transport=tcp>;Expires=60;+sip.instance="<urn:uuid:1>""#)
                .unwrap();
        assert_eq!(contact.user.as_deref(), Some("alice-1f"));
        assert_eq!(contact.host, "2001:db8::1");
        assert_eq!(contact.param("expires"), Some("60"));
        assert_eq!(contact.param("+sip.instance"), Some("<urn:uuid:1>"));
        let bare = parse("sip:bob@192.0.2.1;expires=0").unwrap();
        assert_eq!(bare.user.as_deref(), Some("bob"));
        assert_eq!((bare.host.as_str(), bare.port), ("192.0.2.1", None));
        assert_eq!(bare.param("expires"), Some("0"));
        assert_eq!(parse("<sip:h>;lr").unwrap().param("lr"), Some(""));
    }

    #[test]
    fn refuses_what_is_no_sip_address_without_panicking() {
        for bad in [
            "",
            "<sip:[::1>",
            "<sip:[zz::1]:5060>",
            "<sip:h:99999>",
            "<tel:+4930123>",
            "<sip:",
            "sip:@",
            "\"unterminated <sip:a@b>",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn splits_lists_outside_brackets_and_quotes() {
        assert_eq!(
            split_list(r#"<sip:a@h;x=1,2>;expires=60, "B, b" <sip:b@h>;expires=30"#),
            vec![
                r#"<sip:a@h;x=1,2>;expires=60"#,
                r#""B, b" <sip:b@h>;expires=30"#
            ]
        );
    }
}
