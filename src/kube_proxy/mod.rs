//! The kubectl door: an HTTPS listener that kubectl (or any Kubernetes
//! client) talks to as if it were the API server, with the credential that
//! `ssh PERSON@bastion kube-credential` printed.
//!
//! Every request passes the gate's check of the credential as configured
//! now (`gate::still_open`), is refused if it asks to impersonate anyone
//! (`kubectl --as`), and goes on to the API server impersonating the
//! person's Kubernetes user and groups, so the person's own RBAC decides.
//! Responses stream through (lists, watches, `logs -f`). Exec, attach and
//! port-forward are sessions (`stream.rs`): admitted by the gate,
//! registered, recorded, idle-timed, drained and ended on revocation.
//! Every request is audited (`Event::Api`).

mod stream;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::api_request::RequestInfo;
use crate::bastion::Shared;
use crate::kube_credential::CredentialError;
use crate::session::gate::{self, Presented, Refusal};
use crate::signing::SigningKey;
use upstream::{Audited, Body, Head, passed_on, status_response, upstream_request};

/// The most a request's head may hold.
const MAX_HEAD: usize = 64 * 1024;

/// The most a request body may hold: the API server's own limit for an
/// object is 3 MiB; a request bigger than that it refuses anyway.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Connections open at once from one address, and from everywhere.
const MAX_CONNECTIONS_PER_SOURCE: usize = 256;
const MAX_CONNECTIONS: usize = 4096;

/// What the door's requests share.
pub struct Door {
    pub shared: Arc<Shared>,
    key: SigningKey,
    connections: crate::limits::Counter<()>,
    connections_per_source: crate::limits::Counter<std::net::IpAddr>,
}

impl Door {
    pub fn new(shared: Arc<Shared>, key: SigningKey) -> Arc<Door> {
        Arc::new(Door {
            shared,
            key,
            connections: crate::limits::Counter::new(MAX_CONNECTIONS),
            connections_per_source: crate::limits::Counter::new(MAX_CONNECTIONS_PER_SOURCE),
        })
    }
}

/// Serves HTTPS on `listener` until the process stops.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, door: Arc<Door>) {
    let admitting = door.clone();
    crate::tls::serve(
        listener,
        tls,
        "kube_proxy",
        MAX_HEAD,
        move |peer| {
            let places = admitting.connections.take(()).and_then(|all| {
                admitting
                    .connections_per_source
                    .take(peer.ip())
                    .map(|one| (all, one))
            });
            if places.is_none() {
                tracing::debug!(%peer, "kube_proxy: too many connections; refused");
            }
            places
        },
        move |peer, request| {
            let door = door.clone();
            async move { handle(&door, peer, request).await }
        },
    )
    .await
}

async fn handle(door: &Arc<Door>, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    let shared = &door.shared;
    let info = RequestInfo::of(
        request.method(),
        request.uri().path(),
        request.uri().query().unwrap_or(""),
    );
    let mut audited = Audited {
        shared: shared.clone(),
        source: peer,
        person: String::new(),
        info,
        started: Instant::now(),
    };
    let verified = match credential_of(door, request.headers()) {
        Ok(verified) => verified,
        Err(error) => return refuse(&audited, StatusCode::UNAUTHORIZED, &error.to_string()),
    };
    let credential = &verified.credential;
    let person = credential.person().to_string();
    audited.person = person.clone();
    let presented = Presented {
        credential: Some(credential),
        address: peer.ip(),
    };
    if let Err(refusal) = gate::still_open(shared, &presented) {
        let status = match refusal {
            Refusal::Revoked(_) => StatusCode::UNAUTHORIZED,
            _ => refusal.http_status(),
        };
        return refuse(&audited, status, &refusal.to_string());
    }
    if let Some(name) = request
        .headers()
        .keys()
        .find(|name| name.as_str().starts_with("impersonate-"))
    {
        let line = format!(
            "the kubectl door acts as {person} only: a request with {name} (kubectl --as, --as-group) is refused; ask for the rights you need"
        );
        return refuse(&audited, StatusCode::FORBIDDEN, &line);
    }
    let Some(identity) = shared.identity_of(credential) else {
        let line = format!("{person} is no longer a configured user");
        return refuse(&audited, StatusCode::UNAUTHORIZED, &line);
    };
    let client = match shared.cluster.as_user(&identity) {
        Ok(client) => client,
        Err(error) => {
            return refuse(
                &audited,
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("cannot reach the Kubernetes API: {error}"),
            );
        }
    };
    if audited.info.is_pod_stream() && is_upgrade(request.headers()) {
        let opened = stream::Opened {
            shared,
            peer,
            person: &person,
            identity: &identity,
            verified: &verified,
            client,
        };
        return stream::serve(opened, audited, request).await;
    }
    forward(client, audited, request).await
}

/// The credential a request carries.
fn credential_of(
    door: &Door,
    headers: &HeaderMap,
) -> Result<crate::kube_credential::Verified, CredentialError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(CredentialError::Missing)?;
    crate::kube_credential::verify(&door.key, token, crate::audit::unix_now())
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
}

/// A plain request: the body (bounded) on to the API server, and its
/// answer streamed back, audited when it is over.
async fn forward(
    client: kube::Client,
    audited: Audited,
    request: Request<Incoming>,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return refuse(
                &audited,
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "the request body is over {} MiB, more than the API server takes",
                    MAX_BODY >> 20
                ),
            );
        }
    };
    let bytes_in = body.len() as u64;
    let head = Head {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
    };
    let upstream = match upstream_request(&head, body, false) {
        Ok(upstream) => upstream,
        Err(error) => {
            return refuse(
                &audited,
                StatusCode::BAD_REQUEST,
                &format!("the request cannot be passed on: {error}"),
            );
        }
    };
    let response = match client.send(upstream).await {
        Ok(response) => response,
        Err(error) => {
            return refuse(
                &audited,
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "the Kubernetes API cannot be reached: {}",
                    crate::pods::first_line(&error.to_string())
                ),
            );
        }
    };
    let code = response.status().as_u16();
    if audited.info.verb == "watch" {
        audited.record("opened", code, bytes_in, 0);
    }
    let (parts, body) = response.into_parts();
    let mut out = Response::new(
        CountedBody {
            inner: body,
            bytes: AtomicU64::new(0),
            audited: Some(audited),
            code,
            bytes_in,
        }
        .boxed_unsync(),
    );
    *out.status_mut() = parts.status;
    for (name, value) in parts.headers.iter().filter(|(n, _)| passed_on(n)) {
        out.headers_mut().append(name, value.clone());
    }
    out
}

/// The API server's answer on its way to the client, counted; audited
/// when it ends (or the client goes).
struct CountedBody {
    inner: kube::client::Body,
    bytes: AtomicU64,
    audited: Option<Audited>,
    code: u16,
    bytes_in: u64,
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled.map_err(|e| Box::new(e) as Self::Error)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        if let Some(audited) = self.audited.take() {
            let stage = if audited.info.verb == "watch" {
                "closed"
            } else {
                "done"
            };
            audited.record(
                stage,
                self.code,
                self.bytes_in,
                self.bytes.load(Ordering::Relaxed),
            );
        }
    }
}

/// A refusal of the door's own, as the API server words one (a `Status`,
/// which kubectl shows), audited.
fn refuse(audited: &Audited, status: StatusCode, message: &str) -> Response<Body> {
    tracing::info!(source = %audited.source, person = %audited.person, object = %audited.info.object(), code = status.as_u16(), %message, "kube_proxy: refused");
    audited.record("refused", status.as_u16(), 0, 0);
    status_response(status, message)
}
