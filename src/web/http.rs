//! The web terminal's HTTPS server: TLS, the routes, the session cookie,
//! the security headers, and the WebSocket handshake with its Origin
//! check. Pages are plain HTML; the one script is the embedded bundle.
//!
//! Routes: `/login/TOKEN` (a one-time link: sets the cookie, goes to `/`),
//! `/` (the targets the person may reach), `/t/TARGET` (a terminal page;
//! TARGET as in login names: `NAMESPACE/POD[/CONTAINER]` or `NODE`),
//! `/ws/TARGET` (its WebSocket), `/files/TARGET?path=P` (GET downloads the
//! file P, PUT uploads it: `files`), `/assets/NAME`, `POST /logout`; with
//! single sign-on (`sso.rs`), `POST /oidc/login`, `/oidc/callback`,
//! `/sso/CODE` (an ssh connection's sign-in) and `POST /certificate`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::links::Grant;
use super::response::{Body, plain, respond};
pub use super::state::Web;
use super::state::{COOKIE, client, cookie, escape, same_origin, session_cookie};
use crate::bastion::Shared;
use crate::login::{LoginName, Target};

/// The most a connection's request head may hold: our paths and cookies
/// are short, and every open connection's buffer counts.
const MAX_HEAD: usize = 16 * 1024;

/// Serves HTTPS on `listener` until the process stops.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, web: Arc<Web>) {
    let admitting = web.clone();
    crate::tls::serve(
        listener,
        tls,
        "web",
        MAX_HEAD,
        move |peer| admitting.admit(peer),
        move |peer, request| {
            let web = web.clone();
            async move {
                let response = handle(&web, peer, request).await;
                web.shared.metrics.web_request(response.status().as_u16());
                response
            }
        },
    )
    .await
}

fn redirect(location: &str) -> Response<Body> {
    let mut response = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The person signed in by the request's cookie, if the browser session
/// and the credential that minted it still hold.
fn signed_in(
    web: &Web,
    peer: SocketAddr,
    request: &Request<Incoming>,
) -> Result<Grant, Box<Response<Body>>> {
    let now = crate::audit::unix_now();
    let refused = |line: &str| Box::new(plain(StatusCode::UNAUTHORIZED, line));
    let token =
        cookie(request).ok_or_else(|| refused(&super::links::SessionError::Missing.to_string()))?;
    let grant = web
        .shared
        .web_logins
        .session(&token, now)
        .map_err(|e| refused(&e.to_string()))?;
    if let Some(credential) = &grant.credential {
        let access = web.shared.access();
        let source = client(web, peer, request);
        if let Err(reason) = credential.check(&access.lists(), source, now) {
            // Audited as a revocation, as an SSH connection's is.
            tracing::info!(%source, person = %grant.person, %reason, "web: access revoked: the browser session ends");
            web.shared.audit.record(crate::audit::Event::Revocation {
                source: source.to_string(),
                person: grant.person.clone(),
                reason: reason.clone(),
            });
            web.shared.web_logins.end(&token, &reason);
            return Err(Box::new(plain(
                StatusCode::FORBIDDEN,
                &format!("access revoked: {reason}"),
            )));
        }
    }
    Ok(grant)
}

/// A target from the path after `/t/` or `/ws/`, in the login-name grammar.
pub fn parse_target(person: &str, path: &str) -> Result<Target, String> {
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return Err("no target in the address; open / for the targets you may reach".into());
    }
    match LoginName::parse(&format!("{person}@{path}")) {
        Ok(LoginName {
            target: Some(target),
            ..
        }) => Ok(target),
        Ok(_) => Err("no target in the address; open / for the targets you may reach".into()),
        Err(error) => Err(error.to_string()),
    }
}

async fn handle(web: &Arc<Web>, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    if let Some(token) = path.strip_prefix("/login/") {
        // Opening a link asks first, naming the person; only the page's
        // own button signs in. A link planted on another site cannot sign
        // a visitor into someone else's account (login CSRF), nor replace
        // the session they have.
        return match method {
            Method::GET => sign_in_page(web, peer, &request, token),
            Method::POST => match same_origin(web, peer, &request, "sign-in") {
                Ok(()) => login(web, peer, &request, token),
                Err(response) => *response,
            },
            _ => plain(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
        };
    }
    if let Some(name) = path.strip_prefix("/assets/") {
        return match super::assets::asset(name) {
            Some(asset) => respond(StatusCode::OK, asset.content_type, asset.body),
            None => plain(StatusCode::NOT_FOUND, "no such file"),
        };
    }
    if path == "/logout" {
        if method != Method::POST {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        }
        if let Err(response) = same_origin(web, peer, &request, "sign-out") {
            return *response;
        }
        if let Some(token) = cookie(&request) {
            // What it opened (terminals, transfers) ends too.
            web.shared.web_logins.end(&token, "signed out");
        }
        let mut response = plain(
            StatusCode::OK,
            "signed out; run ssh PERSON@BASTION web to sign in again",
        );
        if let Ok(value) = HeaderValue::from_str(&format!(
            "{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
        )) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return response;
    }
    if let Some(sso) = web.shared.sso.clone() {
        if path == "/oidc/login" || path.starts_with("/sso/") {
            let code = path.strip_prefix("/sso/");
            return match method {
                Method::POST => super::sso::begin(web, &sso, peer, &request, code).await,
                Method::GET => match code {
                    Some(code) => super::sso::code_page(&sso, code),
                    None => plain(StatusCode::METHOD_NOT_ALLOWED, "use the button on /"),
                },
                _ => plain(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
            };
        }
        if path == crate::sso::CALLBACK {
            return super::sso::callback(web, &sso, peer, &request).await;
        }
        if path == "/certificate" {
            if method != Method::POST {
                return plain(StatusCode::METHOD_NOT_ALLOWED, "use the form on /");
            }
            return match signed_in(web, peer, &request) {
                Ok(grant) => super::sso::certificate(web, peer, request, &grant).await,
                Err(response) => *response,
            };
        }
        // The start page of a browser that is not signed in offers the
        // provider.
        if path == "/"
            && method == Method::GET
            && cookie(&request).is_none_or(|token| {
                web.shared
                    .web_logins
                    .session(&token, crate::audit::unix_now())
                    .is_err()
            })
        {
            return super::sso::start_page(&sso);
        }
    }
    if path.starts_with("/ws/") {
        return websocket(web, peer, request).await;
    }
    if let Some(target) = path.strip_prefix("/files/") {
        let target = target.to_string();
        return files(web, peer, request, &target).await;
    }
    if method != Method::GET && method != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    let grant = match signed_in(web, peer, &request) {
        Ok(grant) => grant,
        Err(response) => return *response,
    };
    if path == "/" {
        return targets_page(web, &grant).await;
    }
    if let Some(target) = path.strip_prefix("/t/") {
        return match parse_target(&grant.person, target) {
            Ok(_) => respond(
                StatusCode::OK,
                super::assets::TERMINAL_PAGE.content_type,
                super::assets::TERMINAL_PAGE.body,
            ),
            Err(error) => plain(StatusCode::BAD_REQUEST, &error),
        };
    }
    plain(
        StatusCode::NOT_FOUND,
        "not found; open / for the targets you may reach",
    )
}

/// The page a sign-in link opens: whose link it is, and a button that
/// signs in (a same-origin POST); or why the link no longer works.
fn sign_in_page(
    web: &Web,
    peer: SocketAddr,
    request: &Request<Incoming>,
    token: &str,
) -> Response<Body> {
    match web
        .shared
        .web_logins
        .person_of(token, crate::audit::unix_now())
    {
        Ok(person) => {
            let person = escape(&person);
            let page = format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign in as {person}</title>\
                 <link rel=\"stylesheet\" href=\"/assets/page.css\"></head>\
                 <body class=\"list\"><h1>Sign in as {person}?</h1>\
                 <p>This link signs you in to the bastion's web terminal as <b>{person}</b>, once. \
                 Sign in only if you asked for it (<code>ssh {person}@bastion web</code>).</p>\
                 <form method=\"post\"><button type=\"submit\">Sign in as {person}</button></form>\
                 </body></html>\n"
            );
            respond(StatusCode::OK, "text/html; charset=utf-8", page)
        }
        Err(error) => link_refused(web, peer, request, error),
    }
}

/// A link that no longer signs in: logged, audited, and the line for the
/// person.
fn link_refused(
    web: &Web,
    peer: SocketAddr,
    request: &Request<Incoming>,
    error: super::links::LinkError,
) -> Response<Body> {
    use super::links::LinkError;
    let source = client(web, peer, request);
    if web.shared.failed_sign_ins.failed(source) == crate::limits::Failure::Folded {
        return plain(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed sign-ins from this address; wait a minute, then run ssh PERSON@BASTION web for a new link",
        );
    }
    tracing::info!(%source, %error, "web: sign-in link refused");
    web.shared.audit.record(crate::audit::Event::Auth {
        source: source.to_string(),
        login: String::new(),
        method: "web-link".into(),
        fingerprint: None,
        success: false,
        reason: Some(error.to_string()),
    });
    let status = match error {
        LinkError::Used | LinkError::Expired => StatusCode::GONE,
        LinkError::Unknown => StatusCode::NOT_FOUND,
        LinkError::Full => StatusCode::SERVICE_UNAVAILABLE,
        LinkError::PersonLinks { .. } | LinkError::PersonSessions { .. } => {
            StatusCode::TOO_MANY_REQUESTS
        }
    };
    plain(status, &error.to_string())
}

/// Every `FOLD_EVERY`, one audit event per source for the failed sign-ins
/// that were answered 429 and not audited one by one.
pub async fn fold_failed_sign_ins(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(FOLD_EVERY);
    loop {
        tick.tick().await;
        for (source, count) in shared.failed_sign_ins.fold() {
            tracing::info!(%source, count, "web: failed sign-ins folded");
            shared.audit.record(crate::audit::Event::Auth {
                source: source.to_string(),
                login: String::new(),
                method: "web-link".into(),
                fingerprint: None,
                success: false,
                reason: Some(format!(
                    "{count} more failed sign-ins from this address, answered 429 and folded into this event"
                )),
            });
        }
    }
}

/// How often folded sign-in failures are audited.
const FOLD_EVERY: Duration = Duration::from_secs(10);

/// Uses up a sign-in link: sets the session cookie and opens the targets.
fn login(web: &Web, peer: SocketAddr, request: &Request<Incoming>, token: &str) -> Response<Body> {
    let source = client(web, peer, request);
    match web
        .shared
        .web_logins
        .redeem(token, crate::audit::unix_now())
    {
        Ok(signed_in) => {
            tracing::info!(%source, person = %signed_in.person, "web: signed in with a link");
            web.shared.audit.record(crate::audit::Event::Auth {
                source: source.to_string(),
                login: signed_in.person.clone(),
                method: "web-link".into(),
                fingerprint: None,
                success: true,
                reason: None,
            });
            let mut response = redirect("/");
            if let Some(value) = session_cookie(&signed_in) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(error) => link_refused(web, peer, request, error),
    }
}

/// The targets the person may reach, as links to their terminals.
async fn targets_page(web: &Web, grant: &Grant) -> Response<Body> {
    let reachable = crate::reachable::reachable(
        &web.shared.cluster,
        &grant.identity,
        web.shared.config.timeouts.api(),
    )
    .await;
    let link = |name: &str, text: &str, class: &str| {
        let (name, text) = (escape(name), escape(text));
        format!("<a class=\"{class}\" href=\"/t/{name}\" target=\"_blank\">{text}</a>")
    };
    let list = |names: &[String]| {
        if names.is_empty() {
            return "<p class=\"note\">none</p>".to_string();
        }
        let items: String = names
            .iter()
            .map(|name| {
                // A pod's containers that have run: a terminal in each, and
                // its log.
                let containers: String = reachable
                    .containers
                    .get(name)
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        format!(
                            " <span class=\"container\">{} {}</span>",
                            link(&format!("{name}/{c}"), c, "shell"),
                            link(&format!("{name}/{c}.logs"), "logs", "logs"),
                        )
                    })
                    .collect();
                format!("<li>{}{containers}</li>", link(name, name, "target"))
            })
            .collect();
        format!("<ul class=\"targets\">{items}</ul>")
    };
    let person = escape(&grant.person);
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>kbastion: {person}</title><link rel=\"stylesheet\" href=\"/assets/page.css\"></head>\
         <body class=\"list\"><form class=\"signout\" method=\"post\" action=\"/logout\">\
         <button type=\"submit\">Sign out</button></form><h1>Targets for {person}</h1>\
         <p class=\"note\">Each opens a terminal in a new tab. A container: /t/NAMESPACE/POD[/CONTAINER]; its log: /t/NAMESPACE/POD/CONTAINER.logs; a node: /t/NODE.</p>\
         <h2>Pods</h2>{pods}{more}<h2>Nodes</h2>{nodes}{certificate}</body></html>\n",
        pods = list(&reachable.pods),
        more = if reachable.more_pods > 0 {
            format!(
                "<p class=\"note\">And {} more not shown: open /t/NAMESPACE/POD for one of them.</p>",
                reachable.more_pods
            )
        } else {
            String::new()
        },
        nodes = list(&reachable.nodes),
        certificate = match grant.credential.as_ref().and_then(|c| c.claimed()) {
            // Signed in with the provider: an SSH certificate for a key.
            Some(_) if web.shared.sso.is_some() => {
                "<h2>SSH certificate</h2><form method=\"post\" action=\"/certificate\">\
                 <p class=\"note\">Paste your public key (~/.ssh/id_ed25519.pub); save the answer as ~/.ssh/id_ed25519-cert.pub and ssh, scp and your IDE log in with no prompt.</p>\
                 <textarea id=\"public-key\" name=\"key\" rows=\"3\" cols=\"80\"></textarea><br>\
                 <button id=\"get-certificate\" type=\"submit\">Get a certificate</button></form>"
            }
            _ => "",
        },
    );
    respond(StatusCode::OK, "text/html; charset=utf-8", page)
}

/// The query parameters of a WebSocket request that reattaches.
fn reattach(request: &Request<Incoming>) -> Option<(String, u64)> {
    let query = request.uri().query()?;
    let mut id = None;
    let mut offset = 0;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "attach" => id = Some(value.into_owned()),
            "offset" => offset = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    id.map(|id| (id, offset))
}

/// Who made a request, for the audit trail.
fn client_of(web: &Web, peer: SocketAddr, request: &Request<Incoming>) -> super::admission::Client {
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(256).collect::<String>());
    super::admission::Client {
        source: SocketAddr::new(client(web, peer, request), peer.port()),
        user_agent,
        browser_session: cookie(request).unwrap_or_default(),
    }
}

/// A download (GET) or an upload (PUT, only from our pages) of one of the
/// target's files (`files`).
async fn files(
    web: &Arc<Web>,
    peer: SocketAddr,
    request: Request<Incoming>,
    target: &str,
) -> Response<Body> {
    let method = request.method().clone();
    if method != Method::GET && method != Method::PUT {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET to download, PUT to upload",
        );
    }
    // A download can add a debug container or read a log: only our own
    // pages may ask, as for an upload.
    let what = if method == Method::PUT {
        "upload"
    } else {
        "download"
    };
    if let Err(response) = same_origin(web, peer, &request, what) {
        return *response;
    }
    let grant = match signed_in(web, peer, &request) {
        Ok(grant) => grant,
        Err(response) => return *response,
    };
    let target = match parse_target(&grant.person, target) {
        Ok(target) => target,
        Err(error) => return plain(StatusCode::BAD_REQUEST, &error),
    };
    let path = match super::files::file_path(request.uri().query()) {
        Ok(path) => path,
        Err(error) => return plain(StatusCode::BAD_REQUEST, &error),
    };
    let client = client_of(web, peer, &request);
    if method == Method::GET {
        super::files::download(&web.shared, &grant, &target, path, &client).await
    } else {
        let body = request.into_body();
        super::files::upload(&web.shared, &grant, &target, path, &client, body).await
    }
}

/// The WebSocket handshake (RFC 6455 §4.2): only from a page of ours (the
/// Origin header, which browsers set and pages cannot forge, must be
/// exactly the configured origin) and only with a live session cookie.
async fn websocket(
    web: &Arc<Web>,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Response<Body> {
    if let Err(response) = same_origin(web, peer, &request, "WebSocket") {
        return *response;
    }
    let grant = match signed_in(web, peer, &request) {
        Ok(grant) => grant,
        Err(response) => return *response,
    };
    let path = request.uri().path().to_string();
    let target = match parse_target(&grant.person, path.trim_start_matches("/ws/")) {
        Ok(target) => target,
        Err(error) => return plain(StatusCode::BAD_REQUEST, &error),
    };
    let headers = request.headers();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let version = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| upgrade && version)
    else {
        return plain(
            StatusCode::BAD_REQUEST,
            "this address is the terminal's WebSocket; open /t/TARGET instead",
        );
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let client = client_of(web, peer, &request);
    let attach = reattach(&request);
    let upgraded = hyper::upgrade::on(&mut request);
    let web = web.clone();
    tokio::spawn(async move {
        let upgraded = match upgraded.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%peer, %error, "web: WebSocket upgrade failed");
                return;
            }
        };
        let socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            Some(super::terminal::websocket_config()),
        )
        .await;
        super::terminal::serve(
            web.shared.clone(),
            web.terminals.clone(),
            grant,
            target,
            attach,
            client,
            socket,
        )
        .await;
    });
    let mut response = respond(StatusCode::SWITCHING_PROTOCOLS, "text/plain", "");
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_the_login_grammar() {
        assert_eq!(
            parse_target("alice", "shop/web-0/app"),
            Ok(Target::Container {
                namespace: "shop".into(),
                pod: "web-0".into(),
                container: Some("app".into()),
                view: crate::login::View::Container,
            })
        );
        assert_eq!(
            parse_target("alice", "node-1/"),
            Ok(Target::Node {
                node: "node-1".into()
            })
        );
        assert!(parse_target("alice", "").is_err());
        assert!(parse_target("alice", "Shop/%3Cx%3E").is_err());
        assert!(parse_target("alice", "a/b/c/d").is_err());
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
