//! What the door's two kinds of requests (plain ones, and the streams of
//! `stream.rs`) share: the request for the API server made from the
//! client's, the `Status` answers of the door's own, and the audit of a
//! request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

use crate::api_request::RequestInfo;
use crate::audit::Event;
use crate::bastion::Shared;

/// What the door's responses carry.
pub type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// One request, as the audit records it.
pub struct Audited {
    pub shared: Arc<Shared>,
    pub source: SocketAddr,
    pub person: String,
    pub info: RequestInfo,
    pub started: Instant,
}

impl Audited {
    pub fn record(&self, stage: &'static str, code: u16, bytes_in: u64, bytes_out: u64) {
        self.shared.audit.record(Event::Api {
            source: self.source.to_string(),
            person: self.person.clone(),
            stage,
            request: self.info.clone(),
            code,
            bytes_in,
            bytes_out,
            duration_ms: self.started.elapsed().as_millis() as u64,
        });
    }
}

/// Headers that belong to one connection, never passed on (RFC 9110
/// §7.6.1), and the client's own credential.
pub fn passed_on(name: &header::HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "authorization"
            | "host"
            | "connection"
            | "keep-alive"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    ) && !name.as_str().starts_with("impersonate-")
}

/// What a request for the API server is made from.
pub struct Head<'a> {
    pub method: &'a http::Method,
    pub uri: &'a http::Uri,
    pub headers: &'a HeaderMap,
}

/// The request for the API server: the client's method, path, query and
/// headers, without what belongs to the client's connection.
pub fn upstream_request(
    parts: &Head<'_>,
    body: Bytes,
    upgrade: bool,
) -> Result<Request<kube::client::Body>, http::Error> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut builder = Request::builder().method(parts.method.clone()).uri(path);
    for (name, value) in parts.headers.iter().filter(|(n, _)| passed_on(n)) {
        builder = builder.header(name, value);
    }
    if upgrade {
        builder = builder.header(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Some(value) = parts.headers.get(header::UPGRADE) {
            builder = builder.header(header::UPGRADE, value);
        }
    }
    builder.body(kube::client::Body::from(body))
}

/// A `Status` object answering with `status` and `message`.
pub fn status_response(status: StatusCode, message: &str) -> Response<Body> {
    let reason = match status {
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::CONFLICT => "Conflict",
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
        StatusCode::PAYLOAD_TOO_LARGE => "RequestEntityTooLarge",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        StatusCode::BAD_REQUEST => "BadRequest",
        _ => "InternalError",
    };
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": status.as_u16(),
    })
    .to_string();
    let mut response = Response::new(
        http_body_util::Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
