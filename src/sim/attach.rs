//! `pods/attach`, as the API server checks it and the kubelet serves it:
//! the client's streams are joined to a container's running main process
//! (`sim::container`) instead of a new one. The checks before the upgrade
//! are exec's (authorization with the transport's verb, container, node,
//! running state); after it, the process's output reaches the client, the
//! client's input and resizes reach the process, and when the process ends
//! the error stream carries `Success` (the kubelet's `ServeAttach`).
//! A client that goes away leaves the process running, as containerd does;
//! whether a terminal is used is the container's own `tty` setting (the
//! kubelet's `GetAttach` takes it from the spec, whatever the request says).

use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::api::{Target, param};
use super::body::Body;
use super::container::{Attachment, Stream};
use super::exec::{
    Transport, authorize, channel, choose_container, container_running, normal_close, resize,
    transport, websocket, websocket_accept,
};
use super::rbac::UserInfo;
use super::spdy::Connection;
use super::spdy_exec::{PROTOCOL, Wanted, collect, handshake, resize_task};
use super::status::{ApiError, plain_response};
use super::{Sim, until_cut};

fn flag(params: &[(String, String)], name: &str) -> bool {
    param(params, name).is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

pub async fn handle(
    sim: Arc<Sim>,
    user: &UserInfo,
    target: &Target,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let Some(transport) = transport(&request) else {
        return Err(ApiError::bad_request("Upgrade request required"));
    };
    authorize(&sim, user, target, transport)?;
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let wanted = Wanted {
        stdin: flag(&params, "stdin"),
        stdout: flag(&params, "stdout"),
        stderr: flag(&params, "stderr"),
        tty: flag(&params, "tty"),
    };
    let attachment = match plan(&sim, target, &params, wanted) {
        Ok(attachment) => attachment,
        Err(response) => return Ok(*response),
    };
    match transport {
        Transport::WebSocket => {
            let protocol = super::exec::channel_protocol(&sim, &request)?;
            let response = websocket_accept(&request, Some(&protocol))?;
            let cut = sim.cut_signal();
            tokio::spawn(async move {
                match hyper::upgrade::on(request).await {
                    Ok(upgraded) => {
                        let ws = websocket(TokioIo::new(upgraded)).await;
                        run_websocket(attachment, ws, protocol == "v5.channel.k8s.io", cut).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "attach upgrade failed"),
                }
            });
            Ok(response)
        }
        Transport::Spdy => {
            let response = match handshake(&request, PROTOCOL) {
                Ok(response) => response,
                Err(refusal) => return Ok(*refusal),
            };
            let cut = sim.cut_signal();
            tokio::spawn(async move {
                match hyper::upgrade::on(request).await {
                    Ok(upgraded) => {
                        let connection = Connection::serve(TokioIo::new(upgraded), cut);
                        run_spdy(attachment, connection, wanted).await;
                    }
                    Err(error) => tracing::debug!(%error, "SPDY attach upgrade failed"),
                }
            });
            Ok(response)
        }
    }
}

/// The API server's and kubelet's checks, in exec's order; then the
/// container's main process to join.
fn plan(
    sim: &Sim,
    target: &Target,
    params: &[(String, String)],
    wanted: Wanted,
) -> Result<Attachment, Box<Response<Body>>> {
    let error = |e: ApiError| Box::new(e.into_response());
    let pod = super::api::get(sim, target).map_err(error)?;
    if !wanted.stdin && !wanted.stdout && !wanted.stderr {
        return Err(error(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        )));
    }
    let container =
        choose_container(&pod, param(params, "container"), &target.name).map_err(error)?;
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() {
        return Err(error(ApiError::bad_request(format!(
            "pod {} does not have a host assigned",
            target.name
        ))));
    }
    if super::cluster::node_ready(sim, node) != Some(true) {
        return Err(error(ApiError::new(
            500,
            "",
            format!(
                "error dialing backend: dial tcp {}:{}: connect: connection refused",
                super::cluster::NODE_ADDRESS,
                super::cluster::KUBELET_PORT
            ),
        )));
    }
    let main = container_running(&pod, &container)
        .then(|| {
            sim.runtime
                .main_process(&target.namespace, &target.name, &container)
        })
        .flatten();
    match main {
        Some(main) => Ok(main.attach()),
        None => Err(Box::new(plain_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("container not found (\"{container}\")"),
        ))),
    }
}

/// What the kubelet writes on the error stream when the attached process
/// ends: attach succeeded, whatever the process's exit code.
fn success() -> Bytes {
    Bytes::from(json!({"metadata": {}, "status": "Success"}).to_string())
}

/// The next output chunk for the client, or `None` once the process has
/// ended and its output is drained. A client too slow for the backlog
/// loses the oldest output, never blocks the process.
async fn next_output(attachment: &mut Attachment) -> Option<(Stream, Bytes)> {
    loop {
        match attachment.output.recv().await {
            Ok(chunk) => return Some(chunk),
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return None,
        }
    }
}

/// Waits until the process has ended and its last output has been passed
/// on (the output channel closes when the container's readers finish).
async fn run_websocket<S>(
    mut attachment: Attachment,
    ws: tokio_tungstenite::WebSocketStream<S>,
    v5: bool,
    cut: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let stdin = attachment.stdin.clone();
    let terminal = attachment.terminal.clone();
    let input = tokio::spawn(until_cut(cut.clone(), async move {
        let mut stdin = stdin;
        loop {
            let data = match source.next().await {
                Some(Ok(Message::Binary(data))) => data,
                Some(Ok(Message::Text(text))) => Bytes::from(text.as_bytes().to_vec()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            };
            match (data.first().copied(), v5) {
                (Some(channel::STDIN), _) => {
                    if let Some(sender) = stdin.as_ref()
                        && sender.send(data.slice(1..)).await.is_err()
                    {
                        stdin = None;
                    }
                }
                (Some(channel::RESIZE), _) => resize(terminal.as_ref(), &data[1..]),
                // Closing stdin of an attach leaves the shared stdin open
                // for the process (its other clients may still type).
                (Some(channel::CLOSE), true) => stdin = None,
                _ => {}
            }
        }
    }));
    let output = until_cut(cut, async move {
        let mut exit = attachment.exit.clone();
        loop {
            tokio::select! {
                chunk = next_output(&mut attachment) => match chunk {
                    Some((stream, data)) => {
                        let channel = match stream {
                            Stream::Stdout => channel::STDOUT,
                            Stream::Stderr => channel::STDERR,
                        };
                        let mut message = Vec::with_capacity(data.len() + 1);
                        message.push(channel);
                        message.extend_from_slice(&data);
                        if sink.send(Message::binary(message)).await.is_err() {
                            return;
                        }
                    }
                    None => break,
                },
                changed = exit.changed() => {
                    if changed.is_err() || exit.borrow().is_some() {
                        // Drain what the process wrote before it ended.
                        while let Ok((stream, data)) = attachment.output.try_recv() {
                            let channel = if stream == Stream::Stdout { channel::STDOUT } else { channel::STDERR };
                            let mut message = vec![channel];
                            message.extend_from_slice(&data);
                            if sink.send(Message::binary(message)).await.is_err() {
                                return;
                            }
                        }
                        break;
                    }
                }
            }
        }
        let mut status = vec![channel::ERROR];
        status.extend_from_slice(&success());
        let _ = sink.send(Message::binary(status)).await;
        let _ = sink.send(normal_close()).await;
        let _ = sink.close().await;
    });
    output.await;
    input.abort();
}

async fn run_spdy(mut attachment: Attachment, mut connection: Connection, wanted: Wanted) {
    let Some(mut streams) = collect(&mut connection, wanted).await else {
        tracing::debug!("SPDY attach: the client did not create its streams");
        connection.shutdown().await;
        return;
    };
    let Some(error) = streams.error.take() else {
        connection.shutdown().await;
        return;
    };
    let stdin_task = streams.stdin.take().map(|mut stream| {
        let sender = attachment.stdin.clone();
        tokio::spawn(async move {
            while let Some(data) = stream.data.recv().await {
                if let Some(sender) = sender.as_ref()
                    && sender.send(data).await.is_err()
                {
                    return;
                }
            }
        })
    });
    let resize = streams
        .resize
        .take()
        .map(|stream| resize_task(stream, attachment.terminal.clone()));
    let stdout = streams.stdout.as_ref().map(|s| s.writer.clone());
    let stderr = streams.stderr.as_ref().map(|s| s.writer.clone());
    let mut exit = attachment.exit.clone();
    let mut connected = true;
    loop {
        let chunk = tokio::select! {
            chunk = next_output(&mut attachment) => chunk,
            changed = exit.changed() => {
                if changed.is_err() || exit.borrow().is_some() {
                    attachment.output.try_recv().ok()
                } else {
                    continue;
                }
            }
        };
        let Some((stream, data)) = chunk else {
            break;
        };
        // A tty container's output is all on stdout.
        let writer = match stream {
            Stream::Stdout => &stdout,
            Stream::Stderr => &stderr,
        };
        if connected
            && let Some(writer) = writer
            && writer.write(&data).await.is_err()
        {
            connected = false;
            break;
        }
    }
    if connected {
        for stream in [&streams.stdout, &streams.stderr].into_iter().flatten() {
            let _ = stream.writer.close().await;
        }
        let _ = error.writer.write(&success()).await;
        let _ = error.writer.close().await;
    }
    for task in [stdin_task, resize].into_iter().flatten() {
        task.abort();
    }
    connection.shutdown().await;
}
