//! `pods/exec`, as the API server checks it and the kubelet runs it.
//!
//! The checks before any upgrade (authorization with the transport's verb,
//! pod, container, node, running state) answer exactly as the real server
//! does, on the WebSocket and SPDY paths alike. After the upgrade the
//! command runs as a local process (`sim::runtime`) and its streams are
//! carried over WebSocket (`v5.channel.k8s.io`/`v4.channel.k8s.io`) or
//! SPDY/3.1 (`v4.channel.k8s.io` streams typed by `streamType`).

use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;

use super::api::{Target, param};
use super::body::{Body, empty};
use super::rbac::{self, Attributes, UserInfo};
use super::runtime::{self, Process, ProcessSpec};
use super::status::{ApiError, exec_start_failure, exec_status, plain_response};
use super::{Sim, until_cut};

/// Output is read from the process in chunks of this size: big enough that
/// bulk transfers cost one WebSocket message per 64 KiB.
pub const CHUNK: usize = 64 * 1024;

/// The WebSocket channel protocol served for an exec or attach: the
/// client's first offer this API server speaks. v5 (with the stdin close
/// signal) is served from 1.30, when the API server's
/// TranslateStreamCloseWebsocketRequests went beta and on by default
/// (KEP-4006); before, v4 is the newest.
pub fn channel_protocol(sim: &Sim, request: &Request<Incoming>) -> Result<String, ApiError> {
    let offered = offered_protocols(request);
    let supported: &[&str] = if sim.minor >= 30 {
        &["v5.channel.k8s.io", "v4.channel.k8s.io"]
    } else {
        &["v4.channel.k8s.io"]
    };
    offered
        .iter()
        .find(|p| supported.contains(&p.as_str()))
        .cloned()
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to upgrade: requested protocol(s) are not supported: {offered:?}; supports [{}]",
                supported.join(" ")
            ))
        })
}

/// Stream channels of the Kubernetes remotecommand protocol.
pub mod channel {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const ERROR: u8 = 3;
    pub const RESIZE: u8 = 4;
    /// v5 only: `[CLOSE, channel]` half-closes that channel.
    pub const CLOSE: u8 = 255;
}

/// How a request asks to be upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Spdy,
}

pub fn transport(request: &Request<Incoming>) -> Option<Transport> {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())?
        .to_ascii_lowercase();
    if upgrade == "websocket" {
        Some(Transport::WebSocket)
    } else if upgrade.starts_with("spdy/3.1") {
        Some(Transport::Spdy)
    } else {
        None
    }
}

/// The verb the API server authorizes a streaming request with: a WebSocket
/// GET is `get` up to 1.34 and `create` from 1.35
/// (AuthorizePodWebsocketUpgradeCreatePermission); SPDY's POST is `create`.
pub fn verb(sim: &Sim, transport: Transport) -> &'static str {
    match transport {
        Transport::WebSocket if sim.minor <= 34 => "get",
        _ => "create",
    }
}

pub fn authorize(
    sim: &Sim,
    user: &UserInfo,
    target: &Target,
    transport: Transport,
) -> Result<(), ApiError> {
    let attributes = Attributes {
        verb: verb(sim, transport).into(),
        api_group: String::new(),
        resource: "pods".into(),
        subresource: target.subresource.clone(),
        namespace: target.namespace.clone(),
        name: target.name.clone(),
    };
    if rbac::allowed(&sim.store, user, &attributes) {
        Ok(())
    } else {
        Err(ApiError::forbidden(attributes.forbidden_message(user)))
    }
}

/// The subprotocols a WebSocket client offers, in its order of preference.
pub fn offered_protocols(request: &Request<Incoming>) -> Vec<String> {
    request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// A close frame with status 1000: clients read the error channel to its
/// end, and only a normal closure ends it cleanly.
pub fn normal_close() -> Message {
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// Answers a WebSocket upgrade with `protocol` (101 Switching Protocols).
pub fn websocket_accept(
    request: &Request<Incoming>,
    protocol: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let key = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(protocol) = protocol {
        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    Ok(response.body(empty()).expect("valid upgrade headers"))
}

pub async fn websocket<S>(io: S) -> WebSocketStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(16 << 20);
    config.max_frame_size = Some(16 << 20);
    WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
}

fn flag(params: &[(String, String)], name: &str) -> bool {
    param(params, name).is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Everything decided before the upgrade: what to run, attached how.
struct Plan {
    spec: ProcessSpec,
    namespace: String,
    pod: String,
}

/// The API server's and kubelet's checks, in their order.
fn plan(
    sim: &Sim,
    target: &Target,
    params: &[(String, String)],
) -> Result<Plan, Box<Response<Body>>> {
    let error = |e: ApiError| Box::new(e.into_response());
    let pod = super::api::get(sim, target).map_err(error)?;
    let (stdin, stdout, stderr, tty) = (
        flag(params, "stdin"),
        flag(params, "stdout"),
        flag(params, "stderr"),
        flag(params, "tty"),
    );
    if !stdin && !stdout && !stderr {
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
    // The API server dials the node's kubelet before the kubelet looks for
    // the container: a node whose kubelet is down fails the dial, and the
    // error (not an API status) is answered as a 500 without a reason.
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
    if !container_running(&pod, &container) {
        return Err(Box::new(plain_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("container not found (\"{container}\")"),
        )));
    }
    let argv: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if argv.is_empty() {
        return Err(error(ApiError::bad_request("you must specify a command")));
    }
    let spec_container = container_spec(&pod, &container).unwrap_or(json!({}));
    let privileged = spec_container.pointer("/securityContext/privileged") == Some(&json!(true));
    let host_pid = pod.pointer("/spec/hostPID") == Some(&json!(true));
    // `nsenter --target 1 ... -- CMD` in a privileged hostPID pod enters the
    // node: the simulator runs CMD as the node's host shell.
    let host_command = (privileged && host_pid && argv[0].rsplit('/').next() == Some("nsenter"))
        .then(|| {
            argv.iter()
                .position(|a| a == "--")
                .map(|i| argv[i + 1..].to_vec())
        })
        .flatten()
        .filter(|rest| !rest.is_empty());
    // An exec into an isolated container runs inside it; an ephemeral
    // container's processes share its target's namespaces.
    let own = sim
        .runtime
        .main_process(&target.namespace, &target.name, &container)
        .and_then(|main| main.namespaces)
        .filter(|_| host_command.is_none());
    let isolation = match own {
        Some(pid) => super::runtime::Isolation::Enter { pid },
        None => {
            super::container::join_target(sim, &target.namespace, &target.name, &spec_container)
        }
    };
    let hostname = match &host_command {
        Some(_) => node.to_string(),
        None => super::container::pod_hostname(&pod, &target.name),
    };
    let (argv, mut env, cwd, executables) = match host_command {
        Some(rest) => {
            let dir = sim.runtime.node_dir(node);
            let env = vec![
                ("PATH".into(), host_path()),
                ("HOSTNAME".into(), node.to_string()),
                ("HOME".into(), dir.display().to_string()),
            ];
            (rest, env, dir, None)
        }
        None => {
            let image = spec_container["image"].as_str().unwrap_or_default();
            (
                argv,
                container_env(
                    sim,
                    &target.namespace,
                    &target.name,
                    &container,
                    &spec_container,
                ),
                sim.runtime
                    .container_dir(&target.namespace, &target.name, &container),
                sim.scenario.image(image).executables,
            )
        }
    };
    if tty {
        // containerd sets TERM for tty execs.
        env.push(("TERM".into(), "xterm".into()));
    }
    Ok(Plan {
        spec: ProcessSpec {
            argv,
            env,
            cwd,
            tty,
            stdin,
            stdout,
            stderr: stderr && !tty,
            executables,
            isolation,
            hostname: Some(hostname),
        },
        namespace: target.namespace.clone(),
        pod: target.name.clone(),
    })
}

/// `$PATH` for processes: this machine's.
pub fn host_path() -> String {
    std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
}

/// A container's environment as the kubelet sets it: `PATH`, the spec's
/// `env`, `HOSTNAME` (the pod's name) and `HOME` (here the container's
/// working directory).
pub fn container_env(
    sim: &Sim,
    namespace: &str,
    pod: &str,
    container: &str,
    spec: &Value,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![("PATH".into(), host_path())];
    for var in spec["env"].as_array().into_iter().flatten() {
        if let (Some(k), Some(v)) = (var["name"].as_str(), var["value"].as_str()) {
            env.push((k.into(), v.into()));
        }
    }
    env.push(("HOSTNAME".into(), pod.to_string()));
    let dir = sim.runtime.container_dir(namespace, pod, container);
    env.push(("HOME".into(), dir.display().to_string()));
    env
}

/// Every container of a pod in the API server's order (init, regular,
/// ephemeral), as `podutil.VisitContainers` walks them.
pub fn all_containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|list| pod["spec"][list].as_array().into_iter().flatten())
        .collect()
}

/// A container's spec by name, ephemeral containers included.
pub fn container_spec(pod: &Value, name: &str) -> Option<Value> {
    all_containers(pod)
        .into_iter()
        .find(|c| c["name"] == name)
        .cloned()
}

/// The API server's `validateContainer` for exec, attach and logs: the
/// named container must be one of the pod's (any kind); without a name, a
/// pod with one container means that one.
pub fn choose_container(
    pod: &Value,
    requested: Option<&str>,
    pod_name: &str,
) -> Result<String, ApiError> {
    let names: Vec<&str> = all_containers(pod)
        .into_iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    match requested.filter(|c| !c.is_empty()) {
        Some(name) if names.contains(&name) => Ok(name.to_string()),
        Some(name) => Err(ApiError::bad_request(format!(
            "container {name} is not valid for pod {pod_name}"
        ))),
        None => {
            let regular = pod["spec"]["containers"].as_array().map_or(0, Vec::len);
            match regular {
                1 => Ok(pod["spec"]["containers"][0]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()),
                0 => Err(ApiError::bad_request(format!(
                    "pod {pod_name} does not have a container"
                ))),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    names.join(" ")
                ))),
            }
        }
    }
}

/// A container's status by name, from whichever list holds it.
pub fn container_status(pod: &Value, name: &str) -> Option<Value> {
    [
        "initContainerStatuses",
        "containerStatuses",
        "ephemeralContainerStatuses",
    ]
    .iter()
    .flat_map(|list| pod["status"][list].as_array().into_iter().flatten())
    .find(|s| s["name"] == name)
    .cloned()
}

/// Whether the kubelet has the container running.
pub fn container_running(pod: &Value, name: &str) -> bool {
    container_status(pod, name).is_some_and(|s| s.pointer("/state/running").is_some())
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
    let plan = match plan(&sim, target, &params) {
        Ok(plan) => plan,
        Err(response) => return Ok(*response),
    };
    match transport {
        Transport::WebSocket => {
            let protocol = channel_protocol(&sim, &request)?;
            let response = websocket_accept(&request, Some(&protocol))?;
            let cut = sim.cut_signal();
            tokio::spawn(async move {
                match hyper::upgrade::on(request).await {
                    Ok(upgraded) => {
                        let ws = websocket(TokioIo::new(upgraded)).await;
                        let v5 = protocol == "v5.channel.k8s.io";
                        run_websocket(sim, plan, ws, v5, cut).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "exec upgrade failed"),
                }
            });
            Ok(response)
        }
        Transport::Spdy => {
            super::spdy_exec::accept(sim, request, plan.spec, plan.namespace, plan.pod)
        }
    }
}

/// Copies one output stream of the process into `sink` as messages; if the
/// client is gone it keeps reading and discarding, so the process is not
/// blocked or killed by its client's departure (as with containerd).
pub async fn pump<R>(mut reader: R, sink: mpsc::Sender<(u8, Bytes)>, channel: u8)
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut connected = true;
    let mut buffer = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if connected
                    && sink
                        .send((channel, Bytes::copy_from_slice(&buffer[..n])))
                        .await
                        .is_err()
                {
                    connected = false;
                }
            }
        }
    }
}

/// Waits for the process and gives its status JSON (or the start failure).
pub async fn finish(
    sim: &Sim,
    plan_namespace: &str,
    plan_pod: &str,
    mut process: Process,
    argv: &[String],
) -> Value {
    let status = process.child.wait().await;
    sim.runtime.exited(plan_namespace, plan_pod, process.pid);
    match status {
        Ok(status) => exec_status(runtime::exit_code(status), argv),
        Err(e) => exec_start_failure(&argv[0], &e),
    }
}

/// Handles a resize message (`{"Width": W, "Height": H}`).
pub fn resize(terminal: Option<&runtime::Terminal>, json: &[u8]) {
    #[derive(serde::Deserialize)]
    struct Size {
        #[serde(rename = "Width")]
        width: u16,
        #[serde(rename = "Height")]
        height: u16,
    }
    if let (Some(terminal), Ok(size)) = (terminal, serde_json::from_slice::<Size>(json)) {
        terminal.resize(size.width, size.height);
    }
}

async fn run_websocket<S>(
    sim: Arc<Sim>,
    plan: Plan,
    ws: WebSocketStream<S>,
    v5: bool,
    cut: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    // Eight 64 KiB messages in flight bound what a slow client costs.
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Bytes)>(8);
    // At a cut the writer drops its half of the connection at once, and the
    // input task below its other half: the client sees the connection end
    // without a status. The pumps then read and discard, as when a client
    // goes away.
    let writer = tokio::spawn(until_cut(cut.clone(), async move {
        while let Some((channel, data)) = out_rx.recv().await {
            let mut message = Vec::with_capacity(data.len() + 1);
            message.push(channel);
            message.extend_from_slice(&data);
            if sink.send(Message::binary(message)).await.is_err() {
                return;
            }
        }
        let _ = sink.send(normal_close()).await;
        let _ = sink.close().await;
    }));
    let mut process = match sim.runtime.spawn(&plan.namespace, &plan.pod, &plan.spec) {
        Ok(process) => process,
        Err(e) => {
            let status = exec_start_failure(&plan.spec.argv[0], &e);
            let _ = out_tx
                .send((channel::ERROR, Bytes::from(status.to_string())))
                .await;
            drop(out_tx);
            let _ = writer.await;
            return;
        }
    };
    let mut pumps = Vec::new();
    if let Some(stdout) = process.stdout.take() {
        pumps.push(tokio::spawn(pump(stdout, out_tx.clone(), channel::STDOUT)));
    }
    if let Some(stderr) = process.stderr.take() {
        pumps.push(tokio::spawn(pump(stderr, out_tx.clone(), channel::STDERR)));
    }
    let mut stdin = process.stdin.take();
    let terminal = process.terminal.clone();
    // The loop is cancelled wherever it waits at a cut (also while writing
    // to a process that does not read its stdin), dropping `source`.
    let input = tokio::spawn(until_cut(cut, async move {
        loop {
            // apimachinery's wsstream reads a text frame into bytes like a
            // binary one: the Python client sends stdin and resize as text.
            let data = match source.next().await {
                Some(Ok(Message::Binary(data))) => data,
                Some(Ok(Message::Text(text))) => Bytes::from(text.as_bytes().to_vec()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            };
            match (data.first().copied(), v5) {
                (Some(channel::STDIN), _) => {
                    if let Some(writer) = stdin.as_mut()
                        && writer.write_all(&data[1..]).await.is_err()
                    {
                        stdin = None;
                    }
                }
                (Some(channel::RESIZE), _) => resize(terminal.as_ref(), &data[1..]),
                (Some(channel::CLOSE), true) if data.get(1) == Some(&channel::STDIN) => {
                    if let Some(mut writer) = stdin.take() {
                        let _ = writer.shutdown().await;
                    }
                }
                _ => {}
            }
        }
        // The client is gone: its stdin ends; the process itself lives on.
        drop(stdin);
    }));
    for pump in pumps {
        let _ = pump.await;
    }
    let status = finish(&sim, &plan.namespace, &plan.pod, process, &plan.spec.argv).await;
    let _ = out_tx
        .send((channel::ERROR, Bytes::from(status.to_string())))
        .await;
    drop(out_tx);
    let _ = writer.await;
    input.abort();
}
