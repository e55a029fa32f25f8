//! `pods/exec` over SPDY/3.1, as the kubelet serves it to kubectl 1.27-1.29
//! and to every newer kubectl that falls back from WebSocket: protocol
//! `v4.channel.k8s.io`, one stream per channel typed by its `streamType`
//! header, the `Status` written on the error stream at the end.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::Sim;
use super::body::{Body, empty};
use super::exec::{channel, finish, pump, resize};
use super::runtime::ProcessSpec;
use super::spdy::{Connection, Stream};
use super::status::{ApiError, exec_start_failure};

pub const PROTOCOL: &str = "v4.channel.k8s.io";

/// How long the kubelet waits for the client to create its streams
/// (`streamCreationTimeout`).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The protocols a SPDY client offers in `X-Stream-Protocol-Version`.
pub fn offered_versions(request: &Request<Incoming>) -> Vec<String> {
    request
        .headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Answers a SPDY upgrade for `protocol`, or 403 with the accepted versions
/// when the client offers none of them (apimachinery httpstream.Handshake).
pub fn handshake(
    request: &Request<Incoming>,
    accepted: &str,
) -> Result<Response<Body>, Box<Response<Body>>> {
    let offered = offered_versions(request);
    if !offered.iter().any(|v| v == accepted) {
        let message = format!(
            "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts [\"{accepted}\"]"
        );
        return Err(Box::new(
            Response::builder()
                .status(StatusCode::FORBIDDEN)
                .header("X-Accepted-Stream-Protocol-Versions", accepted)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(super::body::full(Bytes::from(message)))
                .expect("valid headers"),
        ));
    }
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", accepted)
        .body(empty())
        .expect("valid headers"))
}

pub fn accept(
    sim: Arc<Sim>,
    request: Request<Incoming>,
    spec: ProcessSpec,
    namespace: String,
    pod: String,
) -> Result<Response<Body>, ApiError> {
    let response = match handshake(&request, PROTOCOL) {
        Ok(response) => response,
        Err(refusal) => return Ok(*refusal),
    };
    let cut = sim.cut_signal();
    tokio::spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let connection = Connection::serve(TokioIo::new(upgraded), cut);
                run(sim, connection, spec, namespace, pod).await
            }
            Err(error) => tracing::debug!(%error, "SPDY exec upgrade failed"),
        }
    });
    Ok(response)
}

/// The streams a client opened, by their `streamType`.
#[derive(Default)]
pub struct Streams {
    pub error: Option<Stream>,
    pub stdin: Option<Stream>,
    pub stdout: Option<Stream>,
    pub stderr: Option<Stream>,
    pub resize: Option<Stream>,
}

/// Which streams the request's query asked for (the kubelet waits for
/// exactly these).
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Streams {
    fn complete(&self, wanted: Wanted) -> bool {
        self.error.is_some()
            && (!wanted.stdin || self.stdin.is_some())
            && (!wanted.stdout || self.stdout.is_some())
            && (!wanted.stderr || self.stderr.is_some())
            && (!wanted.tty || self.resize.is_some())
    }
}

/// Waits for the client to open the streams it asked for, as the kubelet
/// does for `streamCreationTimeout`; `None` (the connection shut down) when
/// they do not all come.
pub async fn collect(connection: &mut Connection, wanted: Wanted) -> Option<Streams> {
    let mut streams = Streams::default();
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    while !streams.complete(wanted) {
        let stream = tokio::select! {
            stream = connection.incoming.recv() => stream,
            _ = &mut deadline => None,
        };
        let stream = stream?;
        let slot = match stream.headers.get("streamtype") {
            Some("error") => &mut streams.error,
            Some("stdin") => &mut streams.stdin,
            Some("stdout") => &mut streams.stdout,
            Some("stderr") => &mut streams.stderr,
            Some("resize") => &mut streams.resize,
            _ => continue,
        };
        *slot = Some(stream);
    }
    Some(streams)
}

/// Reads a resize stream (JSON objects back to back, as Go's json.Decoder
/// reads them) and resizes `terminal`.
pub fn resize_task(
    mut stream: Stream,
    terminal: Option<super::runtime::Terminal>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pending: Vec<u8> = Vec::new();
        while let Some(data) = stream.data.recv().await {
            pending.extend_from_slice(&data);
            let mut values =
                serde_json::Deserializer::from_slice(&pending).into_iter::<serde_json::Value>();
            let mut used = 0;
            while let Some(Ok(value)) = values.next() {
                used = values.byte_offset();
                resize(terminal.as_ref(), value.to_string().as_bytes());
            }
            pending.drain(..used);
        }
    })
}

async fn run(
    sim: Arc<Sim>,
    mut connection: Connection,
    spec: ProcessSpec,
    namespace: String,
    pod: String,
) {
    let wanted = Wanted {
        stdin: spec.stdin,
        stdout: spec.stdout,
        stderr: spec.stderr,
        tty: spec.tty,
    };
    let Some(mut streams) = collect(&mut connection, wanted).await else {
        tracing::debug!("SPDY exec: the client did not create its streams");
        connection.shutdown().await;
        return;
    };
    let error = streams
        .error
        .take()
        .expect("complete() checked the error stream");
    let mut process = match sim.runtime.spawn(&namespace, &pod, &spec) {
        Ok(process) => process,
        Err(e) => {
            let status = exec_start_failure(&spec.argv[0], &e);
            let _ = error.writer.write(status.to_string().as_bytes()).await;
            let _ = error.writer.close().await;
            connection.shutdown().await;
            return;
        }
    };
    // stdin: the stream's data into the process; the client's FIN closes it.
    let stdin_task = streams.stdin.take().map(|mut stream| {
        let mut writer = process.stdin.take();
        tokio::spawn(async move {
            while let Some(data) = stream.data.recv().await {
                if let Some(w) = writer.as_mut()
                    && w.write_all(&data).await.is_err()
                {
                    writer = None;
                }
            }
            if let Some(mut w) = writer {
                let _ = w.shutdown().await;
            }
        })
    });
    let resize_task = streams
        .resize
        .take()
        .map(|stream| resize_task(stream, process.terminal.clone()));
    // Output: pumps feed a router that writes each channel to its stream.
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Bytes)>(8);
    let stdout_writer = streams.stdout.as_ref().map(|s| s.writer.clone());
    let stderr_writer = streams.stderr.as_ref().map(|s| s.writer.clone());
    let router = tokio::spawn(async move {
        while let Some((channel, data)) = out_rx.recv().await {
            let writer = if channel == channel::STDOUT {
                &stdout_writer
            } else {
                &stderr_writer
            };
            if let Some(writer) = writer
                && writer.write(&data).await.is_err()
            {
                // The client is gone; dropping the receiver makes the pumps
                // read and discard, as containerd does.
                return;
            }
        }
    });
    let mut pumps = Vec::new();
    if let Some(stdout) = process.stdout.take() {
        pumps.push(tokio::spawn(pump(stdout, out_tx.clone(), channel::STDOUT)));
    }
    if let Some(stderr) = process.stderr.take() {
        pumps.push(tokio::spawn(pump(stderr, out_tx.clone(), channel::STDERR)));
    }
    drop(out_tx);
    for pump in pumps {
        let _ = pump.await;
    }
    let _ = router.await;
    let status = finish(&sim, &namespace, &pod, process, &spec.argv).await;
    for stream in [&streams.stdout, &streams.stderr].into_iter().flatten() {
        let _ = stream.writer.close().await;
    }
    let _ = error.writer.write(status.to_string().as_bytes()).await;
    let _ = error.writer.close().await;
    for task in [stdin_task, resize_task].into_iter().flatten() {
        task.abort();
    }
    connection.shutdown().await;
}
