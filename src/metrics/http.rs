//! The HTTP endpoint serving `/metrics`, `/healthz` and `/readyz`.
//!
//! `/metrics` is encoded on a blocking thread and streamed in chunks of [`CHUNK_BYTES`] as it
//! is written (gzip-compressed when the scraper accepts it), so a scrape of 10,000 checks
//! neither holds 25 MiB of text at once nor takes the async threads' time from the runs.

use super::Metrics;
use flate2::Compression;
use flate2::write::GzEncoder;
use http_body_util::{Either, Full};
use hyper::body::{Body, Bytes, Frame};
use hyper::header::{ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, VARY};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// Readiness as `/readyz` reports it (e.g. the operator's caches have synced).
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// A client must send its request head within this time (a slow or silent client cannot hold
/// a connection open).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Request heads larger than this are refused (hyper's minimum buffer size).
const MAX_REQUEST_HEAD_BYTES: usize = 8192;
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// How long connections still open at shutdown may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The exposition is sent in chunks of this size: large enough that a scrape is a few
/// hundred sends, small enough that a scrape holds little memory.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks written ahead of what the connection has sent; the encoding thread waits beyond.
const CHUNKS_AHEAD: usize = 4;
/// gzip's fastest level: the metric text compresses about 15-fold at it, and the higher
/// levels cost several times the CPU of the whole encode for a few percent less.
const GZIP_LEVEL: Compression = Compression::fast();

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until `shutdown` completes.
///
/// One request per connection (no keep-alive), the request head bounded in size and time, and
/// at most [`MAX_CONNECTIONS`] at once, so scrapers and stray clients cannot tie the server up.
/// `/healthz` answers 200 while the server runs; `/readyz` 200 when [`Health`] is ready, else
/// 503; anything else 404 (405 for a method other than GET or HEAD).
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    health: Health,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_on(listener, metrics, health, shutdown).await
}

/// [`serve`] on a listener already bound (e.g. to port 0 in a test, or a socket handed over).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    health: Health,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors or similar: wait instead of spinning.
                    tracing::warn!(%error, "accepting a metrics connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        let service = service_fn(move |request| {
            let response = respond(&request, &metrics, &health);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_REQUEST_HEAD_BYTES)
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "metrics connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("metrics connections still open after the shutdown grace period");
    }
    Ok(())
}

/// A fixed text, or the exposition as it is encoded.
type ResponseBody = Either<Full<Bytes>, Exposition>;

fn respond(
    request: &Request<hyper::body::Incoming>,
    metrics: &Metrics,
    health: &Health,
) -> Response<ResponseBody> {
    let text = |status: StatusCode, body: &'static str| {
        Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Either::Left(Full::new(Bytes::from_static(body.as_bytes()))))
            .expect("a valid response")
    };
    let path = request.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/metrics" => {
            let gzip = accepts_gzip(request.headers());
            let mut response = Response::builder()
                .header(CONTENT_TYPE, prometheus::TEXT_FORMAT)
                .header(VARY, "accept-encoding");
            if gzip {
                response = response.header(CONTENT_ENCODING, "gzip");
            }
            let body = if request.method() == Method::HEAD {
                Either::Left(Full::default())
            } else {
                Either::Right(Exposition::start(metrics.clone(), gzip))
            };
            response.body(body).expect("a valid response")
        }
        "/readyz" if !health.is_ready() => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(StatusCode::OK, "ok\n"),
    }
}

/// Whether `Accept-Encoding` admits gzip (RFC 9110 §12.5.3): `gzip` or `x-gzip` with a
/// non-zero quality, or else `*` with one.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut named = None;
    let mut any = None;
    let codings = headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','));
    for coding in codings {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let quality = parts
            .filter_map(|param| param.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            named = Some(quality > 0.0);
        } else if name == "*" {
            any = Some(quality > 0.0);
        }
    }
    named.or(any).unwrap_or(false)
}

/// The `/metrics` body: chunks written by the encoding thread, sent as they come.
struct Exposition {
    chunks: mpsc::Receiver<Bytes>,
}

impl Exposition {
    /// Starts encoding `metrics` on a blocking thread. Dropping the body (the client went
    /// away) ends the encode at its next chunk.
    fn start(metrics: Metrics, gzip: bool) -> Self {
        let (sender, chunks) = mpsc::channel(CHUNKS_AHEAD);
        tokio::task::spawn_blocking(move || {
            let sink = ChunkSender {
                buffer: Vec::with_capacity(CHUNK_BYTES),
                sender,
            };
            if let Err(error) = encode(&metrics, gzip, sink) {
                tracing::debug!(%error, "a /metrics response ended early");
            }
        });
        Self { chunks }
    }
}

impl Body for Exposition {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| Ok(Frame::data(chunk))))
    }
}

/// Writes the exposition into `sink`, through gzip if asked.
fn encode(metrics: &Metrics, gzip: bool, mut sink: ChunkSender) -> io::Result<()> {
    if gzip {
        // The encoder compresses each write it is given: feed it whole chunks.
        let mut compressed =
            BufWriter::with_capacity(CHUNK_BYTES, GzEncoder::new(sink, GZIP_LEVEL));
        metrics.encode_to(&mut compressed)?;
        sink = compressed
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?
            .finish()?;
    } else {
        metrics.encode_to(&mut sink)?;
    }
    sink.flush()
}

/// Collects writes into chunks of [`CHUNK_BYTES`] and hands each to the connection, waiting
/// while [`CHUNKS_AHEAD`] are queued (a slow scraper slows the encode, not the memory).
struct ChunkSender {
    buffer: Vec<u8>,
    sender: mpsc::Sender<Bytes>,
}

impl Write for ChunkSender {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES));
        self.sender
            .blocking_send(Bytes::from(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the scraper went away"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(ACCEPT_ENCODING, value.parse().unwrap());
        }
        accepts_gzip(&headers)
    }

    #[test]
    fn gzip_is_chosen_only_when_accepted() {
        // What Prometheus sends.
        assert!(accepts(&["gzip"]));
        assert!(accepts(&["deflate, GZIP;q=0.5"]));
        assert!(accepts(&["identity", "x-gzip"]));
        assert!(accepts(&["*"]));
        assert!(!accepts(&[]));
        assert!(!accepts(&["identity"]));
        assert!(!accepts(&["gzip;q=0"]));
        assert!(!accepts(&["gzip; q=0.0, *"]));
        assert!(!accepts(&["*;q=0"]));
        assert!(!accepts(&["br, zstd"]));
    }
}
