//! The audit trail: one JSON line per authentication attempt, session
//! start, session end and refusal, to a file and/or stdout. Events hold no
//! secrets: keys appear as fingerprints, never as key material.
//!
//! Writing happens in one task fed by one queue, so events stay in order
//! and a slow disk cannot stall a running session. No event is dropped:
//! the queue is bounded in bytes (`audit.queue_bytes`) by gating what
//! makes events, and a new session waits for room (or, with
//! `audit.fail_closed`, is refused) while the writer is behind.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// JSON-lines file the events are appended to (none: no file).
    pub file: Option<PathBuf>,
    /// Also write the events to stdout.
    pub stdout: bool,
    /// Directory for asciicast v2 recordings of interactive sessions
    /// (none: no recordings).
    pub recordings_dir: Option<PathBuf>,
    /// Record the keystrokes too (off: they hold passwords).
    pub record_input: bool,
    /// Record non-interactive exec sessions too (a session with a pty is
    /// always recorded when recordings are on).
    pub record_exec: bool,
    /// Refuse a session whose recording cannot be opened, instead of
    /// running it unrecorded: a bastion that must fail closed. Every shell
    /// and command is then recorded, with a terminal or without (as if
    /// `record_exec` were set); needs `recordings_dir`.
    pub require_recording: bool,
    /// The most one session's recording may hold, in bytes; a recording
    /// stops there (and with `require_recording`, its session ends).
    pub recording_max_bytes: u64,
    /// Audit events waiting for the writer, in bytes, beyond which new
    /// sessions wait (or are refused with `fail_closed`).
    pub queue_bytes: usize,
    /// Refuse new sessions while the audit writer is behind, instead of
    /// making them wait.
    pub fail_closed: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            file: None,
            stdout: false,
            recordings_dir: None,
            record_input: false,
            record_exec: false,
            require_recording: false,
            recording_max_bytes: DEFAULT_RECORDING_MAX_BYTES,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            fail_closed: false,
        }
    }
}

/// How the person reached the bastion, as the audit log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Ssh,
    Web,
    /// The kubectl door.
    Kube,
}

impl Transport {
    /// The transport's name, as in metrics labels and the audit log.
    pub fn label(&self) -> &'static str {
        match self {
            Transport::Ssh => "ssh",
            Transport::Web => "web",
            Transport::Kube => "kube",
        }
    }
}

/// 1 GiB per recording: hours of busy terminal, and a bound on one
/// session's share of the recordings volume.
const DEFAULT_RECORDING_MAX_BYTES: u64 = 1 << 30;

/// 16 MiB of events (about 40,000 session starts) before new sessions wait.
const DEFAULT_QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// What a session was.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SessionKind {
    Shell,
    Exec {
        command: String,
    },
    Sftp,
    /// `kubectl attach` through the kubectl door.
    Attach,
    /// A container's log (`CONTAINER.logs`), with the options given.
    Logs {
        options: String,
    },
    Forward {
        destination: String,
    },
    /// A file of the target downloaded from the web terminal's page.
    Download {
        path: String,
    },
    /// A file uploaded into the target from the web terminal's page.
    Upload {
        path: String,
    },
    /// `ssh -R`: always refused.
    RemoteForward {
        listen: String,
    },
    /// `ssh -A`: always refused.
    AgentForward,
    /// `ssh -X`/`-Y`: always refused.
    X11,
    /// A terminal for a session (refused where a certificate lacks
    /// `permit-pty`).
    Pty,
    /// A session channel refused as it opened, before it asked for a
    /// shell, a command or a subsystem.
    SessionChannel,
}

impl SessionKind {
    /// The kind's name, as in metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            SessionKind::Shell => "shell",
            SessionKind::Exec { .. } => "exec",
            SessionKind::Sftp => "sftp",
            SessionKind::Attach => "attach",
            SessionKind::Logs { .. } => "logs",
            SessionKind::Forward { .. } => "forward",
            SessionKind::Download { .. } => "download",
            SessionKind::Upload { .. } => "upload",
            SessionKind::RemoteForward { .. } => "remote_forward",
            SessionKind::AgentForward => "agent_forward",
            SessionKind::X11 => "x11",
            SessionKind::Pty => "pty",
            SessionKind::SessionChannel => "session_channel",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    Auth {
        source: String,
        login: String,
        method: String,
        fingerprint: Option<String>,
        success: bool,
        reason: Option<String>,
    },
    SessionStart {
        session: String,
        source: String,
        transport: Transport,
        /// The browser's User-Agent, for a web terminal.
        #[serde(skip_serializing_if = "Option::is_none")]
        user_agent: Option<String>,
        person: String,
        kubernetes_user: String,
        kubernetes_groups: Vec<String>,
        target: String,
        #[serde(flatten)]
        kind: SessionKind,
    },
    SessionEnd {
        session: String,
        person: String,
        target: String,
        #[serde(flatten)]
        kind: SessionKind,
        exit_status: Option<u32>,
        bytes_in: u64,
        bytes_out: u64,
        duration_ms: u64,
        reason: String,
        /// The session's recording, once it is complete (none when there
        /// is none, or nothing was recorded).
        recording: Option<String>,
    },
    Refusal {
        source: String,
        person: String,
        target: String,
        #[serde(flatten)]
        kind: SessionKind,
        reason: String,
    },
    /// A logged-in connection's credential stopped holding (reload,
    /// revocation, expiry): its sessions end and it is closed.
    Revocation {
        source: String,
        person: String,
        reason: String,
    },
    /// A request through the kubectl door: refused by the door itself,
    /// `opened` (a watch or a stream, when it starts), `closed` (a watch,
    /// when it ends) or `done`.
    Api {
        source: String,
        person: String,
        stage: &'static str,
        #[serde(flatten)]
        request: crate::api_request::RequestInfo,
        code: u16,
        bytes_in: u64,
        bytes_out: u64,
        duration_ms: u64,
    },
    /// A credential for the kubectl door, minted for an SSH login.
    KubeCredential {
        source: String,
        person: String,
        /// Unix seconds.
        expires: u64,
    },
    /// An SSH certificate from kbastion's CA, minted for a person signed
    /// in with the OpenID provider.
    Certificate {
        source: String,
        person: String,
        /// The certified key's SHA-256 fingerprint.
        fingerprint: String,
        serial: u64,
        /// Unix seconds.
        valid_before: u64,
    },
    /// A file kbastion's own SFTP server read or wrote for a session, at
    /// the close of its handle: the path, `read` or `write`, and bytes.
    File {
        session: String,
        person: String,
        path: String,
        direction: &'static str,
        bytes: u64,
    },
}

/// Where a file service reports each file a session read or wrote.
#[derive(Clone)]
pub struct FileAudit {
    audit: Audit,
    session: String,
    person: String,
}

impl FileAudit {
    pub fn new(audit: Audit, session: &str, person: &str) -> FileAudit {
        FileAudit {
            audit,
            session: session.to_string(),
            person: person.to_string(),
        }
    }

    /// Records one file: `direction` is `read` or `write`.
    pub fn record(&self, path: &str, direction: &'static str, bytes: u64) {
        self.audit.record(Event::File {
            session: self.session.clone(),
            person: self.person.clone(),
            path: path.to_string(),
            direction,
            bytes,
        });
    }
}

#[derive(Clone)]
pub struct Audit {
    sender: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    /// Bytes of events waiting for the writer, and the signal that some
    /// were written.
    queued: Arc<Queued>,
    limit: usize,
    fail_closed: bool,
}

#[derive(Default)]
struct Queued {
    bytes: AtomicUsize,
    written: tokio::sync::Notify,
}

/// Why a session may not start while the audit writer is behind.
#[derive(Debug, thiserror::Error)]
#[error(
    "the audit log is {queued} bytes behind (limit {limit}) and the bastion is set to fail closed; try again later"
)]
pub struct AuditBehind {
    queued: usize,
    limit: usize,
}

impl Audit {
    /// Starts the writer; a file that cannot be opened is an error now,
    /// not a silent gap later.
    pub async fn start(config: &AuditConfig) -> std::io::Result<Audit> {
        let mut audit = Audit {
            sender: None,
            queued: Arc::default(),
            limit: config.queue_bytes,
            fail_closed: config.fail_closed,
        };
        if config.file.is_none() && !config.stdout {
            return Ok(audit);
        }
        let mut file = match &config.file {
            Some(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                let std_file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)?;
                Some(tokio::fs::File::from_std(std_file))
            }
            None => None,
        };
        let stdout = config.stdout;
        // Unbounded in type only: `queued` bounds it (see `wait_for_room`).
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<String>();
        let queued = audit.queued.clone();
        tokio::spawn(async move {
            let mut out = tokio::io::stdout();
            while let Some(line) = receiver.recv().await {
                if let Some(file) = file.as_mut()
                    && let Err(error) = file.write_all(line.as_bytes()).await
                {
                    tracing::error!(%error, "cannot write the audit log");
                }
                if stdout {
                    let _ = out.write_all(line.as_bytes()).await;
                    let _ = out.flush().await;
                }
                queued.bytes.fetch_sub(line.len(), Ordering::SeqCst);
                queued.written.notify_waiters();
            }
        });
        audit.sender = Some(sender);
        Ok(audit)
    }

    /// Queues an event for the writer, in order; never drops one.
    pub fn record(&self, event: Event) {
        let Some(sender) = &self.sender else { return };
        let mut line = serde_json::json!({"time": crate::audit::now_rfc3339()});
        if let (Some(map), Ok(serde_json::Value::Object(fields))) =
            (line.as_object_mut(), serde_json::to_value(&event))
        {
            map.extend(fields);
        }
        let mut text = line.to_string();
        text.push('\n');
        self.queued.bytes.fetch_add(text.len(), Ordering::SeqCst);
        if sender.send(text).is_err() {
            tracing::error!("the audit log writer has stopped");
        }
    }

    /// Returns when the writer's backlog is within `audit.queue_bytes`: a
    /// new session waits here, so the events it will make cannot pile up
    /// without bound. With `audit.fail_closed`, refuses instead of waiting.
    pub async fn wait_for_room(&self) -> Result<(), AuditBehind> {
        let mut warned = false;
        loop {
            let written = self.queued.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            let queued = self.queued.bytes.load(Ordering::SeqCst);
            if queued <= self.limit {
                return Ok(());
            }
            if self.fail_closed {
                return Err(AuditBehind {
                    queued,
                    limit: self.limit,
                });
            }
            if !warned {
                tracing::warn!(
                    queued,
                    limit = self.limit,
                    "audit log writer is behind; new sessions wait"
                );
                warned = true;
            }
            written.await;
        }
    }
}

/// UTC time with milliseconds, RFC 3339.
/// Unix seconds now, the clock credentials, links and sessions are read by.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_flat_with_their_kind() {
        let event = Event::SessionEnd {
            session: "s1".into(),
            person: "alice".into(),
            target: "default/web-0".into(),
            kind: SessionKind::Exec {
                command: "ls".into(),
            },
            exit_status: Some(3),
            bytes_in: 1,
            bytes_out: 2,
            duration_ms: 5,
            reason: "exited".into(),
            recording: None,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["event"], "session_end");
        assert_eq!(json["kind"], "exec");
        assert_eq!(json["command"], "ls");
        assert_eq!(json["exit_status"], 3);
    }
}
