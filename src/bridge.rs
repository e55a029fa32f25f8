//! The bridge between one SSH session channel and one Kubernetes exec
//! stream: the only place that knows about stdin EOF, exit status, window
//! changes, output ordering and backpressure. Shells, commands and node
//! shells all go through `run`.
//!
//! What users feel: the pty's TERM and size are set before the
//! first byte of output; every window-change becomes a resize; without a
//! pty stderr stays separate; stdin EOF reaches the process while output
//! flows (v5 close signal); all output, then `exit-status`, EOF and close;
//! a slow client slows the process (bounded pipes, SSH windows); and when
//! the client vanishes, the processes the session started are ended,
//! because the kubelet will not do it (containerd keeps an exec's process
//! running when its stream closes, tty or not).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use futures::SinkExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{AttachParams, TerminalSize};
use russh::ChannelMsg;
use russh::server::Msg;
use russh::{ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::flow::{Backlog, Flow};
use crate::target::{ExecTarget, TargetError, bounded};

/// Each exec pipe buffers at most this much between the SSH channel and the
/// WebSocket: enough for full-speed bulk transfers, small enough that a
/// stalled client costs little.
const PIPE_BUFFER: usize = 256 * 1024;

/// The environment variable that marks every process of a session, so the
/// bastion can find and end them when the client vanishes.
const SESSION_MARKER: &str = "KBASTION_SESSION";

/// A pseudo-terminal request (RFC 4254 §6.2).
#[derive(Debug, Clone)]
pub struct Pty {
    pub term: String,
    pub width: u32,
    pub height: u32,
}

/// What the client asked the channel to run.
#[derive(Debug, Clone)]
pub struct SessionRequest {
    pub pty: Option<Pty>,
    /// None for an interactive shell.
    pub command: Option<String>,
}

/// What a session runs with besides its channel and target.
pub struct SessionContext {
    /// Marks the session's processes and names its recording.
    pub session_id: String,
    /// The Kubernetes user, for messages.
    pub user: String,
    pub api_wait: Duration,
    pub recorder: Option<crate::recording::Recorder>,
    /// The drain notice, the drain deadline and the idle timeout; at
    /// either end, what the session started in the target is ended too.
    pub control: crate::session::Control,
    /// Whether the cluster passes stdin EOF on while output flows (v5).
    pub stdin_eof: bool,
    /// The verb this cluster checks on `pods/exec` for a WebSocket exec.
    pub stream_verb: &'static str,
    /// The connection's and the person's input backlogs (see `Flow`).
    pub backlogs: Vec<Arc<Backlog>>,
}

/// How a session ended, and what it carried.
#[derive(Debug)]
pub struct Report {
    pub outcome: Outcome,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

#[derive(Default)]
struct Counters {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(u32),
    ClientGone,
    /// Ended by the bastion's shutdown after the drain time.
    Stopped,
    /// Closed after carrying no data for the idle timeout.
    Idle,
    /// Ended because the credential was revoked (the reason).
    Revoked(String),
    Failed(String),
}

/// Why the bridge stopped carrying data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The process's output ended: it exited.
    OutputDone,
    ClientGone,
    Stopped,
    Idle,
    /// Input the target did not take outgrew a backlog bound.
    Backlog,
    Revoked,
}

/// The shell: bash where the container has it, else sh, as a login shell.
const SHELL_SCRIPT: &str = "if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l";

/// The SFTP subsystem: the target's own `sftp-server`, wherever its
/// distribution puts it, speaking SFTP over the session's stdin/stdout.
pub const SFTP_SERVER: &str = "for p in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/lib/ssh/sftp-server /usr/libexec/sftp-server /usr/lib/sftp-server; do [ -x \"$p\" ] && exec \"$p\"; done; command -v sftp-server >/dev/null 2>&1 && exec sftp-server; echo 'kbastion: this target has no sftp-server; set files.sftp = \"auto\" in the bastion config' >&2; exit 127";

/// Succeeds where `SFTP_SERVER` would find a server (the same places).
pub const SFTP_SERVER_FOUND: &str = "for p in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/lib/ssh/sftp-server /usr/libexec/sftp-server /usr/lib/sftp-server; do [ -x \"$p\" ] && exit 0; done; command -v sftp-server";

/// TERM reaches a shell word only after this check.
fn sanitize_term(term: &str) -> &str {
    let ok = !term.is_empty()
        && term.len() <= 64
        && term
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'));
    if ok { term } else { "xterm" }
}

/// The command line run in the target: the target's prefix (nsenter for
/// node shells), then `env` to mark the session and set TERM, then `sh -c`
/// with the user's command as one argument (never re-split or quoted).
pub fn argv(prefix: &[String], session_id: &str, request: &SessionRequest) -> Vec<String> {
    let mut argv: Vec<String> = prefix.to_vec();
    argv.push("env".into());
    argv.push(format!("{SESSION_MARKER}={session_id}"));
    if let Some(pty) = &request.pty {
        argv.push(format!("TERM={}", sanitize_term(&pty.term)));
    }
    argv.push("sh".into());
    argv.push("-c".into());
    argv.push(
        request
            .command
            .clone()
            .unwrap_or_else(|| SHELL_SCRIPT.into()),
    );
    argv
}

/// The script that ends every process carrying the session's marker:
/// SIGHUP (what sshd's hang-up would send), then SIGKILL for what is left.
pub fn cleanup_script(session_id: &str) -> String {
    format!(
        "pids=''; for p in /proc/[0-9]*; do \
           if {{ tr '\\0' '\\n' < \"$p/environ\"; }} 2>/dev/null | grep -qx '{SESSION_MARKER}={session_id}'; then pids=\"$pids ${{p#/proc/}}\"; fi; \
         done; \
         [ -z \"$pids\" ] && exit 0; kill -HUP $pids 2>/dev/null; sleep 1; kill -KILL $pids 2>/dev/null; exit 0"
    )
}

/// The exit code in an exec Status: 0 on Success, the `ExitCode` cause on
/// NonZeroExitCode, Err with the message for anything else.
pub fn exit_code(status: &Status) -> Result<u32, String> {
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    if status.reason.as_deref() == Some("NonZeroExitCode") {
        let code = status
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.reason.as_deref() == Some("ExitCode"))
            .and_then(|c| c.message.as_deref())
            .and_then(|m| m.parse::<u32>().ok());
        if let Some(code) = code {
            return Ok(code);
        }
    }
    Err(status
        .message
        .clone()
        .unwrap_or_else(|| "the command failed without a message".into()))
}

/// What the input side sends to the process, in order.
enum Input {
    Data(bytes::Bytes),
    Eof,
}

fn clamp(value: u32) -> u16 {
    value.clamp(1, u32::from(u16::MAX)) as u16
}

/// A message for the client's stderr: lines end in CRLF on a terminal (in
/// raw mode) and in LF otherwise.
pub fn message_bytes(message: &str, tty: bool) -> Vec<u8> {
    let text = format!("kbastion: {message}\n");
    if tty {
        text.replace('\n', "\r\n").into_bytes()
    } else {
        text.into_bytes()
    }
}

/// Sends an error to the client's stderr and ends the channel with exit
/// status 1.
pub async fn refuse(write: &ChannelWriteHalf<Msg>, message: &str, tty: bool) {
    let _ = write
        .extended_data_bytes(1, message_bytes(message, tty))
        .await;
    finish(write, 1).await;
}

/// Ends a channel in the order clients expect: exit status, EOF, close.
pub async fn finish(write: &ChannelWriteHalf<Msg>, code: u32) {
    let _ = write.exit_status(code).await;
    let _ = write.eof().await;
    let _ = write.close().await;
}

fn exec_error(error: kube::Error, target: &ExecTarget, user: &str, verb: &str) -> TargetError {
    use kube::client::UpgradeConnectionError;
    match error {
        kube::Error::UpgradeConnection(UpgradeConnectionError::ProtocolSwitch(code))
            if code.as_u16() == 403 =>
        {
            TargetError::Forbidden(format!(
                "User \"{user}\" may not exec into pods in namespace \"{}\" (needs {verb} on pods/exec)",
                target.namespace
            ))
        }
        kube::Error::UpgradeConnection(UpgradeConnectionError::ProtocolSwitch(code)) => {
            TargetError::Api(format!(
                "exec into {}/{} container {} was refused with HTTP {code}",
                target.namespace, target.pod, target.container
            ))
        }
        other => crate::target::api_error(other, || TargetError::Api("exec failed".into())),
    }
}

/// Runs one session to its end.
pub async fn run(
    target: Arc<ExecTarget>,
    request: SessionRequest,
    mut read: ChannelReadHalf,
    write: ChannelWriteHalf<Msg>,
    context: SessionContext,
) -> Report {
    let counters = Arc::new(Counters::default());
    let outcome = run_counted(target, request, &mut read, &write, &context, &counters).await;
    Report {
        outcome,
        bytes_in: counters.bytes_in.load(SeqCst),
        bytes_out: counters.bytes_out.load(SeqCst),
    }
}

async fn run_counted(
    target: Arc<ExecTarget>,
    request: SessionRequest,
    read: &mut ChannelReadHalf,
    write: &ChannelWriteHalf<Msg>,
    context: &SessionContext,
    counters: &Arc<Counters>,
) -> Outcome {
    let (session_id, user, api_wait) =
        (&context.session_id, context.user.as_str(), context.api_wait);
    let tty = request.pty.is_some();
    let params = AttachParams {
        container: Some(target.container.clone()),
        stdin: true,
        stdout: true,
        stderr: !tty,
        tty,
        max_stdin_buf_size: Some(PIPE_BUFFER),
        max_stdout_buf_size: Some(PIPE_BUFFER),
        max_stderr_buf_size: Some(PIPE_BUFFER),
    };
    let command = argv(&target.prefix, session_id, &request);
    let mut process = match bounded(api_wait, target.pods.exec(&target.pod, command, &params)).await
    {
        Ok(Ok(process)) => process,
        Ok(Err(error)) => {
            let message = exec_error(error, &target, user, context.stream_verb).to_string();
            refuse(write, &message, tty).await;
            return Outcome::Failed(message);
        }
        Err(timeout) => {
            let message = timeout.to_string();
            refuse(write, &message, tty).await;
            return Outcome::Failed(message);
        }
    };
    let mut resize = process.terminal_size();
    if let (Some(sender), Some(pty)) = (resize.as_mut(), &request.pty) {
        // kube sends no initial size; the first prompt must see the real one.
        let _ = sender
            .send(TerminalSize {
                width: clamp(pty.width),
                height: clamp(pty.height),
            })
            .await;
    }
    let status = process.take_status();
    let flow = Arc::new(Flow::new(context.backlogs.clone()));
    // Unbounded in type only: `Flow` bounds what is queued.
    let (input_tx, mut input_rx) = tokio::sync::mpsc::unbounded_channel::<Input>();
    let stdin_task = {
        let flow = flow.clone();
        let mut stdin = process.stdin();
        tokio::spawn(async move {
            while let Some(input) = input_rx.recv().await {
                match input {
                    Input::Data(data) => {
                        // After the process stops reading, input is dropped
                        // (as a pipe to an exited process would).
                        if let Some(writer) = stdin.as_mut()
                            && writer.write_all(&data).await.is_err()
                        {
                            stdin = None;
                        }
                        flow.consumed(data.len());
                    }
                    Input::Eof => {
                        // Shutting down kube's stdin sends the v5 close
                        // signal; the output keeps flowing.
                        if let Some(mut writer) = stdin.take() {
                            let _ = writer.shutdown().await;
                        }
                    }
                }
            }
        })
    };
    let copy_out = |reader: Option<tokio::io::ReadHalf<tokio::io::SimplexStream>>,
                    mut writer: Box<dyn tokio::io::AsyncWrite + Send + Unpin>| {
        let flow = flow.clone();
        let counters = counters.clone();
        let recorder = context.recorder.clone();
        tokio::spawn(async move {
            let Some(reader) = reader else { return };
            let mut reader = BufReader::with_capacity(32 * 1024, reader);
            // The channel writer waits for the client's window: a client
            // that stops reading stops us reading, and the pod's writer.
            loop {
                let chunk = match reader.fill_buf().await {
                    Ok([]) | Err(_) => break,
                    Ok(chunk) => chunk,
                };
                let n = chunk.len();
                if let Some(recorder) = &recorder {
                    recorder.output(chunk).await;
                }
                counters.bytes_out.fetch_add(n as u64, SeqCst);
                flow.set_output_waiting(true);
                let written = writer.write_all(chunk).await;
                flow.set_output_waiting(false);
                if written.is_err() {
                    break;
                }
                reader.consume(n);
            }
            let _ = writer.flush().await;
        })
    };
    let stdout = copy_out(process.stdout(), Box::new(write.make_writer()));
    let stderr = copy_out(process.stderr(), Box::new(write.make_writer_ext(Some(1))));
    let output = async {
        let _ = stdout.await;
        let _ = stderr.await;
    };
    tokio::pin!(output);
    let mut notice = context.control.notice.clone();
    let mut revoked = context.control.revoked.clone();
    // Idle sessions are found by a tick that compares the byte counters:
    // nothing to do per byte on the data path.
    let idle_limit = context.control.idle.unwrap_or(Duration::MAX);
    let mut idle_tick = tokio::time::interval(crate::session::idle_tick(idle_limit));
    let mut last_traffic = (0u64, tokio::time::Instant::now());
    // Set at end of input on a v4-only cluster: the stream is closing and
    // gets a bounded time to deliver what is left, never a hang.
    let mut closing_by: Option<tokio::time::Instant> = None;
    let ending = loop {
        tokio::select! {
            _ = &mut output => break Ending::OutputDone,
            () = async { tokio::time::sleep_until(closing_by.unwrap_or_else(tokio::time::Instant::now)).await }, if closing_by.is_some() => {
                process.abort();
                break Ending::OutputDone;
            }
            _ = idle_tick.tick(), if context.control.idle.is_some() => {
                let carried = counters.bytes_in.load(SeqCst) + counters.bytes_out.load(SeqCst);
                if carried != last_traffic.0 {
                    last_traffic = (carried, tokio::time::Instant::now());
                } else if last_traffic.1.elapsed() >= idle_limit {
                    let message = crate::session::idle_message(idle_limit);
                    let _ = write.extended_data_bytes(1, message_bytes(&message, tty)).await;
                    break Ending::Idle;
                }
            }
            () = context.control.stop.cancelled() => {
                let _ = write.extended_data_bytes(1, message_bytes(crate::session::STOPPED, tty)).await;
                break Ending::Stopped;
            }
            Ok(()) = revoked.changed() => {
                let reason = revoked.borrow_and_update().clone();
                if let Some(reason) = reason {
                    let message = crate::session::revoked_message(&reason);
                    let _ = write.extended_data_bytes(1, message_bytes(&message, tty)).await;
                    break Ending::Revoked;
                }
            }
            Ok(()) = notice.changed() => {
                let message = notice.borrow_and_update().clone();
                if let Some(message) = message {
                    let _ = write.extended_data_bytes(1, message_bytes(&message, tty)).await;
                }
            }
            message = read.wait() => match message {
                Some(ChannelMsg::Data { data }) => {
                    counters.bytes_in.fetch_add(data.len() as u64, SeqCst);
                    if let Some(recorder) = &context.recorder {
                        recorder.input(&data).await;
                    }
                    if let Err(full) = flow.add(data.len()) {
                        let _ = write.extended_data_bytes(1, message_bytes(&full.to_string(), tty)).await;
                        break Ending::Backlog;
                    }
                    let _ = input_tx.send(Input::Data(data));
                    flow.wait_for_room().await;
                }
                Some(ChannelMsg::Eof) => {
                    if !context.stdin_eof && !tty {
                        // v4 has no close signal: ending stdin ends the
                        // stream, and output still on its way may be lost.
                        let message = "this cluster's API server speaks only v4.channel.k8s.io (Kubernetes before 1.30): end of input closes the whole exec stream, so output after it may be cut short";
                        let _ = write.extended_data_bytes(1, message_bytes(message, tty)).await;
                        closing_by = Some(tokio::time::Instant::now() + api_wait);
                    }
                    let _ = input_tx.send(Input::Eof);
                }
                Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                    if let Some(recorder) = &context.recorder {
                        recorder.resize(col_width, row_height).await;
                    }
                    if let Some(sender) = resize.as_mut() {
                        let _ = sender.send(TerminalSize { width: clamp(col_width), height: clamp(row_height) }).await;
                    }
                }
                Some(ChannelMsg::Close) | None => break Ending::ClientGone,
                Some(_) => {}
            }
        }
    };
    drop(input_tx);
    stdin_task.abort();
    // What the client still sends is read and dropped until the session is
    // over: an unread channel parks russh's whole connection, and with it
    // the writes that end this session.
    let end = async {
        if ending != Ending::OutputDone {
            process.abort();
            let outcome = match ending {
                Ending::Idle => Outcome::Idle,
                Ending::Stopped => Outcome::Stopped,
                Ending::Backlog => Outcome::Failed("input backlog bound".into()),
                Ending::Revoked => {
                    Outcome::Revoked(context.control.revoked.borrow().clone().unwrap_or_default())
                }
                Ending::ClientGone | Ending::OutputDone => Outcome::ClientGone,
            };
            if outcome != Outcome::ClientGone {
                // The user has been told why; the channel closes now, not after
                // the clean-up below (which takes a second or more), so the
                // connection's own inactivity timer cannot overtake it.
                let _ = write.eof().await;
                let _ = write.close().await;
            }
            end_session_processes(&target, session_id, api_wait).await;
            return outcome;
        }
        let status = match status {
            Some(status) => status.await,
            None => None,
        };
        let outcome = match status.as_ref().map(exit_code) {
            Some(Ok(code)) => Outcome::Exited(code),
            Some(Err(message)) => {
                let _ = write
                    .extended_data_bytes(
                        1,
                        message_bytes(&format!("the command could not run: {message}"), tty),
                    )
                    .await;
                Outcome::Exited(126)
            }
            // On a v4-only cluster end of input closed the stream, as the user
            // was told: the exit status is lost, and kbastion's own failure
            // status says so (255 would read as ssh's).
            None if closing_by.is_some() => Outcome::Exited(1),
            None => {
                let message = "the exec stream ended without an exit status (the connection to the Kubernetes API was lost)";
                let _ = write
                    .extended_data_bytes(1, message_bytes(message, tty))
                    .await;
                Outcome::Exited(255)
            }
        };
        if let Outcome::Exited(code) = outcome {
            finish(write, code).await;
        }
        outcome
    };
    while_draining(read, end).await
}

/// Runs `work` while reading and dropping what arrives on the channel.
async fn while_draining<T>(read: &mut ChannelReadHalf, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return output,
            message = read.wait() => if message.is_none() {
                return work.await;
            }
        }
    }
}

/// Ends what a vanished client's (or a stopped) session left running,
/// with a second exec into the same container (the kubelet does not:
/// containerd keeps the process alive, tty or not). Bounded, so a session
/// task never hangs on it.
async fn end_session_processes(target: &ExecTarget, session_id: &str, api_wait: Duration) {
    let mut command = target.prefix.clone();
    command.extend([
        "sh".to_string(),
        "-c".to_string(),
        cleanup_script(session_id),
    ]);
    let params = AttachParams::default()
        .container(target.container.clone())
        .stdout(true)
        .stderr(true);
    match bounded(api_wait, target.pods.exec(&target.pod, command, &params)).await {
        Ok(Ok(mut process)) => {
            // Its output is drained: kube-rs fills each pipe from one loop,
            // and an unread one stalls the exec.
            let drains: Vec<_> = [process.stdout(), process.stderr()]
                .into_iter()
                .flatten()
                .map(|mut pipe| {
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await;
                    })
                })
                .collect();
            if let Some(status) = process.take_status() {
                let _ = tokio::time::timeout(api_wait + Duration::from_secs(5), status).await;
            }
            drains.iter().for_each(|drain| drain.abort());
        }
        Ok(Err(error)) => {
            tracing::warn!(pod = %target.pod, %error, "could not end the processes of an ended session")
        }
        Err(error) => {
            tracing::warn!(pod = %target.pod, %error, "could not end the processes of an ended session")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    #[test]
    fn commands_are_one_argument_and_term_is_checked() {
        let request = SessionRequest {
            pty: Some(Pty {
                term: "xterm'; rm -rf /".into(),
                width: 80,
                height: 24,
            }),
            command: Some("echo 'a b'; exit 3".into()),
        };
        let argv = argv(&[], "abc", &request);
        assert_eq!(
            argv,
            [
                "env",
                "KBASTION_SESSION=abc",
                "TERM=xterm",
                "sh",
                "-c",
                "echo 'a b'; exit 3"
            ]
        );
    }

    #[test]
    fn exit_codes_come_from_the_status() {
        let success = Status {
            status: Some("Success".into()),
            ..Default::default()
        };
        assert_eq!(exit_code(&success), Ok(0));
        let failed = Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("7".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(exit_code(&failed), Ok(7));
        let internal = Status {
            status: Some("Failure".into()),
            reason: Some("InternalError".into()),
            message: Some("no sh".into()),
            ..Default::default()
        };
        assert_eq!(exit_code(&internal), Err("no sh".into()));
    }
}
