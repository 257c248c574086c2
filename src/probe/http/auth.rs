//! Credentials in a URL's userinfo (`https://user:pass@host/`): sent as HTTP Basic auth and kept
//! out of everything the probe reports.

use crate::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::header::HeaderValue;
use percent_encoding::percent_decode_str;
use url::Url;

/// The `Authorization` value for RFC 7617 Basic auth, `Basic base64(user ":" password)`.
#[derive(Debug, Clone)]
pub(super) struct BasicAuth(Secret);

impl BasicAuth {
    /// The credentials in `url`'s userinfo, if any. The userinfo is percent-decoded first
    /// (RFC 3986 §3.2.1), so `p%40ss` sends the password `p@ss`, as curl and browsers do.
    pub(super) fn from_url(url: &Url) -> Option<BasicAuth> {
        if url.username().is_empty() && url.password().is_none() {
            return None;
        }
        let mut plain: Vec<u8> = percent_decode_str(url.username()).collect();
        plain.push(b':');
        plain.extend(percent_decode_str(url.password().unwrap_or("")));
        Some(BasicAuth(Secret::new(format!(
            "Basic {}",
            STANDARD.encode(&plain)
        ))))
    }

    /// The header value, marked sensitive so hyper never logs it or compresses it.
    pub(super) fn header_value(&self) -> HeaderValue {
        let mut value = HeaderValue::from_str(self.0.expose())
            .expect("\"Basic \" and base64 are always a valid header value");
        value.set_sensitive(true);
        value
    }
}

/// `url` without its userinfo: the only form of a URL that the outcome, errors and logs carry.
pub(super) fn redacted(url: &Url) -> Url {
    let mut url = url.clone();
    // Both fail only for URLs that cannot have userinfo (no host), which then have none.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_percent_decoded_and_base64_encoded() {
        // RFC 7617 §2's example: Aladdin / open sesame.
        let url = Url::parse("http://Aladdin:open%20sesame@example.com/").unwrap();
        let auth = BasicAuth::from_url(&url).unwrap();
        assert_eq!(
            auth.header_value().to_str().unwrap(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert!(auth.header_value().is_sensitive());
        assert!(!format!("{auth:?}").contains("QWxh"));
    }

    #[test]
    fn no_userinfo_no_credentials() {
        assert!(BasicAuth::from_url(&Url::parse("https://example.com/").unwrap()).is_none());
    }

    #[test]
    fn redacted_url_has_no_userinfo() {
        let url = Url::parse("https://user:secret@example.com:8443/a?b=c").unwrap();
        assert_eq!(redacted(&url).as_str(), "https://example.com:8443/a?b=c");
    }
}
