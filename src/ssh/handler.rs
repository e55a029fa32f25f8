//! One SSH connection, as russh drives it: authentication (`auth`),
//! admission of each channel within the limits, and a task per channel
//! that turns its requests (pty, shell, exec, subsystem) into a
//! `Requested` and hands it to the session layer, or carries a forward.
//! Requests are answered here (`channel_success`/`channel_failure`); the
//! channel's own event queue, which russh fills in parallel, is read by
//! that task.

use std::net::SocketAddr;
use std::sync::Arc;

use russh::keys::Certificate;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg, ChannelOpenFailure};

mod auth;

pub use auth::Phase;
use auth::{Authenticator, Login, watch_credential};

use super::channel::{SshInput, SshOutput};
use crate::audit::{Event, SessionKind};
use crate::bastion::Shared;
use crate::login::{self, Target};
use crate::session::control::{Outcome, Report};
use crate::session::gate::{Admitted, Presented, Refusal};
use crate::session::io::{Chunk, Credit, Pty};
use crate::session::io::{ClientOutput, refuse};
use crate::session::{Opening, Requested, Service};
use crate::target::Reached;

/// Why kbastion refuses what OpenSSH clients may ask for besides sessions
/// and local forwarding.
const REMOTE_FORWARD_REFUSED: &str =
    "kbastion does not listen on behalf of clients; use ssh -L from your side instead";
const AGENT_FORWARD_REFUSED: &str =
    "agent forwarding (-A) is refused: kbastion never lets your keys reach the cluster";
const X11_REFUSED: &str = "X11 forwarding is refused: containers and nodes have no display for it";

/// Who logged in and what they asked for. The target is checked when the
/// name is parsed; a bad one is reported on the first session channel
/// instead of failing authentication, so the user reads why.
pub struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// Who logged in, once someone has.
    auth: Authenticator,
    open_channels: crate::limits::Counter<()>,
    /// Why `-R` was refused on this connection: told on its sessions'
    /// stderr, since a global request's failure carries no reason.
    refused_remote_forward: Arc<std::sync::Mutex<Option<String>>>,
    /// Set to the reason once the credential no longer holds; every
    /// session of the connection watches it.
    revoked: Arc<tokio::sync::watch::Sender<Option<String>>>,
    /// Ends the credential watcher with the connection.
    _watcher: Option<tokio_util::sync::DropGuard>,
}

impl Connection {
    pub fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        phase: tokio::sync::watch::Sender<Phase>,
    ) -> Self {
        let open_channels =
            crate::limits::Counter::new(shared.config.limits.max_channels_per_connection);
        Connection {
            auth: Authenticator::new(shared.clone(), peer, phase),
            shared,
            peer,
            open_channels,
            refused_remote_forward: Arc::default(),
            revoked: Arc::new(tokio::sync::watch::channel(None).0),
            _watcher: None,
        }
    }

    /// Admits a new channel: the gate's checks that need no request (the
    /// drain, the credential as configured now), then a place within the
    /// per-connection limit (a limit of this door's connections). The
    /// rest is decided by the gate when the channel asks for something.
    /// The guard gives the place back when the channel ends.
    fn admit(&self) -> Result<(Login, ChannelGuard), ChannelOpenFailure> {
        let login = self
            .auth
            .login
            .clone()
            .ok_or(ChannelOpenFailure::AdministrativelyProhibited)?;
        let presented = Presented {
            credential: Some(&login.credential),
            address: self.peer.ip(),
        };
        crate::session::gate::still_open(&self.shared, &presented).map_err(|refusal| {
            ChannelOpenFailure::Other {
                // SSH_OPEN_CONNECT_FAILED for a drain (try another
                // replica), ADMINISTRATIVELY_PROHIBITED otherwise.
                code: if matches!(refusal, Refusal::Draining) {
                    2
                } else {
                    1
                },
                reason: refusal.to_string(),
            }
        })?;
        let limit = self.shared.config.limits.max_channels_per_connection;
        let channel = self
            .open_channels
            .take(())
            .ok_or_else(|| ChannelOpenFailure::Other {
                code: 4, // SSH_OPEN_RESOURCE_SHORTAGE
                reason: format!("too many channels on this connection (limit {limit})"),
            })?;
        Ok((login, ChannelGuard { _channel: channel }))
    }

    fn channel_refused(&self, kind: SessionKind, refusal: &ChannelOpenFailure) {
        if let ChannelOpenFailure::Other { reason, .. } = refusal {
            self.refuse_request(kind, reason);
        }
    }

    /// Logs and audits a request kbastion never grants.
    fn refuse_request(&self, kind: SessionKind, reason: &str) {
        let person = self
            .auth
            .login
            .as_ref()
            .map(|l| l.person.clone())
            .unwrap_or_default();
        tracing::info!(peer = %self.peer, %person, ?kind, %reason, "request refused");
        self.shared.audit.record(Event::Refusal {
            source: self.peer.to_string(),
            person,
            target: String::new(),
            kind,
            reason: reason.to_string(),
        });
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        if let Some(login) = &self.auth.login {
            let ended = tokio_util::sync::CancellationToken::new();
            tokio::spawn(watch_credential(
                self.shared.clone(),
                login.credential.clone(),
                self.peer,
                self.revoked.clone(),
                session.handle(),
                ended.clone(),
            ));
            self._watcher = Some(ended.drop_guard());
        }
        Ok(())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.auth.offered(user, offer).await)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.auth.signed(user, key).await)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        Ok(self
            .auth
            .keyboard_interactive(user, response.is_some())
            .await)
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        Ok(self.auth.certified(user, certificate).await)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (login, guard) = match self.admit() {
            Ok(admitted) => admitted,
            Err(refusal) => {
                self.channel_refused(SessionKind::SessionChannel, &refusal);
                reply.reject(refusal).await;
                return Ok(());
            }
        };
        reply.accept().await;
        let shared = self.shared.clone();
        let peer = self.peer;
        let revoked = self.revoked.clone();
        let remote_forward = self
            .refused_remote_forward
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        tokio::spawn(async move {
            session_channel(channel, login, shared, peer, remote_forward, revoked).await;
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
        if let Some(reason) = self
            .auth
            .login
            .as_ref()
            .and_then(|l| l.grant.forwarding_refusal())
        {
            let destination = format!("{}:{port_to_connect}", host_to_connect.escape_debug());
            self.refuse_request(SessionKind::Forward { destination }, reason);
            reply
                .reject(ChannelOpenFailure::Other {
                    code: 1, // SSH_OPEN_ADMINISTRATIVELY_PROHIBITED
                    reason: reason.into(),
                })
                .await;
            return Ok(());
        }
        let (login, guard) = match self.admit() {
            Ok(admitted) => admitted,
            Err(refusal) => {
                let destination = format!("{}:{port_to_connect}", host_to_connect.escape_debug());
                self.channel_refused(SessionKind::Forward { destination }, &refusal);
                reply.reject(refusal).await;
                return Ok(());
            }
        };
        // Resolving takes API calls: never inside the connection's event loop.
        let (shared, peer, host) = (self.shared.clone(), self.peer, host_to_connect.to_string());
        let control = shared.control(self.revoked.subscribe());
        tokio::spawn(async move {
            let destination = (host, port_to_connect);
            forward_channel(channel, reply, destination, login, shared, peer, control).await;
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
        let listen = format!("{}:{port}", address.escape_debug());
        self.refuse_request(
            SessionKind::RemoteForward {
                listen: listen.clone(),
            },
            REMOTE_FORWARD_REFUSED,
        );
        *self
            .refused_remote_forward
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(format!(
            "remote forwarding of {listen} (-R) refused: {REMOTE_FORWARD_REFUSED}"
        ));
        Ok(false)
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // OpenSSH asks without wanting a reply: the session task tells the
        // user on stderr (see `session_channel`).
        self.refuse_request(SessionKind::AgentForward, AGENT_FORWARD_REFUSED);
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
        // OpenSSH's client ends the session on a refused pty (`-t`), so
        // the reason goes to the log and audit; a client that goes on
        // reads it on stderr too (`session_channel`).
        if let Some(reason) = self.auth.login.as_ref().and_then(|l| l.grant.pty_refusal()) {
            self.refuse_request(SessionKind::Pty, reason);
            return session.channel_failure(channel);
        }
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _: &str,
        _: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The session task takes the variable (`session_channel`), within
        // `accept_env`; what it drops is logged there. Accepting silently
        // keeps clients quiet, as sshd does.
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
        self.refuse_request(SessionKind::X11, X11_REFUSED);
        session.channel_failure(channel)
    }
}

/// A channel's places in the per-connection and per-person limits.
struct ChannelGuard {
    _channel: crate::limits::Slot<()>,
}

/// Waits for the channel's pty/shell/exec requests, then runs the session.
async fn session_channel(
    channel: Channel<Msg>,
    login: Login,
    shared: Arc<Shared>,
    peer: SocketAddr,
    remote_forward: Option<String>,
    revoked: Arc<tokio::sync::watch::Sender<Option<String>>>,
) {
    let (mut read, write) = channel.split();
    let output = SshOutput(write);
    // Data a client sends before its session starts is dropped, and its
    // room given back (the window is granted on consumption).
    let credit = shared.windows.credit(&read);
    let mut pty: Option<Pty> = None;
    let mut env = crate::session::environment::ClientEnv::default();
    // Refusals the client cannot show with a reason, told on stderr.
    let mut notes: Vec<String> = remote_forward.into_iter().collect();
    let requested = loop {
        match read.wait().await {
            Some(ChannelMsg::RequestPty { .. }) if login.grant.pty_refusal().is_some() => {
                notes.extend(login.grant.pty_refusal().map(String::from));
            }
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
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) => {
                if let Err(dropped) =
                    env.accept(&shared.config.accept_env, &variable_name, &variable_value)
                {
                    tracing::debug!(%peer, name = %variable_name.escape_debug(), %dropped, "environment variable not passed");
                }
            }
            Some(ChannelMsg::AgentForward { .. }) => notes.push(AGENT_FORWARD_REFUSED.into()),
            Some(ChannelMsg::RequestX11 { .. }) => notes.push(X11_REFUSED.into()),
            Some(ChannelMsg::RequestShell { .. }) => break Requested::Shell,
            Some(ChannelMsg::Exec { command, .. }) => match String::from_utf8(command) {
                Ok(command) => break Requested::Exec(command),
                Err(_) => {
                    refuse(&output, "the command is not valid UTF-8", pty.is_some()).await;
                    return;
                }
            },
            Some(ChannelMsg::RequestSubsystem { name, .. }) if name == "sftp" => {
                // SFTP has no terminal, whatever was asked before.
                pty = None;
                break Requested::Sftp;
            }
            Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                drop(Chunk::new(data, credit.clone()));
            }
            Some(ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    };
    let requested = match &login.grant.force_command {
        Some(command) => Requested::Exec(command.clone()),
        None => requested,
    };
    let tty = pty.is_some();
    // SFTP's stream is binary: nothing may be written into it.
    if requested != Requested::Sftp {
        for note in &notes {
            output.tell(note, tty).await;
        }
    }
    let opening = login.opening(&shared, peer, requested.kind());
    let target = match &login.target {
        Err(error) => {
            opening.refused(&error.to_string());
            refuse(&output, &error.to_string(), tty).await;
            return;
        }
        Ok(None) => {
            let command = match &requested {
                Requested::Exec(line) => crate::commands::parse(line),
                _ => crate::commands::Parsed::Unknown(String::new()),
            };
            match command {
                crate::commands::Parsed::Command(crate::commands::Command::Web) => {
                    web_link(&shared, &login, &opening, &output, peer, tty).await
                }
                crate::commands::Parsed::Command(crate::commands::Command::Certificate) => {
                    let answer = match read_stdin(&mut read, &credit).await {
                        Ok(text) => crate::sso::certificate::answer(
                            &shared,
                            &login.credential,
                            &text,
                            &peer.to_string(),
                        ),
                        Err(reason) => Err(reason),
                    };
                    match answer {
                        Ok(text) => print(&output, &text).await,
                        Err(reason) => {
                            opening.refused(&reason);
                            refuse(&output, &reason, tty).await;
                        }
                    }
                }
                crate::commands::Parsed::Command(crate::commands::Command::Sessions) => {
                    let listed = shared.sessions.list(Some(&login.person));
                    print(&output, &crate::registry::table(&listed)).await;
                }
                crate::commands::Parsed::Command(
                    command @ (crate::commands::Command::Kubeconfig
                    | crate::commands::Command::KubeCredential),
                ) => {
                    let answer = match (&login.grant.force_command, command) {
                        (Some(_), _) => Err("no kubectl credential for this login: the certificate's force-command permits only its command".to_string()),
                        (None, crate::commands::Command::Kubeconfig) => {
                            crate::kube_credential::answer_kubeconfig(&shared, &login.person)
                        }
                        (None, _) => crate::kube_credential::answer_credential(
                            &shared,
                            &login.credential,
                            &login.grant,
                            &peer.to_string(),
                        ),
                    };
                    match answer {
                        Ok(text) => print(&output, &text).await,
                        Err(reason) => {
                            opening.refused(&reason);
                            refuse(&output, &reason, tty).await;
                        }
                    }
                }
                // No target and no command of the bastion: the syntax,
                // what the person may reach, and the bastion's commands.
                crate::commands::Parsed::Unknown(line) => {
                    opening.refused("no target given");
                    let mut message =
                        crate::target::reachable_targets(&shared, &login.identity).await;
                    if !line.is_empty() {
                        message.push('\n');
                        message.push_str(&line);
                    }
                    refuse(&output, &message, tty).await;
                }
            }
            return;
        }
        Ok(Some(target)) => target.clone(),
    };
    // A log is a stream (kubectl's options, checked first) unless SFTP or
    // scp asks for it as files.
    let files = crate::session::FileService::requested(&requested);
    let log_options = match &target {
        Target::Container {
            view: login::View::Logs,
            ..
        } if files.is_none() => match crate::logs::options(&requested) {
            Ok(options) => Some(options),
            Err(reason) => {
                opening.refused(&reason);
                refuse(&output, &reason, tty).await;
                return;
            }
        },
        _ => None,
    };
    let opening = match &log_options {
        Some(_) => Opening {
            kind: SessionKind::Logs {
                options: match &requested {
                    Requested::Exec(options) => options.clone(),
                    _ => String::new(),
                },
            },
            ..opening
        },
        None => opening,
    };
    let presented = Presented {
        credential: Some(&login.credential),
        address: peer.ip(),
    };
    let admitted =
        crate::session::gate::admit(opening, presented, &target, "exec", pty.as_ref()).await;
    let Admitted { reaches, session } = match admitted {
        Ok(admitted) => admitted,
        Err(refusal) => {
            refuse(&output, &refusal.to_string(), tty).await;
            return;
        }
    };
    let mut context = session.context(&login.identity.user, shared.control(revoked.subscribe()));
    context.env = env;
    let api_wait = shared.config.timeouts.api();
    let report = match reaches {
        Reached::Log(source) => match (files, log_options) {
            (Some(service), _) => {
                let fs = crate::remote_fs::RemoteFs::log(
                    crate::log_files::LogFiles::new(source, api_wait),
                    api_wait,
                );
                crate::session::serve_files(
                    service,
                    fs,
                    SshInput::new(read, credit),
                    output,
                    context,
                )
                .await
            }
            (None, options) => {
                let log = crate::logs::session(source, options.unwrap_or_default());
                log.serve(SshInput::new(read, credit), &output, tty, &context)
                    .await
            }
        },
        Reached::Exec(exec_target) => {
            let exec_target = Arc::new(exec_target);
            let fs = crate::remote_fs::RemoteFs::new(exec_target.clone(), api_wait);
            let service = Service::choose(requested, tty, &shared.config.files, &fs).await;
            // A debug container's shell says where the target's files are.
            if let (Some(note), Service::Shell) = (&exec_target.note, &service) {
                output.tell(note, tty).await;
            }
            crate::session::serve(
                service,
                exec_target,
                pty,
                SshInput::new(read, credit),
                output,
                context,
            )
            .await
        }
    };
    session.end(&report);
}

/// One forwarded connection: resolve, check the destination, then accept
/// and carry, or refuse with the reason.
#[allow(clippy::too_many_arguments)] // each is a distinct part of the forward
async fn forward_channel(
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    (host, port): (String, u32),
    login: Login,
    shared: Arc<Shared>,
    peer: SocketAddr,
    control: crate::session::control::Control,
) {
    let kind = SessionKind::Forward {
        destination: format!("{host}:{port}"),
    };
    let opening = login.opening(&shared, peer, kind);
    let refuse = |reason: String, code: u32| {
        opening.refused(&reason);
        ChannelOpenFailure::Other { code, reason }
    };
    let target = match &login.target {
        Ok(Some(target)) => target.clone(),
        Ok(None) => {
            return reply
                .reject(refuse(
                    format!("no target in the login name; {}", login::SYNTAX),
                    1,
                ))
                .await;
        }
        Err(error) => return reply.reject(refuse(error.to_string(), 1)).await,
    };
    let Ok(port) = u16::try_from(port) else {
        return reply
            .reject(refuse(format!("port {port} is out of range"), 2))
            .await;
    };
    let presented = Presented {
        credential: Some(&login.credential),
        address: peer.ip(),
    };
    // The destination is checked against the target before anything
    // starts: a refused one is audited as the refusal it is.
    let cleared =
        match crate::session::gate::clear(opening, presented, &target, "portforward").await {
            Ok(cleared) => cleared,
            Err(refusal) => {
                return reply
                    .reject(ChannelOpenFailure::Other {
                        code: 1,
                        reason: refusal.to_string(),
                    })
                    .await;
            }
        };
    // `target::resolve` gives a forward only an exec's target.
    let reason = match &cleared.reaches {
        Reached::Exec(resolved) if crate::forward::destination_allowed(resolved, &host) => None,
        Reached::Exec(resolved) => Some(crate::forward::refusal(resolved, &host)),
        Reached::Log(_) => Some("a container's log cannot be forwarded to".to_string()),
    };
    if let Some(reason) = reason {
        cleared.refuse(&reason);
        return reply
            .reject(ChannelOpenFailure::Other { code: 1, reason })
            .await;
    }
    let (reaches, session) = match cleared.start(None).await {
        Ok(Admitted { reaches, session }) => (reaches, session),
        Err(refusal) => {
            return reply
                .reject(ChannelOpenFailure::Other {
                    code: 2,
                    reason: refusal.to_string(),
                })
                .await;
        }
    };
    let Reached::Exec(resolved) = reaches else {
        // Refused above; kept total rather than assumed.
        let reason = "a container's log cannot be forwarded to".to_string();
        session.end(&Report {
            outcome: Outcome::Failed(reason.clone()),
            bytes_in: 0,
            bytes_out: 0,
        });
        return reply
            .reject(ChannelOpenFailure::Other { code: 1, reason })
            .await;
    };
    reply.accept().await;
    // Forwards follow the drain and idle rules too; the client has no
    // stderr for a forwarded connection, so they just close.
    let activity = session.traffic.clone();
    let (read, write) = channel.split();
    let credit = shared.windows.credit(&read);
    let output = SshOutput(write);
    let carried = crate::session::control::supervise(
        &control,
        &activity,
        &output,
        crate::session::control::Tell::Nothing,
        crate::forward::carry(
            &resolved,
            port,
            SshInput::new(read, credit),
            &output,
            &activity,
        ),
    )
    .await;
    let outcome = match carried {
        Ok(Ok(())) => Outcome::Closed,
        Ok(Err(error)) => Outcome::Failed(error),
        Err(interrupted) => Outcome::of(interrupted),
    };
    session.end(&Report {
        outcome,
        bytes_in: activity.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
        bytes_out: activity
            .bytes_out
            .load(std::sync::atomic::Ordering::Relaxed),
    });
}

/// `ssh PERSON@bastion web`: a one-time sign-in link for the web
/// terminal. A browser session is a terminal for any target: a credential
/// that may not have one (no permit-pty, a force-command) gets no link, or
/// the web would be a way around its restrictions.
async fn web_link(
    shared: &Arc<Shared>,
    login: &Login,
    opening: &Opening<'_>,
    output: &SshOutput,
    peer: SocketAddr,
    tty: bool,
) {
    let restricted = login
        .grant
        .pty_refusal()
        .map(|_| "the certificate has no permit-pty extension")
        .or(login
            .grant
            .force_command
            .as_ref()
            .map(|_| "the certificate's force-command permits only its command"));
    if let Some(why) = restricted {
        let reason = format!("no web terminal for this login: {why}");
        opening.refused(&reason);
        refuse(output, &reason, tty).await;
        return;
    }
    let grant = crate::web::links::Grant {
        ends: None,
        person: login.person.clone(),
        identity: login.identity.clone(),
        credential: Some(login.credential.clone()),
    };
    match crate::web::sign_in_link(shared, grant, &peer.to_string()) {
        Ok(text) => print(output, &text).await,
        Err(reason) => refuse(output, &reason, tty).await,
    }
}

/// Prints a bastion command's answer and ends the channel with status 0.
/// What a bastion command reads on stdin (a public key): up to its EOF,
/// bounded in size and time.
async fn read_stdin(
    read: &mut russh::ChannelReadHalf,
    credit: &Option<Credit>,
) -> Result<String, String> {
    const MAX: usize = 16 * 1024;
    const WAIT: std::time::Duration = std::time::Duration::from_secs(30);
    let mut input = Vec::new();
    let reading = async {
        loop {
            match read.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    input.extend_from_slice(&data);
                    drop(Chunk::new(data, credit.clone()));
                    if input.len() > MAX {
                        return Err(format!(
                            "the input is longer than {MAX} bytes; send one public key (ssh PERSON@BASTION certificate < ~/.ssh/id_ed25519.pub)"
                        ));
                    }
                }
                Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => return Ok(()),
                Some(_) => {}
            }
        }
    };
    match tokio::time::timeout(WAIT, reading).await {
        Ok(Ok(())) => String::from_utf8(input).map_err(|_| {
            "the input is not text; send one public key (ssh PERSON@BASTION certificate < ~/.ssh/id_ed25519.pub)".to_string()
        }),
        Ok(Err(reason)) => Err(reason),
        Err(_) => Err(format!(
            "no public key arrived within {} s; send one on stdin (ssh PERSON@BASTION certificate < ~/.ssh/id_ed25519.pub)",
            WAIT.as_secs()
        )),
    }
}

async fn print(output: &SshOutput, text: &str) {
    use tokio::io::AsyncWriteExt;
    let mut stdout = output.stdout();
    let _ = stdout.write_all(text.as_bytes()).await;
    let _ = stdout.flush().await;
    output.finish(0).await;
}
