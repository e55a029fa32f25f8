//! The web terminal: the same sessions as SSH, in a browser tab.
//!
//! A person signs in with a one-time link that `ssh PERSON@bastion web`
//! prints (`links`); the browser then holds a session cookie bounded by
//! the credential that minted it. Pages list the targets the person may
//! reach and open one terminal per tab (`http`); each terminal is one
//! WebSocket (`wire`) carrying a session that runs through the bridge like
//! an SSH channel's (`terminal`), and survives a dropped socket for
//! `reattach_secs` with its recent output kept in a ring (`screen`).
//!
//! This module must not run commands by itself: everything that reaches a
//! target goes through the gate's resolution, authorization, audit
//! and the bridge.

pub mod admission;
pub mod assets;
pub mod files;
pub mod http;
pub mod links;
pub mod response;
pub mod screen;
pub mod sso;
pub mod state;
pub mod terminal;
pub mod wire;

/// What `ssh PERSON@bastion web` prints: a one-time sign-in link for
/// `grant`, or why there is none. Minting is audited (`source` is the SSH
/// client's address); so is the link's use (`http::login`).
pub fn sign_in_link(
    shared: &crate::bastion::Shared,
    grant: links::Grant,
    source: &str,
) -> Result<String, String> {
    let web = &shared.config.web;
    let (Some(url), Some(_)) = (&web.public_url, web.listen) else {
        return Err("the web terminal is not enabled on this bastion ([web] listen and public_url in its configuration)".into());
    };
    let person = grant.person.clone();
    let token = shared
        .web_logins
        .mint_link(grant, crate::audit::unix_now())
        .map_err(|e| e.to_string())?;
    tracing::info!(%source, %person, "web: sign-in link minted");
    shared.audit.record(crate::audit::Event::Auth {
        source: source.to_string(),
        login: person,
        method: "web-link-minted".into(),
        fingerprint: None,
        success: true,
        reason: None,
    });
    Ok(format!(
        "{}/login/{token}\nOpen it within {} s; it signs you in once.\n",
        url.trim_end_matches('/'),
        web.link_secs
    ))
}
