//! The simulator's PKI: a CA generated at every start, a serving certificate
//! for localhost/127.0.0.1 signed by it, and kubeconfigs that trust the CA.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot build TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot write kubeconfig {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

pub struct Pki {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

pub fn generate() -> Result<Pki, TlsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kbastion-sim-ca");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut server_params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
        "kubernetes.default.svc".to_string(),
    ])?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let server_key = KeyPair::generate()?;
    let server_cert = server_params.signed_by(&server_key, &ca)?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![server_cert.der().clone()];
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    // Streaming upgrades (SPDY, WebSocket) need HTTP/1.1; clients fall back
    // to it when it is the only protocol offered.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Pki {
        ca_pem: ca.pem(),
        server_config: Arc::new(config),
    })
}

/// Writes a kubeconfig with one context per identity (named after the user);
/// `current` selects the current context. JSON is valid YAML, so every
/// client reads it.
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_pem: &str,
    identities: &[(String, String)],
    current: &str,
) -> Result<(), TlsError> {
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let users: Vec<_> = identities
        .iter()
        .map(|(name, token)| json!({"name": name, "user": {"token": token}}))
        .collect();
    let contexts: Vec<_> = identities
        .iter()
        .map(|(name, _)| json!({"name": name, "context": {"cluster": "kbastion-sim", "user": name, "namespace": "default"}}))
        .collect();
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kbastion-sim", "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": users,
        "contexts": contexts,
        "current-context": current,
    });
    let text = serde_json::to_string_pretty(&config).expect("a JSON value serializes");
    write_private(path, text.as_bytes()).map_err(|source| TlsError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Writes a file readable by its owner only (it holds tokens), atomically.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
