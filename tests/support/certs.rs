//! A throw-away certificate authority for the TLS peers (nginx here; Kamailio and coturn may use
//! it too). Certificates are written as PEM files into the CA's own temporary directory, which
//! lives as long as the [`TestCa`].

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct TestCa {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    cert_path: PathBuf,
    issued: AtomicUsize,
}

impl TestCa {
    /// A new self-signed CA ("voipcheck test CA"); its certificate is at [`TestCa::cert_path`].
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().expect("create a directory for the test CA");
        let key = KeyPair::generate().expect("generate the CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "voipcheck test CA");
        let cert = params.self_signed(&key).expect("self-sign the CA");
        let cert_path = dir.path().join("ca.pem");
        std::fs::write(&cert_path, cert.pem()).expect("write the CA certificate");
        TestCa {
            dir,
            issuer: Issuer::new(params, key),
            cert_path,
            issued: AtomicUsize::new(0),
        }
    }

    /// The CA certificate (PEM), to pass as a probe's CA file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// A server certificate for `names` (DNS names or IP literals, as subjectAltNames) valid from
    /// `not_before` to `not_after` (X.509 keeps whole seconds). Returns the certificate and key
    /// PEM paths.
    pub fn issue(
        &self,
        names: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("generate a server key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("valid subjectAltNames");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign the server certificate");
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let cert_path = self.dir.path().join(format!("server-{n}.pem"));
        let key_path = self.dir.path().join(format!("server-{n}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write the server certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the server key");
        (cert_path, key_path)
    }
}

/// `t` without its fraction of a second, as an X.509 validity time keeps it.
pub fn whole_seconds(t: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.duration_since(UNIX_EPOCH).unwrap().as_secs())
}
