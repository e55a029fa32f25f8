//! An exec as the WebSocket channel protocol itself (`v5.channel.k8s.io`,
//! else `v4.channel.k8s.io`): one frame per chunk of input, output frames
//! handed on as they come. The one exec client of kbastion: sessions use
//! it directly (`bridge`), the file services through `process`. kube's
//! `AttachedProcess` puts pipes and 4 KiB reads between the client and the
//! socket and keeps a 128 KiB read buffer per exec; this speaks the same
//! protocol, through the same client (its authentication and
//! impersonation), with a 16 KiB read buffer and no pipes.
//!
//! The upgrade and its errors are kube's (`Client::connect`): a 4xx/5xx
//! answer is the API's `Status`, anything else but 101 is a failed switch.

use bytes::{BufMut, Bytes, BytesMut};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use http::header::HeaderValue;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::client::UpgradeConnectionError;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::pods::{ExecTarget, TargetError, bounded};
use kube::api::AttachParams;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
/// v5: "this stream has ended" (followed by the stream's number).
const CLOSE: u8 = 255;

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";

/// The WebSocket's read buffer: tungstenite allocates and zero-fills it
/// per connection (128 KiB by default, most of an idle session's memory).
const READ_BUFFER: usize = 16 * 1024;

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Which streams an exec has.
#[derive(Debug, Clone, Copy)]
pub struct Streams {
    pub stdin: bool,
    /// A terminal: stderr is merged into stdout.
    pub tty: bool,
}

impl Streams {
    /// A session's streams: stdin, and stderr unless there is a terminal.
    pub fn session(tty: bool) -> Streams {
        Streams { stdin: true, tty }
    }
}

/// Why an exec did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Refused(kube::Error),
    #[error("{0}")]
    Timeout(String),
}

impl StartError {
    /// The line a user reads: who may not exec where, or what failed.
    pub fn explain(self, target: &ExecTarget, user: &str, verb: &str) -> TargetError {
        use kube::client::UpgradeConnectionError;
        match self {
            StartError::Timeout(message) => TargetError::Api(message),
            StartError::Refused(kube::Error::UpgradeConnection(
                UpgradeConnectionError::ProtocolSwitch(code),
            )) if code.as_u16() == 403 => TargetError::Forbidden(format!(
                "User \"{user}\" may not exec into pods in namespace \"{}\" (needs {verb} on pods/exec)",
                target.namespace
            )),
            StartError::Refused(kube::Error::UpgradeConnection(
                UpgradeConnectionError::ProtocolSwitch(code),
            )) => TargetError::Api(format!(
                "exec into {}/{} container {} was refused with HTTP {code}",
                target.namespace, target.pod, target.container
            )),
            StartError::Refused(other) => {
                crate::pods::api_error(other, || TargetError::Api("exec failed".into()))
            }
        }
    }
}

/// The exec request's streams for `target`'s container: stdout always,
/// stderr apart unless a terminal merges it.
pub fn attach_params(target: &ExecTarget, streams: &Streams) -> AttachParams {
    AttachParams {
        container: Some(target.container.clone()),
        stdin: streams.stdin,
        stdout: true,
        stderr: !streams.tty,
        tty: streams.tty,
        ..AttachParams::default()
    }
}

/// Opens the exec of `argv` in the target's container.
pub async fn open(
    target: &ExecTarget,
    argv: Vec<String>,
    streams: Streams,
    api_wait: std::time::Duration,
) -> Result<(ExecSender, ExecReceiver), StartError> {
    match bounded(api_wait, upgrade(target, argv, streams)).await {
        Ok(result) => result.map_err(StartError::Refused),
        Err(timeout) => Err(StartError::Timeout(timeout.to_string())),
    }
}

async fn upgrade(
    target: &ExecTarget,
    argv: Vec<String>,
    streams: Streams,
) -> Result<(ExecSender, ExecReceiver), kube::Error> {
    let params = attach_params(target, &streams);
    let request = kube::core::Request::new(target.pods.resource_url())
        .exec(&target.pod, argv, &params)
        .map_err(kube::Error::BuildRequest)?;
    let (mut parts, body) = request.into_parts();
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let headers = &mut parts.headers;
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        http::header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    headers.insert(
        http::header::SEC_WEBSOCKET_KEY,
        HeaderValue::from_str(&key).map_err(|e| kube::Error::HttpError(e.into()))?,
    );
    headers.insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
    );
    let client = target.pods.clone().into_client();
    let response = client
        .send(http::Request::from_parts(
            parts,
            kube::client::Body::from(body),
        ))
        .await?;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        let body = response.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&body);
        let failure = match serde_json::from_str::<kube::core::response::Status>(&text) {
            Ok(failure) => failure,
            Err(_) => {
                kube::core::response::Status::failure(text.trim(), "Failed to parse error data")
                    .with_code(status.as_u16())
            }
        };
        return Err(kube::Error::Api(failure.boxed()));
    }
    let close_signal = verify(&response, &key).map_err(kube::Error::UpgradeConnection)?;
    let upgraded = hyper::upgrade::on(response).await.map_err(|e| {
        kube::Error::UpgradeConnection(UpgradeConnectionError::GetPendingUpgrade(e))
    })?;
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let socket = Socket::from_raw_socket(TokioIo::new(upgraded), Role::Client, Some(config)).await;
    let (send, receive) = socket.split();
    Ok((ExecSender { send, close_signal }, ExecReceiver { receive }))
}

/// RFC 6455's checks of the answer, and the protocol chosen: whether it
/// has v5's close signal.
fn verify(
    response: &http::Response<kube::client::Body>,
    key: &str,
) -> Result<bool, UpgradeConnectionError> {
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(UpgradeConnectionError::ProtocolSwitch(response.status()));
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|h: &HeaderValue| h.to_str().ok())
    };
    if !header(http::header::UPGRADE).is_some_and(|h| h.eq_ignore_ascii_case("websocket")) {
        return Err(UpgradeConnectionError::MissingUpgradeWebSocketHeader);
    }
    if !header(http::header::CONNECTION).is_some_and(|h| h.eq_ignore_ascii_case("Upgrade")) {
        return Err(UpgradeConnectionError::MissingConnectionUpgradeHeader);
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    if header(http::header::SEC_WEBSOCKET_ACCEPT) != Some(accept.as_str()) {
        return Err(UpgradeConnectionError::SecWebSocketAcceptKeyMismatch);
    }
    match header(http::header::SEC_WEBSOCKET_PROTOCOL) {
        Some(V5) => Ok(true),
        Some(V4) => Ok(false),
        _ => Err(UpgradeConnectionError::SecWebSocketProtocolMismatch),
    }
}

/// The sending half: stdin, its end, terminal sizes, keepalive pings.
pub struct ExecSender {
    send: SplitSink<Socket, Message>,
    close_signal: bool,
}

impl ExecSender {
    /// Whether end of input can be signalled while output flows (v5).
    pub fn has_close_signal(&self) -> bool {
        self.close_signal
    }

    pub async fn stdin(
        &mut self,
        data: &[u8],
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        if data.is_empty() {
            return Ok(());
        }
        let mut frame = BytesMut::with_capacity(data.len() + 1);
        frame.put_u8(STDIN);
        frame.put_slice(data);
        self.send.send(Message::Binary(frame.freeze())).await
    }

    /// End of input: v5's close signal; on v4 the whole stream closes (as
    /// kube does), and output still on its way may be lost.
    pub async fn close_stdin(&mut self) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        if self.close_signal {
            self.send
                .send(Message::Binary(Bytes::from_static(&[CLOSE, STDIN])))
                .await
        } else {
            self.send.close().await
        }
    }

    pub async fn resize(
        &mut self,
        width: u16,
        height: u16,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let size = format!("{{\"Width\":{width},\"Height\":{height}}}");
        let mut frame = BytesMut::with_capacity(size.len() + 1);
        frame.put_u8(RESIZE);
        frame.put_slice(size.as_bytes());
        self.send.send(Message::Binary(frame.freeze())).await
    }

    pub async fn ping(&mut self) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.send.send(Message::Ping(Bytes::new())).await
    }
}

/// What the process sends.
#[derive(Debug)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
    /// The final status (the stream ends after it).
    Status(Box<Status>),
}

/// The receiving half.
pub struct ExecReceiver {
    receive: SplitStream<Socket>,
}

impl ExecReceiver {
    /// The next output, None at the stream's end (with or without status);
    /// a status that does not parse ends the stream as a lost one.
    pub async fn next(&mut self) -> Option<Output> {
        loop {
            let message = match self.receive.next().await? {
                Ok(message) => message,
                Err(error) => {
                    tracing::debug!(%error, "exec stream failed");
                    return None;
                }
            };
            let Message::Binary(frame) = message else {
                continue;
            };
            // A frame of only a channel number is sent at the start.
            if frame.len() < 2 {
                continue;
            }
            match frame[0] {
                STDOUT => return Some(Output::Stdout(frame.slice(1..))),
                STDERR => return Some(Output::Stderr(frame.slice(1..))),
                STATUS => {
                    return match serde_json::from_slice::<Status>(&frame[1..]) {
                        Ok(status) => Some(Output::Status(Box::new(status))),
                        Err(error) => {
                            tracing::debug!(%error, "exec status does not parse");
                            None
                        }
                    };
                }
                _ => continue,
            }
        }
    }
}
