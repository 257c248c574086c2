//! TLS client setup shared by the SIP (`sips:`, `;transport=tls`) and HTTPS probes: trust
//! anchors, and the translation of handshake errors into a [`TlsFailure`] a person can act on.

use super::{ConfigError, Failure, TlsFailure};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A client configuration trusting the system's roots plus, optionally, the CAs in `ca_file`
/// (PEM), e.g. a private PBX CA. `alpn` lists the protocols to offer (HTTP offers `http/1.1`).
pub fn client_config(
    ca_file: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, ConfigError> {
    let mut roots = system_roots().clone();
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ConfigError::new("--ca-file", format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(ConfigError::new(
                "--ca-file",
                format!("{}: no PEM certificate found", path.display()),
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| ConfigError::new("--ca-file", format!("{}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("tls", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The system's trust anchors, loaded once per process: reading and parsing them costs ~3 ms,
/// more than a whole HTTPS probe on loopback (Go's `x509.SystemCertPool` caches them likewise).
/// Unreadable system certificates are skipped: a private CA file may be all that is needed.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        roots
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
        other => TlsFailure::Handshake {
            detail: other.to_string(),
        },
    };
    Failure::Tls { detail }
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

/// The end of the validity period of the certificate the server presented (its leaf).
pub fn leaf_not_after(conn: &rustls::ClientConnection) -> Option<SystemTime> {
    let leaf = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let secs = cert.validity().not_after.timestamp();
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}
