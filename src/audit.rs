//! The audit trail: one JSON line per authentication attempt, session
//! start, session end and refusal, to a file and/or stdout. Events hold no
//! secrets: keys appear as fingerprints, never as key material.
//!
//! Writing happens in one task fed by a bounded channel, so a slow disk
//! cannot stall sessions; if the channel is full the event is counted as
//! dropped and a warning is logged (an auditor sees the gap).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// running it unrecorded: a bastion that must fail closed.
    pub require_recording: bool,
}

/// What a session was.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SessionKind {
    Shell,
    Exec {
        command: String,
    },
    Sftp,
    Forward {
        destination: String,
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
}

impl SessionKind {
    /// The kind's name, as in metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            SessionKind::Shell => "shell",
            SessionKind::Exec { .. } => "exec",
            SessionKind::Sftp => "sftp",
            SessionKind::Forward { .. } => "forward",
            SessionKind::RemoteForward { .. } => "remote_forward",
            SessionKind::AgentForward => "agent_forward",
            SessionKind::X11 => "x11",
            SessionKind::Pty => "pty",
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
        person: String,
        kubernetes_user: String,
        kubernetes_groups: Vec<String>,
        target: String,
        #[serde(flatten)]
        kind: SessionKind,
        recording: Option<String>,
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
}

/// Events in flight before the writer falls behind.
const QUEUE: usize = 4096;

#[derive(Clone)]
pub struct Audit {
    sender: Option<tokio::sync::mpsc::Sender<String>>,
    /// Events waiting for room in the writer's queue.
    waiting: Arc<AtomicU64>,
}

impl Audit {
    /// Starts the writer; a file that cannot be opened is an error now,
    /// not a silent gap later.
    pub async fn start(config: &AuditConfig) -> std::io::Result<Audit> {
        if config.file.is_none() && !config.stdout {
            return Ok(Audit {
                sender: None,
                waiting: Arc::default(),
            });
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
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<String>(QUEUE);
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
            }
        });
        Ok(Audit {
            sender: Some(sender),
            waiting: Arc::default(),
        })
    }

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
        // An auditor must see every event: when the writer is behind, the
        // event waits in a task of its own rather than being dropped.
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(text)) = sender.try_send(text) {
            let waiting = self.waiting.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(waiting, "audit log writer is behind; event queued");
            let (sender, waiting) = (sender.clone(), self.waiting.clone());
            tokio::spawn(async move {
                let _ = sender.send(text).await;
                waiting.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
}

/// UTC time with milliseconds, RFC 3339.
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
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["event"], "session_end");
        assert_eq!(json["kind"], "exec");
        assert_eq!(json["command"], "ls");
        assert_eq!(json["exit_status"], 3);
    }
}
