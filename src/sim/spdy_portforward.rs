//! `pods/portforward` over SPDY (`portforward.k8s.io`), directly on the
//! upgraded connection or carried in binary WebSocket messages
//! (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31+). For each local
//! connection kubectl opens an error stream and a data stream with the same
//! `requestID` and `port`; the kubelet pairs them and dials the port.

use std::collections::HashMap;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::body::Body;
use super::portforward::{SPDY_PROTOCOL, dial_error};
use super::spdy::{Connection, Stream};
use super::spdy_exec::handshake;
use super::status::ApiError;

pub fn accept_direct(
    request: Request<Incoming>,
    pod: String,
    uid: String,
    cut: CancellationToken,
) -> Result<Response<Body>, ApiError> {
    let response = match handshake(&request, SPDY_PROTOCOL) {
        Ok(response) => response,
        Err(refusal) => return Ok(*refusal),
    };
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(request).await {
            serve(Connection::serve(TokioIo::new(upgraded), cut), pod, uid).await;
        }
    });
    Ok(response)
}

/// SPDY carried as a byte stream in binary WebSocket messages. A cut drops
/// the WebSocket itself, without a close frame.
pub async fn serve_tunnelled<S>(
    ws: WebSocketStream<S>,
    pod: String,
    uid: String,
    cut: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut sink, mut source) = ws.split();
    let (mut from_ws, mut to_ws) = tokio::io::split(theirs);
    let inbound = tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            match message {
                Message::Binary(data) if to_ws.write_all(&data).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = to_ws.shutdown().await;
    });
    let outbound = tokio::spawn(super::until_cut(cut.clone(), async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n) = from_ws.read(&mut buffer).await {
            if n == 0
                || sink
                    .send(Message::binary(Bytes::copy_from_slice(&buffer[..n])))
                    .await
                    .is_err()
            {
                break;
            }
        }
        let _ = sink.send(super::exec::normal_close()).await;
    }));
    serve(Connection::serve(ours, cut), pod, uid).await;
    let _ = outbound.await;
    inbound.abort();
}

/// A pair of streams for one forwarded connection.
#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
}

async fn serve(mut connection: Connection, pod: String, uid: String) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    while let Some(stream) = connection.incoming.recv().await {
        let request = stream.headers.get("requestid").unwrap_or("").to_string();
        let pair = pairs.entry(request.clone()).or_default();
        match stream.headers.get("streamtype") {
            Some("error") => pair.error = Some(stream),
            Some("data") => pair.data = Some(stream),
            _ => continue,
        }
        if pair.error.is_some() && pair.data.is_some() {
            let pair = pairs.remove(&request).expect("the pair was just filled");
            if let (Some(error), Some(data)) = (pair.error, pair.data) {
                tokio::spawn(forward(error, data, pod.clone(), uid.clone()));
            }
        }
    }
    connection.shutdown().await;
}

async fn forward(error: Stream, mut data: Stream, pod: String, uid: String) {
    // The client half-closes the error stream at once; it only reads it.
    drop(error.data);
    let port: u16 = match data.headers.get("port").and_then(|p| p.parse().ok()) {
        Some(port) => port,
        None => {
            let _ = error.writer.write(b"invalid port header").await;
            let _ = error.writer.close().await;
            return;
        }
    };
    let tcp = match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(tcp) => tcp,
        Err(e) => {
            let _ = error
                .writer
                .write(dial_error(&pod, &uid, port, &e).as_bytes())
                .await;
            let _ = error.writer.close().await;
            let _ = data.writer.close().await;
            return;
        }
    };
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    let upstream = tokio::spawn(async move {
        while let Some(chunk) = data.data.recv().await {
            if tcp_write.write_all(&chunk).await.is_err() {
                break;
            }
        }
        // The client closed its side: the pod's side sees end of input.
        let _ = tcp_write.shutdown().await;
    });
    let writer = data.writer.clone();
    let mut buffer = vec![0u8; super::exec::CHUNK];
    loop {
        // The pod's connection ends with the SPDY connection (client gone
        // or cut), even while the pod has nothing to say.
        let read = tokio::select! {
            read = tcp_read.read(&mut buffer) => read,
            _ = writer.closed() => break,
        };
        match read {
            Ok(n) if n > 0 && writer.write(&buffer[..n]).await.is_ok() => {}
            _ => break,
        }
    }
    let _ = writer.close().await;
    let _ = error.writer.close().await;
    let _ = upstream.await;
}
