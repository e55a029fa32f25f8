//! A command in the target as a process with pipes, on the same exec
//! stream as sessions (`stream`): what the file services' short scripts
//! and long-lived readers and writers run on (`remote_fs`). One task per
//! process carries stdin frames out and output frames in, through small
//! bounded queues, so a reader that stops reading slows the command, and
//! nothing is buffered beyond a few frames.

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, oneshot};

use super::stream::{self, Output, StartError, Streams};
use crate::pods::ExecTarget;

/// Frames waiting in each direction: a frame is at most what the API
/// server sends at once (32 KiB from the kubelet's copy buffers).
const QUEUE: usize = 8;

/// A running command's input: chunks written in order, then its end.
pub struct Stdin {
    chunks: mpsc::Sender<Bytes>,
}

impl Stdin {
    /// Hands `data` on; waits while the command is behind.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        for piece in data.chunks(64 * 1024) {
            self.chunks
                .send(Bytes::copy_from_slice(piece))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the command ended"))?;
        }
        Ok(())
    }

    /// The end of input (dropping it says the same).
    pub fn shutdown(self) {}
}

/// A running command's stdout or stderr, as a byte stream.
pub type Pipe = Box<dyn AsyncRead + Send + Unpin>;

fn pipe(frames: mpsc::Receiver<Bytes>) -> Pipe {
    let stream = futures::stream::unfold(frames, |mut frames| async move {
        let frame = frames.recv().await?;
        Some((Ok::<_, io::Error>(frame), frames))
    });
    Box::new(tokio_util::io::StreamReader::new(Box::pin(stream)))
}

/// A command started in the target. Dropping it ends the exec stream (the
/// command itself is the caller's to end, as for any exec).
pub struct Process {
    stdin: Option<Stdin>,
    stdout: Option<Pipe>,
    stderr: Option<Pipe>,
    status: Option<oneshot::Receiver<Status>>,
    pump: tokio::task::JoinHandle<()>,
}

impl Drop for Process {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl Process {
    pub fn stdin(&mut self) -> Option<Stdin> {
        self.stdin.take()
    }

    pub fn stdout(&mut self) -> Option<Pipe> {
        self.stdout.take()
    }

    pub fn stderr(&mut self) -> Option<Pipe> {
        self.stderr.take()
    }

    /// The final status, once the command has ended (None if the stream
    /// was lost first); for `exec::ended`.
    pub fn take_status(&mut self) -> Option<impl Future<Output = Option<Status>> + use<>> {
        let status = self.status.take()?;
        Some(async move { status.await.ok() })
    }

    /// Ends the exec stream now.
    pub fn abort(&self) {
        self.pump.abort();
    }
}

/// Starts `argv` in the target's container, within `api_wait`.
pub async fn spawn(
    target: &ExecTarget,
    argv: Vec<String>,
    streams: Streams,
    api_wait: Duration,
) -> Result<Process, StartError> {
    let (mut sender, mut receiver) = stream::open(target, argv, streams, api_wait).await?;
    let (stdout_tx, stdout_rx) = mpsc::channel::<Bytes>(QUEUE);
    let (stderr_tx, stderr_rx) = mpsc::channel::<Bytes>(QUEUE);
    let (status_tx, status_rx) = oneshot::channel();
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(QUEUE);
    let mut stdin_rx = streams.stdin.then_some(stdin_rx);
    let pump = tokio::spawn(async move {
        // A pipe nobody reads any more is dropped, and its output with it.
        let (mut stdout_tx, mut stderr_tx) = (Some(stdout_tx), Some(stderr_tx));
        loop {
            tokio::select! {
                chunk = async { stdin_rx.as_mut()?.recv().await }, if stdin_rx.is_some() => {
                    let sent = match chunk {
                        Some(chunk) => sender.stdin(&chunk).await,
                        None => {
                            stdin_rx = None;
                            sender.close_stdin().await
                        }
                    };
                    if sent.is_err() {
                        stdin_rx = None;
                    }
                }
                output = receiver.next() => match output {
                    Some(Output::Stdout(data)) => forward(&mut stdout_tx, data).await,
                    Some(Output::Stderr(data)) => forward(&mut stderr_tx, data).await,
                    Some(Output::Status(status)) => {
                        let _ = status_tx.send(*status);
                        break;
                    }
                    None => break,
                },
            }
        }
    });
    Ok(Process {
        stdin: streams.stdin.then_some(Stdin { chunks: stdin_tx }),
        stdout: Some(pipe(stdout_rx)),
        stderr: (!streams.tty).then(|| pipe(stderr_rx)),
        status: Some(status_rx),
        pump,
    })
}

async fn forward(pipe: &mut Option<mpsc::Sender<Bytes>>, data: Bytes) {
    if let Some(sender) = pipe
        && sender.send(data).await.is_err()
    {
        *pipe = None;
    }
}
