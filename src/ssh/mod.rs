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

use crate::cluster::Cluster;
use crate::config::Config;

pub use handler::Connection;

/// What every connection shares.
pub struct Shared {
    pub config: Config,
    pub cluster: Arc<Cluster>,
    pub node_shells: Arc<crate::node_shell::NodeShells>,
    pub audit: crate::audit::Audit,
    pub auth_failures: crate::limits::AuthFailures,
    pub sessions_per_user: crate::limits::Counter<String>,
    pub connections_per_source: crate::limits::Counter<std::net::IpAddr>,
    /// New connections per second per source.
    pub connection_rate: crate::limits::ConnectionRate,
    /// Connections that have not logged in yet, from everywhere.
    pub unauthenticated: crate::limits::Counter<()>,
    /// The verb the cluster checks for exec/port-forward over WebSocket.
    pub stream_verb: &'static str,
    /// Whether the API server passes stdin EOF on (`v5.channel.k8s.io`,
    /// Kubernetes 1.30 and later); with v4 only, EOF ends the whole stream.
    pub stdin_eof: bool,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The people allowed in and the trusted user CAs; replaced as a whole
    /// on reload (SIGHUP).
    access: std::sync::RwLock<Arc<Access>>,
    /// Bumped on every reload of the access lists.
    pub reloads: tokio::sync::watch::Sender<u64>,
    /// A message every open session shows its user (shutdown notice).
    pub notice: tokio::sync::watch::Sender<Option<String>>,
    /// Cancelled when the drain time after SIGTERM is over.
    pub stop: tokio_util::sync::CancellationToken,
    /// The web terminal's sign-in links and browser sessions (links are
    /// minted by `ssh PERSON@bastion web`).
    pub web_logins: crate::web::links::Logins,
}

impl Shared {
    /// Connects to the cluster and starts node-shell upkeep.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Self>> {
        let cluster = Cluster::connect(
            config.kubeconfig.as_deref(),
            config.context.as_deref(),
            config.timeouts.api(),
        )
        .await?;
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let node_shells = crate::node_shell::NodeShells::new(
            metrics.clone(),
            cluster.own(),
            config.node_shell.namespace_for(&config.namespace),
            config.node_shell.clone(),
            crate::node_shell::Replica::from_environment(),
            &config.namespace,
            config.timeouts.api(),
        );
        let wait = config.timeouts.api();
        let version = tokio::time::timeout(wait, cluster.own().apiserver_version())
            .await
            .map_err(|_| anyhow::anyhow!("the Kubernetes API did not answer within {wait:?}"))?
            .map_err(|e| anyhow::anyhow!("cannot reach the Kubernetes API: {e}"))?;
        let minor: u32 = version.minor.trim_end_matches('+').parse().unwrap_or(0);
        tracing::info!(version = %version.git_version, "connected to the Kubernetes API");
        node_shells.spawn_maintenance();
        let audit = crate::audit::Audit::start(&config.audit)
            .await
            .map_err(|e| anyhow::anyhow!("audit.file: cannot open: {e}"))?;
        Ok(Arc::new(Shared {
            auth_failures: crate::limits::AuthFailures::new(Duration::from_millis(
                config.limits.auth_failure_delay_ms,
            )),
            sessions_per_user: crate::limits::Counter::new(config.limits.max_sessions_per_user),
            connections_per_source: crate::limits::Counter::new(
                config.limits.max_connections_per_source,
            ),
            connection_rate: crate::limits::ConnectionRate::new(
                config.limits.connections_per_second_per_source,
                config.limits.connection_burst_per_source,
            ),
            unauthenticated: crate::limits::Counter::new(
                config.limits.max_unauthenticated_connections,
            ),
            stream_verb: crate::authz::websocket_stream_verb(minor),
            stdin_eof: minor >= 30,
            metrics,
            access: std::sync::RwLock::new(Arc::new(Access::of(&config))),
            reloads: tokio::sync::watch::channel(0).0,
            notice: tokio::sync::watch::channel(None).0,
            stop: tokio_util::sync::CancellationToken::new(),
            web_logins: crate::web::links::Logins::new(&config.web),
            config,
            cluster,
            node_shells,
            audit,
        }))
    }
}

/// Who may log in: people, the user CAs trusted for certificates, and
/// what is revoked.
pub struct Access {
    pub users: Vec<crate::config::User>,
    pub ca_fingerprints: Vec<russh::keys::ssh_key::Fingerprint>,
    pub revoked: crate::revocation::RevokedKeys,
}

impl Access {
    fn of(config: &Config) -> Self {
        Access {
            users: config.users.clone(),
            ca_fingerprints: crate::certificates::fingerprints(&config.ca_keys),
            revoked: config.revoked.clone(),
        }
    }

    /// The lists a logged-in credential is checked against.
    pub fn lists(&self) -> crate::revocation::Lists<'_> {
        crate::revocation::Lists {
            users: &self.users,
            ca_fingerprints: &self.ca_fingerprints,
            revoked: &self.revoked,
        }
    }
}

impl Shared {
    /// The drain, idle and revocation rules a new session follows;
    /// `revoked` is its connection's (`handler::watch_credential`).
    pub fn control(
        &self,
        revoked: tokio::sync::watch::Receiver<Option<String>>,
    ) -> crate::session::Control {
        // A session that starts after the drain notice went out is told
        // too: its first look at the notice sees the current one.
        let mut notice = self.notice.subscribe();
        notice.mark_changed();
        crate::session::Control {
            notice,
            stop: self.stop.clone(),
            idle: self.config.timeouts.idle(),
            revoked,
            required_recording: None,
        }
    }

    /// The current access lists.
    pub fn access(&self) -> Arc<Access> {
        self.access
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The namespaces no container target may be in: the bastion's own and
    /// its node shells'.
    pub fn protected_namespaces(&self) -> [&str; 2] {
        [
            self.config.namespace.as_str(),
            self.config
                .node_shell
                .namespace
                .as_deref()
                .unwrap_or(self.config.namespace.as_str()),
        ]
    }

    /// The configured person `name`, from the current user list.
    pub fn user(&self, name: &str) -> Option<crate::config::User> {
        self.access().users.iter().find(|u| u.name == name).cloned()
    }

    /// Takes the users, keys, CAs and revocations of a newly loaded
    /// config, and has every logged-in connection check its credential
    /// against them (`handler::watch_credential`). Other settings need a
    /// restart.
    pub fn reload_users(&self, config: &Config) {
        *self.access.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Access::of(config));
        self.reloads.send_modify(|generation| *generation += 1);
    }
}

/// Why a user's signature algorithm is refused even though russh would
/// verify it: `ssh-rsa` signs with SHA-1, which is broken for collisions
/// (SHA-1 is a Shambles, 2020); OpenSSH 8.8 stopped accepting it. russh
/// leaves refusing it to the handler (`PublicKeyOffer::algorithm`).
pub fn refused_signature(algorithm: &Algorithm) -> Option<&'static str> {
    matches!(algorithm, Algorithm::Rsa { hash: None }).then_some(SHA1_SIGNATURE_REFUSED)
}

pub const SHA1_SIGNATURE_REFUSED: &str = "ssh-rsa (SHA-1) signatures are refused; sign with rsa-sha2-256 or rsa-sha2-512 (OpenSSH 7.2 or later) or use an Ed25519 key";

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
