//! `pods/portforward`: the kubelet's port forwarding into a pod's network
//! namespace. Pods share this machine's loopback in the simulator, so port
//! P of any pod is `127.0.0.1:P`.
//!
//! Transports: the plain WebSocket channel protocol (kube-rs, the Python
//! client: `ports=` query, channels 2i/2i+1, each opened by the port number
//! as 2 bytes little-endian), SPDY/3.1 (`portforward.k8s.io`, every kubectl)
//! and SPDY carried inside WebSocket (`SPDY/3.1+portforward.k8s.io`,
//! kubectl 1.31+).

use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::api::{Target, param};
use super::body::Body;
use super::exec::{self, CHUNK, Transport};
use super::rbac::UserInfo;
use super::status::ApiError;
use super::{Sim, until_cut};

pub const SPDY_PROTOCOL: &str = "portforward.k8s.io";
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// The kubelet's wording when the pod's port refuses the connection.
pub fn dial_error(pod: &str, uid: &str, port: u16, error: &std::io::Error) -> String {
    format!(
        "error forwarding port {port} to pod {pod}, uid {uid}: failed to connect to localhost:{port} inside namespace \"{pod}\", IPv4: dial tcp4 127.0.0.1:{port}: {error}"
    )
}

pub async fn handle(
    sim: Arc<Sim>,
    user: &UserInfo,
    target: &Target,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let Some(transport) = exec::transport(&request) else {
        return Err(ApiError::bad_request("Upgrade request required"));
    };
    exec::authorize(&sim, user, target, transport)?;
    let pod = super::api::get(&sim, target)?;
    if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
        return Err(ApiError::bad_request(format!(
            "pod {} is not running",
            target.name
        )));
    }
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let pod_name = target.name.clone();
    let cut = sim.cut_signal();
    match transport {
        Transport::Spdy => super::spdy_portforward::accept_direct(request, pod_name, uid, cut),
        Transport::WebSocket => {
            let offered = exec::offered_protocols(&request);
            if offered.iter().any(|p| p == TUNNEL_PROTOCOL) {
                let response = exec::websocket_accept(&request, Some(TUNNEL_PROTOCOL))?;
                tokio::spawn(async move {
                    if let Ok(upgraded) = hyper::upgrade::on(request).await {
                        let ws = exec::websocket(TokioIo::new(upgraded)).await;
                        super::spdy_portforward::serve_tunnelled(ws, pod_name, uid, cut).await;
                    }
                });
                return Ok(response);
            }
            let params: Vec<(String, String)> =
                url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
                    .into_owned()
                    .collect();
            let ports: Vec<u16> = param(&params, "ports")
                .unwrap_or("")
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    p.trim().parse::<u16>().map_err(|_| {
                        ApiError::bad_request(format!(
                            "unable to parse \"{p}\" as a port: invalid syntax"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?;
            if ports.is_empty() {
                return Err(ApiError::bad_request(
                    "query parameter \"port\" is required",
                ));
            }
            let protocol = offered
                .iter()
                .find(|p| *p == "v4.channel.k8s.io" || *p == "v4.base64.channel.k8s.io")
                .cloned();
            let base64 = protocol.as_deref() == Some("v4.base64.channel.k8s.io");
            let response = exec::websocket_accept(&request, protocol.as_deref())?;
            tokio::spawn(async move {
                if let Ok(upgraded) = hyper::upgrade::on(request).await {
                    let ws = exec::websocket(TokioIo::new(upgraded)).await;
                    let forwarded = Forwarded {
                        ports,
                        pod: pod_name,
                        uid,
                        base64_text: base64,
                    };
                    serve_websocket(ws, forwarded, cut).await;
                }
            });
            Ok(response)
        }
    }
}

fn encode(channel: u8, data: &[u8], base64_text: bool) -> Message {
    if base64_text {
        use base64::Engine;
        let mut text = String::with_capacity(data.len() * 4 / 3 + 2);
        text.push((b'0' + channel) as char);
        text.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
        Message::text(text)
    } else {
        let mut message = Vec::with_capacity(data.len() + 1);
        message.push(channel);
        message.extend_from_slice(data);
        Message::binary(message)
    }
}

/// What a plain WebSocket port-forward carries.
struct Forwarded {
    ports: Vec<u16>,
    pod: String,
    uid: String,
    /// `v4.base64.channel.k8s.io`: text messages, base64 after the channel.
    base64_text: bool,
}

/// The plain WebSocket port-forward protocol: one TCP connection per
/// requested port, for as long as the WebSocket lives. A cut drops the
/// WebSocket without a close frame and the pod's connections with it.
async fn serve_websocket<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    forwarded: Forwarded,
    cut: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Forwarded {
        ports,
        pod,
        uid,
        base64_text,
    } = forwarded;
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Bytes)>(8);
    let writer = tokio::spawn(until_cut(cut.clone(), async move {
        while let Some((channel, data)) = out_rx.recv().await {
            if sink
                .send(encode(channel, &data, base64_text))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = sink.send(exec::normal_close()).await;
    }));
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let data_channel = (2 * i) as u8;
        let prefix = Bytes::copy_from_slice(&port.to_le_bytes());
        let _ = out_tx.send((data_channel, prefix.clone())).await;
        let _ = out_tx.send((data_channel + 1, prefix)).await;
        match TcpStream::connect(("127.0.0.1", *port)).await {
            Ok(tcp) => {
                let (mut read, write) = tcp.into_split();
                writers.push(Some(write));
                let out = out_tx.clone();
                readers.push(tokio::spawn(async move {
                    let mut buffer = vec![0u8; CHUNK];
                    while let Ok(n) = read.read(&mut buffer).await {
                        if n == 0
                            || out
                                .send((data_channel, Bytes::copy_from_slice(&buffer[..n])))
                                .await
                                .is_err()
                        {
                            break;
                        }
                    }
                }));
            }
            Err(e) => {
                writers.push(None);
                let _ = out_tx
                    .send((
                        data_channel + 1,
                        Bytes::from(dial_error(&pod, &uid, *port, &e)),
                    ))
                    .await;
            }
        }
    }
    drop(out_tx);
    let stop_reading: Vec<_> = readers.iter().map(|r| r.abort_handle()).collect();
    let all_read = futures::future::join_all(readers);
    // The loop is cancelled wherever it waits at a cut (also while writing
    // to a pod that does not read), dropping `source` and the pod's side.
    let carried = until_cut(cut, async {
        tokio::pin!(all_read);
        loop {
            tokio::select! {
                _ = &mut all_read => break,
                message = source.next() => {
                    let data: Vec<u8> = match message {
                        Some(Ok(Message::Binary(data))) => data.to_vec(),
                        Some(Ok(Message::Text(text))) if base64_text => {
                            use base64::Engine;
                            let mut bytes = text.as_bytes().to_vec();
                            let Some(first) = bytes.first().copied() else { continue };
                            let decoded = base64::engine::general_purpose::STANDARD.decode(&bytes[1..]).unwrap_or_default();
                            bytes.clear();
                            bytes.push(first.wrapping_sub(b'0'));
                            bytes.extend_from_slice(&decoded);
                            bytes
                        }
                        // Without base64, a text frame carries bytes like a
                        // binary one (apimachinery's wsstream reads both).
                        Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => continue,
                    };
                    let Some((&channel, payload)) = data.split_first() else { continue };
                    if channel % 2 == 0
                        && let Some(Some(writer)) = writers.get_mut((channel / 2) as usize)
                        && writer.write_all(payload).await.is_err()
                    {
                        writers[(channel / 2) as usize] = None;
                    }
                }
            }
        }
    })
    .await;
    if carried.is_none() {
        // Cut: the pod's connections close with the stream.
        for reader in &stop_reading {
            reader.abort();
        }
    }
    drop(writers);
    drop(source);
    let _ = writer.await;
}
