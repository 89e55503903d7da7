//! TLS configurations from PEM files: the public listener's and the upstream client's; the
//! read replica's CA bundle.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_certs(path, &pem)
}

fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {}", path.display(), pem_error(&e)))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(certs)
}

/// A PEM error as an operator reads it.
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::NoItemsFound => "no PEM item of the expected kind found".into(),
        Error::Io(io) => io.to_string(),
        other => format!("not valid PEM: {other:?}"),
    }
}

/// A certificate chain and its private key as read from their PEM files, with the paths that
/// name them in errors. Read once and parsed from these bytes, so the pair parsed is the pair
/// read even while the files are being replaced.
pub struct PemPair {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl PemPair {
    pub fn read(cert: &Path, key: &Path) -> Result<PemPair, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        Ok(PemPair {
            cert: read(cert)?,
            key: read(key)?,
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
        })
    }

    /// A digest of both files' contents, to tell a changed pair from the one in force without
    /// keeping a second copy of the private key (change detection, not a security check).
    pub fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.cert, &self.key).hash(&mut h);
        h.finish()
    }
}

/// The certificates of a PEM CA bundle (`replica.ca_file`), each checked to be usable as a
/// trust anchor, so that a bad bundle is refused at start and not at the first connection.
pub fn read_ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = read_certs(path)?;
    let mut roots = rustls::RootCertStore::empty();
    for (i, c) in certs.iter().enumerate() {
        roots
            .add(c.clone())
            .map_err(|e| format!("{}: certificate {}: {e}", path.display(), i + 1))?;
    }
    Ok(certs)
}

/// The public listener's TLS config: certificate chain and key from PEM, ALPN h2 and http/1.1.
pub fn tls_server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, String> {
    tls_server_config_from(&PemPair::read(cert, key)?)
}

/// The public listener's TLS config from a pair already read. Fails unless the key is the
/// certificate's (rustls compares their public keys), so a half-replaced pair is refused.
pub fn tls_server_config_from(pair: &PemPair) -> Result<rustls::ServerConfig, String> {
    let certs = parse_certs(&pair.cert_path, &pair.cert)?;
    let key: PrivateKeyDer<'static> = PrivateKeyDer::from_pem_slice(&pair.key)
        .map_err(|e| format!("{}: {}", pair.key_path.display(), pem_error(&e)))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate/key: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The upstream client's TLS config: `upstream_ca` if given, else the system roots.
pub fn tls_client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(p) => {
            for c in read_certs(p)? {
                roots.add(c).map_err(|e| format!("upstream_ca: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_files_are_read_and_bad_ones_named() {
        let dir = std::env::temp_dir().join(format!("wardgate-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_path, key_path, empty) =
            (dir.join("c.pem"), dir.join("k.pem"), dir.join("e.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        std::fs::write(&empty, "not pem at all\n").unwrap();
        assert!(tls_server_config(&cert_path, &key_path).is_ok());
        assert!(tls_client_config(Some(&cert_path)).is_ok());
        assert_eq!(read_ca_bundle(&cert_path).unwrap().len(), 1);
        let e = read_ca_bundle(&empty).unwrap_err();
        assert!(
            e.contains("e.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let garbled = dir.join("g.pem");
        std::fs::write(
            &garbled,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = read_ca_bundle(&garbled).unwrap_err();
        assert!(e.contains("g.pem") && e.contains("certificate 1"), "{e}");
        let e = tls_server_config(&empty, &key_path).unwrap_err();
        assert!(
            e.contains("e.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = tls_server_config(&cert_path, &empty).unwrap_err();
        assert!(e.contains("e.pem") && e.contains("no PEM item"), "{e}");
        let e = tls_server_config(&dir.join("missing.pem"), &key_path).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
        // A half-replaced pair: the certificate of one key, the other key.
        let other = dir.join("other.pem");
        std::fs::write(&other, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let e = tls_server_config(&cert_path, &other).unwrap_err();
        assert!(e.contains("TLS certificate/key"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
