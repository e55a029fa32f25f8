//! A web session's way through the gate (`session::gate`, as an SSH
//! channel's): the browser session's grant and address become an
//! `Opening`, a refusal an HTTP status; once admitted, the credential
//! behind the browser session is watched while it runs. A terminal and a
//! file transfer from the page are both admitted here, and both end
//! through `Ending::end`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::links::Grant;
use crate::audit::SessionKind;
use crate::audit::Transport;
use crate::bastion::Shared;
use crate::login::Target;
use crate::session::control::Report;
use crate::session::gate::{self, Presented};
use crate::session::io::Pty;
use crate::session::{Opening, Session};
use crate::target::Reached;

/// Who opened a web session, for the audit trail.
#[derive(Debug, Clone)]
pub struct Client {
    pub source: SocketAddr,
    pub user_agent: Option<String>,
    /// The browser session (the cookie's token) the request came with.
    pub browser_session: String,
}

/// Its files, for a transfer from the page: the target's, or a log's
/// `current` and `previous`.
pub fn files(reaches: Reached, api_wait: std::time::Duration) -> crate::remote_fs::RemoteFs {
    use crate::remote_fs::RemoteFs;
    match reaches {
        Reached::Exec(target) => RemoteFs::new(Arc::new(target), api_wait),
        Reached::Log(source) => {
            RemoteFs::log(crate::log_files::LogFiles::new(source, api_wait), api_wait)
        }
    }
}

/// A started web session: what it runs on and with, and its `Ending`.
pub struct Admitted {
    pub reaches: Reached,
    /// What the bridge and the services run it with (its rules, with the
    /// revocation of the credential behind the browser session).
    pub context: crate::bridge::SessionContext,
    pub ending: Ending,
}

/// What a started web session holds until it ends.
pub struct Ending {
    pub session: Session,
    watcher: tokio::task::JoinHandle<()>,
}

impl Ending {
    /// Records the end and gives back the session's places.
    pub fn end(self, report: &Report) {
        self.session.end(report);
        self.watcher.abort();
    }
}

/// Why a web session was not admitted: the one line for the person, and
/// the HTTP status that says the same (for requests answered in HTTP).
#[derive(Debug)]
pub struct Refused {
    pub status: http::StatusCode,
    pub reason: String,
}

/// Admits a session of `kind` to `target` for the signed-in person
/// through the gate, or says why not in one line (audited there).
pub async fn admit(
    shared: &Arc<Shared>,
    grant: &Grant,
    target: &Target,
    client: &Client,
    kind: SessionKind,
    pty: Option<&Pty>,
    setup_started: Instant,
) -> Result<Admitted, Refused> {
    let opening = Opening {
        shared,
        transport: Transport::Web,
        source: client.source.to_string(),
        user_agent: client.user_agent.clone(),
        person: &grant.person,
        identity: &grant.identity,
        target: target.to_string(),
        kind,
        setup_started,
    };
    let presented = Presented {
        credential: grant.credential.as_ref(),
        address: client.source.ip(),
    };
    let admitted = gate::admit(opening, presented, target, "exec", pty)
        .await
        .map_err(|refusal| Refused {
            status: refusal.http_status(),
            reason: refusal.to_string(),
        })?;
    let (revoked_tx, revoked) = watch::channel(None);
    let watcher = tokio::spawn(watch_credential(
        shared.clone(),
        grant.clone(),
        client.clone(),
        revoked_tx,
    ));
    let context = admitted
        .session
        .context(&grant.identity.user, shared.control(revoked));
    Ok(Admitted {
        reaches: admitted.reaches,
        context,
        ending: Ending {
            session: admitted.session,
            watcher,
        },
    })
}

/// Ends a web session when what it stands on no longer holds: its login's
/// credential (`gate::revoked`, the same watch as every door's, which
/// audits the revocation), the browser session's end
/// (`web.session_max_secs`), or a sign-out or revocation of that browser
/// session. The session is told through `revoked`, as an SSH
/// connection's would be.
async fn watch_credential(
    shared: Arc<Shared>,
    grant: Grant,
    client: Client,
    revoked: watch::Sender<Option<String>>,
) {
    let source = client.source.ip();
    let mut ended = shared.web_logins.ended();
    let credential = async {
        match &grant.credential {
            Some(credential) => gate::revoked(&shared, credential, source).await,
            None => std::future::pending().await,
        }
    };
    let browser_session_over = async {
        match grant.ends {
            Some(ends) => {
                let left = ends.saturating_sub(crate::audit::unix_now());
                tokio::time::sleep(std::time::Duration::from_secs(left)).await;
                Some("the browser session has ended (web.session_max_secs)".to_string())
            }
            None => std::future::pending().await,
        }
    };
    let signed_out = async {
        loop {
            match ended.recv().await {
                Ok((token, why)) if token == client.browser_session => return Some(why),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await
                }
            }
        }
    };
    let reason = tokio::select! {
        // Audited as a revocation by the gate's watch.
        reason = credential => {
            revoked.send_replace(Some(reason));
            return;
        }
        Some(reason) = browser_session_over => reason,
        Some(reason) = signed_out => reason,
    };
    tracing::info!(%source, person = %grant.person, %reason, "web: access revoked: ending the session");
    shared.audit.record(crate::audit::Event::Revocation {
        source: source.to_string(),
        person: grant.person.clone(),
        reason: reason.clone(),
    });
    revoked.send_replace(Some(reason));
}
