//! The session layer: what every session is, whatever the transport
//! brought it (an SSH channel, a WebSocket) and whatever it carries.
//!
//! A door turns what the client asked into a `Requested` and an
//! `Opening`; `gate::admit` admits it (drain, credential, limits, target)
//! and `Opening::start` starts it: it waits for room in the audit trail,
//! opens the recording, registers the session (`registry`) and records the
//! start (log line, audit event, metrics); `Session::end` records the end. `serve`
//! picks the `Service` in one place and runs it under the session's rules
//! (`control`): the bridge to an exec, or kbastion's own SFTP and scp.
//! Forwards are sessions too (`Opening::start` with a forward's kind).

pub mod control;
pub mod environment;
pub mod gate;
pub mod io;

use std::sync::Arc;
use std::time::Instant;

use control::{Activity, Control, Outcome, Report, supervise};
use io::{ClientInput, ClientOutput, Pty};

use crate::audit::{Event, SessionKind, Transport};
use crate::bastion::Shared;
use crate::cluster::Identity;
use crate::config::{Files, ScpServer, SftpServer};
use crate::pods::ExecTarget;
use crate::remote_fs::RemoteFs;
use crate::scp::ScpCommand;

/// What the client asked a session to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// The login shell.
    Shell,
    /// A command line, run by `sh -c`.
    Exec(String),
    /// The SFTP subsystem.
    Sftp,
}

impl Requested {
    /// The session's kind, as audited.
    pub fn kind(&self) -> SessionKind {
        match self {
            Requested::Shell => SessionKind::Shell,
            Requested::Exec(command) => SessionKind::Exec {
                command: command.clone(),
            },
            Requested::Sftp => SessionKind::Sftp,
        }
    }
}

/// What serves a session: chosen once, by `Service::choose`.
#[derive(Debug)]
pub enum Service {
    Shell,
    Exec(String),
    /// The target's own `sftp-server`, through an exec.
    TargetSftp,
    /// kbastion's own SFTP server or legacy scp, on the target's files.
    Builtin(FileService),
}

/// kbastion's own file services, on a `RemoteFs`: the target's files
/// through execs, or a container's log as files.
#[derive(Debug)]
pub enum FileService {
    /// kbastion's SFTP server.
    Sftp,
    /// kbastion's legacy-scp (`scp -O`) emulation.
    Scp(ScpCommand),
}

impl FileService {
    /// The file service a request asks for, if it asks for one: SFTP, or
    /// a command that is what scp runs on the far side.
    pub fn requested(requested: &Requested) -> Option<FileService> {
        match requested {
            Requested::Sftp => Some(FileService::Sftp),
            Requested::Exec(command) => crate::scp::parse(command).map(FileService::Scp),
            Requested::Shell => None,
        }
    }
}

impl Service {
    /// kbastion's own scp or SFTP where configured (or, for SFTP, where
    /// the target has no `sftp-server`), else an exec of the request.
    pub async fn choose(requested: Requested, tty: bool, files: &Files, fs: &RemoteFs) -> Service {
        // Files that are not the exec container's own (a debug container's
        // target's) only kbastion's own servers reach.
        let builtin = fs.needs_builtin();
        match requested {
            Requested::Shell => Service::Shell,
            Requested::Exec(command) => {
                let scp = ((files.scp == ScpServer::Builtin || builtin) && !tty)
                    .then(|| crate::scp::parse(&command))
                    .flatten();
                match scp {
                    Some(scp) => Service::Builtin(FileService::Scp(scp)),
                    None => Service::Exec(command),
                }
            }
            Requested::Sftp => {
                let builtin = builtin
                    || match files.sftp {
                        SftpServer::Builtin => true,
                        SftpServer::Target => false,
                        // A failed probe goes to the exec, which reports it.
                        SftpServer::Auto => matches!(fs.has_sftp_server().await, Ok(false)),
                    };
                if builtin {
                    Service::Builtin(FileService::Sftp)
                } else {
                    Service::TargetSftp
                }
            }
        }
    }
}

/// A session about to start: who, from where, to what. Refusals before
/// the start are recorded through it too.
pub struct Opening<'a> {
    pub shared: &'a Arc<Shared>,
    pub transport: Transport,
    pub source: String,
    /// The browser's User-Agent, for a web terminal (cut at 256 bytes).
    pub user_agent: Option<String>,
    pub person: &'a str,
    pub identity: &'a Identity,
    /// The target as the person named it (empty when none was).
    pub target: String,
    pub kind: SessionKind,
    /// When the transport began setting the session up.
    pub setup_started: Instant,
}

impl Opening<'_> {
    /// Logs and audits a session that does not start.
    pub fn refused(&self, reason: &str) {
        tracing::info!(source = %self.source, person = %self.person, target = %self.target, kind = ?self.kind, transport = ?self.transport, outcome = "refused", %reason, "session refused");
        self.shared.audit.record(Event::Refusal {
            source: self.source.clone(),
            person: self.person.to_string(),
            target: self.target.clone(),
            kind: self.kind.clone(),
            reason: reason.to_string(),
        });
    }

    /// Starts the session once the audit trail has room and its recording
    /// (if any) is open; `pty` is the terminal it is recorded at. On a
    /// refusal the reason is recorded and returned, for the person.
    pub async fn start(self, pty: Option<&Pty>, places: Places) -> Result<Session, String> {
        let shared = self.shared;
        if let Err(behind) = shared.audit.wait_for_room().await {
            let reason = behind.to_string();
            self.refused(&reason);
            return Err(reason);
        }
        let id = format!("{:032x}", rand::random::<u128>());
        let recorder = match recorder_for(&shared.config.audit, &id, pty, &self.kind) {
            Ok(recorder) => recorder,
            Err(reason) => {
                self.refused(&reason);
                return Err(reason);
            }
        };
        shared
            .metrics
            .session_started(self.kind.label(), self.setup_started.elapsed());
        shared.metrics.transport_started(self.transport.label());
        tracing::info!(source = %self.source, session = %id, person = %self.person, kubernetes_user = %self.identity.user, target = %self.target, kind = ?self.kind, transport = ?self.transport, "session started");
        shared.audit.record(Event::SessionStart {
            session: id.clone(),
            source: self.source.clone(),
            transport: self.transport,
            user_agent: self.user_agent.clone(),
            person: self.person.to_string(),
            kubernetes_user: self.identity.user.clone(),
            kubernetes_groups: self.identity.groups.clone(),
            target: self.target.clone(),
            kind: self.kind.clone(),
        });
        let traffic = Activity::default();
        let registered = shared.sessions.register(crate::registry::NewSession {
            id: &id,
            person: self.person,
            source: &self.source,
            target: &self.target,
            kind: &self.kind,
            transport: self.transport,
            traffic: traffic.clone(),
        });
        Ok(Session {
            shared: shared.clone(),
            traffic,
            _registered: registered,
            _places: places,
            id,
            source: self.source,
            person: self.person.to_string(),
            target: self.target,
            kind: self.kind,
            transport: self.transport,
            started: Instant::now(),
            recorder,
            require_recording: shared.config.audit.require_recording,
        })
    }
}

/// A started session, until `end` records how it ended.
pub struct Session {
    shared: Arc<Shared>,
    /// Marks the session's processes and names its recording.
    pub id: String,
    source: String,
    person: String,
    target: String,
    kind: SessionKind,
    transport: Transport,
    started: Instant,
    pub recorder: Option<crate::recording::Recorder>,
    require_recording: bool,
    /// The bytes its client's stream carried so far, live (the idle check,
    /// the session listing).
    pub traffic: Activity,
    /// Its entry in the session registry, removed however it ends.
    _registered: crate::registry::Registered,
    _places: Places,
}

/// What a session holds until it ends: its place in the person's session
/// limit, and a node shell's hold on its pod.
#[derive(Default)]
pub struct Places {
    pub _slot: Option<crate::limits::Slot<String>>,
    pub _hold: Option<crate::node_shell::NodeHold>,
}

impl Session {
    /// What the bridge and the services run this session with: its id and
    /// recording, the bastion's rules (`control`) plus its recording when
    /// the session may not run without it. `user` is the Kubernetes user,
    /// for messages.
    pub fn context(&self, user: &str, mut control: Control) -> crate::bridge::SessionContext {
        if self.require_recording {
            control.required_recording = self.recorder.clone();
        }
        crate::bridge::SessionContext {
            session_id: self.id.clone(),
            user: user.to_string(),
            api_wait: self.shared.config.timeouts.api(),
            recorder: self.recorder.clone(),
            traffic: self.traffic.clone(),
            files: crate::audit::FileAudit::new(self.shared.audit.clone(), &self.id, &self.person),
            control,
            stdin_eof: self.shared.stdin_eof,
            stream_verb: self.shared.stream_verb,
            env: Default::default(),
        }
    }

    /// Records the end: log line, metrics and audit event.
    pub fn end(self, report: &Report) {
        let (exit_status, reason, label) = match &report.outcome {
            Outcome::Exited(0) => (Some(0), "exited".to_string(), "success"),
            Outcome::Exited(code) => (Some(*code), "exited".to_string(), "nonzero_exit"),
            Outcome::Closed => (None, "closed".to_string(), "success"),
            Outcome::ClientGone => (None, "client gone".to_string(), "client_gone"),
            Outcome::Stopped => (None, "bastion stopped".to_string(), "stopped"),
            Outcome::Idle => (None, "idle timeout".to_string(), "idle"),
            Outcome::Revoked(why) => (None, format!("access revoked: {why}"), "revoked"),
            Outcome::Failed(why) => {
                self.shared.metrics.api_errors.inc();
                (None, format!("failed: {why}"), "failed")
            }
        };
        self.shared.metrics.session_ended(
            self.kind.label(),
            label,
            report.bytes_in,
            report.bytes_out,
        );
        self.shared.metrics.transport_ended(self.transport.label());
        let duration_ms = self.started.elapsed().as_millis() as u64;
        // A recording of nothing (a command that could not start) is not
        // kept or announced.
        let recording = match &self.recorder {
            Some(recorder) if recorder.is_empty() => {
                if let Err(error) = std::fs::remove_file(&recorder.path) {
                    tracing::warn!(%error, path = %recorder.path.display(), "cannot remove an empty recording");
                }
                None
            }
            Some(recorder) => Some(recorder.path.display().to_string()),
            None => None,
        };
        tracing::info!(source = %self.source, session = %self.id, person = %self.person, target = %self.target, kind = ?self.kind, ?exit_status, %reason, bytes_in = report.bytes_in, bytes_out = report.bytes_out, duration_ms, "session ended");
        self.shared.audit.record(Event::SessionEnd {
            session: self.id,
            person: self.person,
            target: self.target,
            kind: self.kind,
            exit_status,
            bytes_in: report.bytes_in,
            bytes_out: report.bytes_out,
            duration_ms,
            reason,
            recording,
        });
    }
}

/// A recorder for interactive sessions (and exec ones when configured),
/// if recordings are on. A recording that cannot be created is logged and
/// the session goes on, unless `require_recording` says to refuse it.
fn recorder_for(
    audit: &crate::audit::AuditConfig,
    session_id: &str,
    pty: Option<&Pty>,
    kind: &SessionKind,
) -> Result<Option<crate::recording::Recorder>, String> {
    let Some(dir) = audit.recordings_dir.as_ref() else {
        return Ok(None);
    };
    // Whatever has a terminal is recorded: `ssh -t pod bash` is a shell
    // in all but name, and must not be a way around the recording. When
    // recording is required, so is every command without one: `echo cmd |
    // ssh pod sh` is a shell too.
    let wanted = match kind {
        SessionKind::Shell => true,
        SessionKind::Exec { .. } => audit.record_exec || audit.require_recording || pty.is_some(),
        _ => false,
    };
    if !wanted {
        return Ok(None);
    }
    let terminal = pty.map_or((80, 24, "dumb"), |p| (p.width, p.height, p.term.as_str()));
    match crate::recording::Recorder::create(
        dir,
        session_id,
        terminal,
        audit.record_input,
        audit.recording_max_bytes,
    ) {
        Ok(recorder) => Ok(Some(recorder)),
        Err(error) => {
            tracing::error!(%error, dir = %dir.display(), "cannot create a session recording");
            if audit.require_recording {
                Err(format!(
                    "this session cannot be recorded ({error}) and recording is required; ask the bastion's operators to fix {}",
                    dir.display()
                ))
            } else {
                Ok(None)
            }
        }
    }
}

/// Runs the chosen service to its end: the bridge for shells, commands and
/// the target's `sftp-server`; kbastion's own SFTP and scp under the
/// session's drain, idle and revocation rules (`supervise`).
pub async fn serve<I, O>(
    service: Service,
    target: Arc<ExecTarget>,
    pty: Option<Pty>,
    input: I,
    output: O,
    context: crate::bridge::SessionContext,
) -> Report
where
    I: ClientInput + 'static,
    O: ClientOutput,
{
    // What the exec runs by `sh -c` (None: the login shell).
    let script = match service {
        Service::Shell => None,
        Service::Exec(command) => Some(command),
        Service::TargetSftp => Some(crate::exec::SFTP_SERVER.to_string()),
        Service::Builtin(service) => {
            let fs = RemoteFs::new(target, context.api_wait);
            return serve_files(service, fs, input, output, context).await;
        }
    };
    crate::bridge::run(target, script, pty, input, output, context).await
}

/// Runs one of kbastion's own file services on `fs` to its end, under the
/// session's drain, idle and revocation rules (`supervise`).
pub async fn serve_files<I, O>(
    service: FileService,
    fs: RemoteFs,
    input: I,
    output: O,
    context: crate::bridge::SessionContext,
) -> Report
where
    I: ClientInput + 'static,
    O: ClientOutput,
{
    let activity = context.traffic.clone();
    match service {
        FileService::Sftp => {
            let work = crate::sftp::serve(
                fs,
                io::reader(input),
                output.stdout(),
                activity.clone(),
                context.files.clone(),
            );
            supervised(&context.control, &activity, &output, work).await
        }
        FileService::Scp(command) => {
            let work = crate::scp::serve(
                fs,
                command,
                io::reader(input),
                output.stdout(),
                activity.clone(),
                context.recorder.clone(),
            );
            supervised(&context.control, &activity, &output, work).await
        }
    }
}

/// A built-in service, ended with its exit status, or by `supervise`.
async fn supervised(
    control: &Control,
    activity: &Activity,
    output: &impl ClientOutput,
    work: impl Future<Output = Report>,
) -> Report {
    match supervise(
        control,
        activity,
        output,
        crate::session::control::Tell::Client { tty: false },
        work,
    )
    .await
    {
        Ok(report) => {
            let code = match report.outcome {
                Outcome::Exited(code) => code,
                _ => 1,
            };
            output.finish(code).await;
            report
        }
        Err(interrupted) => Report {
            outcome: Outcome::of(interrupted),
            // The service, which counts file bytes, is gone: what the
            // client's stream carried stands in.
            bytes_in: activity.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
            bytes_out: activity
                .bytes_out
                .load(std::sync::atomic::Ordering::Relaxed),
        },
    }
}
