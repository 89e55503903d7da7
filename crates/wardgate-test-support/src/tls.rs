//! A throwaway certificate authority, and a server certificate it signed for loopback: what
//! the TLS-only test servers present and what wardgate is told to trust.

use std::path::{Path, PathBuf};

/// A CA and one server certificate (`localhost`, `127.0.0.1`), as PEM files in a directory
/// removed on drop.
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// A fresh CA; each call is another authority, which trusts nothing the others signed.
    pub fn new() -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("wardgate-ca-")
            .tempdir()
            .expect("a temporary directory can be created");
        let ca_key = rcgen::KeyPair::generate().expect("a CA key");
        let mut ca = rcgen::CertificateParams::new(Vec::new()).expect("CA parameters");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "wardgate test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("a self-signed CA");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("a server key");
        let mut server = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("server parameters");
        server
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = server
            .signed_by(&key, &issuer)
            .expect("a server certificate");
        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem).expect("the PEM file is written")
        };
        write("ca.pem", ca_cert.pem());
        write("server.pem", cert.pem());
        write("server.key", key.serialize_pem());
        TestCa { dir }
    }

    /// The CA certificate, PEM: what a client trusts.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server's certificate, PEM.
    pub fn cert_file(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server's private key, PEM.
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}
