//! TLS client setup shared by the SIP (`sips:`, `;transport=tls`) and HTTPS probes: trust
//! anchors, and the translation of handshake errors into a [`TlsFailure`] a person can act on.

use super::{ConfigError, Failure, TlsFailure};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Extra trust anchors (PEM CA certificates) on top of the system's roots, e.g. a private PBX
/// CA: a file for the CLI's `--ca-file`, or PEM text held in memory for a CA read from a
/// Kubernetes Secret (`caSecretRef`), which the operator never writes to disk.
#[derive(Clone, PartialEq, Eq)]
pub enum CaSource {
    /// A PEM file, read when the probe runs.
    File(PathBuf),
    /// PEM text; `origin` names where it came from (e.g. `spec.sip.caSecretRef`) for errors.
    Pem { origin: String, pem: Arc<str> },
}

impl CaSource {
    /// The certificates, or a [`ConfigError`] naming the source when there are none or they
    /// do not parse.
    pub fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        let (field, what, certs) = match self {
            CaSource::File(path) => (
                "--ca-file",
                path.display().to_string(),
                CertificateDer::pem_file_iter(path)
                    .and_then(|iter| iter.collect::<Result<Vec<_>, _>>()),
            ),
            CaSource::Pem { origin, pem } => (
                origin.as_str(),
                "PEM".to_owned(),
                CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>(),
            ),
        };
        let certs = certs.map_err(|e| ConfigError::new(field, format!("{what}: {e}")))?;
        if certs.is_empty() {
            return Err(ConfigError::new(
                field,
                format!("{what}: no PEM certificate found"),
            ));
        }
        Ok(certs)
    }

    fn field(&self) -> &str {
        match self {
            CaSource::File(_) => "--ca-file",
            CaSource::Pem { origin, .. } => origin,
        }
    }
}

/// Shows the file's path or the PEM's origin; the PEM itself is long and says nothing.
impl fmt::Debug for CaSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaSource::File(path) => f.debug_tuple("File").field(path).finish(),
            CaSource::Pem { origin, .. } => f.debug_struct("Pem").field("origin", origin).finish(),
        }
    }
}

/// A client configuration trusting the system's roots plus, optionally, the CAs in `ca`
/// (PEM), e.g. a private PBX CA. `alpn` lists the protocols to offer (HTTP offers `h2` and
/// `http/1.1`).
pub fn client_config(
    ca: Option<&CaSource>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, ConfigError> {
    build(ca, alpn, None)
}

/// As [`client_config`], and notes when a server asks for a client certificate: a TLS 1.3
/// server that requires one ends the connection only after our side of the handshake is done,
/// and the next write may just see a broken pipe. The request is what tells that failure apart.
pub fn client_config_noting_demand(
    ca: Option<&CaSource>,
    alpn: &[&[u8]],
) -> Result<(Arc<ClientConfig>, CertificateDemand), ConfigError> {
    let recorder = Arc::new(DemandRecorder::default());
    let config = build(ca, alpn, Some(recorder.clone()))?;
    Ok((config, CertificateDemand(recorder)))
}

/// Whether the server of the latest handshake with a [`client_config_noting_demand`]
/// configuration asked for a client certificate.
#[derive(Debug, Clone)]
pub struct CertificateDemand(Arc<DemandRecorder>);

impl CertificateDemand {
    /// Whether a certificate was asked for since the last call (connections of one probe are
    /// made one after another, so each call covers one handshake).
    pub fn take(&self) -> bool {
        self.0.0.swap(false, Ordering::Relaxed)
    }
}

/// A client certificate "resolver" that has none to offer and notes that one was asked for.
#[derive(Debug, Default)]
struct DemandRecorder(AtomicBool);

impl ResolvesClientCert for DemandRecorder {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.store(true, Ordering::Relaxed);
        None
    }

    /// Claims certificates so that rustls asks when a server requests one; the handshake then
    /// goes on without one, as with no client authentication at all.
    fn has_certs(&self) -> bool {
        true
    }
}

fn build(
    ca: Option<&CaSource>,
    alpn: &[&[u8]],
    recorder: Option<Arc<DemandRecorder>>,
) -> Result<Arc<ClientConfig>, ConfigError> {
    // Without a private CA every configuration shares the one system store (a copy of it is
    // ~150 trust anchors, made on every HTTPS probe otherwise).
    let roots = match ca {
        None => Arc::clone(system_roots()),
        Some(ca) => {
            let mut roots = RootCertStore::clone(system_roots());
            for cert in ca.certificates()? {
                roots
                    .add(cert)
                    .map_err(|e| ConfigError::new(ca.field(), e))?;
            }
            Arc::new(roots)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("tls", e))?
        .with_root_certificates(roots);
    let mut config = match recorder {
        Some(recorder) => config.with_client_cert_resolver(recorder),
        None => config.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The system's trust anchors, loaded once per process: reading and parsing them costs ~3 ms,
/// more than a whole HTTPS probe on loopback (Go's `x509.SystemCertPool` caches them likewise).
/// Unreadable system certificates are skipped: a private CA file may be all that is needed.
fn system_roots() -> &'static Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        Arc::new(roots)
    })
}

/// The name to verify the certificate against: a DNS name or an IP literal.
pub fn server_name(host: &str) -> Result<ServerName<'static>, ConfigError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| ConfigError::new("host", e))
}

/// Classifies an error returned by a TLS handshake (tokio-rustls wraps the rustls error in an
/// `io::Error`). Socket errors during the handshake stay socket errors.
pub fn handshake_failure(err: &std::io::Error, server: &str) -> Failure {
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return match err.kind() {
            std::io::ErrorKind::UnexpectedEof => Failure::Tls {
                detail: TlsFailure::Handshake {
                    detail: "connection closed during handshake".into(),
                },
            },
            _ => Failure::from_io(err, server),
        };
    };
    let detail = match tls {
        rustls::Error::InvalidCertificate(cert) => certificate_failure(cert, server),
        other => client_certificate_demand(other).unwrap_or_else(|| TlsFailure::Handshake {
            detail: other.to_string(),
        }),
    };
    Failure::Tls { detail }
}

/// A server that requires a client certificate and gets none ends the connection with an
/// alert: `certificate_required` (TLS 1.3, RFC 8446 §4.4.2.4) or `bad_certificate` (TLS 1.2
/// servers, e.g. OpenSSL's). In TLS 1.3 that alert arrives after our side of the handshake is
/// done, with the first read of the application protocol.
fn client_certificate_demand(err: &rustls::Error) -> Option<TlsFailure> {
    use rustls::AlertDescription::{BadCertificate, CertificateRequired};
    match err {
        rustls::Error::AlertReceived(CertificateRequired | BadCertificate) => {
            Some(TlsFailure::ClientCertificateRequired)
        }
        _ => None,
    }
}

fn certificate_failure(err: &CertificateError, server: &str) -> TlsFailure {
    match err {
        CertificateError::Expired => TlsFailure::Expired { not_after: None },
        CertificateError::ExpiredContext { not_after, .. } => TlsFailure::Expired {
            not_after: Some(system_time(*not_after)),
        },
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            TlsFailure::NotYetValid
        }
        CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            TlsFailure::HostnameMismatch {
                name: server.to_owned(),
            }
        }
        other => TlsFailure::BadCertificate {
            detail: other.to_string(),
        },
    }
}

fn system_time(t: UnixTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.as_secs())
}

/// The probe table's line for a certificate chain's expiry, when there was one.
pub fn expiry_fact(not_after: Option<SystemTime>) -> Option<(&'static str, String)> {
    not_after.map(|t| {
        let at = humantime::format_rfc3339_seconds(t).to_string();
        ("certificate expires", at)
    })
}

/// The earliest end of validity among the certificates the server presented (its leaf and
/// the intermediates it sent), as blackbox_exporter's `probe_ssl_earliest_cert_expiry`: an
/// intermediate that expires first breaks the chain as surely as the leaf does.
pub fn earliest_not_after(conn: &rustls::ClientConnection) -> Option<SystemTime> {
    conn.peer_certificates()?
        .iter()
        .filter_map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
            let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
            Some(UNIX_EPOCH + Duration::from_secs(secs))
        })
        .min()
}
