//! Answering digest challenges across the requests of one probe run, for REGISTER and INVITE
//! alike: which challenge is being answered, how often its nonce was used (nc), and when a
//! challenge after an answer means the credentials were rejected.
//!
//! A second challenge after an answer is a rejection, except one `stale=true` re-challenge,
//! which only says the nonce aged (RFC 2617 §3.2.1).

use super::digest::{Answer, Challenge, DigestAlgorithm};
use super::message::{Reply, random_token};
use crate::probe::Failure;
use crate::secret::Secret;
use rsip::Header;
use rsip::prelude::UntypedHeader;

/// The credentials of one account and the challenge currently answered with them.
pub(super) struct Auth<'a> {
    username: &'a str,
    password: &'a Secret,
    current: Option<Current>,
    /// The last request sent answered a challenge whose nonce it used first.
    answered_fresh: bool,
    stale_retried: bool,
}

struct Current {
    challenge: Challenge,
    /// 407 (Proxy-Authorization) rather than 401 (Authorization).
    proxy: bool,
    nonce_count: u32,
    cnonce: String,
}

impl<'a> Auth<'a> {
    /// `username` is the digest user name (`authUsername`, else the account's user).
    pub fn new(username: &'a str, password: &'a Secret) -> Self {
        Auth {
            username,
            password,
            current: None,
            answered_fresh: false,
            stale_retried: false,
        }
    }

    /// The algorithm of the challenge answered, once there is one.
    pub fn algorithm(&self) -> Option<DigestAlgorithm> {
        self.current.as_ref().map(|c| c.challenge.algorithm)
    }

    /// The Authorization or Proxy-Authorization header for the next request (`method` to
    /// `uri`, the Request-URI exactly as sent), once a challenge came; counts the nonce's use.
    pub fn header(&mut self, method: &str, uri: &str) -> Option<Header> {
        let Some(current) = &mut self.current else {
            self.answered_fresh = false;
            return None;
        };
        self.answered_fresh = current.nonce_count == 0;
        current.nonce_count += 1;
        let value = Answer {
            username: self.username,
            password: self.password,
            method,
            uri,
            nonce_count: current.nonce_count,
            cnonce: &current.cnonce,
        }
        .header(&current.challenge);
        Some(if current.proxy {
            rsip::headers::ProxyAuthorization::new(value).into()
        } else {
            rsip::headers::Authorization::new(value).into()
        })
    }

    /// Takes the challenge of a 401/407 to answer with the next request. `Err` when it cannot
    /// be answered or when it rejects the credentials just sent: a challenge after a fresh
    /// answer, unless it says `stale=true` and `stale_allowed` and no stale retry was made yet.
    pub fn take(&mut self, reply: &Reply, stale_allowed: bool) -> Result<(), Failure> {
        let code = reply.code;
        let proxy = code == 407;
        let header = if proxy {
            "Proxy-Authenticate"
        } else {
            "WWW-Authenticate"
        };
        let challenge = Challenge::choose(reply.header_values(header))
            .map_err(|detail| Failure::Protocol { detail })?;
        if self.answered_fresh {
            if !challenge.stale || !stale_allowed || self.stale_retried {
                return Err(Failure::AuthRejected { code });
            }
            self.stale_retried = true;
        }
        self.current = Some(Current {
            challenge,
            proxy,
            nonce_count: 0,
            cnonce: random_token(),
        });
        Ok(())
    }

    /// Credentials were sent (a challenge was taken), so a 403 rejects them.
    pub fn answered(&self) -> bool {
        self.current.is_some()
    }
}
