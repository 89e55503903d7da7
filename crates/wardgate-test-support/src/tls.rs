//! Certificate authorities made for one test: a CA, and server certificates it signs for
//! loopback (`localhost`, `127.0.0.1`), as PEM files a server and a client are given.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A throwaway CA. Its key lives in memory only; `ca_pem` is what clients trust.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

/// A server's certificate and key, PEM, in files of their own (removed on drop).
pub struct ServerCert {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// A new CA named `name` (its common name).
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::new()).expect("no names is valid");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a key pair can be generated");
        let ca_pem = params.self_signed(&key).expect("the CA signs itself").pem();
        TestCa {
            issuer: Issuer::new(params, key),
            ca_pem,
        }
    }

    /// The CA's certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes the CA's certificate to `path`.
    pub fn write_ca(&self, path: &Path) {
        std::fs::write(path, &self.ca_pem)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// A server certificate for `localhost` and `127.0.0.1`, signed by this CA.
    pub fn server_cert(&self) -> ServerCert {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let mut params = CertificateParams::new(names).expect("loopback names are valid");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("a key pair can be generated");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("the CA signs the server's certificate");
        let dir = tempfile::Builder::new()
            .prefix("wardgate-tls-")
            .tempdir()
            .expect("a temporary directory can be created");
        let files = [
            ("cert.pem", cert.pem()),
            ("key.pem", key.serialize_pem()),
            ("ca.pem", self.ca_pem.clone()),
        ];
        for (name, pem) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, pem)
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
        ServerCert { dir }
    }
}

impl ServerCert {
    /// The certificate, PEM.
    pub fn cert_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }
    /// Its private key, PEM.
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
    /// The certificate of the CA that signed it, PEM.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}
