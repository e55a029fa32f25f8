//! What every request of the web server shares and reads: the server's
//! state (`Web`: the bastion, its origin, the terminals, the connection
//! places), the client's address, the cookies, whether a request comes
//! from this bastion's own pages, and HTML escaping. The routes
//! (`http.rs`) and the single sign-on pages (`sso.rs`) both build on it.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::response::{Body, plain};
use crate::bastion::Shared;

/// The session cookie. `__Host-` makes browsers insist on Secure, Path=/
/// and no Domain (RFC 6265bis §4.1.3.2), so no sibling host can set it.
pub(super) const COOKIE: &str = "__Host-kbastion";

/// What the web server's requests share.
pub struct Web {
    pub shared: Arc<Shared>,
    /// `https://host[:port]` of `web.public_url`.
    pub origin: String,
    pub terminals: Arc<super::terminal::Terminals>,
    /// Open connections, from everywhere and per address.
    connections: crate::limits::Counter<()>,
    per_source: crate::limits::Counter<std::net::IpAddr>,
    /// New TLS handshakes per address.
    handshakes: crate::limits::ConnectionRate,
}

impl Web {
    pub fn new(shared: Arc<Shared>, origin: String) -> Web {
        let config = &shared.config.web;
        Web {
            connections: crate::limits::Counter::new(config.max_connections),
            per_source: crate::limits::Counter::new(config.max_connections_per_source),
            handshakes: crate::limits::ConnectionRate::new(HANDSHAKES_PER_SECOND, HANDSHAKE_BURST),
            origin,
            terminals: Default::default(),
            shared,
        }
    }

    /// The places a new connection takes, held while it is open: one
    /// among all, and (from anyone but a trusted proxy) one among its
    /// address's, after its address's handshake rate. None (logged at
    /// debug, counted) when one is used up.
    pub(super) fn admit(&self, peer: SocketAddr) -> Option<WebPlaces> {
        let refuse = |reason: &str| {
            self.shared.metrics.connection_refused(reason);
            tracing::debug!(%peer, %reason, "web: connection refused");
            None
        };
        let proxy = self.shared.config.web.trusts(peer.ip());
        if !proxy && !self.handshakes.allow(peer.ip()) {
            return refuse("web_rate");
        }
        let source = if proxy {
            None
        } else {
            match self.per_source.take(crate::limits::source_key(peer.ip())) {
                Some(slot) => Some(slot),
                None => return refuse("web_per_source"),
            }
        };
        match self.connections.take(()) {
            Some(slot) => Some((slot, source)),
            None => refuse("web_total"),
        }
    }
}

/// A web connection's places (`Web::admit`).
pub(super) type WebPlaces = (
    crate::limits::Slot<()>,
    Option<crate::limits::Slot<std::net::IpAddr>>,
);

/// New connections per second from one address after a burst: a browser
/// opens a few at once (pages, assets, a WebSocket per tab).
const HANDSHAKES_PER_SECOND: u32 = 20;
const HANDSHAKE_BURST: u32 = 50;

/// The address a request comes from (see `WebConfig::client_address`).
pub(super) fn client(web: &Web, peer: SocketAddr, request: &Request<Incoming>) -> std::net::IpAddr {
    let forwarded = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    web.shared.config.web.client_address(peer.ip(), forwarded)
}

/// The session cookie's value, if the request carries one.
pub(super) fn cookie(request: &Request<Incoming>) -> Option<String> {
    named_cookie(request, COOKIE)
}

/// The value of the cookie `wanted`, if the request carries it.
pub(super) fn named_cookie(request: &Request<Incoming>, wanted: &str) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value.to_string())
}

/// The `Set-Cookie` value of a new browser session.
pub(super) fn session_cookie(signed_in: &super::links::SignedIn) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{COOKIE}={}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        signed_in.token, signed_in.max_age
    ))
    .ok()
}

/// Escapes text for HTML.
pub(super) fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Refuses a request that a page of another origin could have made: the
/// Origin header, which browsers set and pages cannot forge, must be
/// exactly this bastion's.
pub(super) fn same_origin(
    web: &Web,
    peer: SocketAddr,
    request: &Request<Incoming>,
    what: &str,
) -> Result<(), Box<Response<Body>>> {
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let origin = header(header::ORIGIN);
    // A browser sends Origin on a fetch and a WebSocket; on a navigation
    // (a download link) it sends none, and on a form's POST under our
    // `Referrer-Policy: no-referrer` it sends `null`. Then Sec-Fetch-Site,
    // which no page can set, says where the request came from.
    let ours = match origin {
        Some(origin) if origin != "null" => origin == web.origin,
        _ => header(http::HeaderName::from_static("sec-fetch-site")) == Some("same-origin"),
    };
    if ours {
        return Ok(());
    }
    tracing::info!(%peer, origin = ?origin, path = %request.uri().path(), "web: refused: not from this bastion's pages");
    Err(Box::new(plain(
        StatusCode::FORBIDDEN,
        &format!(
            "cross-origin {what} refused: the Origin must be {}",
            web.origin
        ),
    )))
}
