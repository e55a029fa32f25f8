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
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use futures::SinkExt;
use kube::api::TerminalSize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::exec::{Ended, Streams};
use crate::flow::{Backlog, Flow};
use crate::session::io::{ClientEvent, ClientInput, ClientOutput, while_draining};
use crate::session::{Outcome, Pty, Report};
use crate::target::ExecTarget;

/// What a session runs with besides its client and target.
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

#[derive(Default)]
struct Counters {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
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

/// What the input side sends to the process, in order.
enum Input {
    Data(bytes::Bytes),
    Eof,
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
    let counters = Arc::new(Counters::default());
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
    counters: &Arc<Counters>,
) -> Outcome {
    let (session_id, user, api_wait) =
        (&context.session_id, context.user.as_str(), context.api_wait);
    let tty = pty.is_some();
    let argv = crate::exec::session_argv(
        &target.prefix,
        session_id,
        pty.as_ref().map(|p| p.term.as_str()),
        script.as_deref(),
    );
    let mut process = match crate::exec::start(&target, argv, Streams::session(tty), api_wait).await
    {
        Ok(process) => process,
        Err(error) => {
            let message = error
                .explain(&target, user, context.stream_verb)
                .to_string();
            crate::session::io::refuse(output, &message, tty).await;
            return Outcome::Failed(message);
        }
    };
    let mut resize = process.terminal_size();
    if let (Some(sender), Some(pty)) = (resize.as_mut(), &pty) {
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
                    mut writer: crate::session::io::Writer| {
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
    let stdout = copy_out(process.stdout(), output.stdout());
    let stderr = copy_out(process.stderr(), output.stderr());
    let output_done = async {
        let _ = stdout.await;
        let _ = stderr.await;
    };
    tokio::pin!(output_done);
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
            _ = &mut output_done => break Ending::OutputDone,
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
                    output.tell(&message, tty).await;
                    break Ending::Idle;
                }
            }
            () = context.control.stop.cancelled() => {
                output.tell(crate::session::STOPPED, tty).await;
                break Ending::Stopped;
            }
            Ok(()) = revoked.changed() => {
                let reason = revoked.borrow_and_update().clone();
                if let Some(reason) = reason {
                    let message = crate::session::revoked_message(&reason);
                    output.tell(&message, tty).await;
                    break Ending::Revoked;
                }
            }
            Ok(()) = notice.changed() => {
                let message = notice.borrow_and_update().clone();
                if let Some(message) = message {
                    output.tell(&message, tty).await;
                }
            }
            event = input.next() => match event {
                ClientEvent::Data(data) => {
                    counters.bytes_in.fetch_add(data.len() as u64, SeqCst);
                    if let Some(recorder) = &context.recorder {
                        recorder.input(&data).await;
                    }
                    if let Err(full) = flow.add(data.len()) {
                        output.tell(&full.to_string(), tty).await;
                        break Ending::Backlog;
                    }
                    let _ = input_tx.send(Input::Data(data));
                    flow.wait_for_room().await;
                }
                ClientEvent::Eof => {
                    if !context.stdin_eof && !tty {
                        // v4 has no close signal: ending stdin ends the
                        // stream, and output still on its way may be lost.
                        let message = "this cluster's API server speaks only v4.channel.k8s.io (Kubernetes before 1.30): end of input closes the whole exec stream, so output after it may be cut short";
                        output.tell(message, tty).await;
                        closing_by = Some(tokio::time::Instant::now() + api_wait);
                    }
                    let _ = input_tx.send(Input::Eof);
                }
                ClientEvent::Resize { cols: col_width, rows: row_height } => {
                    if let Some(recorder) = &context.recorder {
                        recorder.resize(col_width, row_height).await;
                    }
                    if let Some(sender) = resize.as_mut() {
                        let _ = sender.send(TerminalSize { width: clamp(col_width), height: clamp(row_height) }).await;
                    }
                }
                ClientEvent::Gone => break Ending::ClientGone,
            }
        }
    };
    drop(input_tx);
    stdin_task.abort();
    // What the client still sends is read and dropped until the session is
    // over (`while_draining`).
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
                output.close().await;
            }
            crate::exec::end_session_processes(&target, session_id, api_wait).await;
            return outcome;
        }
        let outcome = match crate::exec::ended(status).await {
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
