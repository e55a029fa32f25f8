//! The SSH server: listening, host keys, algorithms, the login timeout and
//! one `Connection` handler per client. Channels are wired to the bridge by
//! `ssh::handler`.

pub mod channel;
mod handler;
pub mod host_keys;
pub mod window;

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
        // Keyboard-interactive only for single sign-on (its one line
        // names the sign-in page).
        methods: if config.oidc.is_some() {
            MethodSet::from(&[MethodKind::PublicKey, MethodKind::KeyboardInteractive][..])
        } else {
            MethodSet::from(&[MethodKind::PublicKey][..])
        },
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
        // Windows start at 128 KiB and grow to `channel_window_bytes` (2
        // MiB by default, OpenSSH's own) as channels carry data, within
        // the bastion-wide budget (`window.rs`); 32 KiB packets.
        window_size: window::WindowBudget::initial(config.limits.channel_window_bytes),
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
            let Some(slots) = early_slots.or_else(|| admit(&shared, peer)) else {
                return;
            };
            // Held until the connection logs in.
            let mut slots = Some(slots);
            let connected = std::time::Instant::now();
            // The login deadline starts at accept: `run_stream` first waits
            // for the client's version line, which a silent client never
            // sends.
            let login_deadline = tokio::time::Instant::now() + login_timeout;
            // Its address's turn for a handshake (given back at login).
            if !shared
                .connection_rate
                .wait_turn(peer.ip(), login_deadline)
                .await
            {
                shared.metrics.connections_rate_limited.inc();
                shared.metrics.connection_refused("rate");
                tracing::info!(%peer, "connection closed: its address opened too many connections that did not log in (limits.connections_per_second_per_source)");
                return;
            }
            let (phase_tx, mut phase) =
                tokio::sync::watch::channel(handler::Phase::Unauthenticated);
            let handler = Connection::new(shared.clone(), peer, phase_tx);
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
                    changed = phase.changed(), if !logged_in => {
                        let now = *phase.borrow_and_update();
                        match now {
                            _ if changed.is_err() => {
                                logged_in = true;
                                drop(slots.take());
                            }
                            handler::Phase::Authenticated => {
                                logged_in = true;
                                drop(slots.take());
                                shared.connection_rate.refund(peer.ip());
                            }
                            // Held to its sign-in code's end instead, and
                            // counted among the waiting sign-ins (which
                            // have limits of their own), not among the
                            // connections logging in with keys.
                            handler::Phase::AwaitingSignIn { until } => {
                                login_deadline.as_mut().reset(until);
                                drop(slots.take());
                            }
                            handler::Phase::Unauthenticated => {}
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

/// The places every new connection takes before any SSH work, on the
/// client's address, held until it logs in: one among the connections
/// not yet logged in from its address, and one among those from
/// everywhere (as sshd's MaxStartups). Logged-in connections are bounded
/// per person by the session and channel caps, not per address: an office
/// behind one NAT address has more people than any per-address cap. None
/// (logged, counted) when one is full.
fn admit(
    shared: &Shared,
    client: SocketAddr,
) -> Option<(
    crate::limits::Slot<std::net::IpAddr>,
    crate::limits::Slot<()>,
)> {
    let Some(connection_slot) = shared
        .connections_per_source
        .take(crate::limits::source_key(client.ip()))
    else {
        shared.metrics.connection_refused("per_source");
        tracing::info!(peer = %client, limit = shared.config.limits.max_connections_per_source, "connection refused: too many connections logging in from this address (limits.max_connections_per_source)");
        return None;
    };
    let Some(login_slot) = shared.unauthenticated.take(()) else {
        shared.metrics.connection_refused("unauthenticated");
        tracing::info!(peer = %client, limit = shared.config.limits.max_unauthenticated_connections, "connection refused: too many connections logging in (limits.max_unauthenticated_connections)");
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
