//! Operational metrics (Prometheus text format) and health endpoints on a
//! separate HTTP listener: `/metrics`, `/healthz` (the process serves) and
//! `/readyz` (host keys loaded, the cluster API answering, and the web
//! terminal's listener serving where one is configured).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the metrics and health listener (none: no listener).
    pub listen: Option<SocketAddr>,
}

type Labels = Vec<(String, String)>;

fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_string(), value.to_string())]
}

pub struct Metrics {
    registry: Registry,
    sessions_active: Family<Labels, Gauge>,
    sessions_started: Family<Labels, Counter>,
    sessions_ended: Family<Labels, Counter>,
    /// The same sessions by transport (ssh, web): kept apart from the
    /// `kind` families, whose label sets dashboards already use.
    transport_active: Family<Labels, Gauge>,
    transport_started: Family<Labels, Counter>,
    auth_failures: Family<Labels, Counter>,
    connections_refused: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    pub api_errors: Counter,
    pub node_shell_pods_held: Gauge,
    pub node_shell_pods_created: Counter,
    /// The sum of every SSH channel's window (`ssh::window`).
    pub channel_windows: Gauge,
    /// Connections closed at accept: over the per-source connection rate.
    pub connections_rate_limited: Counter,
    setup_seconds: Histogram,
    /// Set once the SSH host keys are loaded.
    pub keys_loaded: AtomicBool,
    /// Whether the last probe of the cluster API succeeded.
    pub api_ready: AtomicBool,
    /// Set when the configured web terminal listener has stopped serving.
    pub web_down: AtomicBool,
    /// Web terminal requests answered, by status code.
    web_requests: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kbastion");
        let sessions_active = Family::<Labels, Gauge>::default();
        let sessions_started = Family::<Labels, Counter>::default();
        let sessions_ended = Family::<Labels, Counter>::default();
        let transport_active = Family::<Labels, Gauge>::default();
        let transport_started = Family::<Labels, Counter>::default();
        let auth_failures = Family::<Labels, Counter>::default();
        let connections_refused = Family::<Labels, Counter>::default();
        let bytes = Family::<Labels, Counter>::default();
        let api_errors = Counter::default();
        let node_shell_pods_held = Gauge::default();
        let node_shell_pods_created = Counter::default();
        let channel_windows = Gauge::default();
        let connections_rate_limited = Counter::default();
        let web_requests = Family::<Labels, Counter>::default();
        // 5 ms to ~40 s: set-up is an exec upgrade, or a node-shell pod start.
        let setup_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 14),
        );
        registry.register(
            "sessions_active",
            "Sessions open now, by kind",
            sessions_active.clone(),
        );
        registry.register(
            "sessions_started",
            "Sessions started, by kind",
            sessions_started.clone(),
        );
        registry.register(
            "sessions_active_by_transport",
            "Sessions open now, by transport (ssh, web)",
            transport_active.clone(),
        );
        registry.register(
            "sessions_started_by_transport",
            "Sessions started, by transport (ssh, web)",
            transport_started.clone(),
        );
        registry.register(
            "sessions_ended",
            "Sessions ended, by outcome",
            sessions_ended.clone(),
        );
        registry.register(
            "auth_failures",
            "Failed authentications, by reason",
            auth_failures.clone(),
        );
        registry.register(
            "connections_refused",
            "SSH connections closed before any SSH work, by reason (per_source, unauthenticated, rate)",
            connections_refused.clone(),
        );
        registry.register("bytes", "Bytes carried, by direction", bytes.clone());
        registry.register(
            "api_errors",
            "Kubernetes API and exec errors",
            api_errors.clone(),
        );
        registry.register(
            "node_shell_pods_held",
            "Node-shell pods this replica holds",
            node_shell_pods_held.clone(),
        );
        registry.register(
            "node_shell_pods_created",
            "Node-shell pods this replica created",
            node_shell_pods_created.clone(),
        );
        registry.register(
            "channel_window_bytes",
            "The sum of every SSH channel's window: the most client input kbastion may hold now (limits.bastion_window_bytes bounds its growth)",
            channel_windows.clone(),
        );
        registry.register(
            "connections_rate_limited",
            "Connections closed at accept for exceeding the per-source connection rate",
            connections_rate_limited.clone(),
        );
        registry.register(
            "web_requests",
            "Web terminal HTTPS requests answered, by status code",
            web_requests.clone(),
        );
        registry.register(
            "session_setup_seconds",
            "Time from request to a running session",
            setup_seconds.clone(),
        );
        Metrics {
            registry,
            sessions_active,
            sessions_started,
            sessions_ended,
            transport_active,
            transport_started,
            auth_failures,
            connections_refused,
            bytes,
            api_errors,
            node_shell_pods_held,
            node_shell_pods_created,
            channel_windows,
            connections_rate_limited,
            setup_seconds,
            keys_loaded: AtomicBool::new(false),
            api_ready: AtomicBool::new(false),
            web_down: AtomicBool::new(false),
            web_requests,
        }
    }
}

impl Metrics {
    pub fn session_started(&self, kind: &str, setup: std::time::Duration) {
        self.sessions_started
            .get_or_create(&label("kind", kind))
            .inc();
        self.sessions_active
            .get_or_create(&label("kind", kind))
            .inc();
        self.setup_seconds.observe(setup.as_secs_f64());
    }

    pub fn session_ended(&self, kind: &str, outcome: &str, bytes_in: u64, bytes_out: u64) {
        self.sessions_active
            .get_or_create(&label("kind", kind))
            .dec();
        self.sessions_ended
            .get_or_create(&label("outcome", outcome))
            .inc();
        self.bytes
            .get_or_create(&label("direction", "in"))
            .inc_by(bytes_in);
        self.bytes
            .get_or_create(&label("direction", "out"))
            .inc_by(bytes_out);
    }

    /// A session of `transport` (ssh, web) started.
    pub fn transport_started(&self, transport: &str) {
        self.transport_started
            .get_or_create(&label("transport", transport))
            .inc();
        self.transport_active
            .get_or_create(&label("transport", transport))
            .inc();
    }

    /// A session of `transport` ended.
    pub fn transport_ended(&self, transport: &str) {
        self.transport_active
            .get_or_create(&label("transport", transport))
            .dec();
    }

    /// A connection closed before any SSH work, and why.
    pub fn connection_refused(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&label("reason", reason))
            .inc();
    }

    pub fn auth_failed(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&label("reason", reason))
            .inc();
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// What keeps this replica from taking sessions, if anything.
    fn unready(&self) -> Option<String> {
        let missing: Vec<&str> = [
            (
                !self.keys_loaded.load(Ordering::Relaxed),
                "host keys not loaded",
            ),
            (
                !self.api_ready.load(Ordering::Relaxed),
                "cluster API not answering",
            ),
            (
                self.web_down.load(Ordering::Relaxed),
                "web terminal listener stopped",
            ),
        ]
        .into_iter()
        .filter_map(|(missing, what)| missing.then_some(what))
        .collect();
        (!missing.is_empty()).then(|| missing.join(", "))
    }

    /// Counts a web terminal request's answer.
    pub fn web_request(&self, status: u16) {
        self.web_requests
            .get_or_create(&label("code", &status.to_string()))
            .inc();
    }
}

fn answer(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid")
}

fn route(
    metrics: &Metrics,
    sessions: &crate::registry::Registry,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    match request.uri().path() {
        // Every live session of this replica, for operators (this
        // listener is not exposed outside the cluster by `deploy/`).
        "/sessions" => answer(
            StatusCode::OK,
            "application/json",
            serde_json::to_string(&sessions.list(None)).unwrap_or_default() + "\n",
        ),
        "/metrics" => answer(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" | "/livez" => answer(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match metrics.unready() {
            None => answer(StatusCode::OK, "text/plain", "ok\n".into()),
            Some(missing) => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {missing}\n"),
            ),
        },
        _ => answer(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Serves the metrics and health endpoints until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    sessions: Arc<crate::registry::Registry>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (metrics, sessions) = (metrics.clone(), sessions.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = route(&metrics, &sessions, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_what_is_missing() {
        let metrics = Metrics::default();
        assert_eq!(
            metrics.unready().as_deref(),
            Some("host keys not loaded, cluster API not answering")
        );
        metrics.keys_loaded.store(true, Ordering::Relaxed);
        metrics.api_ready.store(true, Ordering::Relaxed);
        assert_eq!(metrics.unready(), None);
        metrics.web_down.store(true, Ordering::Relaxed);
        assert_eq!(
            metrics.unready().as_deref(),
            Some("web terminal listener stopped")
        );
    }
}
