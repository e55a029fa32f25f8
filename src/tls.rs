//! The HTTPS listeners' TLS (the web terminal's, the kubectl door's): the
//! certificate chain and key from PEM files, and the one accept loop both
//! serve with (`serve`).

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

/// A TLS handshake and the request head must arrive within this.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves HTTPS (HTTP/1.1 with upgrades) on `listener` until the process
/// stops, for one door: `admit` gives a new connection's places (held
/// while it is open) or refuses it; each connection's TLS handshake and
/// request heads are bounded in time and to `max_head` bytes; `handle`
/// answers each request. `door` names it in logs.
pub async fn serve<P, H, F, B>(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    door: &'static str,
    max_head: usize,
    admit: impl Fn(std::net::SocketAddr) -> Option<P>,
    handle: H,
) where
    P: Send + 'static,
    H: Fn(std::net::SocketAddr, http::Request<hyper::body::Incoming>) -> F
        + Clone
        + Send
        + Sync
        + 'static,
    F: std::future::Future<Output = http::Response<B>> + Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "{door}: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(places) = admit(peer) else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        let (acceptor, handle) = (acceptor.clone(), handle.clone());
        tokio::spawn(async move {
            let _places = places;
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "{door}: TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let service = hyper::service::service_fn(move |request| {
                let response = handle(peer, request);
                async move { Ok::<_, std::convert::Infallible>(response.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .max_buf_size(max_head)
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
