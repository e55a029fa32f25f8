//! The bridge between one session and one Kubernetes exec stream: the
//! only place that knows about stdin EOF, exit status, window changes,
//! output ordering and backpressure. Shells, commands and node shells all
//! go through `run`, whatever transport the client came by
//! (`session::io`).
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
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::exec::{Ended, Streams, stream};
use crate::pods::ExecTarget;
use crate::session::control::{Outcome, Report};
use crate::session::io::Pty;
use crate::session::io::{Chunk, ClientEvent, ClientInput, ClientOutput, while_draining};

/// What a session runs with besides its client and target.
pub struct SessionContext {
    /// Marks the session's processes and names its recording.
    pub session_id: String,
    /// The Kubernetes user, for messages.
    pub user: String,
    pub api_wait: Duration,
    pub recorder: Option<crate::recording::Recorder>,
    /// The bytes the client's stream carries, counted live.
    pub traffic: crate::session::control::Activity,
    /// Where kbastion's own file services audit each file.
    pub files: crate::audit::FileAudit,
    /// The drain notice, the drain deadline and the idle timeout; at
    /// either end, what the session started in the target is ended too.
    pub control: crate::session::control::Control,
    /// Whether the cluster passes stdin EOF on while output flows (v5).
    pub stdin_eof: bool,
    /// The verb this cluster checks on `pods/exec` for a WebSocket exec.
    pub stream_verb: &'static str,
    /// What the client passes to the session's environment (its locale).
    pub env: crate::session::environment::ClientEnv,
}

/// Why the bridge stopped carrying data.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// The process's output ended: it exited.
    OutputDone,
    ClientGone,
}

/// What the input side sends to the process, in order.
enum Input {
    /// Dropped once the exec stream has taken it: that gives the client
    /// its room back (`Chunk`).
    Data(Chunk),
    Eof,
    /// A new terminal size (columns, rows).
    Resize(u16, u16),
}

fn clamp(value: u32) -> u16 {
    value.clamp(1, u32::from(u16::MAX)) as u16
}

/// Runs one session to its end: `script` by `sh -c`, or the login shell
/// for None.
pub async fn run<I: ClientInput, O: ClientOutput>(
    target: Arc<ExecTarget>,
    script: Option<String>,
    pty: Option<Pty>,
    mut input: I,
    output: O,
    context: SessionContext,
) -> Report {
    let counters = context.traffic.clone();
    let outcome = run_counted(
        target, script, pty, &mut input, &output, &context, &counters,
    )
    .await;
    Report {
        outcome,
        bytes_in: counters.bytes_in.load(SeqCst),
        bytes_out: counters.bytes_out.load(SeqCst),
    }
}

async fn run_counted(
    target: Arc<ExecTarget>,
    script: Option<String>,
    pty: Option<Pty>,
    input: &mut impl ClientInput,
    output: &impl ClientOutput,
    context: &SessionContext,
    counters: &crate::session::control::Activity,
) -> Outcome {
    let (session_id, user, api_wait) =
        (&context.session_id, context.user.as_str(), context.api_wait);
    let tty = pty.is_some();
    let argv = crate::exec::session_argv(
        &target.prefix,
        session_id,
        pty.as_ref().map(|p| p.term.as_str()),
        script.as_deref(),
        &context.env,
    );
    let (sender, mut receiver) =
        match stream::open(&target, argv, Streams::session(tty), api_wait).await {
            Ok(opened) => opened,
            Err(error) => {
                let message = error
                    .explain(&target, user, context.stream_verb)
                    .to_string();
                crate::session::io::refuse(output, &message, tty).await;
                return Outcome::Failed(message);
            }
        };
    // The client's input waits here for the exec stream. The client is
    // read only while this queue has room, so a target that reads late or
    // slowly holds back only this session's sender: its SSH window stays
    // shut until the input is taken (`Chunk`), and nothing is dropped.
    let (input_tx, input_rx) = tokio::sync::mpsc::channel::<Input>(INPUT_QUEUE);
    if let Some(pty) = &pty {
        // The first prompt must see the real size: sent before any input.
        let _ = input_tx.try_send(Input::Resize(clamp(pty.width), clamp(pty.height)));
    }
    let sender_task = tokio::spawn(send_input(sender, input_rx));
    // The process's output, in order, to the client's writers, which wait
    // for the client (its SSH window): a client that stops reading stops
    // this reading, and with it the process's writes.
    let receiver_task = {
        let counters = counters.clone();
        let recorder = context.recorder.clone();
        let (mut stdout, mut stderr) = (output.stdout(), output.stderr());
        tokio::spawn(async move {
            let status = loop {
                let (writer, data) = match receiver.next().await {
                    Some(stream::Output::Stdout(data)) => (&mut stdout, data),
                    Some(stream::Output::Stderr(data)) => (&mut stderr, data),
                    Some(stream::Output::Status(status)) => break Some(status),
                    None => break None,
                };
                if let Some(recorder) = &recorder {
                    recorder.output(&data).await;
                }
                counters.bytes_out.fetch_add(data.len() as u64, SeqCst);
                if writer.write_all(&data).await.is_err() {
                    break None;
                }
            };
            let _ = stdout.flush().await;
            let _ = stderr.flush().await;
            status
        })
    };
    let mut receiver_task = AbortOnDrop(receiver_task);
    // Set at end of input on a v4-only cluster: the stream is closing and
    // gets a bounded time to deliver what is left, never a hang.
    let mut closing_by: Option<tokio::time::Instant> = None;
    let mut status = None;
    // A place in the input queue, taken before the client is read.
    let mut room: Option<tokio::sync::mpsc::OwnedPermit<Input>> = None;
    let mut departed = input.departed();
    // The client's input to the exec stream until the output ends or the
    // client goes; the drain, idle, revocation and recording rules are the
    // one supervised run's (`supervise`), as for every session.
    let carry = async {
        loop {
            tokio::select! {
                () = &mut departed => return Ending::ClientGone,
                permit = input_tx.clone().reserve_owned(), if room.is_none() => match permit {
                    Ok(permit) => room = Some(permit),
                    // The input task ended: the stream is closing.
                    Err(_) => return Ending::OutputDone,
                },
                ended = &mut receiver_task.0 => {
                    status = ended.ok().flatten();
                    return Ending::OutputDone;
                }
                () = async { tokio::time::sleep_until(closing_by.unwrap_or_else(tokio::time::Instant::now)).await }, if closing_by.is_some() => {
                    return Ending::OutputDone;
                }
                event = input.next(), if room.is_some() => match event {
                    ClientEvent::Data(data) => {
                        counters.bytes_in.fetch_add(data.len() as u64, SeqCst);
                        if let Some(recorder) = &context.recorder {
                            recorder.input(&data).await;
                        }
                        if let Some(room) = room.take() {
                            room.send(Input::Data(data));
                        }
                    }
                    ClientEvent::Eof => {
                        if !context.stdin_eof && !tty {
                            // v4 has no close signal: ending stdin ends the
                            // stream, and output still on its way may be lost.
                            let message = "this cluster's API server speaks only v4.channel.k8s.io (Kubernetes before 1.30): end of input closes the whole exec stream, so output after it may be cut short";
                            output.tell(message, tty).await;
                            closing_by = Some(tokio::time::Instant::now() + api_wait);
                        }
                        if let Some(room) = room.take() {
                            room.send(Input::Eof);
                        }
                    }
                    ClientEvent::Resize { cols, rows } => {
                        if let Some(recorder) = &context.recorder {
                            recorder.resize(cols, rows).await;
                        }
                        if let (true, Some(room)) = (tty, room.take()) {
                            room.send(Input::Resize(clamp(cols), clamp(rows)));
                        }
                    }
                    ClientEvent::Gone => return Ending::ClientGone,
                }
            }
        }
    };
    // An interruption is told and the session closed by `supervise`; the
    // processes it leaves are ended below.
    let supervised = crate::session::control::supervise(
        &context.control,
        counters,
        output,
        crate::session::control::Tell::Client { tty },
        carry,
    )
    .await;
    drop(room);
    drop(input_tx);
    // Dropping both halves closes the exec stream.
    sender_task.abort();
    drop(receiver_task);
    // What the client still sends is read and dropped until the session is
    // over (`while_draining`).
    let end = async {
        let interrupted = match supervised {
            Ok(Ending::OutputDone) => None,
            Ok(Ending::ClientGone) => Some(Outcome::ClientGone),
            Err(interrupted) => Some(Outcome::of(interrupted)),
        };
        if let Some(outcome) = interrupted {
            crate::exec::end_session_processes(&target, session_id, api_wait).await;
            return outcome;
        }
        let ended = match status {
            Some(status) => match crate::exec::exit_code(&status) {
                Ok(code) => Ended::Exited(code),
                Err(message) => Ended::Failed(message),
            },
            None => Ended::Lost,
        };
        let outcome = match ended {
            Ended::Exited(code) => Outcome::Exited(code),
            Ended::Failed(message) => {
                let message = format!(
                    "the command could not run: {message}{}",
                    crate::exec::no_shell_hint(&message, &target)
                );
                output.tell(&message, tty).await;
                Outcome::Exited(126)
            }
            // On a v4-only cluster end of input closed the stream, as the user
            // was told: the exit status is lost, and kbastion's own failure
            // status says so (255 would read as ssh's).
            Ended::Lost if closing_by.is_some() => Outcome::Exited(1),
            Ended::Lost => {
                output.tell(crate::exec::LOST, tty).await;
                Outcome::Exited(255)
            }
        };
        if let Outcome::Exited(code) = outcome {
            output.finish(code).await;
        }
        outcome
    };
    while_draining(input, end).await
}

/// Aborts the task when the session ends, whichever way.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often an idle exec stream is pinged, as kube does, so that proxies
/// on the way keep it open.
const PING_EVERY: Duration = Duration::from_secs(60);

/// Messages of client input (each at most one SSH packet, or what russh
/// coalesced while the session was busy: 64 KiB) waiting for the exec
/// stream. Small: the client's window, not this queue, is what lets an
/// upload run ahead of the target; this only keeps the stream busy.
const INPUT_QUEUE: usize = 8;

/// Sends the client's input to the process, in order, one frame per
/// chunk; each chunk is dropped (its room given back) once sent.
async fn send_input(mut sender: stream::ExecSender, mut queue: tokio::sync::mpsc::Receiver<Input>) {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    // After the process stops reading (or input ended), input is dropped,
    // as a pipe to an exited process would.
    let mut open = true;
    loop {
        let input = tokio::select! {
            input = queue.recv() => match input {
                Some(input) => input,
                None => return,
            },
            _ = ping.tick() => {
                if sender.ping().await.is_err() {
                    open = false;
                }
                continue;
            }
        };
        match input {
            Input::Data(data) => {
                if open && sender.stdin(&data).await.is_err() {
                    open = false;
                }
                drop(data);
            }
            Input::Resize(width, height) => {
                if open && sender.resize(width, height).await.is_err() {
                    open = false;
                }
            }
            Input::Eof => {
                // v5: the close signal, and the output keeps flowing.
                if open {
                    let _ = sender.close_stdin().await;
                }
                if !sender.has_close_signal() {
                    open = false;
                }
            }
        }
    }
}
