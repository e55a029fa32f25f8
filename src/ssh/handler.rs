//! One SSH connection: authentication against the configured keys, and a
//! task per session channel that collects its requests (pty, shell, exec)
//! and hands the channel to the bridge. Requests are answered here
//! (`channel_success`/`channel_failure`); the channel's own event queue,
//! which russh fills in parallel, is read by that task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use russh::keys::{HashAlg, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg, ChannelOpenFailure};

use super::Shared;
use crate::bridge::{self, Outcome, Pty, SessionRequest};
use crate::cluster::Identity;
use crate::login::{self, LoginError, LoginName, Target};
use crate::node_shell::NodeHold;
use crate::target::{ExecTarget, TargetError};

/// Who logged in and what they asked for. The target is checked when the
/// name is parsed; a bad one is reported on the first session channel
/// instead of failing authentication, so the user reads why.
#[derive(Debug, Clone)]
struct Login {
    person: String,
    identity: Identity,
    target: Result<Option<Target>, LoginError>,
}

pub struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    login: Option<Login>,
    authenticated: tokio::sync::watch::Sender<bool>,
    open_channels: Arc<AtomicUsize>,
}

impl Connection {
    pub fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        authenticated: tokio::sync::watch::Sender<bool>,
    ) -> Self {
        Connection {
            shared,
            peer,
            login: None,
            authenticated,
            open_channels: Arc::default(),
        }
    }

    /// The configured person a login name starts with, if its key matches.
    fn key_accepted(&self, raw_login: &str, key: &PublicKey) -> bool {
        let person = raw_login.split('@').next().unwrap_or_default();
        self.shared
            .config
            .user(person)
            .is_some_and(|user| user.keys.iter().any(|k| k.key_data() == key.key_data()))
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.key_accepted(user, offer.public_key) {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let fingerprint = key.public_key.fingerprint(HashAlg::Sha256).to_string();
        if !self.key_accepted(user, key.public_key) {
            tracing::info!(peer = %self.peer, login = %user.escape_debug(), %fingerprint, "authentication failed");
            return Ok(Auth::reject());
        }
        let person = user.split('@').next().unwrap_or_default().to_string();
        let Some(configured) = self.shared.config.user(&person) else {
            return Ok(Auth::reject());
        };
        let identity = Identity {
            user: configured.kubernetes_user().to_string(),
            groups: configured.kubernetes_groups.clone(),
        };
        let target = LoginName::parse(user).map(|name| name.target);
        tracing::info!(peer = %self.peer, %person, %fingerprint, kubernetes_user = %identity.user, target = ?target.as_ref().ok().and_then(|t| t.as_ref()).map(ToString::to_string), "authenticated");
        self.login = Some(Login {
            person,
            identity,
            target,
        });
        let _ = self.authenticated.send(true);
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(login), Some(guard)) = (
            self.login.clone(),
            ChannelGuard::take(
                &self.open_channels,
                self.shared.config.limits.max_channels_per_connection,
            ),
        ) else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        reply.accept().await;
        let shared = self.shared.clone();
        let peer = self.peer;
        tokio::spawn(async move {
            session_channel(channel, login, shared, peer).await;
            drop(guard);
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(login), Some(guard)) = (
            self.login.clone(),
            ChannelGuard::take(
                &self.open_channels,
                self.shared.config.limits.max_channels_per_connection,
            ),
        ) else {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        // Resolving takes API calls: never inside the connection's event loop.
        let (shared, peer, host) = (self.shared.clone(), self.peer, host_to_connect.to_string());
        tokio::spawn(async move {
            forward_channel(channel, reply, host, port_to_connect, login, shared, peer).await;
            drop(guard);
        });
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        tracing::info!(peer = %self.peer, address = %address.escape_debug(), port = *port, "remote forwarding refused: kbastion does not listen on behalf of clients");
        Ok(false)
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        tracing::info!(peer = %self.peer, "agent forwarding refused");
        Ok(false)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _: &str,
        _: u32,
        _: u32,
        _: u32,
        _: u32,
        _: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _: &str,
        _: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Environment variables from the client are not passed on (as with
        // sshd's default AcceptEnv): accepting silently keeps clients quiet.
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" {
            return session.channel_success(channel);
        }
        tracing::info!(peer = %self.peer, subsystem = %name.escape_debug(), "subsystem refused: unknown");
        session.channel_failure(channel)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _: bool,
        _: &str,
        _: &str,
        _: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }
}

/// Counts a connection's open channels against its limit.
struct ChannelGuard(Arc<AtomicUsize>);

impl ChannelGuard {
    fn take(counter: &Arc<AtomicUsize>, limit: usize) -> Option<Self> {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| ChannelGuard(counter.clone()))
    }
}

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits for the channel's pty/shell/exec requests, then runs the session.
async fn session_channel(
    channel: Channel<Msg>,
    login: Login,
    shared: Arc<Shared>,
    peer: SocketAddr,
) {
    let (mut read, write) = channel.split();
    let mut pty: Option<Pty> = None;
    let request = loop {
        match read.wait().await {
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            }) => {
                pty = Some(Pty {
                    term,
                    width: col_width,
                    height: row_height,
                });
            }
            Some(ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            }) => {
                if let Some(pty) = pty.as_mut() {
                    pty.width = col_width;
                    pty.height = row_height;
                }
            }
            Some(ChannelMsg::RequestShell { .. }) => break SessionRequest { pty, command: None },
            Some(ChannelMsg::Exec { command, .. }) => match String::from_utf8(command) {
                Ok(command) => {
                    break SessionRequest {
                        pty,
                        command: Some(command),
                    };
                }
                Err(_) => {
                    bridge::refuse(&write, "the command is not valid UTF-8", pty.is_some()).await;
                    return;
                }
            },
            Some(ChannelMsg::RequestSubsystem { name, .. }) if name == "sftp" => {
                break SessionRequest {
                    pty: None,
                    command: Some(bridge::SFTP_SERVER.into()),
                };
            }
            Some(ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    };
    let tty = request.pty.is_some();
    let started = Instant::now();
    let kind = match request.command.as_deref() {
        Some(bridge::SFTP_SERVER) => "sftp",
        Some(_) => "exec",
        None => "shell",
    };
    let target = match &login.target {
        Err(error) => {
            tracing::info!(%peer, person = %login.person, outcome = "bad login name", %error, "session refused");
            bridge::refuse(&write, &error.to_string(), tty).await;
            return;
        }
        Ok(None) => {
            let message = reachable_targets(&shared, &login).await;
            bridge::refuse(&write, &message, tty).await;
            return;
        }
        Ok(Some(target)) => target.clone(),
    };
    let wait = shared.config.timeouts.api();
    let resolved = resolve(&shared, &login, &target).await;
    // The hold keeps a node's pod while the session runs.
    let (exec_target, _node_hold) = match resolved {
        Ok(resolved) => resolved,
        Err(error) => {
            tracing::info!(%peer, person = %login.person, %target, kind, outcome = "refused", %error, "session refused");
            bridge::refuse(&write, &error.to_string(), tty).await;
            return;
        }
    };
    tracing::info!(%peer, person = %login.person, kubernetes_user = %login.identity.user, %target, kind, container = %exec_target.container, "session started");
    let outcome = bridge::run(
        exec_target,
        request,
        read,
        write,
        &login.identity.user,
        wait,
    )
    .await;
    let outcome = match outcome {
        Outcome::Exited(code) => format!("exited {code}"),
        Outcome::ClientGone => "client gone".into(),
        Outcome::Failed(why) => format!("failed: {why}"),
    };
    tracing::info!(%peer, person = %login.person, %target, kind, %outcome, duration_ms = started.elapsed().as_millis() as u64, "session ended");
}

/// Resolves a target for `login`: a container as the person (their RBAC),
/// or a node through its held node-shell pod.
async fn resolve(
    shared: &Shared,
    login: &Login,
    target: &Target,
) -> Result<(ExecTarget, Option<NodeHold>), TargetError> {
    let wait = shared.config.timeouts.api();
    match target {
        Target::Container {
            namespace,
            pod,
            container,
        } => {
            let client = shared
                .cluster
                .as_user(&login.identity)
                .map_err(|e| TargetError::Api(e.to_string()))?;
            let resolved = crate::target::resolve_container(
                client,
                namespace,
                pod,
                container.as_deref(),
                wait,
            )
            .await?;
            Ok((resolved, None))
        }
        Target::Node { node } => {
            let (resolved, hold) = shared.node_shells.acquire(&login.identity, node).await?;
            Ok((resolved, Some(hold)))
        }
    }
}

/// One forwarded connection: resolve, check the destination, then accept
/// and carry, or refuse with the reason.
async fn forward_channel(
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    host: String,
    port: u32,
    login: Login,
    shared: Arc<Shared>,
    peer: SocketAddr,
) {
    let target = match &login.target {
        Ok(Some(target)) => target.clone(),
        Ok(None) => {
            reply
                .reject(ChannelOpenFailure::Other {
                    code: 1,
                    reason: format!("no target in the login name; {}", login::SYNTAX),
                })
                .await;
            return;
        }
        Err(error) => {
            reply
                .reject(ChannelOpenFailure::Other {
                    code: 1,
                    reason: error.to_string(),
                })
                .await;
            return;
        }
    };
    let Ok(port) = u16::try_from(port) else {
        reply
            .reject(ChannelOpenFailure::Other {
                code: 2,
                reason: format!("port {port} is out of range"),
            })
            .await;
        return;
    };
    let (resolved, _hold) = match resolve(&shared, &login, &target).await {
        Ok(resolved) => resolved,
        Err(error) => {
            reply
                .reject(ChannelOpenFailure::Other {
                    code: 1,
                    reason: error.to_string(),
                })
                .await;
            return;
        }
    };
    if !crate::forward::destination_allowed(&resolved, &host) {
        tracing::info!(%peer, person = %login.person, %target, destination = %format!("{host}:{port}").escape_debug(), "forward refused: not the target");
        reply
            .reject(crate::forward::refusal(&resolved, &host))
            .await;
        return;
    }
    reply.accept().await;
    tracing::info!(%peer, person = %login.person, %target, %port, "forward started");
    let outcome = crate::forward::carry(&resolved, port, channel).await;
    tracing::info!(%peer, person = %login.person, %target, %port, outcome = %outcome.err().unwrap_or_else(|| "closed".into()), "forward ended");
}

/// Bounds on the no-target answer, which is a hint, not an inventory.
const MAX_NAMESPACES_LISTED: usize = 50;
const MAX_TARGETS_LISTED: usize = 100;

/// The answer to a login without a target: the syntax and what the person
/// may reach (pods they can list; nodes too if they can list them).
async fn reachable_targets(shared: &Shared, login: &Login) -> String {
    use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
    use kube::api::{Api, ListParams};
    let mut message = format!("no target given; {}", login::SYNTAX);
    let Ok(client) = shared.cluster.as_user(&login.identity) else {
        return message;
    };
    let wait = shared.config.timeouts.api();
    let name_of = |p: &Pod| {
        format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or(""),
            p.metadata.name.as_deref().unwrap_or("")
        )
    };
    let all: Api<Pod> = Api::all(client.clone());
    let mut names: Vec<String> =
        match crate::target::bounded(wait, all.list(&ListParams::default())).await {
            Ok(Ok(list)) => list.items.iter().map(name_of).collect(),
            // Not allowed cluster-wide: ask namespace by namespace (the
            // bastion may list namespaces; the person's RBAC decides the pods).
            _ => {
                let mut names = Vec::new();
                let namespaces: Api<Namespace> = Api::all(shared.cluster.own());
                if let Ok(Ok(list)) =
                    crate::target::bounded(wait, namespaces.list(&ListParams::default())).await
                {
                    for namespace in list
                        .items
                        .iter()
                        .filter_map(|n| n.metadata.name.as_deref())
                        .take(MAX_NAMESPACES_LISTED)
                    {
                        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
                        if let Ok(Ok(list)) =
                            crate::target::bounded(wait, pods.list(&ListParams::default())).await
                        {
                            names.extend(list.items.iter().map(name_of));
                        }
                    }
                }
                names
            }
        };
    names.truncate(MAX_TARGETS_LISTED);
    if !names.is_empty() {
        message.push_str(&format!("\npods you may see: {}", names.join(", ")));
    }
    let nodes: Api<Node> = Api::all(client);
    if let Ok(Ok(list)) = crate::target::bounded(wait, nodes.list(&ListParams::default())).await {
        let names: Vec<String> = list
            .items
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        if !names.is_empty() {
            message.push_str(&format!("\nnodes: {}", names.join(", ")));
        }
    }
    message
}
