//! HTTP content codings (RFC 9110 §8.4): the final body is decoded before `bodyContains` /
//! `bodyRegex` see it, so a page a server sends gzip-encoded is matched as the browser shows it.
//!
//! The decoders are flate2's (gzip, zlib, raw deflate) and brotli-decompressor's, used as
//! `Write` sinks: each received chunk is pushed through the chain of decoders into a buffer that
//! holds at most the body limit, so the limit bounds the *decoded* bytes and memory stays
//! bounded whatever the compression ratio. Reaching the limit truncates as for an uncoded body,
//! except when the body expands beyond [`MAX_RATIO`] to one: then it is a decompression bomb and
//! the probe fails ([`DecodingFailure::Bomb`]) rather than matching a prefix of padding.

use crate::probe::{DecodingFailure, Failure};
use flate2::write::{DeflateDecoder, GzDecoder, ZlibDecoder};
use hyper::HeaderMap;
use hyper::header::CONTENT_ENCODING;
use serde::Serialize;
use std::fmt;
use std::io::{self, Write};

/// The codings offered in `Accept-Encoding`, all that [`codings`] decodes.
pub(super) const ACCEPT_ENCODING: &str = "gzip, deflate, br";

/// Decoded bytes per encoded byte above which a body that reaches the limit is a bomb. Text
/// pages compress 3 to 20-fold, very repetitive ones ~100-fold; deflate's ceiling is ~1,030.
pub const MAX_RATIO: usize = 500;

/// Encoded bytes are fed to the decoders in pieces this small, so the ratio is measured on what
/// was actually consumed when the limit was reached, not on a whole network read.
const PIECE: usize = 1024;

/// A content coding the probe decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentCoding {
    Gzip,
    Deflate,
    Br,
}

impl fmt::Display for ContentCoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContentCoding::Gzip => "gzip",
            ContentCoding::Deflate => "deflate",
            ContentCoding::Br => "br",
        })
    }
}

/// The codings of `Content-Encoding` in the order they were applied (`identity` dropped); an
/// unknown one fails, since its bytes cannot be matched as text.
pub(super) fn codings(headers: &HeaderMap) -> Result<Vec<ContentCoding>, Failure> {
    let mut codings = Vec::new();
    for value in headers.get_all(CONTENT_ENCODING) {
        let text = String::from_utf8_lossy(value.as_bytes());
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let coding = match name.to_ascii_lowercase().as_str() {
                "identity" => continue,
                // RFC 9110 §8.4.1.3: x-gzip is an alias of gzip.
                "gzip" | "x-gzip" => ContentCoding::Gzip,
                "deflate" => ContentCoding::Deflate,
                "br" => ContentCoding::Br,
                _ => {
                    return Err(Failure::ContentDecoding {
                        detail: DecodingFailure::Unsupported {
                            coding: name.chars().take(40).collect(),
                        },
                    });
                }
            };
            codings.push(coding);
        }
    }
    Ok(codings)
}

/// Decodes `encoded` (a body read up to the limit) into at most `limit` bytes; `true` when the
/// decoded body reached the limit and was cut there.
pub(super) fn decode(
    codings: &[ContentCoding],
    encoded: &[u8],
    limit: usize,
) -> Result<(Vec<u8>, bool), Failure> {
    let Some(&outer) = codings.last() else {
        return Ok((encoded.to_vec(), false));
    };
    let mut data = Vec::new();
    let mut consumed = 0;
    let mut sink = chain(
        codings,
        Bounded {
            out: &mut data,
            limit,
        },
    );
    let mut result = Ok(());
    for piece in encoded.chunks(PIECE) {
        consumed += piece.len();
        result = sink.write_all(piece);
        if result.is_err() {
            break;
        }
    }
    let result = result.and_then(|()| sink.flush());
    drop(sink);
    let Err(err) = result else {
        return Ok((data, false));
    };
    if data.len() < limit {
        return Err(Failure::ContentDecoding {
            detail: DecodingFailure::Corrupt {
                coding: outer.to_string(),
                detail: err.to_string(),
            },
        });
    }
    if data.len() / consumed.max(1) > MAX_RATIO {
        return Err(Failure::ContentDecoding {
            detail: DecodingFailure::Bomb {
                coding: outer.to_string(),
                encoded_bytes: consumed,
                limit_bytes: limit,
            },
        });
    }
    Ok((data, true))
}

/// The decoders for `codings`, last applied first, writing into `sink`.
fn chain<'a>(codings: &[ContentCoding], sink: Bounded<'a>) -> Box<dyn Write + 'a> {
    codings
        .iter()
        .fold(Box::new(sink), |inner, coding| match coding {
            ContentCoding::Gzip => Box::new(GzDecoder::new(inner)),
            ContentCoding::Deflate => Box::new(Deflate::Undecided {
                head: Vec::new(),
                inner: Some(inner),
            }),
            ContentCoding::Br => {
                Box::new(brotli_decompressor::DecompressorWriter::new(inner, 4096))
            }
        })
}

/// Accepts bytes up to `limit`, then refuses with an error, which ends the decoders' writes.
struct Bounded<'a> {
    out: &'a mut Vec<u8>,
    limit: usize,
}

impl Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.limit - self.out.len();
        if room == 0 && !buf.is_empty() {
            return Err(io::Error::other("body limit reached"));
        }
        let n = room.min(buf.len());
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `deflate` is zlib-wrapped (RFC 9110 §8.4.1.2), but some servers send raw deflate; like
/// browsers, the first two bytes decide (a zlib header is CM 8 and a multiple of 31).
enum Deflate<W: Write> {
    Undecided { head: Vec<u8>, inner: Option<W> },
    Zlib(ZlibDecoder<W>),
    Raw(DeflateDecoder<W>),
}

impl<W: Write> Deflate<W> {
    fn decoder(&mut self) -> Option<&mut dyn Write> {
        match self {
            Deflate::Undecided { .. } => None,
            Deflate::Zlib(d) => Some(d),
            Deflate::Raw(d) => Some(d),
        }
    }
}

impl<W: Write> Write for Deflate<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Deflate::Undecided { head, inner } = self {
            let taken = buf.len().min(2 - head.len());
            head.extend_from_slice(&buf[..taken]);
            if head.len() < 2 {
                return Ok(taken);
            }
            let zlib = head[0] & 0x0f == 8 && u16::from_be_bytes([head[0], head[1]]) % 31 == 0;
            let head = std::mem::take(head);
            let inner = inner.take().expect("an undecided decoder holds its sink");
            *self = match zlib {
                true => Deflate::Zlib(ZlibDecoder::new(inner)),
                false => Deflate::Raw(DeflateDecoder::new(inner)),
            };
            self.write_all(&head)?;
            return Ok(taken);
        }
        self.decoder().map_or(Ok(0), |d| d.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.decoder().map_or(Ok(()), |d| d.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use hyper::header::HeaderValue;

    fn decode(
        codings: Vec<ContentCoding>,
        encoded: &[u8],
        limit: usize,
    ) -> Result<(Vec<u8>, bool), Failure> {
        super::decode(&codings, encoded, limit)
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn codings_in_applied_order_identity_dropped() {
        let mut headers = HeaderMap::new();
        headers.append(CONTENT_ENCODING, HeaderValue::from_static("identity, GZIP"));
        headers.append(CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(
            codings(&headers),
            Ok(vec![ContentCoding::Gzip, ContentCoding::Br])
        );
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("zstd"));
        assert_eq!(
            codings(&headers),
            Err(Failure::ContentDecoding {
                detail: DecodingFailure::Unsupported {
                    coding: "zstd".into()
                }
            })
        );
    }

    #[test]
    fn deflate_zlib_and_raw_and_a_chain() {
        let page = b"<title>STARFACE</title>".repeat(50);
        for encoded in [zlib(&page), raw_deflate(&page)] {
            assert_eq!(
                decode(vec![ContentCoding::Deflate], &encoded, 1 << 20),
                Ok((page.clone(), false))
            );
        }
        // gzip applied first, then deflate: deflate is undone first.
        let twice = zlib(&gzip(&page));
        assert_eq!(
            decode(
                vec![ContentCoding::Gzip, ContentCoding::Deflate],
                &twice,
                1 << 20
            ),
            Ok((page, false))
        );
    }

    #[test]
    fn limit_truncates_ordinary_text_but_fails_a_bomb() {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| i.to_string().into_bytes())
            .collect();
        let (data, truncated) = decode(vec![ContentCoding::Gzip], &gzip(&text), 10_000).unwrap();
        assert!(truncated);
        assert_eq!(data, text[..10_000]);

        let zeros = gzip(&vec![0u8; 20 << 20]);
        let Err(Failure::ContentDecoding {
            detail:
                DecodingFailure::Bomb {
                    encoded_bytes,
                    limit_bytes,
                    ..
                },
        }) = decode(vec![ContentCoding::Gzip], &zeros, 1 << 20)
        else {
            panic!("expected a bomb");
        };
        assert_eq!(limit_bytes, 1 << 20);
        assert!(encoded_bytes < 4096, "{encoded_bytes}");
    }

    #[test]
    fn corrupt_data_fails_with_the_coding() {
        let Err(Failure::ContentDecoding {
            detail: DecodingFailure::Corrupt { coding, .. },
        }) = decode(vec![ContentCoding::Gzip], b"not gzip at all", 1000)
        else {
            panic!("expected corrupt data");
        };
        assert_eq!(coding, "gzip");
    }
}
