//! What every session kind honours besides its own work: the drain notice
//! after SIGTERM, the end at the drain deadline, the idle timeout, and the
//! revocation of the connection's credential.
//!
//! The bridge (shells and commands) applies these inside its own loop,
//! because it must also end the processes it started. The services that
//! answer the client themselves (kbastion's own SFTP server and legacy
//! scp) run under `supervise`, which watches their traffic through
//! `Counted` readers and writers and ends them the same way, with the same
//! one-line messages.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::io::ClientOutput;

/// How a session ended, and what it carried.
#[derive(Debug)]
pub struct Report {
    pub outcome: Outcome,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(u32),
    /// Ended by either side without an exit status (a forward).
    Closed,
    ClientGone,
    /// Ended by the bastion's shutdown after the drain time.
    Stopped,
    /// Closed after carrying no data for the idle timeout.
    Idle,
    /// Ended because the credential was revoked (the reason).
    Revoked(String),
    Failed(String),
}

impl Outcome {
    /// What `supervise` reports for a service it ended.
    pub fn of(interrupted: Interrupted) -> Outcome {
        match interrupted {
            Interrupted::Stopped => Outcome::Stopped,
            Interrupted::Idle => Outcome::Idle,
            Interrupted::Revoked(reason) => Outcome::Revoked(reason),
            Interrupted::RecordingStopped(message) => Outcome::Failed(message),
        }
    }
}

/// The bastion's rules every session follows, whatever it carries.
#[derive(Clone)]
pub struct Control {
    /// Messages for the user's terminal from the bastion (the drain notice).
    pub notice: tokio::sync::watch::Receiver<Option<String>>,
    /// Cancelled at the drain deadline: the session ends.
    pub stop: tokio_util::sync::CancellationToken,
    /// A session carrying no data this long is closed (keepalives keep a
    /// connection alive, not a forgotten session).
    pub idle: Option<Duration>,
    /// Set (to the reason) when the connection's credential no longer
    /// holds: the session ends at once with a notice.
    pub revoked: tokio::sync::watch::Receiver<Option<String>>,
    /// A recording the session may not run without
    /// (`audit.require_recording`): when it stops, the session ends.
    pub required_recording: Option<crate::recording::Recorder>,
}

impl Control {
    /// Resolves with the line for the person when a required recording
    /// has stopped; never otherwise.
    pub async fn recording_stopped(&self) -> String {
        match &self.required_recording {
            Some(recorder) => recording_stopped_message(&recorder.failed().await),
            None => std::future::pending().await,
        }
    }
}

/// What the user reads when a required recording stops.
pub fn recording_stopped_message(reason: &str) -> String {
    format!(
        "this session's recording stopped ({reason}) and recording is required: the session has ended"
    )
}

/// What the user reads when the drain deadline ends a session.
pub const STOPPED: &str =
    "the bastion is restarting: this session has ended. Reconnect to continue.";

/// What the user reads when the idle timeout ends a session.
pub fn idle_message(idle: Duration) -> String {
    format!(
        "the session was idle for {} s and has been closed",
        idle.as_secs()
    )
}

/// How often the idle check looks at a session's traffic: a quarter of the
/// timeout, between 250 ms and 30 s (nothing is done per byte).
pub fn idle_tick(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(30))
}

/// Bytes a session's channel carried each way, live: for the idle check,
/// and for the audit when a service is ended before it could report.
#[derive(Debug, Default)]
pub struct Traffic {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl Traffic {
    fn total(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed) + self.bytes_out.load(Ordering::Relaxed)
    }
}

pub type Activity = Arc<Traffic>;

/// Why `supervise` ended a service before it finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interrupted {
    /// The drain deadline after SIGTERM.
    Stopped,
    /// No traffic for the idle timeout.
    Idle,
    /// The connection's credential no longer holds (the reason).
    Revoked(String),
    /// A required recording stopped (the line the person read).
    RecordingStopped(String),
}

/// What the user reads when a revocation ends a session.
pub fn revoked_message(reason: &str) -> String {
    format!("access revoked ({reason}): this session has ended")
}

/// Where a supervised session's own lines (the drain notice, why it
/// ended) go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tell {
    /// Nowhere: the client shows no lines (a forwarded connection, a
    /// file transfer answered in HTTP).
    Nothing,
    /// To the client's stderr, in a terminal's line endings when `tty`.
    Client { tty: bool },
}

/// The one supervised run of every session, whatever its kind and door:
/// runs `service` until it ends; at the drain deadline, after the idle
/// timeout without `activity`, on revocation or when a required
/// recording stops, drops it and closes the session. The drain notice and
/// the reason for the end are told as `tell` says, one line each.
pub async fn supervise<T>(
    control: &Control,
    activity: &Activity,
    output: &impl ClientOutput,
    tell: Tell,
    service: impl Future<Output = T>,
) -> Result<T, Interrupted> {
    // Boxed, so that it can be dropped (with the channel's read half it
    // holds) before the channel is closed below.
    let mut service = Box::pin(service);
    let mut notice = control.notice.clone();
    let mut revoked = control.revoked.clone();
    let idle = control.idle.unwrap_or(Duration::MAX);
    let mut tick = tokio::time::interval(idle_tick(idle));
    let mut last = (activity.total(), tokio::time::Instant::now());
    let (interrupted, message) = loop {
        tokio::select! {
            output = &mut service => return Ok(output),
            () = control.stop.cancelled() => break (Interrupted::Stopped, STOPPED.to_string()),
            _ = tick.tick(), if control.idle.is_some() => {
                let moved = activity.total();
                if moved != last.0 {
                    last = (moved, tokio::time::Instant::now());
                } else if last.1.elapsed() >= idle {
                    break (Interrupted::Idle, idle_message(idle));
                }
            }
            message = control.recording_stopped() => break (Interrupted::RecordingStopped(message.clone()), message),
            Ok(()) = revoked.changed() => {
                let reason = revoked.borrow_and_update().clone();
                if let Some(reason) = reason {
                    break (Interrupted::Revoked(reason.clone()), revoked_message(&reason));
                }
            }
            Ok(()) = notice.changed() => {
                let message = notice.borrow_and_update().clone();
                if let (Some(message), Tell::Client { tty }) = (message, tell) {
                    output.tell(&message, tty).await;
                }
            }
        }
    };
    drop(service);
    if let Tell::Client { tty } = tell {
        output.tell(&message, tty).await;
    }
    output.close().await;
    Err(interrupted)
}

/// A reader that adds what passes through it to `bytes_in`, or a writer
/// that adds it to `bytes_out`.
pub struct Counted<T> {
    inner: T,
    activity: Activity,
}

impl<T> Counted<T> {
    pub fn new(inner: T, activity: &Activity) -> Counted<T> {
        Counted {
            inner,
            activity: activity.clone(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.activity
            .bytes_in
            .fetch_add(read as u64, Ordering::Relaxed);
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &poll {
            self.activity
                .bytes_out
                .fetch_add(*written as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
