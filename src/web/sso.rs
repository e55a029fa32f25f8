//! The web terminal's single sign-on pages (`sso`): "Sign in with …" on
//! the start page, the page an ssh connection's code opens (which says
//! what it approves), the provider's callback, and the form that turns a
//! signed-in person's public key into an SSH certificate.
//!
//! Starting a sign-in is a same-origin POST, never a link: a page of
//! another site cannot walk a visitor through the provider (whose session
//! may sign them in without a click) to approve someone else's
//! connection. The way to the provider and back to `/` is a page that
//! moves on by itself (`continue_to`), so no form submission is
//! redirected to another origin and the strict session cookie is sent on
//! arrival.

use std::net::SocketAddr;

use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::links::Grant;
use super::response::{Body, plain, respond};
use super::state::{Web, client, escape, named_cookie, same_origin, session_cookie};
use crate::sso::flows::Purpose;
use crate::sso::{Sso, SsoError};

/// The cookie that binds a provider's callback to the browser that began
/// the sign-in. `Lax`: it must come back on the provider's top-level
/// redirect to us.
const BINDING_COOKIE: &str = "__Host-kbastion-sso";

/// The audit trail's name for a sign-in with the provider.
const METHOD: &str = "oidc";

/// The most of a certificate form's body that is read.
const MAX_FORM: usize = 16 * 1024;

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/assets/page.css\"></head>\
         <body class=\"list\">{body}</body></html>\n"
    )
}

/// A page that moves on to `location` by itself (and says where).
fn continue_to(location: &str, text: &str) -> Response<Body> {
    let location = escape(location);
    respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        page(
            "kbastion",
            &format!(
                "<meta http-equiv=\"refresh\" content=\"0;url={location}\"><p>{text} <a id=\"continue\" href=\"{location}\">Continue</a></p>"
            ),
        ),
    )
}

/// The start page of a browser that is not signed in.
pub(super) fn start_page(sso: &Sso) -> Response<Body> {
    let provider = escape(&sso.config.display_name());
    respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        page(
            "kbastion: sign in",
            &format!(
                "<h1>Sign in to kbastion</h1>\
                 <form method=\"post\" action=\"/oidc/login\"><button id=\"sign-in\" type=\"submit\">Sign in with {provider}</button></form>\
                 <p class=\"note\">Or, with an SSH key: <code>ssh PERSON@BASTION web</code> prints a one-time sign-in link.</p>"
            ),
        ),
    )
}

/// The page `/sso/CODE` shows: which ssh connection signing in approves.
pub(super) fn code_page(sso: &Sso, code: &str) -> Response<Body> {
    match sso.flows.asking(code, crate::audit::unix_now()) {
        Ok(asking) => {
            let when = jiff::Timestamp::from_second(asking.asked as i64)
                .map(|t| t.to_string())
                .unwrap_or_default();
            let provider = escape(&sso.config.display_name());
            respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                page(
                    "kbastion: approve an ssh login",
                    &format!(
                        "<h1>Approve this ssh login?</h1>\
                         <p>An ssh connection from <b id=\"source\">{source}</b> asked at <b>{when}</b> to log in as <b id=\"login\">{login}</b>.</p>\
                         <p>Sign in only if that is your own ssh command: the connection goes on as you.</p>\
                         <form method=\"post\"><button id=\"approve\" type=\"submit\">Sign in with {provider} and approve</button></form>",
                        source = escape(&asking.source.ip().to_string()),
                        login = escape(&asking.login),
                    ),
                ),
            )
        }
        Err(error) => plain(StatusCode::GONE, &error.to_string()),
    }
}

/// Begins a sign-in at the provider (a POST from our own page), for the
/// browser or for the connection waiting on `code`.
pub(super) async fn begin(
    web: &Web,
    sso: &Sso,
    peer: SocketAddr,
    request: &Request<Incoming>,
    code: Option<&str>,
) -> Response<Body> {
    if let Err(response) = same_origin(web, peer, request, "sign-in") {
        return *response;
    }
    let now = crate::audit::unix_now();
    let purpose = match code {
        None => Purpose::Browser,
        Some(code) => {
            if let Err(error) = sso.flows.asking(code, now) {
                return plain(StatusCode::GONE, &error.to_string());
            }
            Purpose::Connection(code.to_string())
        }
    };
    let source = client(web, peer, request);
    match sso.begin(purpose, source, now).await {
        Ok(redirect) => {
            let mut response = continue_to(&redirect.url, "On to the sign-in provider.");
            let binding = format!(
                "{BINDING_COOKIE}={}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
                redirect.binding, sso.config.sign_in_secs
            );
            if let Ok(value) = HeaderValue::from_str(&binding) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(error) => {
            tracing::warn!(%source, %error, "web: cannot begin a sign-in with the provider");
            let status = match error {
                SsoError::Flow(_) => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::BAD_GATEWAY,
            };
            plain(status, &error.to_string())
        }
    }
}

/// A query parameter.
fn query(request: &Request<Incoming>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(request.uri().query()?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The provider's redirect back: the sign-in finishes (the code exchanged,
/// the ID token verified) and serves what it was begun for.
pub(super) async fn callback(
    web: &Web,
    sso: &Sso,
    peer: SocketAddr,
    request: &Request<Incoming>,
) -> Response<Body> {
    let source = client(web, peer, request);
    let refused = |status: StatusCode, login: &str, reason: &str| {
        tracing::info!(%source, %reason, "web: sign-in with the provider refused");
        web.shared.audit.record(crate::audit::Event::Auth {
            source: source.to_string(),
            login: crate::login::for_log(login),
            method: METHOD.into(),
            fingerprint: None,
            success: false,
            reason: Some(reason.to_string()),
        });
        if web.shared.failed_sign_ins.failed(source) == crate::limits::Failure::Folded {
            return plain(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed sign-ins from this address; wait a minute and sign in again",
            );
        }
        plain(status, reason)
    };
    if let Some(error) = query(request, "error") {
        let detail = query(request, "error_description").unwrap_or_default();
        let reason = format!(
            "the sign-in provider answered {}: {}",
            crate::login::for_log(&error),
            crate::login::for_log(&detail)
        );
        return refused(StatusCode::FORBIDDEN, "", &reason);
    }
    let (Some(state), Some(code)) = (query(request, "state"), query(request, "code")) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "",
            "the provider's answer has no state or code; sign in again",
        );
    };
    let binding = named_cookie(request, BINDING_COOKIE);
    let now = crate::audit::unix_now();
    let users = web.shared.access().users.clone();
    let completed = match sso
        .finish(&state, &code, binding.as_deref(), &users, now)
        .await
    {
        Ok(completed) => completed,
        Err(error) => {
            let status = match error {
                SsoError::Provider(crate::sso::provider::ProviderError::Unreachable { .. }) => {
                    StatusCode::BAD_GATEWAY
                }
                SsoError::Flow(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::FORBIDDEN,
            };
            return refused(status, "", &error.to_string());
        }
    };
    let person = completed.person;
    match completed.purpose {
        Purpose::Connection(code) => {
            let asked = sso
                .flows
                .asking(&code, now)
                .map(|a| a.login)
                .unwrap_or_default();
            let asked_person = crate::login::person_of(&asked).unwrap_or_default();
            if asked_person != person.name {
                let reason = format!(
                    "you signed in as {}, but the ssh connection asks to log in as {asked_person:?}; run ssh {}@... instead",
                    person.name, person.name
                );
                return refused(StatusCode::FORBIDDEN, &person.name, &reason);
            }
            match sso.flows.complete(&code, person.clone(), now) {
                Ok(asking) => {
                    tracing::info!(%source, person = %person.name, connection = %asking.source, "web: ssh login approved with the provider");
                    respond(
                        StatusCode::OK,
                        "text/html; charset=utf-8",
                        page(
                            "kbastion: approved",
                            &format!(
                                "<h1 id=\"approved\">Signed in as {}</h1><p>Your ssh connection from {} goes on as you. You may close this page.</p>",
                                escape(&person.name),
                                escape(&asking.source.ip().to_string())
                            ),
                        ),
                    )
                }
                Err(error) => refused(StatusCode::GONE, &person.name, &error.to_string()),
            }
        }
        Purpose::Browser => {
            // With a refresh token the session lasts as long as the
            // provider renews it (`renew`, up to web.session_max_secs);
            // without one, as long as the ID token.
            let valid_before = match &completed.refresh {
                Some(_) => now + web.shared.config.web.session_max_secs,
                None => completed.token_expires,
            };
            let grant = Grant {
                person: person.name.clone(),
                identity: person.identity(&sso.config),
                credential: Some(crate::revocation::Credential::SignedIn {
                    person: person.name.clone(),
                    valid_before,
                    certify_until: valid_before,
                    claimed: Box::new(person.clone()),
                    identity: None,
                }),
                ends: None,
            };
            match web.shared.web_logins.sign_in(grant, now) {
                Ok(signed_in) => {
                    tracing::info!(%source, person = %signed_in.person, "web: signed in with the provider");
                    web.shared.audit.record(crate::audit::Event::Auth {
                        source: source.to_string(),
                        login: signed_in.person.clone(),
                        method: METHOD.into(),
                        fingerprint: Some(format!("{} (sso {})", person.name, person.subject)),
                        success: true,
                        reason: None,
                    });
                    if let (Some(refresh), Some(sso)) = (completed.refresh, web.shared.sso.clone())
                    {
                        tokio::spawn(renew(
                            web.shared.clone(),
                            sso,
                            signed_in.token.clone(),
                            person.clone(),
                            Renewal {
                                refresh,
                                token_expires: completed.token_expires,
                            },
                        ));
                    }
                    let mut response = continue_to("/", "Signed in.");
                    if let Some(value) = session_cookie(&signed_in) {
                        response.headers_mut().insert(header::SET_COOKIE, value);
                    }
                    response
                }
                Err(error) => refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &person.name,
                    &error.to_string(),
                ),
            }
        }
    }
}

/// A browser session's refresh token and when its ID token expires.
struct Renewal {
    refresh: String,
    token_expires: u64,
}

/// How long a provider that does not answer is retried before the browser
/// session it should renew ends.
const RENEW_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps a browser session signed in while the provider renews it: a
/// little before each ID token expires, the refresh token is used; when
/// the provider refuses (the person left, their sign-in was revoked, their
/// groups changed), the session ends with what it opened, audited as a
/// revocation. A provider that does not answer is retried until the last
/// ID token has expired.
async fn renew(
    shared: std::sync::Arc<crate::bastion::Shared>,
    sso: std::sync::Arc<Sso>,
    session: String,
    person: crate::sso::Claimed,
    mut renewal: Renewal,
) {
    let reason = loop {
        let now = crate::audit::unix_now();
        let left = renewal.token_expires.saturating_sub(now);
        let early = (left / 2).min(30);
        tokio::time::sleep(std::time::Duration::from_secs(left - early)).await;
        let now = crate::audit::unix_now();
        if !shared.web_logins.is_open(&session, now) {
            return;
        }
        let users = shared.access().users.clone();
        match sso.renew(&renewal.refresh, &person, &users).await {
            Ok(renewed) => {
                tracing::debug!(person = %person.name, expires = renewed.token_expires, "web: sign-in renewed with the provider");
                renewal = Renewal {
                    refresh: renewed.refresh,
                    token_expires: renewed.token_expires,
                };
            }
            Err(SsoError::Provider(crate::sso::provider::ProviderError::Unreachable {
                ..
            })) if now < renewal.token_expires => tokio::time::sleep(RENEW_RETRY).await,
            Err(error) => break format!("the provider no longer renews the sign-in: {error}"),
        }
    };
    tracing::info!(person = %person.name, %reason, "web: access revoked: the browser session ends");
    shared.audit.record(crate::audit::Event::Revocation {
        source: String::new(),
        person: person.name.clone(),
        reason: reason.clone(),
    });
    shared.web_logins.end(&session, &reason);
}

/// The certificate form's answer: the certificate for the public key it
/// sent, as a file, or why not in one line.
pub(super) async fn certificate(
    web: &Web,
    peer: SocketAddr,
    request: Request<Incoming>,
    grant: &Grant,
) -> Response<Body> {
    if let Err(response) = same_origin(web, peer, &request, "certificate request") {
        return *response;
    }
    let source = client(web, peer, &request).to_string();
    let body = match http_body_util::Limited::new(request.into_body(), MAX_FORM)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("send one public key (at most {MAX_FORM} bytes)"),
            );
        }
    };
    let key = url::form_urlencoded::parse(&body)
        .find(|(name, _)| name == "key")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let Some(credential) = &grant.credential else {
        return plain(
            StatusCode::FORBIDDEN,
            "this browser session cannot get certificates",
        );
    };
    match crate::sso::certificate::answer(&web.shared, credential, &key, &source) {
        Ok(text) => {
            let mut response = respond(StatusCode::OK, "text/plain; charset=utf-8", text);
            response.headers_mut().insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"id-cert.pub\""),
            );
            response
        }
        Err(reason) => plain(StatusCode::BAD_REQUEST, &reason),
    }
}
