//! `kbastion sim`: a Kubernetes API simulator, faithful on the wire to
//! kube-apiserver and the kubelet, for tests and the demo.
//!
//! This module tree never imports the bastion and the bastion never imports
//! it; they share only what Kubernetes defines (the HTTP API and the
//! streaming protocols). Layout: `scenario` (the TOML it starts from),
//! `store` (objects, resourceVersions, watch history), `cluster` (what
//! controllers and the kubelet do: scheduling, pod phases, garbage
//! collection), `rbac`, `api` (REST), `exec` and `portforward` (streaming),
//! `runtime` (containers as local processes), `spdy` (SPDY/3.1 framing),
//! `strategic` (strategic merge patch).

pub mod admission;
pub mod api;
pub mod attach;
mod audit_log;
mod body;
pub mod cluster;
pub mod container;
mod controllers;
pub mod ephemeral;
pub mod exec;
pub mod logs;
pub mod portforward;
pub mod protobuf;
pub mod rbac;
pub mod resources;
pub mod runtime;
pub mod scenario;
pub mod selector;
pub mod spdy;
pub mod spdy_exec;
mod spdy_portforward;
pub mod status;
pub mod store;
pub mod strategic;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use self::rbac::UserInfo;
use self::runtime::Runtime;
use self::scenario::{Faults, Scenario};
use self::store::Store;

/// Arguments of `kbastion sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to serve the API on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Where to write a kubeconfig that reaches this simulator.
    #[arg(long)]
    pub kubeconfig_out: PathBuf,
    /// Scenario file (TOML); without it, `config/demo-cluster.toml`'s
    /// built-in copy is used.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// The scenario user whose context is current in the kubeconfig.
    #[arg(long, default_value = "admin")]
    pub identity: String,
    /// Directory for container working directories (default: a fresh
    /// temporary directory).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Write an audit log as the API server's `--audit-log-path` does at
    /// level Metadata: one audit.k8s.io/v1 Event per request (JSON lines).
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
}

/// Everything a request handler needs.
pub struct Sim {
    pub store: Store,
    pub runtime: Arc<Runtime>,
    pub minor: u32,
    pub scenario: Scenario,
    pub faults: Mutex<Faults>,
    /// Cancelled by the next cut: every open watch and upgraded stream
    /// (exec, port-forward) holds a clone and drops its connection when it
    /// fires. Each cut replaces it with a fresh token for later requests.
    cut: Mutex<CancellationToken>,
    /// Fires when the admin endpoint stops the API for a while: the
    /// listener closes (connections are refused), open connections drop,
    /// and the API comes back with its state after the given time.
    pub stop: tokio::sync::broadcast::Sender<std::time::Duration>,
    /// The audit log, when asked for.
    pub audit_log: Option<audit_log::AuditLog>,
}

impl Sim {
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        self.scenario
            .users
            .iter()
            .find(|u| u.token == token)
            .map(|u| {
                let mut groups = u.groups.clone();
                groups.push("system:authenticated".into());
                UserInfo {
                    name: u.name.clone(),
                    groups,
                }
            })
    }

    /// The signal that ends a watch or stream opened now at the next cut.
    /// Take it when the request arrives, so that a cut between the answer
    /// and the upgrade still ends the stream.
    pub fn cut_signal(&self) -> CancellationToken {
        self.cut.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Drops every open watch and upgraded stream as a network cut or a
    /// dying API server would: no `Status`, no close frame, no GOAWAY; the
    /// client only sees its connection end. Processes keep running, as a
    /// kubelet's do when the API server's streams to it break.
    pub fn cut(&self) {
        let fired = std::mem::take(&mut *self.cut.lock().unwrap_or_else(|p| p.into_inner()));
        fired.cancel();
    }

    pub fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Runs `work` (what serves one watch or stream, owning its half of the
/// connection) until it finishes or `cut` fires, and drops it at the cut.
/// The cut is checked first at every wake-up: once it has fired, `work`
/// writes nothing more, not even a close frame or a GOAWAY.
pub async fn until_cut<F: std::future::Future>(
    cut: CancellationToken,
    work: F,
) -> Option<F::Output> {
    tokio::select! {
        biased;
        _ = cut.cancelled() => None,
        output = work => Some(output),
    }
}

pub const DEMO_SCENARIO: &str = include_str!("../../config/demo-cluster.toml");

/// Runs the simulator until the process is stopped. `ready` receives the
/// bound address once the kubeconfig is written.
pub async fn run(
    args: SimArgs,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let scenario = match &args.scenario {
        Some(path) => Scenario::load(path)?,
        None => Scenario::parse(DEMO_SCENARIO)
            .map_err(|e| anyhow::anyhow!("built-in demo scenario: {e}"))?,
    };
    let minor = scenario.minor().map_err(anyhow::Error::msg)?;
    resources::set_minor(minor);
    let identity = scenario
        .users
        .iter()
        .find(|u| u.name == args.identity)
        .with_context(|| {
            format!(
                "--identity {}: no such user in the scenario (it has: {})",
                args.identity,
                scenario
                    .users
                    .iter()
                    .map(|u| u.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?
        .name
        .clone();
    let state_dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("kbastion-sim-{}", std::process::id())),
    };
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create state dir {}", state_dir.display()))?;

    let pki = tls::generate()?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let identities: Vec<(String, String)> = scenario
        .users
        .iter()
        .map(|u| (u.name.clone(), u.token.clone()))
        .collect();
    tls::write_kubeconfig(
        &args.kubeconfig_out,
        &format!("https://{address}"),
        &pki.ca_pem,
        &identities,
        &identity,
    )?;

    let (stop, _) = tokio::sync::broadcast::channel(4);
    let sim = Arc::new(Sim {
        store: Store::new(),
        runtime: Arc::new(Runtime::new(&state_dir)),
        minor,
        faults: Mutex::new(scenario.faults.clone()),
        scenario,
        cut: Mutex::default(),
        stop,
        audit_log: match &args.audit_log {
            Some(path) => Some(
                audit_log::AuditLog::open(path)
                    .with_context(|| format!("cannot open the audit log {}", path.display()))?,
            ),
            None => None,
        },
    });
    cluster::load(&sim).context("cannot load the scenario")?;
    controllers::start(sim.clone());
    tracing::info!(%address, version = %format!("1.{minor}"), kubeconfig = %args.kubeconfig_out.display(), "simulator ready");
    if let Some(ready) = ready {
        let _ = ready.send(address);
    }

    let acceptor = TlsAcceptor::from(pki.server_config);
    let mut stops = sim.stop.subscribe();
    let mut listener = listener;
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            Ok(down) = stops.recv() => {
                drop(listener);
                tracing::info!(seconds = down.as_secs_f64(), "API stopped (fault injection)");
                tokio::time::sleep(down).await;
                listener = loop {
                    match TcpListener::bind(address).await {
                        Ok(listener) => break listener,
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                    }
                };
                tracing::info!("API serving again");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let sim = sim.clone();
        let mut stopped = sim.stop.subscribe();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |request| {
                let sim = sim.clone();
                async move { Ok::<_, std::convert::Infallible>(api::handle(sim, request).await) }
            });
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            tokio::select! {
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                // A stopped API drops its connections.
                _ = stopped.recv() => {}
            }
        });
    }
}
