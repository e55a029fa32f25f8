//! What every answer of the web server carries: its body type and the
//! security headers (no script but ours, no framing, no sniffing, no
//! referrer, HTTPS only, no caching).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

/// Scripts only from this origin (the embedded bundle), nothing inline;
/// styles allow inline because xterm.js injects `<style>` elements for
/// its renderer and theme (it has no nonce support); connections only to
/// this origin (`'self'` covers its wss:// address).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Every answer's body: whole (pages, lines) or streamed (downloads).
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A response with the headers every answer carries.
pub fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let full = Full::new(body.into()).map_err(|never| match never {});
    let mut response = Response::new(full.boxed());
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    secure_headers(response.headers_mut());
    response
}

/// The headers every answer carries: no script but ours, no framing, no
/// sniffing, no referrer, HTTPS only, no caching.
pub fn secure_headers(headers: &mut http::HeaderMap) {
    let set = |headers: &mut http::HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    // The sign-in link carries its token in the path: never pass it on.
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(
        headers,
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=31536000",
    );
    set(headers, header::CACHE_CONTROL, "no-store");
}

/// A plain-text answer: one line saying what went wrong and what to do.
pub fn plain(status: StatusCode, line: &str) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", format!("{line}\n"))
}
