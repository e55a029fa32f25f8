//! Exec, attach and port-forward through the kubectl door: sessions like
//! an SSH channel's. The gate admits them (drain, the credential now, the
//! person's limit, the target and the person's right to it), the registry
//! lists them, and they end on idle, drain and revocation.
//!
//! The door passes the client's upgrade on to the API server, impersonating
//! the person, with the client's argv untouched, and joins the two
//! upgraded connections. An exec or attach is relayed frame by frame, so a
//! terminal is recorded (input, output, resizes) and the exit status is
//! audited: over WebSocket (kubectl 1.30 and later) in the channel
//! protocol, over SPDY (older kubectl) in SPDY/3.1 frames whose header
//! blocks the door inflates and deflates again for each side. A
//! port-forward is carried as bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::upstream::{Audited, Body, Head, passed_on, status_response, upstream_request};
use crate::audit::{SessionKind, Transport};
use crate::bastion::Shared;
use crate::cluster::Identity;
use crate::login::{Target, View};
use crate::recording::Recorder;
use crate::session::Opening;
use crate::session::control::{Activity, Outcome, Report, supervise};
use crate::session::gate::{self, Presented};
use crate::session::io::{ClientOutput, Pty, Writer};

/// Who opened a stream, and the client that acts as them.
pub struct Opened<'a> {
    pub shared: &'a Arc<Shared>,
    pub peer: SocketAddr,
    pub person: &'a str,
    pub identity: &'a Identity,
    pub verified: &'a crate::kube_credential::Verified,
    pub client: kube::Client,
}

/// The parameters of an exec, attach or port-forward request.
struct Asked {
    container: Option<String>,
    command: Vec<String>,
    tty: bool,
    ports: Vec<String>,
}

impl Asked {
    fn of(query: &str) -> Asked {
        let mut asked = Asked {
            container: None,
            command: Vec::new(),
            tty: false,
            ports: Vec::new(),
        };
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "container" => asked.container = Some(value.into_owned()),
                "command" => asked.command.push(value.into_owned()),
                "tty" => asked.tty = matches!(value.as_ref(), "true" | "1" | "True"),
                "ports" => asked.ports.push(value.into_owned()),
                _ => {}
            }
        }
        asked
    }
}

/// An argv as one line for the audit: words with blanks or quotes are
/// single-quoted.
fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|word| {
            if !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Admits the stream as a session, opens it at the API server and joins
/// the client to it.
pub async fn serve(
    opened: Opened<'_>,
    audited: Audited,
    mut request: Request<Incoming>,
) -> Response<Body> {
    let shared = opened.shared;
    let info = audited.info.clone();
    let asked = Asked::of(request.uri().query().unwrap_or(""));
    let kind = match info.subresource.as_str() {
        "portforward" => SessionKind::Forward {
            destination: format!("{}/{}:{}", info.namespace, info.name, asked.ports.join(",")),
        },
        "attach" => SessionKind::Attach,
        _ => SessionKind::Exec {
            command: command_line(&asked.command),
        },
    };
    let websocket = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let pty = asked.tty.then(|| Pty {
        term: "xterm".into(),
        width: 80,
        height: 24,
    });
    let target = Target::Container {
        namespace: info.namespace.clone(),
        pod: info.name.clone(),
        container: asked.container.clone(),
        view: View::Container,
    };
    let opening = Opening {
        shared,
        transport: Transport::Kube,
        source: opened.peer.to_string(),
        user_agent: request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(256).collect()),
        person: opened.person,
        identity: opened.identity,
        target: format!(
            "{}/{}{}",
            info.namespace,
            info.name,
            asked
                .container
                .as_deref()
                .map(|c| format!("/{c}"))
                .unwrap_or_default()
        ),
        kind,
        setup_started: audited.started,
    };
    // What the login's certificate withholds holds here too, as for ssh.
    let withheld = match info.subresource.as_str() {
        "portforward" => opened.verified.forwarding_refusal,
        _ if asked.tty => opened.verified.pty_refusal,
        _ => None,
    };
    if let Some(reason) = withheld {
        opening.refused(reason);
        audited.record("refused", 403, 0, 0);
        return status_response(StatusCode::FORBIDDEN, reason);
    }
    let presented = Presented {
        credential: Some(&opened.verified.credential),
        address: opened.peer.ip(),
    };
    let admitted =
        match gate::admit(opening, presented, &target, &info.subresource, pty.as_ref()).await {
            Ok(admitted) => admitted,
            Err(refusal) => {
                audited.record("refused", refusal.http_status().as_u16(), 0, 0);
                return status_response(refusal.http_status(), &refusal.to_string());
            }
        };
    let session = admitted.session;
    let head = Head {
        method: request.method(),
        uri: request.uri(),
        headers: request.headers(),
    };
    let upstream = match upstream_request(&head, bytes::Bytes::new(), true) {
        Ok(upstream) => upstream,
        Err(error) => {
            let line = format!("the request cannot be passed on: {error}");
            session.end(&failed(&line));
            audited.record("refused", 400, 0, 0);
            return status_response(StatusCode::BAD_REQUEST, &line);
        }
    };
    let mut response = match opened.client.send(upstream).await {
        Ok(response) => response,
        Err(error) => {
            let line = format!(
                "the Kubernetes API cannot be reached: {}",
                crate::pods::first_line(&error.to_string())
            );
            session.end(&failed(&line));
            audited.record("refused", 503, 0, 0);
            return status_response(StatusCode::SERVICE_UNAVAILABLE, &line);
        }
    };
    let code = response.status();
    audited.record("opened", code.as_u16(), 0, 0);
    if code != StatusCode::SWITCHING_PROTOCOLS {
        // The API server's own refusal (a Status), passed through as it is.
        session.end(&failed(&format!("the API server answered {code}")));
        let (parts, body) = response.into_parts();
        let mut out = Response::new(body.map_err(|e| Box::new(e) as _).boxed_unsync());
        *out.status_mut() = parts.status;
        for (name, value) in parts.headers.iter().filter(|(n, _)| passed_on(n)) {
            out.headers_mut().append(name, value.clone());
        }
        return out;
    }
    let mut out = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in response.headers() {
        if name != header::CONTENT_LENGTH {
            out.headers_mut().append(name, value.clone());
        }
    }
    let protocol = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let relay = if info.subresource == "portforward" {
        Relay::Bytes
    } else if websocket && protocol.ends_with("channel.k8s.io") && !protocol.starts_with("base64") {
        Relay::Channels
    } else if !websocket {
        Relay::Spdy
    } else {
        Relay::Bytes
    };
    let client_side = hyper::upgrade::on(&mut request);
    let upstream_side = hyper::upgrade::on(&mut response);
    let (revoked_tx, revoked_rx) = tokio::sync::watch::channel(None);
    let context = session.context(&opened.identity.user, shared.control(revoked_rx));
    let watch = {
        let (shared, credential, address) = (
            shared.clone(),
            opened.verified.credential.clone(),
            opened.peer.ip(),
        );
        tokio::spawn(async move {
            let reason = gate::revoked(&shared, &credential, address).await;
            revoked_tx.send_replace(Some(reason));
        })
    };
    tokio::spawn(async move {
        let started = Instant::now();
        let outcome = match (client_side.await, upstream_side.await) {
            (Ok(client), Ok(upstream)) => {
                let (client, upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                let traffic = context.traffic.clone();
                let recorder = context.recorder.as_ref();
                let carried = async {
                    match relay {
                        Relay::Channels if recorder.is_none() => {
                            carry_scanned(client, upstream, &traffic).await
                        }
                        Relay::Channels => relay_frames(client, upstream, &traffic, recorder).await,
                        Relay::Spdy => relay_spdy(client, upstream, &traffic, recorder).await,
                        Relay::Bytes => carry_bytes(client, upstream, &traffic).await,
                    }
                };
                match supervise(
                    &context.control,
                    &traffic,
                    &Silent,
                    crate::session::control::Tell::Nothing,
                    carried,
                )
                .await
                {
                    Ok(outcome) => outcome,
                    Err(interrupted) => Outcome::of(interrupted),
                }
            }
            (Err(error), _) | (_, Err(error)) => {
                Outcome::Failed(format!("the upgrade did not complete: {error}"))
            }
        };
        watch.abort();
        tracing::debug!(elapsed = ?started.elapsed(), ?outcome, "kube_proxy: stream ended");
        session.end(&Report {
            outcome,
            bytes_in: context.traffic.bytes_in.load(Ordering::Relaxed),
            bytes_out: context.traffic.bytes_out.load(Ordering::Relaxed),
        });
    });
    out
}

fn failed(line: &str) -> Report {
    Report {
        outcome: Outcome::Failed(line.to_string()),
        bytes_in: 0,
        bytes_out: 0,
    }
}

type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// How an upgraded stream is carried.
#[derive(Clone, Copy)]
enum Relay {
    /// The WebSocket channel protocol: message by message when there is a
    /// recording to make, else as bytes with the server's frames read as
    /// they pass for the exit status (`carry_scanned`).
    Channels,
    /// SPDY/3.1, frame by frame.
    Spdy,
    /// Bytes both ways (port-forward, or a protocol the door does not read).
    Bytes,
}

/// An exec or attach over SPDY, frame by frame: the client's SYN_STREAMs
/// say which stream is stdin, stdout, stderr, error or resize; what a
/// terminal shows is recorded, and the error stream's `Status` gives the
/// exit status. Each direction's header compression is its own, so every
/// frame is read with one side's state and written with the other's.
async fn relay_spdy(
    client: Upgraded,
    upstream: Upgraded,
    traffic: &Activity,
    recorder: Option<&Recorder>,
) -> Outcome {
    use crate::spdy::{Frame, HeaderCompressor, HeaderDecompressor};
    use tokio::io::AsyncWriteExt;
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let kinds: std::sync::Mutex<std::collections::HashMap<u32, String>> = Default::default();
    let kind_of = |id: u32| {
        kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .unwrap_or_default()
    };
    let exit = std::sync::Mutex::new(None::<u32>);
    let to_upstream = async {
        let (mut inflate, mut deflate) =
            (HeaderDecompressor::default(), HeaderCompressor::default());
        loop {
            let Ok(Some(frame)) = crate::spdy::read_frame(&mut client_read, &mut inflate).await
            else {
                return Outcome::ClientGone;
            };
            match &frame {
                Frame::SynStream {
                    stream_id, headers, ..
                } => {
                    if let Some(kind) = headers.get("streamtype") {
                        kinds
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(*stream_id, kind.to_string());
                    }
                }
                Frame::Data {
                    stream_id, data, ..
                } => {
                    traffic
                        .bytes_in
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    if let Some(recorder) = recorder {
                        match kind_of(*stream_id).as_str() {
                            "stdin" => recorder.input(data).await,
                            "resize" => {
                                // One JSON object per size, as kubectl writes them.
                                for line in data.split(|b| *b == b'\n') {
                                    if let Some((width, height)) = terminal_size(line) {
                                        recorder.resize(width, height).await;
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
            let Ok(bytes) = crate::spdy::encode(&frame, &mut deflate) else {
                return Outcome::Failed("a SPDY frame could not be passed on".into());
            };
            if upstream_write.write_all(&bytes).await.is_err() {
                return Outcome::Closed;
            }
        }
    };
    let to_client = async {
        let (mut inflate, mut deflate) =
            (HeaderDecompressor::default(), HeaderCompressor::default());
        loop {
            let frame = match crate::spdy::read_frame(&mut upstream_read, &mut inflate).await {
                Ok(Some(frame)) => frame,
                Ok(None) | Err(_) => {
                    let _ = client_write.shutdown().await;
                    return Outcome::Closed;
                }
            };
            if let Frame::Data {
                stream_id, data, ..
            } = &frame
            {
                traffic
                    .bytes_out
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                match kind_of(*stream_id).as_str() {
                    "stdout" | "stderr" => {
                        if let Some(recorder) = recorder {
                            recorder.output(data).await;
                        }
                    }
                    "error" => {
                        if let Some(code) = exit_status(data) {
                            *exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(code);
                        }
                    }
                    _ => {}
                }
            }
            let Ok(bytes) = crate::spdy::encode(&frame, &mut deflate) else {
                return Outcome::Failed("a SPDY frame could not be passed on".into());
            };
            if client_write.write_all(&bytes).await.is_err() {
                return Outcome::ClientGone;
            }
        }
    };
    let outcome = tokio::select! {
        outcome = to_upstream => outcome,
        outcome = to_client => outcome,
    };
    // A stream that carried an exit status ended with it, however the
    // connections closed after.
    let exit = *exit.lock().unwrap_or_else(|p| p.into_inner());
    match (exit, outcome) {
        (Some(code), Outcome::Closed | Outcome::ClientGone) => Outcome::Exited(code),
        (_, outcome) => outcome,
    }
}

/// SPDY, or a WebSocket protocol the door does not read: bytes both ways.
async fn carry_bytes(mut client: Upgraded, mut upstream: Upgraded, traffic: &Activity) -> Outcome {
    let mut client = crate::session::control::Counted::new(&mut client, traffic);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok(_) => Outcome::Closed,
        Err(_) => Outcome::ClientGone,
    }
}

/// The channel protocol with nothing to record: bytes both ways, the
/// server's (unmasked) frames read as they pass for the exit status.
async fn carry_scanned(client: Upgraded, upstream: Upgraded, traffic: &Activity) -> Outcome {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut client = crate::session::control::Counted::new(client, traffic);
    let (mut client_read, mut client_write) = tokio::io::split(&mut client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let mut scanner = FrameScanner::default();
    let mut checker = FrameScanner::client();
    let inbound = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => {
                    let _ = upstream_write.shutdown().await;
                    return Outcome::ClientGone;
                }
                Ok(read) => read,
            };
            // What is no WebSocket frame ends this stream here, not at
            // the API server.
            if !checker.feed(&buffer[..read]) {
                return Outcome::Failed(
                    "the client sent bytes that are not WebSocket frames".into(),
                );
            }
            if upstream_write.write_all(&buffer[..read]).await.is_err() {
                return Outcome::Closed;
            }
        }
    };
    let outbound = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match upstream_read.read(&mut buffer).await {
                Ok(0) | Err(_) => {
                    let _ = client_write.shutdown().await;
                    return Outcome::Closed;
                }
                Ok(read) => read,
            };
            scanner.feed(&buffer[..read]);
            if client_write.write_all(&buffer[..read]).await.is_err() {
                return Outcome::ClientGone;
            }
        }
    };
    let outcome = tokio::select! {
        outcome = inbound => outcome,
        outcome = outbound => outcome,
    };
    match (scanner.exit, outcome) {
        (Some(code), Outcome::Closed | Outcome::ClientGone) => Outcome::Exited(code),
        (_, outcome) => outcome,
    }
}

/// Reads WebSocket frames of a channel-protocol stream as they pass, in
/// whatever pieces they arrive. On the server's side it keeps the exit
/// status of the error channel (3); on the client's it checks that what
/// passes is frames at all. Server frames are unmasked and client frames
/// masked (RFC 6455 §5.1); no extension was negotiated, so no RSV bit is
/// set; only the defined opcodes occur. Anything else is not a frame.
#[derive(Default)]
struct FrameScanner {
    /// Whether the frames are a client's (masked).
    masked: bool,
    /// The header of the frame being read, until it is complete.
    head: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// The current message's channel, once its first payload byte is seen.
    channel: Option<u8>,
    /// Whether the next payload byte is the first of a data message.
    first: bool,
    /// Whether the current frame ends its message.
    fin: bool,
    /// Whether the current frame is a control frame (ping, pong, close),
    /// which may come between a message's fragments and is not its data.
    control: bool,
    /// The error channel's message so far (bounded).
    status: Vec<u8>,
    exit: Option<u32>,
    /// Set at the first bytes that are no frame: nothing after is read.
    invalid: bool,
}

impl FrameScanner {
    const MAX_STATUS: usize = 64 * 1024;

    /// A scanner for a client's frames.
    fn client() -> FrameScanner {
        FrameScanner {
            masked: true,
            ..Default::default()
        }
    }

    /// Reads `bytes`; false once what passed is not WebSocket frames.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() && !self.invalid {
            if self.remaining == 0 && !self.header_done() {
                let want = self.header_len().saturating_sub(self.head.len()).max(1);
                let take = want.min(bytes.len());
                self.head.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.header_done() {
                    self.start_frame();
                }
                continue;
            }
            let take = (self.remaining.min(bytes.len() as u64)) as usize;
            self.payload(&bytes[..take]);
            bytes = &bytes[take..];
            self.remaining -= take as u64;
            if self.remaining == 0 {
                self.end_frame();
            }
        }
        !self.invalid
    }

    /// The header's length, as far as the bytes seen tell.
    fn header_len(&self) -> usize {
        match self.head.get(1) {
            None => 2,
            Some(b) => {
                let extended = match b & 0x7f {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                2 + extended + if b & 0x80 != 0 { 4 } else { 0 }
            }
        }
    }

    fn header_done(&self) -> bool {
        self.head.len() >= 2 && self.head.len() >= self.header_len()
    }

    fn start_frame(&mut self) {
        let (b0, b1) = (self.head[0], self.head[1]);
        let opcode = b0 & 0x0f;
        if (b1 & 0x80 != 0) != self.masked
            || b0 & 0x70 != 0
            || !matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10)
        {
            self.invalid = true;
            return;
        }
        let length = match b1 & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            127 => u64::from_be_bytes(self.head[2..10].try_into().unwrap_or([0xff; 8])),
            short => u64::from(short),
        };
        self.control = opcode >= 8;
        if !self.control {
            self.fin = b0 & 0x80 != 0;
        }
        if matches!(opcode, 1 | 2) {
            // A new text or binary message: its first byte is the channel.
            self.channel = None;
            self.first = true;
            self.status.clear();
        }
        self.head.clear();
        self.remaining = length;
        if self.remaining == 0 {
            self.end_frame();
        }
    }

    fn payload(&mut self, mut data: &[u8]) {
        if self.control {
            return;
        }
        if self.first
            && let Some((&channel, rest)) = data.split_first()
        {
            self.channel = Some(channel);
            self.first = false;
            data = rest;
        }
        if self.channel == Some(3) && self.status.len() + data.len() <= Self::MAX_STATUS {
            self.status.extend_from_slice(data);
        }
    }

    fn end_frame(&mut self) {
        if !self.control && self.fin && self.channel == Some(3) && !self.status.is_empty() {
            if let Some(code) = exit_status(&self.status) {
                self.exit = Some(code);
            }
            self.status.clear();
        }
    }
}

/// The channel protocol (`v4`/`v5.channel.k8s.io`), frame by frame:
/// stdin (channel 0) and resizes (4) from the client, stdout (1), stderr
/// (2) and the exit status (3) from the container; what a terminal shows
/// is recorded.
async fn relay_frames(
    client: Upgraded,
    upstream: Upgraded,
    traffic: &Activity,
    recorder: Option<&Recorder>,
) -> Outcome {
    use futures::FutureExt;
    let client = WebSocketStream::from_raw_socket(client, Role::Server, None).await;
    let upstream = WebSocketStream::from_raw_socket(upstream, Role::Client, None).await;
    let (mut client_tx, mut client_rx) = client.split();
    let (mut upstream_tx, mut upstream_rx) = upstream.split();
    let exit = std::sync::Mutex::new(None::<u32>);
    // Each direction feeds messages on and flushes only once nothing more
    // is ready, so a busy stream is written in large TLS records.
    let inbound = async {
        loop {
            let message = match client_rx.next().now_or_never() {
                Some(message) => message,
                None => {
                    if upstream_tx.flush().await.is_err() {
                        return Outcome::Closed;
                    }
                    client_rx.next().await
                }
            };
            let Some(Ok(message)) = message else {
                let _ = upstream_tx.close().await;
                return Outcome::ClientGone;
            };
            if let Some(data) = payload(&message) {
                traffic
                    .bytes_in
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if let (Some(recorder), Some((&channel, rest))) = (recorder, data.split_first()) {
                    match channel {
                        0 => recorder.input(rest).await,
                        4 => {
                            if let Some((width, height)) = terminal_size(rest) {
                                recorder.resize(width, height).await;
                            }
                        }
                        _ => {}
                    }
                }
            }
            // Pings are answered by each side's own WebSocket.
            if matches!(message, Message::Ping(_) | Message::Pong(_)) {
                continue;
            }
            let closing = matches!(message, Message::Close(_));
            if upstream_tx.feed(message).await.is_err() {
                return Outcome::Closed;
            }
            if closing {
                let _ = upstream_tx.flush().await;
                return Outcome::ClientGone;
            }
        }
    };
    let outbound = async {
        loop {
            let message = match upstream_rx.next().now_or_never() {
                Some(message) => message,
                None => {
                    if client_tx.flush().await.is_err() {
                        return Outcome::ClientGone;
                    }
                    upstream_rx.next().await
                }
            };
            let Some(Ok(message)) = message else {
                let _ = client_tx.close().await;
                return Outcome::Closed;
            };
            if let Some(data) = payload(&message) {
                traffic
                    .bytes_out
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                match data.split_first() {
                    Some((1 | 2, rest)) => {
                        if let Some(recorder) = recorder {
                            recorder.output(rest).await;
                        }
                    }
                    Some((3, rest)) => {
                        if let Some(code) = exit_status(rest) {
                            *exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(code);
                        }
                    }
                    _ => {}
                }
            }
            if matches!(message, Message::Ping(_) | Message::Pong(_)) {
                continue;
            }
            let closing = matches!(message, Message::Close(_));
            if client_tx.feed(message).await.is_err() {
                return Outcome::ClientGone;
            }
            if closing {
                let _ = client_tx.flush().await;
                return Outcome::Closed;
            }
        }
    };
    let outcome = tokio::select! {
        outcome = inbound => outcome,
        outcome = outbound => outcome,
    };
    // A stream that carried an exit status ended with it, however the
    // connections closed after.
    let exit = *exit.lock().unwrap_or_else(|p| p.into_inner());
    match (exit, outcome) {
        (Some(code), Outcome::Closed | Outcome::ClientGone) => Outcome::Exited(code),
        (_, outcome) => outcome,
    }
}

/// A data message's bytes: binary, or text (the official Python client
/// sends stdin as text frames; the first byte is the channel either way).
fn payload(message: &Message) -> Option<&[u8]> {
    match message {
        Message::Binary(data) => Some(data),
        Message::Text(data) => Some(data.as_bytes()),
        _ => None,
    }
}

/// A resize message: `{"Width":W,"Height":H}`.
fn terminal_size(json: &[u8]) -> Option<(u32, u32)> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Size {
        width: u32,
        height: u32,
    }
    let size: Size = serde_json::from_slice(json).ok()?;
    Some((size.width, size.height))
}

/// The exit status in the error channel's `Status`: 0 for Success, the
/// `ExitCode` cause for a non-zero exit.
fn exit_status(json: &[u8]) -> Option<u32> {
    let status: serde_json::Value = serde_json::from_slice(json).ok()?;
    match status.get("status")?.as_str()? {
        "Success" => Some(0),
        _ => status
            .pointer("/details/causes")?
            .as_array()?
            .iter()
            .find(|cause| cause.get("reason").and_then(|r| r.as_str()) == Some("ExitCode"))?
            .get("message")?
            .as_str()?
            .parse()
            .ok(),
    }
}

/// A stream has no line of the bastion's to show: its client is kubectl,
/// which reads only the protocol. Ending it drops both connections.
struct Silent;

impl ClientOutput for Silent {
    fn stdout(&self) -> Writer {
        Box::new(tokio::io::sink())
    }
    fn stderr(&self) -> Writer {
        Box::new(tokio::io::sink())
    }
    async fn tell(&self, _line: &str, _tty: bool) {}
    async fn finish(&self, _code: u32) {}
    async fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_exit_status_and_the_terminal_size_kubectl_sends() {
        assert_eq!(
            exit_status(br#"{"metadata":{},"status":"Success"}"#),
            Some(0)
        );
        let failure = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(exit_status(failure), Some(3));
        assert_eq!(exit_status(b"garbage"), None);
        assert_eq!(
            terminal_size(br#"{"Width":120,"Height":40}"#),
            Some((120, 40))
        );
    }

    #[test]
    fn the_scanner_finds_the_exit_status_in_frames_cut_anywhere() {
        // Server frames (unmasked): stdout data, a ping between the error
        // message's two fragments, and the error channel's Status.
        let frame = |fin: bool, opcode: u8, payload: &[u8]| {
            let mut out = vec![(u8::from(fin) << 7) | opcode];
            if payload.len() < 126 {
                out.push(payload.len() as u8);
            } else {
                out.push(126);
                out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
            out.extend_from_slice(payload);
            out
        };
        let status = br#"{"metadata":{},"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"42"}]}}"#;
        let mut stdout = vec![1u8];
        stdout.extend_from_slice(&[b'x'; 300]);
        let (head, tail) = status.split_at(30);
        let mut first = vec![3u8];
        first.extend_from_slice(head);
        let stream = [
            frame(true, 2, &stdout),
            frame(false, 2, &first),
            frame(true, 9, b"ping"),
            frame(true, 0, tail),
        ]
        .concat();
        for piece in [1, 2, 3, 7, 64, stream.len()] {
            let mut scanner = FrameScanner::default();
            for chunk in stream.chunks(piece) {
                scanner.feed(chunk);
            }
            assert_eq!(scanner.exit, Some(42), "pieces of {piece}");
        }
        let mut success = FrameScanner::default();
        success.feed(&frame(
            true,
            2,
            b"\x03{\"metadata\":{},\"status\":\"Success\"}",
        ));
        assert_eq!(success.exit, Some(0));
        // A client's frames are masked; bytes that are no frame are told.
        let mut client = FrameScanner::client();
        assert!(client.feed(&[0x82, 0x85, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
        assert!(!client.feed(&[0xff; 16]));
        assert!(!FrameScanner::client().feed(&frame(true, 2, b"unmasked")));
    }

    #[test]
    fn the_audited_command_line_quotes_what_a_shell_would_split() {
        let argv = ["sh", "-c", "echo it's"].map(String::from);
        assert_eq!(command_line(&argv), r"sh -c 'echo it'\''s'");
        assert_eq!(
            Asked::of("command=ls&command=%2F&tty=true&container=app").command,
            ["ls", "/"]
        );
    }
}
