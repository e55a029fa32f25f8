//! The one admission every session passes, whatever door it came by (an
//! SSH channel, a forward, a web terminal, a file transfer from the
//! page): the drain, the credential as configured now (from where the
//! request comes), the person's session limit, the target and the
//! person's right to it (`target::resolve`, which routes containers,
//! nodes, `.logs` and `.debug` and guards the protected namespaces), then
//! `Opening::start` (audit room, recording, registry). Every refusal is
//! audited through the `Opening`.
//!
//! Doors turn what their client asked into an `Opening` and a `Target`,
//! call `admit`, and say a `Refusal` their own way (an SSH line, an HTTP
//! status).

use std::net::IpAddr;

use super::Opening;
use super::io::Pty;
use crate::bastion::Shared;
use crate::login::Target;
use crate::pods::TargetError;
use crate::revocation::Credential;
use crate::target::Reached;

/// Why a session was not admitted. Its text is the line the person reads.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the bastion is restarting; reconnect to reach another replica")]
    Draining,
    #[error("access revoked: {0}")]
    Revoked(String),
    #[error("too many sessions for {person} (limit {limit})")]
    TooManySessions { person: String, limit: usize },
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The audit trail or the recording could not take it.
    #[error("{0}")]
    NotStarted(String),
}

impl Refusal {
    /// The HTTP status a door over HTTP answers the refusal with.
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Refusal::Draining | Refusal::NotStarted(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Revoked(_) => StatusCode::FORBIDDEN,
            Refusal::TooManySessions { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Target(error) => match error {
                TargetError::PodNotFound { .. }
                | TargetError::ContainerNotFound { .. }
                | TargetError::NodeNotFound(_) => StatusCode::NOT_FOUND,
                TargetError::Forbidden(_) | TargetError::BastionNamespace(_) => {
                    StatusCode::FORBIDDEN
                }
                TargetError::PodNotRunning { .. }
                | TargetError::ContainerNotRunning { .. }
                | TargetError::NodeNotReady { .. } => StatusCode::CONFLICT,
                TargetError::LogsForward(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            },
        }
    }
}

/// The credential a session is admitted on, and the address the request
/// comes from (a certificate's `source-address` binds every door).
pub struct Presented<'a> {
    pub credential: Option<&'a Credential>,
    pub address: IpAddr,
}

/// A session admitted and started: what it reaches, and the session that
/// records its end and holds its places (the person's slot, a node
/// shell's hold) until then.
pub struct Admitted {
    pub reaches: Reached,
    pub session: super::Session,
}

/// A session that passed the gate and has not started: a door may check
/// what only it knows (a forward's destination) before `start`.
pub struct Cleared<'a> {
    opening: Opening<'a>,
    pub reaches: Reached,
    places: super::Places,
}

impl Cleared<'_> {
    /// Refuses it after all, audited, with the door's reason.
    pub fn refuse(self, reason: &str) {
        self.opening.refused(reason);
    }

    /// Starts it (`Opening::start`).
    pub async fn start(self, pty: Option<&Pty>) -> Result<Admitted, Refusal> {
        let session = self
            .opening
            .start(pty, self.places)
            .await
            .map_err(Refusal::NotStarted)?;
        Ok(Admitted {
            reaches: self.reaches,
            session,
        })
    }
}

/// Admits and starts a session to `target` (`subresource` is what it does
/// there: `exec`, or `portforward` for a forward), or refuses it, audited.
pub async fn admit(
    opening: Opening<'_>,
    presented: Presented<'_>,
    target: &Target,
    subresource: &str,
    pty: Option<&Pty>,
) -> Result<Admitted, Refusal> {
    clear(opening, presented, target, subresource)
        .await?
        .start(pty)
        .await
}

/// Admits a session without starting it; a refusal is audited.
pub async fn clear<'a>(
    opening: Opening<'a>,
    presented: Presented<'_>,
    target: &Target,
    subresource: &str,
) -> Result<Cleared<'a>, Refusal> {
    match admit_checked(&opening, presented, target, subresource).await {
        Ok((reaches, places)) => Ok(Cleared {
            opening,
            reaches,
            places,
        }),
        Err(refusal) => {
            opening.refused(&refusal.to_string());
            Err(refusal)
        }
    }
}

/// The part of admission a door may also ask before a request is known
/// (an SSH channel being opened): the bastion is not draining, and the
/// credential holds as configured now, from this address.
pub fn still_open(shared: &Shared, presented: &Presented<'_>) -> Result<(), Refusal> {
    if shared.notice.borrow().is_some() {
        return Err(Refusal::Draining);
    }
    if let Some(credential) = presented.credential {
        credential
            .check(
                &shared.access().lists(),
                presented.address,
                crate::audit::unix_now(),
            )
            .map_err(Refusal::Revoked)?;
    }
    Ok(())
}

async fn admit_checked(
    opening: &Opening<'_>,
    presented: Presented<'_>,
    target: &Target,
    subresource: &str,
) -> Result<(Reached, super::Places), Refusal> {
    let shared = opening.shared;
    still_open(shared, &presented)?;
    let slot = shared
        .sessions_per_user
        .take(opening.person.to_string())
        .ok_or_else(|| Refusal::TooManySessions {
            person: opening.person.to_string(),
            limit: shared.config.limits.max_sessions_per_user,
        })?;
    let (reaches, hold) =
        crate::target::resolve(shared, opening.identity, target, subresource).await?;
    Ok((
        reaches,
        super::Places {
            _slot: Some(slot),
            _hold: hold,
        },
    ))
}

/// Checks a logged-in credential again on every reload of the access
/// lists and when its certificate expires, until it no longer holds from
/// `address`; then audits the revocation and returns its reason. Every
/// door watches its logins with this (an SSH connection, a kubectl door
/// session); the door ends what the login holds.
pub async fn revoked(shared: &Shared, credential: &Credential, address: IpAddr) -> String {
    let mut reloads = shared.reloads.subscribe();
    // A year: far enough for "never", near enough for tokio's clock.
    let horizon = std::time::Duration::from_secs(365 * 24 * 3600);
    let reason = loop {
        let now = crate::audit::unix_now();
        if let Err(reason) = credential.check(&shared.access().lists(), address, now) {
            break reason;
        }
        let until_expiry = credential
            .expires()
            .map(|at| std::time::Duration::from_secs(at.saturating_sub(now)).min(horizon))
            .unwrap_or(horizon);
        tokio::select! {
            changed = reloads.changed() => if changed.is_err() {
                // The bastion is going away; nothing more to watch.
                std::future::pending::<()>().await;
            },
            () = tokio::time::sleep(until_expiry) => {}
        }
    };
    let person = credential.person().to_string();
    tracing::info!(%address, %person, %reason, "access revoked: ending what the login holds");
    shared.audit.record(crate::audit::Event::Revocation {
        source: address.to_string(),
        person,
        reason: reason.clone(),
    });
    reason
}
