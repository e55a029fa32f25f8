//! The HTTPS listeners' TLS (the web terminal's, the kubectl door's): the
//! certificate chain and key from PEM files.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{section}.certificate {path}: {message}")]
    Certificate {
        section: &'static str,
        path: String,
        message: String,
    },
    #[error("{section}.key {path}: {message}")]
    Key {
        section: &'static str,
        path: String,
        message: String,
    },
    #[error("{0}: the certificate and key do not make a TLS configuration: {1}")]
    Config(&'static str, rustls::Error),
}

/// A TLS server configuration for the certificate chain and key in the
/// PEM files `certificate` and `key`; `section` names them in errors.
pub fn server_config(
    section: &'static str,
    certificate: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Certificate {
            section,
            path: certificate.display().to_string(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            section,
            path: certificate.display().to_string(),
            message: "no CERTIFICATE block in the file".into(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        section,
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Config(section, e))?
    .with_no_client_auth()
    .with_single_cert(chain, private)
    .map_err(|e| TlsError::Config(section, e))?;
    // WebSocket upgrades are HTTP/1.1 (RFC 6455); browsers use it when it is
    // the only protocol offered.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
