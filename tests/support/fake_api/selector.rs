//! The `labelSelector` of list and watch, parsed as apimachinery's `labels.Parse` does and
//! matched against the plain JSON objects of the fake.
//!
//! The parser is written here because no crate parses that grammar: kube only formats
//! selectors (`kube::core::Selector` is built from expressions or a `LabelSelector`, never from
//! the query string), and k8s-openapi's `LabelSelector` is the structured form. What it parses
//! into is kube's own [`Expression`], and matching is kube's [`SelectorExt::matches`], whose
//! semantics are apimachinery's: `=`, `in` and an exists requirement need the key, `!=` and
//! `notin` also match an object without it.
//!
//! The grammar, as `labels.Parse`: comma-separated requirements `key`, `!key`, `key=value`,
//! `key==value`, `key!=value`, `key in (v1,v2)`, `key notin (v1,v2)`, whitespace allowed
//! around every token. A value may be empty (`key=`, `key in (a,)`; `key in ()` is the set of
//! the empty value), keys must be qualified names and values label values. apimachinery's
//! errors, `unable to parse requirement: …` for a requirement, are what the API server answers
//! with 400 BadRequest. Numeric `key>N` and `key<N` (which apimachinery also parses) are
//! refused here with a message saying so: the operator does not use them, and a test that does
//! should learn that the fake does not serve them rather than get a wrong answer.

use kube::core::{Expression, Selector, SelectorExt};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// A parsed `labelSelector`; the empty one selects everything.
pub struct LabelSelector(Selector);

impl LabelSelector {
    /// Parses a `labelSelector` query value; the error is apimachinery's message.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut parser = Parser {
            tokens: lex(text),
            position: 0,
        };
        parser.selector().map(LabelSelector)
    }

    /// Whether the selector is empty: the API server counts the objects a page leaves out
    /// (`remainingItemCount`) only then.
    pub fn selects_all(&self) -> bool {
        self.0.selects_all()
    }

    /// Whether `object`'s `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        if self.0.selects_all() {
            return true;
        }
        // Labels are strings in any object the API server would store; `insert` stores raw JSON,
        // where a label that is not a string counts as absent.
        let labels: BTreeMap<String, String> = object["metadata"]["labels"]
            .as_object()
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        self.0.matches(&labels)
    }
}

/// apimachinery's lexer tokens. `in` and `notin` are words: they are operators only where an
/// operator is expected (a key or value may be called `in`), as its parser's contexts make them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Token<'s> {
    End,
    Comma,
    Open,
    Close,
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    /// `>` or `<`.
    Compare(&'s str),
    Word(&'s str),
}

impl<'s> Token<'s> {
    /// The text apimachinery's messages quote for the token (`''` for the end).
    fn text(self) -> &'s str {
        match self {
            Token::End => "",
            Token::Comma => ",",
            Token::Open => "(",
            Token::Close => ")",
            Token::Not => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::Compare(text) | Token::Word(text) => text,
        }
    }
}

/// Splits at whitespace and at `= ! ( ) , > <`, taking `!=` and `==` as one token.
fn lex(text: &str) -> Vec<Token<'_>> {
    let special = |c: char| "=!(),><".contains(c);
    let whitespace = [' ', '\t', '\r', '\n'];
    let mut tokens = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(whitespace);
        let Some(first) = rest.chars().next() else {
            tokens.push(Token::End);
            return tokens;
        };
        let (token, length) = match first {
            '!' if rest.starts_with("!=") => (Token::NotEquals, 2),
            '=' if rest.starts_with("==") => (Token::DoubleEquals, 2),
            '!' => (Token::Not, 1),
            '=' => (Token::Equals, 1),
            ',' => (Token::Comma, 1),
            '(' => (Token::Open, 1),
            ')' => (Token::Close, 1),
            '>' | '<' => (Token::Compare(&rest[..1]), 1),
            _ => {
                let length = rest
                    .find(|c: char| special(c) || whitespace.contains(&c))
                    .unwrap_or(rest.len());
                (Token::Word(&rest[..length]), length)
            }
        };
        tokens.push(token);
        rest = &rest[length..];
    }
}

/// apimachinery's recursive descent over the tokens, with its error messages.
struct Parser<'s> {
    /// Ends with [`Token::End`].
    tokens: Vec<Token<'s>>,
    position: usize,
}

impl<'s> Parser<'s> {
    fn peek(&self) -> Token<'s> {
        self.tokens[self.position]
    }

    fn next(&mut self) -> Token<'s> {
        let token = self.peek();
        if token != Token::End {
            self.position += 1;
        }
        token
    }

    fn selector(&mut self) -> Result<Selector, String> {
        let mut requirements = Vec::new();
        loop {
            match self.peek() {
                Token::Word(_) | Token::Not => {
                    let requirement = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(requirement);
                    match self.next() {
                        Token::End => break,
                        Token::Comma => match self.peek() {
                            Token::Word(_) | Token::Not => {}
                            other => {
                                return Err(format!(
                                    "found '{}', expected: identifier after ','",
                                    other.text()
                                ));
                            }
                        },
                        other => {
                            return Err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                other.text()
                            ));
                        }
                    }
                }
                Token::End => break,
                other => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        other.text()
                    ));
                }
            }
        }
        Ok(requirements.into_iter().collect())
    }

    fn requirement(&mut self) -> Result<Expression, String> {
        let negated = self.peek() == Token::Not;
        if negated {
            self.next();
        }
        let key = match self.next() {
            Token::Word(key) => key,
            other => return Err(format!("found '{}', expected: identifier", other.text())),
        };
        validate_key(key)?;
        let key = key.to_owned();
        // `!key` ends the requirement whatever follows (`!a=b` fails on the `=` after it).
        if negated {
            return Ok(Expression::DoesNotExist(key));
        }
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(Expression::Exists(key));
        }
        match self.next() {
            Token::Word("in") => Ok(Expression::In(key.clone(), self.values(&key)?)),
            Token::Word("notin") => Ok(Expression::NotIn(key.clone(), self.values(&key)?)),
            Token::Equals | Token::DoubleEquals => {
                Ok(Expression::Equal(key.clone(), self.value(&key)?))
            }
            Token::NotEquals => Ok(Expression::NotEqual(key.clone(), self.value(&key)?)),
            Token::Compare(symbol) => Err(format!(
                "found '{symbol}': the fake API does not serve the numeric operators gt and lt"
            )),
            other => Err(format!(
                "found '{}', expected: in, notin, =, ==, !=",
                other.text()
            )),
        }
    }

    /// The value of `=`, `==` or `!=` for `key`: empty when the requirement ends there.
    fn value(&mut self, key: &str) -> Result<String, String> {
        let value = match self.peek() {
            Token::End | Token::Comma => "",
            _ => match self.next() {
                Token::Word(value) => value,
                other => return Err(format!("found '{}', expected: identifier", other.text())),
            },
        };
        validate_value(key, value)?;
        Ok(value.to_owned())
    }

    /// `(v1,v2)` of `in` and `notin` for `key`. An empty place is the empty value, as in apimachinery's
    /// `parseIdentifiersList`: `()` is `{""}`, `(a,)` is `{a, ""}`.
    fn values(&mut self, key: &str) -> Result<BTreeSet<String>, String> {
        match self.next() {
            Token::Open => {}
            other => return Err(format!("found '{}' expected: '('", other.text())),
        }
        let mut values = BTreeSet::new();
        loop {
            let value = match self.peek() {
                Token::Word(value) => {
                    self.next();
                    value
                }
                Token::Comma | Token::Close => "",
                other => {
                    return Err(format!(
                        "found '{}', expected: ',', ')' or identifier",
                        other.text()
                    ));
                }
            };
            validate_value(key, value)?;
            values.insert(value.to_owned());
            match self.next() {
                Token::Comma => {}
                Token::Close => return Ok(values),
                other => return Err(format!("found '{}', expected: ',' or ')'", other.text())),
            }
        }
    }
}

/// `[A-Za-z0-9]`, then `[-A-Za-z0-9_.]*`, ending in `[A-Za-z0-9]`, at most 63 characters: the
/// name part of a qualified name, and a non-empty label value.
fn is_name(text: &str) -> bool {
    let alphanumeric = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    text.len() <= 63
        && alphanumeric(text.chars().next())
        && alphanumeric(text.chars().last())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A DNS-1123 subdomain: dot-separated lowercase alphanumeric labels with inner `-`, at most
/// 253 characters.
fn is_dns_subdomain(text: &str) -> bool {
    let alphanumeric =
        |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    text.len() <= 253
        && text.split('.').all(|label| {
            alphanumeric(label.chars().next())
                && alphanumeric(label.chars().last())
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// apimachinery's `validateLabelKey`: a qualified name, `[prefix/]name`.
fn validate_key(key: &str) -> Result<(), String> {
    let valid = match key.split_once('/') {
        None => is_name(key),
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name(name),
    };
    if valid {
        return Ok(());
    }
    Err(format!(
        "invalid label key \"{key}\": must be a qualified name (at most 63 characters, matching \
         regex ([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]), with an optional DNS subdomain prefix \
         (at most 253 characters, matching regex [a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*) \
         and slash (/): e.g. \"MyName\" or \"example.com/MyName\""
    ))
}

/// apimachinery's `validateLabelValue`: empty, or a name.
fn validate_value(key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || is_name(value) {
        return Ok(());
    }
    Err(format!(
        "invalid label value: \"{value}\": at key: \"{key}\": must have at most 63 characters, \
         matching regex (([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?: e.g. \"MyValue\" or \"\""
    ))
}
