//! HTTP digest authentication as SIP uses it (RFC 3261 §22.4, RFC 2617, RFC 7616, RFC 8760).
//!
//! Hand-written on md-5 and sha2 because rsip 0.4's digest support is not usable here: it does
//! not parse `algorithm=SHA-256` (it knows only `SHA256`), rejects a qop list such as
//! `qop="auth,auth-int"`, writes `nc` in decimal instead of hex, and ignores the `-sess` variants.

use crate::secret::Secret;
use md5::Md5;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The digest algorithms the probe answers (RFC 7616 §6.1; SHA-512-256 is not offered by SIP
/// servers in practice and is refused as unsupported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DigestAlgorithm {
    #[serde(rename = "MD5")]
    Md5,
    #[serde(rename = "MD5-sess")]
    Md5Sess,
    #[serde(rename = "SHA-256")]
    Sha256,
    #[serde(rename = "SHA-256-sess")]
    Sha256Sess,
}

impl DigestAlgorithm {
    fn parse(token: &str) -> Option<Self> {
        match token.to_ascii_uppercase().as_str() {
            "MD5" => Some(Self::Md5),
            "MD5-SESS" => Some(Self::Md5Sess),
            "SHA-256" => Some(Self::Sha256),
            "SHA-256-SESS" => Some(Self::Sha256Sess),
            _ => None,
        }
    }

    /// RFC 8760 §2.4: with several challenges, use the strongest algorithm offered.
    fn strength(self) -> u8 {
        match self {
            Self::Md5 | Self::Md5Sess => 0,
            Self::Sha256 | Self::Sha256Sess => 1,
        }
    }

    fn is_session(self) -> bool {
        matches!(self, Self::Md5Sess | Self::Sha256Sess)
    }

    fn hash(self, data: &str) -> String {
        match self {
            Self::Md5 | Self::Md5Sess => hex::encode(Md5::digest(data.as_bytes())),
            Self::Sha256 | Self::Sha256Sess => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }
}

impl std::fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
        })
    }
}

/// Quality of protection chosen for the answer (RFC 2617 §3.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qop {
    Auth,
    /// Integrity over the body; our requests have none, so H(entity-body) is H("").
    AuthInt,
}

/// A challenge from a WWW-Authenticate or Proxy-Authenticate header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    /// `stale=true`: the credentials were right, only the nonce was old (RFC 2617 §3.2.1).
    pub stale: bool,
    pub algorithm: DigestAlgorithm,
    /// `None`: the RFC 2069 compatibility mode without qop.
    qop: Option<Qop>,
}

impl Challenge {
    /// Parses one header value. `Err` names what made it unusable.
    pub fn parse(value: &str) -> Result<Challenge, String> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(format!("authentication scheme {scheme} is not Digest"));
        }
        let params = auth_params(rest)?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let algorithm = match get("algorithm") {
            None => DigestAlgorithm::Md5,
            Some(token) => DigestAlgorithm::parse(&token)
                .ok_or_else(|| format!("digest algorithm {token} is not supported"))?,
        };
        let offered = get("qop").unwrap_or_default();
        let offered: Vec<&str> = offered.split(',').map(str::trim).collect();
        let qop = if offered.iter().any(|q| q.eq_ignore_ascii_case("auth")) {
            Some(Qop::Auth)
        } else if offered.iter().any(|q| q.eq_ignore_ascii_case("auth-int")) {
            Some(Qop::AuthInt)
        } else if offered.iter().all(|q| q.is_empty()) {
            None
        } else {
            return Err(format!("digest qop {} is not supported", offered.join(",")));
        };
        Ok(Challenge {
            realm: get("realm").ok_or("digest challenge without realm")?,
            nonce: get("nonce").ok_or("digest challenge without nonce")?,
            opaque: get("opaque"),
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
            algorithm,
            qop,
        })
    }

    /// The challenge to answer among several headers (RFC 8760 §2.4: the strongest supported
    /// algorithm; on a tie the first). `Err` when none can be answered.
    pub fn choose<I: IntoIterator<Item = String>>(values: I) -> Result<Challenge, String> {
        let mut best: Option<Challenge> = None;
        let mut problem = String::from("no digest challenge in the response");
        for value in values {
            match Challenge::parse(&value) {
                Ok(c) => {
                    if best
                        .as_ref()
                        .is_none_or(|b| c.algorithm.strength() > b.algorithm.strength())
                    {
                        best = Some(c);
                    }
                }
                Err(e) => problem = e,
            }
        }
        best.ok_or(problem)
    }
}

/// What an answer to one challenge needs besides the challenge itself.
pub(super) struct Answer<'a> {
    pub username: &'a str,
    pub password: &'a Secret,
    pub method: &'a str,
    /// The Request-URI exactly as sent (RFC 3261 §22.4: digest-uri).
    pub uri: &'a str,
    /// How many requests used this nonce, this one included (RFC 2617 §3.2.2: nc).
    pub nonce_count: u32,
    pub cnonce: &'a str,
}

impl Answer<'_> {
    /// The `response` value: KD(H(A1), nonce ":" nc ":" cnonce ":" qop ":" H(A2)).
    fn response(&self, challenge: &Challenge) -> String {
        let alg = challenge.algorithm;
        let mut ha1 = alg.hash(&format!(
            "{}:{}:{}",
            self.username,
            challenge.realm,
            self.password.expose()
        ));
        if alg.is_session() {
            ha1 = alg.hash(&format!("{ha1}:{}:{}", challenge.nonce, self.cnonce));
        }
        let a2 = match challenge.qop {
            Some(Qop::AuthInt) => format!("{}:{}:{}", self.method, self.uri, alg.hash("")),
            _ => format!("{}:{}", self.method, self.uri),
        };
        let ha2 = alg.hash(&a2);
        match challenge.qop {
            Some(qop) => alg.hash(&format!(
                "{ha1}:{}:{:08x}:{}:{}:{ha2}",
                challenge.nonce,
                self.nonce_count,
                self.cnonce,
                qop_name(qop)
            )),
            None => alg.hash(&format!("{ha1}:{}:{ha2}", challenge.nonce)),
        }
    }

    /// The Authorization / Proxy-Authorization header value answering `challenge`.
    pub fn header(&self, challenge: &Challenge) -> String {
        let mut value = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", algorithm={}",
            quote(self.username),
            quote(&challenge.realm),
            quote(&challenge.nonce),
            quote(self.uri),
            self.response(challenge),
            challenge.algorithm
        );
        if let Some(qop) = challenge.qop {
            value += &format!(
                ", qop={}, nc={:08x}, cnonce=\"{}\"",
                qop_name(qop),
                self.nonce_count,
                quote(self.cnonce)
            );
        }
        if let Some(opaque) = &challenge.opaque {
            value += &format!(", opaque=\"{}\"", quote(opaque));
        }
        value
    }
}

fn qop_name(qop: Qop) -> &'static str {
    match qop {
        Qop::Auth => "auth",
        Qop::AuthInt => "auth-int",
    }
}

/// Escapes a value for a quoted-string (RFC 3261 §25.1).
fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Splits `name=value, name="quoted, value"` (RFC 2617 §1.2 auth-param list).
fn auth_params(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut params = Vec::new();
    let mut rest = text.trim_start_matches([' ', '\t', ',']);
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| format!("malformed challenge parameter `{}`", rest.trim()))?;
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or("unterminated quoted string in challenge")?;
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.push((name.trim().to_owned(), value));
        rest = remainder.trim_start_matches([' ', '\t', ',']);
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer<'a>(password: &'a Secret, nc: u32, cnonce: &'a str) -> Answer<'a> {
        Answer {
            username: "Mufasa",
            password,
            method: "GET",
            uri: "/dir/index.html",
            nonce_count: nc,
            cnonce,
        }
    }

    #[test]
    fn rfc_2617_section_3_5_example() {
        let challenge = Challenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        let password = Secret::new("Circle Of Life");
        let answer = answer(&password, 1, "0a4f113b");
        assert_eq!(
            answer.response(&challenge),
            "6629fae49393a05397450978507c4ef1"
        );
        let header = answer.header(&challenge);
        assert!(
            header.contains("qop=auth, nc=00000001, cnonce=\"0a4f113b\""),
            "{header}"
        );
        assert!(header.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
        assert!(!header.contains("Circle"));
    }

    #[test]
    fn rfc_7616_section_3_9_1_examples() {
        let password = Secret::new("Circle of Life");
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let challenge = |algorithm: &str| {
            Challenge::parse(&format!(
                r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#
            ))
            .unwrap()
        };
        let sha = challenge("SHA-256");
        assert_eq!(sha.algorithm, DigestAlgorithm::Sha256);
        assert_eq!(
            answer(&password, 1, cnonce).response(&sha),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        // The RFC prints ...eebdec1; erratum 4897 corrects it to ...eebdbec.
        assert_eq!(
            answer(&password, 1, cnonce).response(&challenge("MD5")),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
    }

    #[test]
    fn nonce_count_is_hex_and_stale_is_read() {
        let challenge =
            Challenge::parse(r#"Digest realm="r", nonce="n", qop="auth", stale=TRUE"#).unwrap();
        assert!(challenge.stale);
        let password = Secret::new("p");
        assert!(
            answer(&password, 26, "c")
                .header(&challenge)
                .contains("nc=0000001a")
        );
    }

    #[test]
    fn without_qop_the_rfc_2069_form_is_used() {
        let challenge = Challenge::parse(r#"Digest realm="r", nonce="n""#).unwrap();
        let password = Secret::new("p");
        let header = answer(&password, 1, "c").header(&challenge);
        assert!(!header.contains("qop"), "{header}");
        // MD5(MD5("Mufasa:r:p") ":n:" MD5("GET:/dir/index.html"))
        let ha1 = DigestAlgorithm::Md5.hash("Mufasa:r:p");
        let ha2 = DigestAlgorithm::Md5.hash("GET:/dir/index.html");
        let expected = DigestAlgorithm::Md5.hash(&format!("{ha1}:n:{ha2}"));
        assert!(header.contains(&format!("response=\"{expected}\"")));
    }

    #[test]
    fn prefers_sha_256_and_refuses_unknown_schemes_and_algorithms() {
        let chosen = Challenge::choose([
            r#"Digest realm="r", nonce="a", algorithm=MD5"#.to_owned(),
            r#"Digest realm="r", nonce="b", algorithm=SHA-256"#.to_owned(),
        ])
        .unwrap();
        assert_eq!(chosen.nonce, "b");
        assert!(Challenge::parse(r#"Basic realm="r""#).is_err());
        assert!(Challenge::parse(r#"Digest realm="r", nonce="n", algorithm=SHA-512-256"#).is_err());
        assert!(Challenge::parse(r#"Digest realm="r", nonce="unterminated"#).is_err());
        assert!(Challenge::choose(Vec::<String>::new()).is_err());
    }

    #[test]
    fn quoted_values_keep_commas_and_escapes() {
        let c = Challenge::parse(r#"Digest realm="a, \"b\"", nonce="x""#).unwrap();
        assert_eq!(c.realm, "a, \"b\"");
    }
}
