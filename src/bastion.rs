//! The ground floor: the process state every door (SSH, the web terminal)
//! receives, with the configuration, the API clients, the limits, the
//! audit trail, the metrics and the access lists, replaced as a whole on
//! reload. Nothing here imports a door.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::config::Config;

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
    /// Failed web sign-ins, per source (folded in the audit past a burst).
    pub failed_sign_ins: crate::limits::FailedSignIns,
    /// Every live session of this replica, whatever its door.
    pub sessions: Arc<crate::registry::Registry>,
    /// The key every replica signs and checks the kubectl door's
    /// credentials with (`signing_secret`); loaded when the door is on.
    pub signing: Option<crate::signing::SigningKey>,
    /// Single sign-on with the OpenID provider (`[oidc]`), and kbastion's
    /// own user CA.
    pub sso: Option<Arc<crate::sso::Sso>>,
    /// The address the SSH listener is bound to (its port, when `listen`
    /// asked for any), set once it is.
    pub ssh_address: std::sync::OnceLock<std::net::SocketAddr>,
    /// Every SSH channel's window, within `limits.bastion_window_bytes`.
    pub windows: Arc<crate::ssh::window::WindowBudget>,
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
        let signing = match config.kube_proxy.listen.is_some() || config.oidc.is_some() {
            true => Some(
                crate::signing::SigningKey::load(
                    cluster.own(),
                    &config.namespace,
                    &config.signing_secret,
                    wait,
                )
                .await?,
            ),
            false => None,
        };
        let sso = match (&config.oidc, &signing, &config.web.public_url) {
            (Some(oidc), Some(signing), Some(public_url)) => Some(Arc::new(
                crate::sso::Sso::new(oidc, public_url, signing, wait)
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            )),
            _ => None,
        };
        let trust = sso.as_ref().map(|sso| sso.trust());
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
            windows: Arc::new(crate::ssh::window::WindowBudget::new(
                config.limits.bastion_window_bytes,
                config.limits.channel_window_bytes,
                metrics.channel_windows.clone(),
            )),
            stream_verb: crate::authz::websocket_stream_verb(minor),
            stdin_eof: minor >= 30,
            metrics,
            access: std::sync::RwLock::new(Arc::new(Access::of(&config, trust))),
            reloads: tokio::sync::watch::channel(0).0,
            notice: tokio::sync::watch::channel(None).0,
            stop: tokio_util::sync::CancellationToken::new(),
            web_logins: crate::web::links::Logins::new(&config.web),
            failed_sign_ins: Default::default(),
            sessions: Default::default(),
            signing,
            sso,
            ssh_address: Default::default(),
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
    pub revoked: crate::keys::RevokedKeys,
    /// Single sign-on's provider and CA (set at start; `[oidc]` changes
    /// need a restart).
    pub sso: Option<crate::sso::Trust>,
}

impl Access {
    fn of(config: &Config, sso: Option<crate::sso::Trust>) -> Self {
        Access {
            users: config.users.clone(),
            ca_fingerprints: crate::certificates::fingerprints(&config.ca_keys),
            revoked: config.revoked.clone(),
            sso,
        }
    }

    /// The lists a logged-in credential is checked against.
    pub fn lists(&self) -> crate::revocation::Lists<'_> {
        crate::revocation::Lists {
            users: &self.users,
            ca_fingerprints: &self.ca_fingerprints,
            revoked: &self.revoked,
            sso: self.sso.as_ref(),
        }
    }
}

impl Shared {
    /// The drain, idle and revocation rules a new session follows;
    /// `revoked` is its connection's (`handler::watch_credential`).
    pub fn control(
        &self,
        revoked: tokio::sync::watch::Receiver<Option<String>>,
    ) -> crate::session::control::Control {
        // A session that starts after the drain notice went out is told
        // too: its first look at the notice sees the current one.
        let mut notice = self.notice.subscribe();
        notice.mark_changed();
        crate::session::control::Control {
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

    /// The Kubernetes user and groups a credential's person is
    /// impersonated as now: a configured person's, or one made from the
    /// provider's claims (under the `[oidc]` prefixes). None when the
    /// person is no longer configured, or single sign-on is off.
    pub fn identity_of(
        &self,
        credential: &crate::revocation::Credential,
    ) -> Option<crate::cluster::Identity> {
        match credential.claimed() {
            Some(claimed) => self.sso.as_ref().map(|sso| claimed.identity(&sso.config)),
            None => self
                .user(credential.person())
                .map(|user| crate::cluster::Identity {
                    user: user.kubernetes_user().to_string(),
                    groups: user.kubernetes_groups.clone(),
                }),
        }
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
        let sso = self.sso.as_ref().map(|sso| sso.trust());
        *self.access.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Access::of(config, sso));
        self.reloads.send_modify(|generation| *generation += 1);
    }
}
