//! Containers' main processes as the kubelet and containerd run them: the
//! process of a container's `command` (or its image's entrypoint), started
//! when the pod runs, its output written to the container's log in the CRI
//! log format and copied to every attached client, its stdin and terminal
//! shared by the attached clients; when it ends, the container's status
//! says so and the kubelet restarts it as the pod's `restartPolicy` asks
//! (ephemeral containers never restart).
//!
//! The log of each container instance is its own file, as the kubelet keeps
//! `/var/log/pods/NS_POD_UID/CONTAINER/N.log` (N the restart count): the
//! previous instance's file is what `pods/log?previous=true` serves.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, watch};

use super::Sim;
use super::runtime::{Isolation, ProcessSpec, Terminal, exit_code};
use super::store::{self, Key};

/// Output chunks kept for an attached client that reads slowly; a client
/// further behind loses the oldest (a container never waits for its
/// attached clients, as containerd's fifo copier does not).
const ATTACH_BACKLOG: usize = 256;

/// Keystrokes queued for the process's stdin.
const STDIN_QUEUE: usize = 64;

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A running main process and what attached clients share of it.
pub struct MainProcess {
    pub tty: bool,
    /// The process on this machine whose namespaces are the container's,
    /// for an isolated container (`runtime::Isolation`).
    pub namespaces: Option<i32>,
    pub terminal: Option<Terminal>,
    stdin: Option<mpsc::Sender<Bytes>>,
    output: broadcast::Sender<(Stream, Bytes)>,
    exit: watch::Receiver<Option<i32>>,
}

/// One attached client's view of a main process.
pub struct Attachment {
    pub output: broadcast::Receiver<(Stream, Bytes)>,
    pub stdin: Option<mpsc::Sender<Bytes>>,
    pub terminal: Option<Terminal>,
    pub exit: watch::Receiver<Option<i32>>,
}

impl MainProcess {
    pub fn attach(&self) -> Attachment {
        Attachment {
            output: self.output.subscribe(),
            stdin: self.stdin.clone(),
            terminal: self.terminal.clone(),
            exit: self.exit.clone(),
        }
    }
}

/// Where the kubelet keeps the log of one instance of a container.
pub fn log_path(sim: &Sim, pod: &Value, container: &str, instance: u64) -> PathBuf {
    let text = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or_default();
    sim.runtime
        .log_dir()
        .join(format!(
            "{}_{}_{}",
            text("/metadata/namespace"),
            text("/metadata/name"),
            text("/metadata/uid")
        ))
        .join(container)
        .join(format!("{instance}.log"))
}

/// The time as the CRI log and the kubelet's `timestamps=true` write it:
/// RFC 3339 with exactly nine fractional digits, in UTC.
pub fn log_timestamp(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Appends output to a CRI log file: one `TIME STREAM F TEXT` line per
/// complete line of output; a line still being written waits for its end
/// (or for the process's end) in `pending`.
struct LogWriter {
    file: tokio::fs::File,
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    async fn open(path: &std::path::Path) -> std::io::Result<LogWriter> {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        Ok(LogWriter {
            file,
            pending: [Vec::new(), Vec::new()],
        })
    }

    async fn write(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
        let pending = &mut self.pending[stream as usize];
        pending.extend_from_slice(data);
        let Some(last) = pending.iter().rposition(|b| *b == b'\n') else {
            return Ok(());
        };
        let complete: Vec<u8> = pending.drain(..=last).collect();
        let mut out = Vec::with_capacity(complete.len() + 64);
        let time = log_timestamp(chrono::Utc::now());
        for line in complete.split_inclusive(|b| *b == b'\n') {
            out.extend_from_slice(format!("{time} {} F ", stream.as_str()).as_bytes());
            out.extend_from_slice(line);
        }
        self.file.write_all(&out).await
    }

    /// The process ended: a last unterminated line is written whole (the
    /// reader gives it back without a newline, as the kubelet does).
    async fn finish(&mut self) -> std::io::Result<()> {
        let time = log_timestamp(chrono::Utc::now());
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.pending[stream as usize]);
            if !rest.is_empty() {
                let mut out = format!("{time} {} P ", stream.as_str()).into_bytes();
                out.extend_from_slice(&rest);
                out.push(b'\n');
                self.file.write_all(&out).await?;
            }
        }
        self.file.flush().await
    }
}

/// Which list of a pod's spec and status a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Ephemeral,
}

impl Kind {
    pub fn statuses(self) -> &'static str {
        match self {
            Kind::Regular => "containerStatuses",
            Kind::Ephemeral => "ephemeralContainerStatuses",
        }
    }
}

/// The argv a container runs: its `command` and `args`; for an ephemeral
/// container without a command, its image's entrypoint (what `kubectl
/// debug --image=busybox` relies on). A regular container without a
/// command runs nothing: the simulator does not pretend to know what an
/// arbitrary image starts, and a scenario's pods stay Running without one.
pub fn argv(sim: &Sim, spec: &Value, kind: Kind) -> Vec<String> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let mut argv = strings(&spec["command"]);
    if argv.is_empty() && kind == Kind::Ephemeral {
        argv = sim
            .scenario
            .image(spec["image"].as_str().unwrap_or_default())
            .entrypoint;
    }
    argv.extend(strings(&spec["args"]));
    argv
}

/// A pod's host name, as the kubelet sets it: `spec.hostname`, else the
/// pod's name (cut to 63 characters); a hostNetwork pod shares its
/// node's.
pub fn pod_hostname(pod: &Value, name: &str) -> String {
    if pod.pointer("/spec/hostNetwork") == Some(&json!(true)) {
        return pod["spec"]["nodeName"].as_str().unwrap_or(name).to_string();
    }
    let name = pod["spec"]["hostname"].as_str().unwrap_or(name);
    name.chars().take(63).collect()
}

/// The isolation of an ephemeral container's processes: in its target's
/// namespaces where the target is isolated, else none.
pub fn join_target(sim: &Sim, namespace: &str, pod: &str, spec: &Value) -> Isolation {
    let namespaces = spec["targetContainerName"]
        .as_str()
        .and_then(|target| sim.runtime.main_process(namespace, pod, target))
        .and_then(|main| main.namespaces);
    match namespaces {
        Some(pid) => Isolation::Join { pid },
        None => Isolation::None,
    }
}

fn new_container_id() -> String {
    format!(
        "containerd://{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// Sets a container's status in its pod (replacing the entry of that name).
fn set_status(pod: &mut Value, kind: Kind, status: Value) {
    let list = kind.statuses();
    let mut statuses: Vec<Value> = pod["status"][list]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s["name"] != status["name"])
        .collect();
    statuses.push(status);
    if kind == Kind::Regular {
        // Keep the spec's order, as the kubelet reports them.
        let order: Vec<Value> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["name"].clone())
            .collect();
        statuses.sort_by_key(|s| order.iter().position(|n| *n == s["name"]));
    }
    pod["status"][list] = json!(statuses);
}

/// The running state of a container instance, as the kubelet posts it.
pub fn running_status(
    spec: &Value,
    kind: Kind,
    container_id: &str,
    restart_count: u64,
    last: Option<&Value>,
) -> Value {
    let mut status = json!({
        "name": spec["name"], "image": spec["image"], "imageID": "",
        "containerID": container_id,
        "ready": kind == Kind::Regular, "restartCount": restart_count,
        "state": {"running": {"startedAt": store::now()}},
    });
    if kind == Kind::Regular {
        status["started"] = json!(true);
    }
    status["lastState"] = last.map_or(json!({}), |t| json!({"terminated": t}));
    status
}

/// Starts every container of a pod that has just become Running.
pub fn start_all(sim: &Arc<Sim>, key: &Key) {
    let Some(pod) = sim.store.get(key) else {
        return;
    };
    for spec in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let id = pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|s| s["name"] == spec["name"])
            .and_then(|s| s["containerID"].as_str())
            .unwrap_or_default()
            .to_string();
        // start_pod posted Running already, for every container at once.
        run(
            sim.clone(),
            key.clone(),
            spec.clone(),
            Kind::Regular,
            id,
            0,
            None,
        );
    }
}

/// Runs one instance of a container (`restart_count` earlier ones) whose
/// status already says Running with `container_id`, and supervises it:
/// when its process ends, the status becomes terminated, or (regular
/// containers the pod's restart policy restarts) CrashLoopBackOff and then
/// a new instance after the back-off.
pub fn run(
    sim: Arc<Sim>,
    key: Key,
    spec: Value,
    kind: Kind,
    container_id: String,
    restart_count: u64,
    announce: Option<Value>,
) {
    let name = spec["name"].as_str().unwrap_or_default().to_string();
    let argv = argv(&sim, &spec, kind);
    if argv.is_empty() {
        // Nothing known to run: the container is Running, silent.
        if let Some(status) = announce {
            let _ = sim.store.modify(&key, |p| {
                set_status(p, kind, status);
                true
            });
        }
        return;
    }
    tokio::spawn(async move {
        let Some(pod) = sim.store.get(&key) else {
            return;
        };
        let started_at = store::now();
        let log = log_path(&sim, &pod, &name, restart_count);
        let tty = spec["tty"] == json!(true);
        let image = sim
            .scenario
            .image(spec["image"].as_str().unwrap_or_default());
        let process_spec = ProcessSpec {
            argv: argv.clone(),
            env: {
                let mut env =
                    super::exec::container_env(&sim, &key.namespace, &key.name, &name, &spec);
                if tty {
                    env.push(("TERM".into(), "xterm".into()));
                }
                env
            },
            cwd: sim.runtime.container_dir(&key.namespace, &key.name, &name),
            tty,
            stdin: spec["stdin"] == json!(true),
            stdout: true,
            stderr: !tty,
            executables: image.executables.clone(),
            isolation: match kind {
                Kind::Ephemeral => join_target(&sim, &key.namespace, &key.name, &spec),
                _ if image.executables.is_some() => Isolation::Own {
                    files: image.files.clone(),
                },
                _ => Isolation::None,
            },
            hostname: Some(pod_hostname(&pod, &key.name)),
        };
        let announce = announce.map(|status| (kind, status));
        let exit = match start(&sim, &key, &name, &process_spec, &log, announce).await {
            Ok(code) => code,
            Err(error) => {
                // containerd fails the container's start: exit code 128
                // and the runtime's message (StartError).
                tracing::debug!(%error, container = %name, "container start failed");
                Exit {
                    code: 128,
                    message: Some(format!(
                        "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"{}\": {error}: unknown",
                        argv[0]
                    )),
                }
            }
        };
        let finished_at = store::now();
        let Some(pod) = sim.store.get(&key) else {
            return;
        };
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return;
        }
        let mut terminated = json!({
            "exitCode": exit.code,
            "reason": match (exit.code, &exit.message) {
                (0, _) => "Completed",
                (_, Some(_)) => "StartError",
                _ => "Error",
            },
            "startedAt": started_at, "finishedAt": finished_at,
            "containerID": container_id,
        });
        if let Some(message) = &exit.message {
            terminated["message"] = json!(message);
        }
        let policy = pod["spec"]["restartPolicy"].as_str().unwrap_or("Always");
        let restarts = kind == Kind::Regular
            && (policy == "Always" || policy == "OnFailure" && exit.code != 0);
        if !restarts {
            let _ = sim.store.modify(&key, |p| {
                let mut status = running_status(&spec, kind, &container_id, restart_count, None);
                status["ready"] = json!(false);
                status["state"] = json!({"terminated": terminated});
                if let Some(started) = status.get_mut("started") {
                    *started = json!(false);
                }
                set_status(p, kind, status);
                true
            });
            return;
        }
        let uid = pod
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let backoff = Duration::from_millis(sim.scenario.restart_backoff_ms);
        let _ = sim.store.modify(&key, |p| {
            let mut status = running_status(
                &spec,
                kind,
                &container_id,
                restart_count + 1,
                Some(&terminated),
            );
            status["ready"] = json!(false);
            status["started"] = json!(false);
            status.as_object_mut().map(|s| s.remove("containerID"));
            status["state"] = json!({"waiting": {
                "reason": "CrashLoopBackOff",
                "message": format!(
                    "back-off {}s restarting failed container={name} pod={}_{}({uid})",
                    backoff.as_secs(), key.name, key.namespace
                ),
            }});
            set_status(p, kind, status);
            true
        });
        tokio::time::sleep(backoff).await;
        let id = new_container_id();
        if sim
            .store
            .get(&key)
            .is_some_and(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        {
            let status = running_status(&spec, kind, &id, restart_count + 1, Some(&terminated));
            run(sim, key, spec, kind, id, restart_count + 1, Some(status));
        }
    });
}

/// How an instance ended.
struct Exit {
    code: i32,
    /// The runtime's message when the process could not start at all.
    message: Option<String>,
}

/// Starts the process, serves it to attached clients and its log until it
/// ends; gives its exit. `announce` is the status posted once the process
/// runs and can be attached to (the kubelet reports Running after the
/// runtime started the container, so a client that waits for Running
/// finds it attachable).
async fn start(
    sim: &Arc<Sim>,
    key: &Key,
    name: &str,
    spec: &ProcessSpec,
    log: &std::path::Path,
    announce: Option<(Kind, Value)>,
) -> std::io::Result<Exit> {
    let mut writer = LogWriter::open(log).await?;
    let mut process = sim.runtime.spawn(&key.namespace, &key.name, spec)?;
    let (output, _) = broadcast::channel(ATTACH_BACKLOG);
    let (exit_tx, exit_rx) = watch::channel(None);
    let stdin = process.stdin.take().map(|mut writer| {
        let (tx, mut rx) = mpsc::channel::<Bytes>(STDIN_QUEUE);
        tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if writer.write_all(&data).await.is_err() {
                    return;
                }
            }
        });
        tx
    });
    let main = Arc::new(MainProcess {
        tty: spec.tty,
        namespaces: process.namespaces,
        terminal: process.terminal.clone(),
        stdin,
        output: output.clone(),
        exit: exit_rx,
    });
    sim.runtime
        .register_main(&key.namespace, &key.name, name, main.clone());
    if let Some((kind, status)) = announce {
        let _ = sim.store.modify(key, |p| {
            set_status(p, kind, status);
            true
        });
    }
    // Both output streams go through one channel to the log, in order.
    let (log_tx, mut log_rx) = mpsc::channel::<(Stream, Bytes)>(8);
    let mut readers = Vec::new();
    for (reader, stream) in [
        (process.stdout.take(), Stream::Stdout),
        (process.stderr.take(), Stream::Stderr),
    ] {
        let Some(mut reader) = reader else {
            continue;
        };
        let log_tx = log_tx.clone();
        let output = output.clone();
        readers.push(tokio::spawn(async move {
            let mut buffer = vec![0u8; super::exec::CHUNK];
            loop {
                match reader.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let chunk = Bytes::copy_from_slice(&buffer[..n]);
                        // No attached client is fine.
                        let _ = output.send((stream, chunk.clone()));
                        if log_tx.send((stream, chunk)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }));
    }
    drop(log_tx);
    let logger = tokio::spawn(async move {
        while let Some((stream, data)) = log_rx.recv().await {
            if let Err(error) = writer.write(stream, &data).await {
                tracing::warn!(%error, "container log write failed");
            }
        }
        let _ = writer.finish().await;
    });
    let status = process.child.wait().await;
    for reader in readers {
        // A tty's reader ends with the last holder of its slave side.
        let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
    }
    let _ = logger.await;
    sim.runtime.exited(&key.namespace, &key.name, process.pid);
    let code = match status {
        Ok(status) => exit_code(status),
        Err(_) => 1,
    };
    sim.runtime.unregister_main(&key.namespace, &key.name, name);
    let _ = exit_tx.send(Some(code));
    Ok(Exit {
        code,
        message: None,
    })
}
