//! The SSH server: listening, host keys, algorithms, the login timeout and
//! one `Connection` handler per client. Channels are wired to the bridge by
//! `ssh::handler`.

pub mod channel;
mod handler;
pub mod host_keys;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{Algorithm, EcdsaCurve, HashAlg};
use russh::{MethodKind, MethodSet, Preferred, cipher, kex, mac};
use tokio::net::TcpListener;

use crate::bastion::Shared;
use crate::config::Config;

pub use handler::Connection;

/// Only modern algorithms: no SHA-1 signatures or MACs, no CBC, no
/// group1/group14-sha1 key exchange, no compression, and only the
/// encrypt-then-MAC variants of HMAC (the AEAD ciphers need none).
pub fn algorithms() -> Preferred {
    Preferred {
        kex: Cow::Borrowed(&[
            kex::MLKEM768X25519_SHA256,
            kex::CURVE25519,
            kex::CURVE25519_PRE_RFC_8731,
            kex::DH_GEX_SHA256,
            kex::DH_G18_SHA512,
            kex::DH_G16_SHA512,
            kex::EXTENSION_SUPPORT_AS_SERVER,
            kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
        ]),
        key: Cow::Borrowed(&[
            Algorithm::Ed25519,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP521,
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
        ]),
        host_key_certificates: Cow::Borrowed(&[]),
        cipher: Cow::Borrowed(&[
            cipher::CHACHA20_POLY1305,
            cipher::AES_256_GCM,
            cipher::AES_128_GCM,
            cipher::AES_256_CTR,
            cipher::AES_128_CTR,
        ]),
        mac: Cow::Borrowed(&[mac::HMAC_SHA512_ETM, mac::HMAC_SHA256_ETM]),
        compression: Cow::Borrowed(&[russh::compression::NONE]),
    }
}

fn russh_config(config: &Config, keys: Vec<russh::keys::PrivateKey>) -> russh::server::Config {
    let timeouts = &config.timeouts;
    russh::server::Config {
        server_id: russh::SshId::Standard(Cow::Borrowed(concat!(
            "SSH-2.0-kbastion_",
            env!("CARGO_PKG_VERSION")
        ))),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        // The client's first "none" probe is answered at once; real
        // rejections wait, so timing does not tell which keys exist.
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys,
        max_auth_attempts: config.limits.max_auth_attempts,
        // Sessions end at the idle timeout with a message (the bridge);
        // a connection silent for twice that (keepalives off) is dropped.
        inactivity_timeout: (timeouts.idle_secs > 0)
            .then(|| Duration::from_secs(timeouts.idle_secs.saturating_mul(2))),
        keepalive_interval: (timeouts.keepalive_secs > 0)
            .then(|| Duration::from_secs(timeouts.keepalive_secs)),
        keepalive_max: timeouts.keepalive_max,
        // Keystrokes must not wait for Nagle.
        nodelay: true,
        // 2 MiB windows by default and 32 KiB packets (OpenSSH's own
        // sizes).
        window_size: config.limits.channel_window_bytes,
        maximum_packet_size: 32 * 1024,
        // Each channel's window is given back as its session hands the
        // client's input on (`session::io::Chunk`): a slow target slows
        // only that channel's sender, and what waits inside kbastion for
        // one channel never exceeds its window (russh/PATCH.md).
        window_on_consumption: true,
        preferred: algorithms(),
        ..Default::default()
    }
}

/// Serves SSH on `listener` until the process stops.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut keys = Vec::new();
    for path in &shared.config.host_keys {
        let key = host_keys::load_or_generate(path)?;
        tracing::info!(path = %path.display(), algorithm = %key.algorithm(), fingerprint = %host_keys::fingerprint(&key), "host key");
        keys.push(key);
    }
    shared
        .metrics
        .keys_loaded
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let config = Arc::new(russh_config(&shared.config, keys));
    let login_timeout = Duration::from_secs(shared.config.timeouts.login_secs);
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let config = config.clone();
        let shared = shared.clone();
        // Behind a trusted proxy the client's address comes with the
        // PROXY header, read in the connection's task (bounded in time and
        // size); anyone else's is the TCP peer's, checked right here.
        let early_slots = if shared.config.proxy_protocol.trusts(peer.ip()) {
            None
        } else {
            match admit(&shared, peer) {
                Some(slots) => Some(slots),
                None => continue,
            }
        };
        tokio::spawn(async move {
            let accepted =
                match crate::proxy_protocol::accept(socket, peer, &shared.config.proxy_protocol)
                    .await
                {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::info!(%peer, "connection refused: {error}");
                        return;
                    }
                };
            let (socket, peer) = (accepted.stream, accepted.client);
            let Some((connection_slot, login_slot)) = early_slots.or_else(|| admit(&shared, peer))
            else {
                return;
            };
            let _connection_slot = connection_slot;
            let mut login_slot = Some(login_slot);
            let connected = std::time::Instant::now();
            let (authenticated_tx, mut authenticated) = tokio::sync::watch::channel(false);
            let handler = Connection::new(shared, peer, authenticated_tx);
            // The login deadline starts at accept: `run_stream` first waits
            // for the client's version line, which a silent client never
            // sends.
            let login_deadline = tokio::time::Instant::now() + login_timeout;
            let session = match tokio::time::timeout_at(
                login_deadline,
                russh::server::run_stream(config, socket, handler),
            )
            .await
            {
                Ok(Ok(session)) => session,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "SSH handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "login timeout: no SSH version line");
                    return;
                }
            };
            let handle = session.handle();
            tokio::pin!(session);
            let login_deadline = tokio::time::sleep_until(login_deadline);
            tokio::pin!(login_deadline);
            let mut logged_in = false;
            let result = loop {
                tokio::select! {
                    result = &mut session => break result,
                    _ = &mut login_deadline, if !logged_in => {
                        tracing::info!(%peer, "login timeout: closing unauthenticated connection");
                        let _ = handle.disconnect(russh::Disconnect::ByApplication, "login timeout".into(), "en".into()).await;
                        return;
                    }
                    changed = authenticated.changed(), if !logged_in => {
                        if changed.is_err() || *authenticated.borrow() {
                            logged_in = true;
                            drop(login_slot.take());
                        }
                    }
                }
            };
            match result {
                Ok(()) => {
                    tracing::info!(%peer, duration_ms = connected.elapsed().as_millis() as u64, "connection closed")
                }
                Err(e) => {
                    tracing::info!(%peer, duration_ms = connected.elapsed().as_millis() as u64, error = %e, "connection ended with an error")
                }
            }
        });
    }
}

/// The checks every new connection passes before any SSH work, on the
/// client's address: its connection rate, its open connections, and the
/// connections logging in from everywhere (held until it logs in, as
/// sshd's MaxStartups). None (logged) when one is exceeded.
fn admit(
    shared: &Shared,
    client: SocketAddr,
) -> Option<(
    crate::limits::Slot<std::net::IpAddr>,
    crate::limits::Slot<()>,
)> {
    // Logged at debug: a flood must not flood the log.
    if !shared.connection_rate.allow(client.ip()) {
        shared.metrics.connections_rate_limited.inc();
        tracing::debug!(peer = %client, "connection refused: too many new connections from this address");
        return None;
    }
    let Some(connection_slot) = shared
        .connections_per_source
        .take(crate::limits::source_key(client.ip()))
    else {
        tracing::info!(peer = %client, "connection refused: too many connections from this address");
        return None;
    };
    let Some(login_slot) = shared.unauthenticated.take(()) else {
        tracing::info!(peer = %client, "connection refused: too many connections logging in");
        return None;
    };
    Some((connection_slot, login_slot))
}

pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))
}
