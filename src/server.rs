//! The bastion process around the SSH server: the metrics listener, the
//! cluster readiness probe, and signals: SIGHUP reloads users and keys
//! (a bad config is refused and the old one stays), SIGTERM (or Ctrl-C)
//! stops accepting, tells every user in their terminal, lets sessions
//! drain, releases node-shell holds and returns.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::bastion::Shared;
use crate::config::Config;
use crate::ssh;

/// A session's last words (its closing line, exit status and close) are
/// handed to its connection as it leaves the registry; the connection
/// writes them to the socket moments later. The process waits this long
/// before it exits, so they are not cut off.
const FLUSH_GRACE: Duration = Duration::from_millis(500);

/// How often the cluster API is probed for `/readyz`.
const READINESS_PROBE: Duration = Duration::from_secs(10);

pub async fn run(
    shared: Arc<Shared>,
    listener: TcpListener,
    config_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    if let Some(address) = shared.config.metrics.listen {
        let metrics_listener = TcpListener::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("metrics.listen {address}: {e}"))?;
        tracing::info!(%address, "metrics and health listening");
        tokio::spawn(crate::metrics::serve(
            metrics_listener,
            shared.metrics.clone(),
            shared.sessions.clone(),
        ));
    }
    let web = match shared.config.web.listen {
        Some(address) => Some(start_web(&shared, address).await?),
        None => None,
    };
    if let Some(address) = shared.config.kube_proxy.listen {
        start_kube_proxy(&shared, address).await?;
    }
    let probe = {
        let shared = shared.clone();
        let web = web.as_ref().map(|web| web.abort_handle());
        tokio::spawn(async move {
            let wait = shared.config.timeouts.api();
            loop {
                let ok = matches!(
                    tokio::time::timeout(wait, shared.cluster.own().apiserver_version()).await,
                    Ok(Ok(_))
                );
                if !ok {
                    shared.metrics.api_errors.inc();
                }
                shared.metrics.api_ready.store(ok, Ordering::Relaxed);
                if web.as_ref().is_some_and(|web| web.is_finished()) {
                    tracing::error!("the web terminal listener stopped serving");
                    shared.metrics.web_down.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(READINESS_PROBE).await;
            }
        })
    };
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    // Announced only now: a SIGHUP or SIGTERM sent by whoever waits for
    // this line finds its handler in place.
    let _ = shared.ssh_address.set(listener.local_addr()?);
    tracing::info!(address = %listener.local_addr()?, "listening");
    let accept = tokio::spawn(ssh::serve(listener, shared.clone()));
    tokio::pin!(accept);
    loop {
        tokio::select! {
            result = &mut accept => {
                probe.abort();
                if let Some(web) = &web {
                    web.abort();
                }
                return result.map_err(|e| anyhow::anyhow!("the SSH server stopped: {e}"))?;
            }
            _ = hangup.recv() => match &config_path {
                Some(path) => match Config::load(path) {
                    Ok(config) => {
                        shared.reload_users(&config);
                        tracing::info!(users = config.users.len(), "configuration reloaded: users and keys");
                    }
                    Err(error) => tracing::error!(%error, "configuration reload refused; the old configuration stays"),
                },
                None => tracing::info!("SIGHUP ignored: no configuration file to reload"),
            },
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    accept.abort();
    // New pages are refused from now on (they would be drained at once);
    // open terminals are told and drained with the SSH sessions.
    if let Some(web) = &web {
        web.abort();
    }
    probe.abort();
    shared.metrics.api_ready.store(false, Ordering::Relaxed);
    drain(&shared).await;
    shared.node_shells.release_all().await;
    tracing::info!("stopped");
    Ok(())
}

/// Starts the web terminal's HTTPS listener on `address`.
/// The kubectl door's listener.
async fn start_kube_proxy(
    shared: &Arc<Shared>,
    address: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let config = &shared.config.kube_proxy;
    let (Some(certificate), Some(key), Some(signing)) =
        (&config.certificate, &config.key, &shared.signing)
    else {
        anyhow::bail!("kube_proxy: listen needs certificate, key and the signing key");
    };
    let tls = crate::tls::server_config("kube_proxy", certificate, key)?;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("kube_proxy.listen {address}: {e}"))?;
    tracing::info!(address = %listener.local_addr()?, url = ?config.public_url, "kubectl door listening");
    let door = crate::kube_proxy::Door::new(shared.clone(), signing.clone());
    tokio::spawn(crate::kube_proxy::serve(listener, tls, door));
    Ok(())
}

async fn start_web(
    shared: &Arc<Shared>,
    address: std::net::SocketAddr,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let config = &shared.config.web;
    let (Some(certificate), Some(key), Some(origin)) =
        (&config.certificate, &config.key, config.origin())
    else {
        anyhow::bail!("web: listen needs certificate, key and public_url");
    };
    let tls = crate::tls::server_config("web", certificate, key)?;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("web.listen {address}: {e}"))?;
    tracing::info!(address = %listener.local_addr()?, %origin, "web terminal listening");
    let web = Arc::new(crate::web::http::Web::new(shared.clone(), origin));
    let shared = shared.clone();
    Ok(tokio::spawn(async move {
        // One task: aborting it at shutdown stops both.
        tokio::select! {
            () = crate::web::http::serve(listener, tls, web) => {}
            () = crate::web::http::fold_failed_sign_ins(shared) => {}
        }
    }))
}

/// Tells every open session and waits for them, up to the drain time.
async fn drain(shared: &Shared) {
    let drain = Duration::from_secs(shared.config.shutdown.drain_secs);
    let open = shared.sessions.len();
    if open == 0 {
        return;
    }
    tracing::info!(
        sessions = open,
        drain_secs = drain.as_secs(),
        "draining sessions"
    );
    let _ = shared.notice.send(Some(format!(
        "the bastion is restarting; this session ends in {} s. Reconnect to continue.",
        drain.as_secs()
    )));
    // Sessions end on their own schedule; each one's end leaves the
    // registry.
    if shared.sessions.wait_empty(drain).await {
        tokio::time::sleep(FLUSH_GRACE).await;
        return;
    }
    // What is still open is ended now, with what it started in the target
    // (that takes an exec each, bounded by the API wait).
    shared.stop.cancel();
    let ending = shared.config.timeouts.api() + Duration::from_secs(5);
    if !shared.sessions.wait_empty(ending).await {
        tracing::warn!(
            sessions = shared.sessions.len(),
            "sessions still open after the drain; stopping anyway"
        );
    }
    tokio::time::sleep(FLUSH_GRACE).await;
}
