//! SIP requests built, and responses read, with rsip.
//!
//! rsip parses the message; what it does not give is filled in here: the reason phrase as sent
//! (rsip replaces it with its own name for known codes), folded header lines (RFC 3261 §7.3.1,
//! which rsip reads as broken headers: unfolded before it parses), the compact header forms of
//! §7.3.3 (`v`, `i`, `f`, `t`, `m`, `l`, ..., which it keeps as unknown headers), and the
//! address headers To, From and Contact with IPv6 references ([`super::name_addr`]).

use super::name_addr::{self, NameAddr};
use super::transport::Transport;
use rsip::prelude::*;
use rsip::{Header, Headers};
use std::net::SocketAddr;

/// Identifies what the probe sends in one call (RFC 3261 §8.1.1): Call-ID and From tag stay the
/// same for all requests of a probe run; the CSeq number grows per request.
pub(super) struct Dialogue {
    call_id: String,
    from_tag: String,
    local: SocketAddr,
    transport: Transport,
    cseq: u32,
}

/// One request ready to send, with what its response must carry to match it (§17.1.3).
#[derive(Clone)]
pub(super) struct Outgoing {
    pub bytes: Vec<u8>,
    pub branch: String,
    pub cseq: u32,
    pub method: rsip::Method,
}

/// The parts of a request that differ between requests.
pub(super) struct RequestSpec<'a> {
    pub method: rsip::Method,
    pub request_uri: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    /// The far end's tag in To, inside a dialog (RFC 3261 §12.2.1.1).
    pub to_tag: Option<&'a str>,
    pub extra: Vec<Header>,
    pub body: Option<Body<'a>>,
}

/// A message body and its type (an SDP offer or answer).
#[derive(Clone, Copy)]
pub(super) struct Body<'a> {
    pub content_type: &'a str,
    pub bytes: &'a [u8],
}

/// Random text for branch, tag, Call-ID and cnonce: 16 hex digits from 64 random bits.
pub(super) fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl Dialogue {
    pub fn new(local: SocketAddr, transport: Transport) -> Self {
        Dialogue {
            call_id: random_token() + &random_token(),
            from_tag: random_token(),
            local,
            transport,
            cseq: 0,
        }
    }

    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// `user@host:port` of our own address, for Contact.
    pub fn contact_uri(&self, user: &str) -> String {
        format!(
            "sip:{user}@{};transport={}",
            self.local,
            self.transport.param()
        )
    }

    /// Builds the next request: a new branch and the next CSeq number.
    pub fn request(&mut self, spec: RequestSpec) -> Outgoing {
        self.cseq += 1;
        // The magic cookie marks an RFC 3261 branch (§8.1.1.7).
        let branch = format!("z9hG4bK{}", random_token());
        self.build(spec, self.cseq, branch)
    }

    /// Builds a request that belongs to an INVITE: its ACK (the INVITE's CSeq number, §13.2.2.4
    /// and §17.1.1.3) or its CANCEL (also its branch, §9.1: `same_branch`).
    pub fn request_for(&self, spec: RequestSpec, invite: &Outgoing, same_branch: bool) -> Outgoing {
        let branch = match same_branch {
            true => invite.branch.clone(),
            false => format!("z9hG4bK{}", random_token()),
        };
        self.build(spec, invite.cseq, branch)
    }

    fn build(&self, spec: RequestSpec, cseq: u32, branch: String) -> Outgoing {
        let mut headers = Headers::default();
        // rport asks the server to answer to the port it saw (RFC 3581), which is what NAT needs.
        headers.push(
            rsip::headers::Via::new(format!(
                "SIP/2.0/{} {};branch={branch};rport",
                self.transport, self.local
            ))
            .into(),
        );
        headers.push(rsip::headers::MaxForwards::new("70").into());
        headers.push(
            rsip::headers::From::new(format!("<{}>;tag={}", spec.from, self.from_tag)).into(),
        );
        let to_tag = spec.to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        headers.push(rsip::headers::To::new(format!("<{}>{to_tag}", spec.to)).into());
        headers.push(rsip::headers::CallId::new(self.call_id.clone()).into());
        headers.push(rsip::typed::CSeq::from((cseq, spec.method)).into());
        headers.push(
            rsip::headers::UserAgent::new(concat!("voipcheck/", env!("CARGO_PKG_VERSION"))).into(),
        );
        for header in spec.extra {
            headers.push(header);
        }
        let body = spec.body.map_or(&[][..], |body| {
            headers.push(rsip::headers::ContentType::new(body.content_type).into());
            body.bytes
        });
        headers.push(rsip::headers::ContentLength::new(body.len().to_string()).into());
        // The request line is written here rather than through rsip::Request, whose Uri cannot
        // hold an IPv6 reference.
        let mut bytes = format!(
            "{} {} SIP/2.0\r\n{headers}\r\n",
            spec.method, spec.request_uri
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        Outgoing {
            bytes,
            branch,
            cseq,
            method: spec.method,
        }
    }
}

/// A response as the transaction layer hands it on.
#[derive(Debug)]
pub(super) struct Reply {
    pub code: u16,
    pub reason: String,
    pub message: rsip::Response,
}

/// What arrived, as far as the transaction is concerned.
pub(super) enum Incoming {
    Response(Reply),
    /// A request: from the server (a keep-alive OPTIONS on our connection), from the far end
    /// of a call (BYE, re-INVITE), or a call to the probe's own callee.
    Request(Inbound),
}

/// A request received.
#[derive(Debug)]
pub(super) struct Inbound {
    pub method: rsip::Method,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// Parses one received message.
pub(super) fn parse(bytes: &[u8]) -> Result<Incoming, String> {
    let unfolded = unfold(bytes);
    let bytes = unfolded.as_slice();
    let bytes = mask_request_uri(bytes);
    let message = rsip::SipMessage::try_from(bytes.as_ref()).map_err(|e| {
        let mut detail = e.to_string();
        // rsip quotes the unparsed input; a hostile peer's bytes are not worth more than a hint.
        detail.truncate(detail.floor_char_boundary(120));
        format!("unparsable SIP message ({} bytes): {detail}", bytes.len())
    })?;
    let bytes = bytes.as_ref();
    let mut response = match message {
        rsip::SipMessage::Request(mut request) => {
            expand_compact_headers(&mut request.headers);
            return Ok(Incoming::Request(Inbound {
                method: request.method,
                headers: request.headers,
                body: request.body,
            }));
        }
        rsip::SipMessage::Response(response) => response,
    };
    expand_compact_headers(&mut response.headers);
    Ok(Incoming::Response(Reply {
        code: response.status_code.code(),
        reason: reason_phrase(bytes),
        message: response,
    }))
}

/// A request with its Request-URI replaced by a placeholder rsip can read: rsip 0.4's
/// tokenizer fails on an IPv6 reference (`BYE sip:alice@[::1]:5060 SIP/2.0`), and the probe
/// never needs the Request-URI of what it receives. A response is returned unchanged.
fn mask_request_uri(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let line_end = bytes
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(bytes.len());
    let line = String::from_utf8_lossy(&bytes[..line_end]);
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some("SIP/2.0"), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bytes.into();
    };
    if method == "SIP/2.0" || uri.is_empty() {
        return bytes.into();
    }
    let mut masked = format!("{method} sip:request-uri.invalid SIP/2.0").into_bytes();
    masked.extend_from_slice(&bytes[line_end..]);
    masked.into()
}

/// The message with folded header lines joined (RFC 3261 §7.3.1: a line starting with a space
/// or tab continues the previous one, and the line break with the whitespace reads as one
/// space). The body, after the first empty line, is left as it is.
pub(super) fn unfold(bytes: &[u8]) -> Vec<u8> {
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(bytes.len());
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < head_end {
        let folded = bytes[i..].starts_with(b"\r\n")
            && matches!(bytes.get(i + 2), Some(b' ' | b'\t'))
            && i + 2 < head_end;
        if folded {
            out.push(b' ');
            i += 2;
            while matches!(bytes.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out.extend_from_slice(&bytes[head_end..]);
    out
}

/// The reason phrase of the status line `SIP/2.0 200 OK` (text after the code).
fn reason_phrase(bytes: &[u8]) -> String {
    let line_end = bytes
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(bytes.len());
    let line = String::from_utf8_lossy(&bytes[..line_end]);
    let mut parts = line.splitn(3, ' ');
    let reason = parts.nth(2).unwrap_or_default().trim();
    // A peer's reason phrase is shown and stored: a sentence's worth is enough.
    reason[..reason.floor_char_boundary(100)].to_owned()
}

/// The `branch` parameter of a Via value. Read by hand because rsip 0.4's typed Via cannot
/// parse an IPv6 sent-by (`SIP/2.0/UDP [::1]:5060;branch=...`).
fn via_branch(via: &str) -> Option<&str> {
    // Only the topmost Via counts; one header line may hold several, comma-separated.
    let top = via.split(',').next().unwrap_or_default();
    top.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("branch")
            .then_some(value.trim())
    })
}

/// The compact forms of header names (RFC 3261 §7.3.3 and the IANA registry).
const COMPACT_FORMS: [(&str, &str); 15] = [
    ("v", "Via"),
    ("i", "Call-ID"),
    ("f", "From"),
    ("t", "To"),
    ("m", "Contact"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("e", "Content-Encoding"),
    ("k", "Supported"),
    ("s", "Subject"),
    ("o", "Event"),
    ("u", "Allow-Events"),
    ("r", "Refer-To"),
    ("b", "Referred-By"),
    ("x", "Session-Expires"),
];

/// The full name of a header sent as `name`: `Contact` for `m`, anything else as it is.
pub(super) fn full_header_name(name: &str) -> &str {
    expanded_name(name).unwrap_or(name)
}

/// The full name of a compact form, `None` for any other name.
fn expanded_name(name: &str) -> Option<&'static str> {
    COMPACT_FORMS
        .iter()
        .find(|(short, _)| short.eq_ignore_ascii_case(name))
        .map(|(_, long)| *long)
}

/// Gives headers sent in compact form (`m: <sip:...>`) their full names and rsip's types, so
/// every reader finds them by the usual name.
fn expand_compact_headers(headers: &mut Headers) {
    for header in headers.iter_mut() {
        let Header::Other(name, value) = header else {
            continue;
        };
        let Some(full) = expanded_name(name) else {
            continue;
        };
        let value = std::mem::take(value);
        *header = match full {
            "Via" => rsip::headers::Via::new(value).into(),
            "Call-ID" => rsip::headers::CallId::new(value).into(),
            "From" => rsip::headers::From::new(value).into(),
            "To" => rsip::headers::To::new(value).into(),
            "Contact" => rsip::headers::Contact::new(value).into(),
            "Content-Length" => rsip::headers::ContentLength::new(value).into(),
            other => Header::Other(other.to_owned(), value),
        };
    }
}

impl Reply {
    /// Whether this answers `request`: the top Via's branch and the CSeq (number and method)
    /// are the request's (RFC 3261 §17.1.3). `Err` when the response lacks what it takes to tell.
    pub fn answers(&self, request: &Outgoing) -> Result<bool, String> {
        let via = self
            .message
            .via_header()
            .map_err(|e| format!("response without Via: {e}"))?;
        let cseq = self
            .message
            .cseq_header()
            .and_then(|cseq| cseq.typed())
            .map_err(|e| format!("response without a valid CSeq: {e}"))?;
        let branch_matches = via_branch(via.value()) == Some(request.branch.as_str());
        Ok(branch_matches && cseq.seq == request.cseq && cseq.method == request.method)
    }

    /// RFC 3261 §8.2.6.2: a final response carries a To tag. A missing one means the peer is
    /// not a conforming UAS or proxy; whether that matters is the probe's decision.
    pub fn check_to_tag(&self) -> Result<(), String> {
        let to = self
            .header_values("To")
            .next()
            .ok_or_else(|| format!("{} response without To", self.code))?;
        let to = name_addr::parse(&to)
            .map_err(|e| format!("{} response without a valid To: {e}", self.code))?;
        match to.param("tag") {
            Some(tag) if !tag.is_empty() => Ok(()),
            _ => Err(format!("{} response without a To tag", self.code)),
        }
    }

    /// The addresses of every Contact header (several per header or several headers), for a
    /// REGISTER's bindings or a redirect's targets; unreadable ones are skipped.
    pub fn contacts(&self) -> Vec<(String, Option<NameAddr>)> {
        self.header_values("Contact")
            .flat_map(|value| {
                name_addr::split_list(&value)
                    .into_iter()
                    .map(|item| (item.to_owned(), name_addr::parse(item).ok()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The Server header, or User-Agent where a UA answered (RFC 3261 §20.35, §20.41).
    pub fn server(&self) -> Option<String> {
        self.message.headers.iter().find_map(|h| match h {
            Header::Server(s) => Some(s.value().to_owned()),
            Header::UserAgent(ua) => Some(ua.value().to_owned()),
            _ => None,
        })
    }

    /// Values of every header named `name` (case-insensitive), for headers rsip's typed
    /// accessors do not cover (several challenges, several Contacts).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = String> + 'a {
        header_values(&self.message.headers, name)
    }

    /// The SDP body, when the response carries one.
    pub fn sdp(&self) -> Option<&[u8]> {
        sdp_body(&self.message.headers, &self.message.body)
    }
}

/// Values of every header named `name` (case-insensitive).
fn header_values<'a>(headers: &'a Headers, name: &'a str) -> impl Iterator<Item = String> + 'a {
    headers.iter().filter_map(move |h| {
        let text = h.to_string();
        let (n, v) = text.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// A body of type `application/sdp` (RFC 3264), if there is one.
fn sdp_body<'a>(headers: &Headers, body: &'a [u8]) -> Option<&'a [u8]> {
    let sdp = header_values(headers, "Content-Type").any(|t| {
        t.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
    });
    (sdp && !body.is_empty()).then_some(body)
}

/// The headers a response copies from its request (RFC 3261 §8.2.6.2), and for a response
/// that creates a dialog also Record-Route (§12.1.1).
const COPIED: [&str; 5] = ["Via", "From", "To", "Call-ID", "CSeq"];

impl Inbound {
    /// Values of every header named `name` (case-insensitive).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = String> + 'a {
        header_values(&self.headers, name)
    }

    /// The SDP body, when the request carries one.
    pub fn sdp(&self) -> Option<&[u8]> {
        sdp_body(&self.headers, &self.body)
    }

    /// The Call-ID, to tell which call an in-dialog request belongs to.
    pub fn call_id(&self) -> Option<String> {
        self.header_values("Call-ID").next()
    }

    /// A response to this request: its Via, From, To, Call-ID and CSeq copied, `to_tag` added
    /// to a To without one (a UAS tags its responses, §8.2.6.2), Record-Route copied when
    /// `record_route` (a response that creates a dialog, §12.1.1), then `extra` header lines
    /// and the body.
    pub fn response(&self, reply: ResponseSpec) -> Vec<u8> {
        let mut text = format!("SIP/2.0 {} {}\r\n", reply.code, reply.reason);
        for header in self.headers.iter() {
            let line = header.to_string();
            let Some((name, _)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim();
            let copied = COPIED.iter().any(|c| c.eq_ignore_ascii_case(name))
                || (reply.record_route && name.eq_ignore_ascii_case("Record-Route"));
            if !copied {
                continue;
            }
            text.push_str(&line);
            let untagged = name.eq_ignore_ascii_case("To")
                && name_addr::parse(line.split_once(':').map_or("", |(_, v)| v))
                    .is_ok_and(|to| to.param("tag").is_none());
            if let Some(tag) = reply.to_tag.filter(|_| untagged) {
                text.push_str(&format!(";tag={tag}"));
            }
            text.push_str("\r\n");
        }
        for line in reply.extra {
            text.push_str(line);
            text.push_str("\r\n");
        }
        text.push_str(concat!(
            "Server: voipcheck/",
            env!("CARGO_PKG_VERSION"),
            "\r\n"
        ));
        let body = reply.body.map_or(&[][..], |body| {
            text.push_str(&format!("Content-Type: {}\r\n", body.content_type));
            body.bytes
        });
        text.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }
}

/// What a response to an [`Inbound`] request says besides the copied headers.
pub(super) struct ResponseSpec<'a> {
    pub code: u16,
    pub reason: &'a str,
    pub to_tag: Option<&'a str>,
    pub record_route: bool,
    pub extra: &'a [String],
    pub body: Option<Body<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialogue() -> Dialogue {
        Dialogue::new("192.0.2.5:40000".parse().unwrap(), Transport::Udp)
    }

    fn options(d: &mut Dialogue) -> Outgoing {
        d.request(RequestSpec {
            method: rsip::Method::Options,
            request_uri: "sip:example.com",
            from: "sip:voipcheck@192.0.2.5",
            to: "sip:example.com",
            to_tag: None,
            extra: Vec::new(),
            body: None,
        })
    }

    #[test]
    fn a_request_has_the_headers_rfc_3261_requires() {
        let mut d = dialogue();
        let first = options(&mut d);
        let second = options(&mut d);
        let text = String::from_utf8(first.bytes.clone()).unwrap();
        assert!(
            text.starts_with("OPTIONS sip:example.com SIP/2.0\r\n"),
            "{text}"
        );
        assert!(text.contains(&format!(
            "Via: SIP/2.0/UDP 192.0.2.5:40000;branch={};rport\r\n",
            first.branch
        )));
        assert!(first.branch.starts_with("z9hG4bK"));
        assert!(text.contains("CSeq: 1 OPTIONS\r\n"));
        assert!(text.contains("Max-Forwards: 70\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{text}");
        assert_ne!(first.branch, second.branch);
        assert_eq!(second.cseq, 2);
        let request = rsip::Request::try_from(first.bytes.as_slice()).unwrap();
        let from = request.from_header().unwrap().typed().unwrap();
        assert!(from.params.iter().any(|p| matches!(p, rsip::Param::Tag(_))));
    }

    fn reply_to(request: &Outgoing, extra: &str) -> Reply {
        let text = format!(
            "SIP/2.0 200 Fine Thanks\r\nv: SIP/2.0/UDP 192.0.2.5:40000;branch={};rport=40000\r\nt: <sip:example.com>;tag=abc\r\nf: <sip:x@y>;tag=1\r\ni: c\r\nCSeq: {} OPTIONS\r\n{extra}l: 0\r\n\r\n",
            request.branch, request.cseq
        );
        match parse(text.as_bytes()).unwrap() {
            Incoming::Response(reply) => reply,
            Incoming::Request(_) => panic!("parsed as a request"),
        }
    }

    #[test]
    fn reads_reason_phrase_and_compact_headers_and_matches_the_request() {
        let mut d = dialogue();
        let request = options(&mut d);
        let reply = reply_to(&request, "Server: test-peer\r\n");
        assert_eq!((reply.code, reply.reason.as_str()), (200, "Fine Thanks"));
        assert_eq!(reply.answers(&request), Ok(true));
        assert_eq!(reply.check_to_tag(), Ok(()));
        assert_eq!(reply.server().as_deref(), Some("test-peer"));
        let other = options(&mut d);
        assert_eq!(reply.answers(&other), Ok(false));
    }

    #[test]
    fn folded_lines_are_joined_and_an_ipv6_to_is_read() {
        let mut d = dialogue();
        let request = options(&mut d);
        let text = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP [::1]:40000\r\n ;branch={}\r\nTo: <sip:[::1]:5060>\r\n\t;tag=v6\r\nFrom: <sip:x@[::1]>;tag=1\r\nCall-ID: c\r\nCSeq:\r\n  {} OPTIONS\r\nContent-Length: 4\r\n\r\nab\r\n",
            request.branch, request.cseq
        );
        let Ok(Incoming::Response(reply)) = parse(text.as_bytes()) else {
            panic!("not parsed: {text}");
        };
        assert_eq!(reply.answers(&request), Ok(true));
        assert_eq!(reply.check_to_tag(), Ok(()));
        // The body is left alone: a CRLF and space in it is not a folded header.
        assert_eq!(
            unfold(b"SIP/2.0 200 OK\r\nA: b\r\n c\r\n\r\nx\r\n y"),
            b"SIP/2.0 200 OK\r\nA: b c\r\n\r\nx\r\n y"
        );
    }

    #[test]
    fn the_branch_is_read_from_ipv4_and_ipv6_vias() {
        assert_eq!(
            via_branch("SIP/2.0/UDP [::1]:5060;rport=5;branch=z9hG4bKabc"),
            Some("z9hG4bKabc")
        );
        assert_eq!(
            via_branch("SIP/2.0/TCP 192.0.2.1;BRANCH=z9hG4bKx , SIP/2.0/UDP h;branch=other"),
            Some("z9hG4bKx")
        );
        assert_eq!(via_branch("SIP/2.0/UDP 192.0.2.1;rport"), None);
        assert_eq!(
            via_branch("SIP/2.0/UDP 192.0.2.1;rport, SIP/2.0/UDP h;branch=z9hG4bKlower"),
            None
        );
    }

    #[test]
    fn garbage_is_an_error_and_a_request_is_not_a_response() {
        assert!(parse(b"\x00\xffgarbage\r\n\r\n").is_err());
        assert!(matches!(
            parse(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nContent-Length: 0\r\n\r\n"),
            Ok(Incoming::Request(request)) if request.method == rsip::Method::Options
        ));
    }

    #[test]
    fn a_request_to_an_ipv6_uri_is_read_and_answered_with_its_headers_copied() {
        let text = "BYE sip:alice-1@[::1]:5062;transport=udp SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:5060;branch=z9hG4bKp\r\nv: SIP/2.0/UDP [::1]:5070;branch=z9hG4bKq\r\nFrom: <sip:echo@[::1]>;tag=far\r\nTo: <sip:alice@[::1]>\r\nCall-ID: c1\r\nCSeq: 7 BYE\r\nRecord-Route: <sip:[::1];lr>\r\nContent-Length: 0\r\n\r\n";
        let Ok(Incoming::Request(request)) = parse(text.as_bytes()) else {
            panic!("not read: {text}");
        };
        assert_eq!(request.method, rsip::Method::Bye);
        assert_eq!(request.call_id().as_deref(), Some("c1"));
        let response = request.response(ResponseSpec {
            code: 200,
            reason: "OK",
            to_tag: Some("ours"),
            record_route: false,
            extra: &[],
            body: None,
        });
        let response = String::from_utf8(response).unwrap();
        assert!(response.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP [::1]:5060;branch=z9hG4bKp\r\nVia: SIP/2.0/UDP [::1]:5070;branch=z9hG4bKq\r\n"), "{response}");
        assert!(
            response.contains("To: <sip:alice@[::1]>;tag=ours\r\n"),
            "{response}"
        );
        assert!(response.contains("CSeq: 7 BYE\r\n"), "{response}");
        assert!(!response.contains("Record-Route"), "{response}");
        assert!(
            response.ends_with("Content-Length: 0\r\n\r\n"),
            "{response}"
        );
    }
}
