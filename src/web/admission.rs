//! What every web session passes before it starts, as an SSH channel
//! does: the drain, the per-person session limit, the target and the
//! person's right to it (resolution, with its SubjectAccessReview), then
//! `Opening::start` (audit, recording). A terminal and a file transfer
//! from the page are both admitted here, and both end through `end`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::links::Grant;
use crate::audit::SessionKind;
use crate::audit::Transport;
use crate::bastion::Shared;
use crate::login::{Target, View};
use crate::node_shell::NodeHold;
use crate::pods::{ExecTarget, TargetError};
use crate::session::control::Report;
use crate::session::io::Pty;
use crate::session::{Opening, Session};

/// Who opened a web session, for the audit trail.
#[derive(Debug, Clone)]
pub struct Client {
    pub source: SocketAddr,
    pub user_agent: Option<String>,
    /// The browser session (the cookie's token) the request came with.
    pub browser_session: String,
}

/// What a web session reaches.
pub enum Reaches {
    /// A container or a node, through execs.
    Exec(ExecTarget),
    /// A container's log (`CONTAINER.logs`), through `pods/log`.
    Log(crate::log_files::LogSource),
}

impl Reaches {
    /// Its files, for a transfer from the page: the target's, or a log's
    /// `current` and `previous`.
    pub fn files(self, api_wait: std::time::Duration) -> crate::remote_fs::RemoteFs {
        use crate::remote_fs::RemoteFs;
        match self {
            Reaches::Exec(target) => RemoteFs::new(Arc::new(target), api_wait),
            Reaches::Log(source) => {
                RemoteFs::log(crate::log_files::LogFiles::new(source, api_wait), api_wait)
            }
        }
    }
}

/// A started web session: what it runs on and with, and its `Ending`.
pub struct Admitted {
    pub reaches: Reaches,
    /// What the bridge and the services run it with (its rules, with the
    /// revocation of the credential behind the browser session).
    pub context: crate::bridge::SessionContext,
    pub ending: Ending,
}

/// What a started web session holds until it ends.
pub struct Ending {
    pub session: Session,
    hold: Option<NodeHold>,
    slot: crate::limits::Slot<String>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Ending {
    /// Records the end and gives back the session's places.
    pub fn end(self, report: &Report) {
        self.session.end(report);
        self.watcher.abort();
        drop((self.hold, self.slot));
    }
}

/// Why a web session was not admitted: the one line for the person, and
/// the HTTP status that says the same (for requests answered in HTTP).
#[derive(Debug)]
pub struct Refused {
    pub status: http::StatusCode,
    pub reason: String,
}

/// The HTTP status of a target that cannot be reached.
fn status_of(error: &TargetError) -> http::StatusCode {
    use http::StatusCode;
    match error {
        TargetError::PodNotFound { .. }
        | TargetError::ContainerNotFound { .. }
        | TargetError::NodeNotFound(_) => StatusCode::NOT_FOUND,
        TargetError::Forbidden(_) | TargetError::BastionNamespace(_) => StatusCode::FORBIDDEN,
        TargetError::PodNotRunning { .. }
        | TargetError::ContainerNotRunning { .. }
        | TargetError::NodeNotReady { .. } => StatusCode::CONFLICT,
        TargetError::LogsForward(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// Admits a session of `kind` to `target` for the signed-in person, or
/// says why not in one line (also audited as a refusal).
pub async fn admit(
    shared: &Arc<Shared>,
    grant: &Grant,
    target: &Target,
    client: &Client,
    kind: SessionKind,
    pty: Option<&Pty>,
    setup_started: Instant,
) -> Result<Admitted, Refused> {
    use http::StatusCode;
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
    let refused = |status: StatusCode, reason: String| {
        opening.refused(&reason);
        Refused { status, reason }
    };
    if shared.notice.borrow().is_some() {
        return Err(refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "the bastion is restarting; reconnect to reach another replica".into(),
        ));
    }
    // The credential as configured now, from where this request comes
    // (a certificate's source-address binds the browser as it binds ssh).
    if let Some(credential) = &grant.credential
        && let Err(reason) = credential.check(
            &shared.access().lists(),
            client.source.ip(),
            super::unix_now(),
        )
    {
        return Err(refused(
            StatusCode::FORBIDDEN,
            format!("access revoked: {reason}"),
        ));
    }
    let Some(slot) = shared.sessions_per_user.take(grant.person.clone()) else {
        return Err(refused(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many sessions for {} (limit {})",
                grant.person, shared.config.limits.max_sessions_per_user
            ),
        ));
    };
    let resolved = match target {
        Target::Container {
            namespace,
            pod,
            container,
            view: View::Logs,
        } => crate::logs::authorize(
            shared,
            &grant.identity,
            namespace,
            pod,
            container.as_deref(),
        )
        .await
        .map(|source| (Reaches::Log(source), None)),
        _ => crate::target::resolve(shared, &grant.person, &grant.identity, target, "exec")
            .await
            .map(|(exec, hold)| (Reaches::Exec(exec), hold)),
    };
    let (reaches, hold) =
        resolved.map_err(|error| refused(status_of(&error), error.to_string()))?;
    let session = opening.start(pty).await.map_err(|reason| Refused {
        status: StatusCode::SERVICE_UNAVAILABLE,
        reason,
    })?;
    let (revoked_tx, revoked) = watch::channel(None);
    let watcher = tokio::spawn(watch_credential(
        shared.clone(),
        grant.clone(),
        client.clone(),
        revoked_tx,
    ));
    let context = session.context(&grant.identity.user, shared.control(revoked));
    Ok(Admitted {
        reaches,
        context,
        ending: Ending {
            session,
            hold,
            slot,
            watcher,
        },
    })
}

/// Checks the credential behind a web session again on every reload and
/// when a certificate expires; once it no longer holds, the session is
/// told through `revoked` and ends, as an SSH connection's would.
async fn watch_credential(
    shared: Arc<Shared>,
    grant: Grant,
    client: Client,
    revoked: watch::Sender<Option<String>>,
) {
    let source = client.source.ip();
    let mut reloads = shared.reloads.subscribe();
    let mut ended = shared.web_logins.ended();
    let revoke = |reason: String| {
        tracing::info!(%source, person = %grant.person, %reason, "web: access revoked: ending the session");
        shared.audit.record(crate::audit::Event::Revocation {
            source: source.to_string(),
            person: grant.person.clone(),
            reason: reason.clone(),
        });
        revoked.send_replace(Some(reason));
    };
    // A year: far enough for "never", near enough for tokio's clock.
    let horizon = std::time::Duration::from_secs(365 * 24 * 3600);
    loop {
        let now = super::unix_now();
        let checked = match (&grant.credential, grant.ends) {
            (_, Some(ends)) if ends <= now => {
                Err("the browser session has ended (web.session_max_secs)".to_string())
            }
            (Some(credential), _) => credential.check(&shared.access().lists(), source, now),
            (None, _) => Ok(()),
        };
        if let Err(reason) = checked {
            revoke(reason);
            return;
        }
        let until_expiry = grant
            .credential
            .as_ref()
            .and_then(|credential| credential.expires())
            .into_iter()
            .chain(grant.ends)
            .min()
            .map(|at| std::time::Duration::from_secs(at.saturating_sub(now)).min(horizon))
            .unwrap_or(horizon);
        tokio::select! {
            changed = reloads.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(until_expiry) => {}
            // Its browser session was signed out or revoked.
            Ok((token, why)) = ended.recv() => if token == client.browser_session {
                revoke(why);
                return;
            },
        }
    }
}
