//! Authentication: which keys and certificates let whom in; failures'
//! log lines, audit events and delays, and the watch that ends a
//! connection once its credential no longer holds (reload, revocation,
//! expiry).

use std::net::SocketAddr;
use std::sync::Arc;

use russh::keys::{Certificate, HashAlg, PublicKey};
use russh::server::{Auth, PublicKeyOffer, VerifiedPublicKey};

use std::time::Instant;

use crate::audit::unix_now;
use crate::audit::{Event, SessionKind, Transport};
use crate::bastion::Shared;
use crate::cluster::Identity;
use crate::login::{self, LoginError, LoginName, Target};
use crate::revocation::Credential;
use crate::session::Opening;

/// Authentication methods, as the audit log names them.
const PUBLIC_KEY: &str = "publickey";
const CERTIFICATE: &str = "openssh-certificate";
const SINGLE_SIGN_ON: &str = "keyboard-interactive-sso";

/// Where a connection is in logging in, as its login timeout sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not logged in: held to `timeouts.login_secs`.
    Unauthenticated,
    /// Waiting on a browser sign-in with the provider: held to the sign-in
    /// code's own end instead, and counted among the waiting sign-ins
    /// rather than the connections logging in.
    AwaitingSignIn {
        until: tokio::time::Instant,
    },
    Authenticated,
}

/// A keyboard-interactive login under way.
enum Interactive {
    /// Its code's browser sign-in is awaited when the client answers.
    Waiting(crate::sso::flows::Waiter),
    /// Refused with the line shown to the user; rejected on the answer.
    Refused(String),
}

/// The authentication of one connection: checks each attempt, and keeps
/// the login once one succeeds.
pub(super) struct Authenticator {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// Told once someone has logged in (the login timeout stops), or
    /// waits on a sign-in.
    phase: tokio::sync::watch::Sender<Phase>,
    interactive: Option<Interactive>,
    pub(super) login: Option<Login>,
}

#[derive(Debug, Clone)]
pub(super) struct Login {
    pub(super) person: String,
    pub(super) identity: Identity,
    pub(super) target: Result<Option<Target>, LoginError>,
    /// What the credential permits (a certificate's extensions and
    /// critical options; everything for a plain key).
    pub(super) grant: crate::certificates::Grant,
    /// What logged in, checked again on every channel and every reload.
    pub(super) credential: Credential,
}

impl Login {
    /// A session of this login, about to start now.
    pub(super) fn opening<'a>(
        &'a self,
        shared: &'a Arc<Shared>,
        peer: SocketAddr,
        kind: SessionKind,
    ) -> Opening<'a> {
        Opening {
            shared,
            transport: Transport::Ssh,
            source: peer.to_string(),
            user_agent: None,
            person: &self.person,
            identity: &self.identity,
            target: self.target_name(),
            kind,
            setup_started: Instant::now(),
        }
    }

    /// The target as named, for logs and audit (empty when none was).
    fn target_name(&self) -> String {
        self.target
            .as_ref()
            .ok()
            .and_then(|t| t.as_ref())
            .map(ToString::to_string)
            .unwrap_or_default()
    }
}

impl Authenticator {
    pub(super) fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        phase: tokio::sync::watch::Sender<Phase>,
    ) -> Self {
        Authenticator {
            shared,
            peer,
            phase,
            interactive: None,
            login: None,
        }
    }

    /// Logs, audits and, past the source's grace, slows down a failed
    /// attempt. The name is shown cut and escaped (`login::for_log`); only
    /// a configured person is counted by name.
    async fn auth_failed(
        &self,
        login: &str,
        method: &str,
        fingerprint: Option<String>,
        reason: &str,
    ) {
        let shown = login::for_log(login);
        let person = login::person_of(login).filter(|p| self.shared.user(p).is_some());
        tracing::info!(peer = %self.peer, login = %shown, %method, fingerprint = ?fingerprint, %reason, "authentication failed");
        self.shared.audit.record(Event::Auth {
            source: self.peer.to_string(),
            login: shown,
            method: method.into(),
            fingerprint,
            success: false,
            reason: Some(reason.into()),
        });
        let label = if person.is_none() {
            "unknown_user"
        } else if method == CERTIFICATE {
            "certificate_refused"
        } else {
            "key_not_authorized"
        };
        self.shared.metrics.auth_failed(label);
        tokio::time::sleep(self.shared.auth_failures.failed(self.peer.ip(), person)).await;
    }

    /// The configured person a login name starts with, if its key matches
    /// and they may connect from here.
    fn key_accepted(&self, raw_login: &str, key: &PublicKey) -> bool {
        let Some(person) = login::person_of(raw_login) else {
            return false;
        };
        let access = self.shared.access();
        !access.revoked.key_revoked(key.key_data())
            && self.shared.user(person).is_some_and(|user| {
                user.allowed_from(self.peer.ip())
                    && user.keys.iter().any(|k| k.key_data() == key.key_data())
            })
    }

    /// Records a successful login and what it may reach, as the
    /// Kubernetes identity its person has now (`Shared::identity_of`: a
    /// configured person's, or one made from the provider's claims).
    fn logged_in(
        &mut self,
        user: &str,
        method: &str,
        fingerprint: String,
        grant: crate::certificates::Grant,
        credential: Credential,
    ) -> Auth {
        let Some(identity) = self.shared.identity_of(&credential) else {
            return Auth::reject();
        };
        let person = credential.person().to_string();
        let target = LoginName::parse(user).map(|name| name.target);
        tracing::info!(peer = %self.peer, %person, %method, %fingerprint, kubernetes_user = %identity.user, target = ?target.as_ref().ok().and_then(|t| t.as_ref()).map(ToString::to_string), "authenticated");
        self.shared.auth_failures.succeeded(self.peer.ip());
        self.shared.audit.record(Event::Auth {
            source: self.peer.to_string(),
            login: login::for_log(user),
            method: method.into(),
            fingerprint: Some(fingerprint),
            success: true,
            reason: None,
        });
        self.login = Some(Login {
            person,
            credential: credential.for_identity(identity.clone()),
            identity,
            target,
            grant,
        });
        self.phase.send_replace(Phase::Authenticated);
        Auth::Accept
    }

    /// A key offered without a signature (a probe): accepted when it would
    /// log in, refused otherwise.
    pub(super) async fn offered(&mut self, user: &str, offer: PublicKeyOffer<'_>) -> Auth {
        if let Some(reason) = crate::keys::refused_signature(offer.algorithm) {
            let fingerprint = offer.public_key.fingerprint(HashAlg::Sha256).to_string();
            self.auth_failed(user, PUBLIC_KEY, Some(fingerprint), reason)
                .await;
            return Auth::reject();
        }
        // A right key is answered at once, whatever failed before.
        if self.key_accepted(user, offer.public_key) {
            return Auth::Accept;
        }
        // russh offers a certificate's key here too, without saying it is
        // one: with user CAs configured, every probe is let through (for
        // any name, so the answer does not tell which people exist), and
        // the signed request is checked in full by `auth_publickey` or
        // `auth_openssh_certificate`.
        let access = self.shared.access();
        if !access.ca_fingerprints.is_empty() || access.sso.is_some() {
            return Auth::Accept;
        }
        let fingerprint = offer.public_key.fingerprint(HashAlg::Sha256).to_string();
        self.auth_failed(
            user,
            PUBLIC_KEY,
            Some(fingerprint),
            "key not authorized for this user",
        )
        .await;
        Auth::reject()
    }

    /// A signed request with a plain key.
    pub(super) async fn signed(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Auth {
        let fingerprint = key.public_key.fingerprint(HashAlg::Sha256).to_string();
        // Also refused when offered; checked again on the signature itself.
        if let Some(reason) = crate::keys::refused_signature(key.algorithm) {
            self.auth_failed(user, PUBLIC_KEY, Some(fingerprint), reason)
                .await;
            return Auth::reject();
        }
        // A FIDO key's presence flag is inside the signature, which russh
        // keeps to itself: without it, only `no-touch-required` (a
        // certificate extension here; key options are not read) allows one.
        if crate::certificates::is_fido(key.public_key.algorithm()) {
            let reason = crate::certificates::CertificateError::TouchRequired.to_string();
            self.auth_failed(user, PUBLIC_KEY, Some(fingerprint), &reason)
                .await;
            return Auth::reject();
        }
        if !self.key_accepted(user, key.public_key) {
            self.auth_failed(
                user,
                PUBLIC_KEY,
                Some(fingerprint),
                "key not authorized for this user",
            )
            .await;
            return Auth::reject();
        }
        let credential = Credential::Key {
            person: login::person_of(user).unwrap_or_default().to_string(),
            key: key.public_key.key_data().clone(),
            identity: None,
        };
        self.logged_in(
            user,
            PUBLIC_KEY,
            fingerprint,
            crate::certificates::Grant::unrestricted(),
            credential,
        )
    }

    /// A signed request with an OpenSSH certificate: checked against the
    /// user CAs, its restrictions kept as the login's grant.
    pub(super) async fn certified(&mut self, user: &str, certificate: &Certificate) -> Auth {
        let fingerprint = certificate
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string();
        if let Some(sso) = self.shared.sso.clone()
            && certificate.signature_key().fingerprint(HashAlg::Sha256) == sso.ca.fingerprint()
        {
            return self
                .certified_by_kbastion(user, certificate, fingerprint)
                .await;
        }
        let Some(configured) = login::person_of(user)
            .and_then(|person| self.shared.user(person))
            .filter(|u| u.allowed_from(self.peer.ip()))
        else {
            self.auth_failed(
                user,
                CERTIFICATE,
                Some(fingerprint),
                "unknown user, or not allowed from this address",
            )
            .await;
            return Auth::reject();
        };
        let access = self.shared.access();
        let checked = crate::certificates::check(
            certificate,
            &configured.name,
            self.peer.ip(),
            &access.ca_fingerprints,
            unix_now(),
        )
        .map_err(|e| e.to_string())
        .and_then(|grant| {
            match access.revoked.certificate_revoked(
                certificate.public_key(),
                certificate.serial(),
                certificate.key_id(),
            ) {
                Some(why) => Err(format!("the certificate is revoked: {why}")),
                None => Ok(grant),
            }
        });
        match checked {
            Ok(grant) => {
                let described = format!(
                    "{fingerprint} (certificate {:?}, serial {})",
                    login::for_log(certificate.key_id()),
                    certificate.serial()
                );
                let credential = Credential::Certificate {
                    person: configured.name.clone(),
                    key: certificate.public_key().clone(),
                    serial: certificate.serial(),
                    key_id: certificate.key_id().to_string(),
                    valid_before: certificate.valid_before(),
                    ca: certificate.signature_key().fingerprint(HashAlg::Sha256),
                    source_address: certificate
                        .critical_options()
                        .get("source-address")
                        .cloned(),
                    claimed: None,
                    identity: None,
                };
                self.logged_in(user, CERTIFICATE, described, grant, credential)
            }
            Err(error) => {
                self.auth_failed(user, CERTIFICATE, Some(fingerprint), &error)
                    .await;
                Auth::reject()
            }
        }
    }

    /// A signed request with a certificate from kbastion's own CA: the
    /// person it names was made from the provider's claims when it was
    /// minted, and must still be admissible (not a configured person, in
    /// an allowed group).
    async fn certified_by_kbastion(
        &mut self,
        user: &str,
        certificate: &Certificate,
        fingerprint: String,
    ) -> Auth {
        let access = self.shared.access();
        let Some(trust) = access.sso.as_ref() else {
            return Auth::reject();
        };
        let Some(person) = login::person_of(user) else {
            self.auth_failed(
                user,
                CERTIFICATE,
                Some(fingerprint),
                "not a valid login name",
            )
            .await;
            return Auth::reject();
        };
        let checked = crate::certificates::check(
            certificate,
            person,
            self.peer.ip(),
            &[trust.ca],
            unix_now(),
        )
        .map_err(|e| e.to_string())
        .and_then(|grant| {
            let claimed =
                crate::sso::ca::claimed(certificate, person).map_err(|e| e.to_string())?;
            trust.check(&claimed, None, &access.users)?;
            match access.revoked.certificate_revoked(
                certificate.public_key(),
                certificate.serial(),
                certificate.key_id(),
            ) {
                Some(why) => Err(format!("the certificate is revoked: {why}")),
                None => Ok((grant, claimed)),
            }
        });
        match checked {
            Ok((grant, claimed)) => {
                let described = format!(
                    "{fingerprint} (kbastion certificate {:?}, serial {})",
                    login::for_log(certificate.key_id()),
                    certificate.serial()
                );
                let credential = Credential::Certificate {
                    person: person.to_string(),
                    key: certificate.public_key().clone(),
                    serial: certificate.serial(),
                    key_id: certificate.key_id().to_string(),
                    valid_before: certificate.valid_before(),
                    ca: trust.ca,
                    source_address: None,
                    claimed: Some(Box::new(claimed)),
                    identity: None,
                };
                self.logged_in(user, CERTIFICATE, described, grant, credential)
            }
            Err(error) => {
                self.auth_failed(user, CERTIFICATE, Some(fingerprint), &error)
                    .await;
                Auth::reject()
            }
        }
    }

    /// Keyboard-interactive, offered only with single sign-on: the first
    /// request gets one line with the sign-in page of a new code (and no
    /// prompt, so OpenSSH answers at once); the answer then waits until
    /// that browser sign-in completes, and the connection goes on as the
    /// person it signed in.
    pub(super) async fn keyboard_interactive(&mut self, user: &str, answered: bool) -> Auth {
        let Some(sso) = self.shared.sso.clone() else {
            return Auth::reject();
        };
        if !answered {
            let opened = match sso.probe().await {
                Ok(()) => self.open_code(&sso, user),
                Err(error) => Err(format!("kbastion: {error}; log in with a key meanwhile")),
            };
            let line = match opened {
                Ok(waiter) => {
                    let line = format!(
                        "Open {}/sso/{} to sign in (expires in {} minutes)",
                        self.shared
                            .config
                            .web
                            .public_url
                            .as_deref()
                            .unwrap_or_default()
                            .trim_end_matches('/'),
                        waiter.code,
                        sso.config.sign_in_secs.div_ceil(60)
                    );
                    // A little past the code's end, so that its expiry is
                    // refused and audited here before the connection closes.
                    let until = tokio::time::Instant::now()
                        + std::time::Duration::from_secs(sso.config.sign_in_secs + 5);
                    self.phase.send_replace(Phase::AwaitingSignIn { until });
                    self.interactive = Some(Interactive::Waiting(waiter));
                    line
                }
                Err(line) => {
                    self.interactive = Some(Interactive::Refused(line.clone()));
                    line
                }
            };
            return Auth::Partial {
                name: "".into(),
                instructions: format!("{line}\n").into(),
                prompts: std::borrow::Cow::Borrowed(&[]),
            };
        }
        let waiter = match self.interactive.take() {
            Some(Interactive::Waiting(waiter)) => waiter,
            Some(Interactive::Refused(line)) => {
                self.auth_failed(user, SINGLE_SIGN_ON, None, &line).await;
                return Auth::reject();
            }
            None => return Auth::reject(),
        };
        let Some(claimed) = waiter.signed_in().await else {
            self.phase.send_replace(Phase::Unauthenticated);
            self.auth_failed(
                user,
                SINGLE_SIGN_ON,
                None,
                "the sign-in code expired before a browser signed in with it",
            )
            .await;
            return Auth::reject();
        };
        let asked = login::person_of(user).unwrap_or_default();
        if claimed.name != asked {
            let reason = format!(
                "the provider signed you in as {}, but the login name asks for {asked:?}; log in as {}@...",
                claimed.name, claimed.name
            );
            self.auth_failed(user, SINGLE_SIGN_ON, None, &reason).await;
            return Auth::reject();
        }
        let described = format!("{} (sso {})", claimed.name, claimed.subject);
        let now = unix_now();
        let credential = Credential::SignedIn {
            person: claimed.name.clone(),
            valid_before: now + sso.certificate_secs(),
            certify_until: now + sso.config.sign_in_secs,
            claimed: Box::new(claimed),
            identity: None,
        };
        self.logged_in(
            user,
            SINGLE_SIGN_ON,
            described,
            crate::certificates::Grant::unrestricted(),
            credential,
        )
    }

    /// A sign-in code for this connection, or the line saying why not.
    fn open_code(
        &self,
        sso: &crate::sso::Sso,
        user: &str,
    ) -> Result<crate::sso::flows::Waiter, String> {
        let Some(person) = login::person_of(user) else {
            return Err(format!(
                "kbastion: the login name is not valid; {}",
                login::SYNTAX
            ));
        };
        if self.shared.user(person).is_some() {
            return Err(format!(
                "kbastion: {person} is a configured person: log in with your key, not the sign-in provider"
            ));
        }
        sso.flows
            .open_code(self.peer, user, unix_now(), sso.config.sign_in_secs)
            .map_err(|e| format!("kbastion: {e}"))
    }
}

/// How long a revoked connection's sessions have to show their notice
/// before the connection itself is closed (which ends forwards and file
/// transfers too).
const REVOKED_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Checks a logged-in connection's credential again on every reload and
/// when a certificate expires; once it no longer holds, tells the
/// sessions (`revoked`) and then closes the connection with the reason.
pub(super) async fn watch_credential(
    shared: Arc<Shared>,
    credential: Credential,
    peer: SocketAddr,
    revoked: Arc<tokio::sync::watch::Sender<Option<String>>>,
    handle: russh::server::Handle,
    ended: tokio_util::sync::CancellationToken,
) {
    let reason = tokio::select! {
        () = ended.cancelled() => return,
        reason = crate::session::gate::revoked(&shared, &credential, peer.ip()) => reason,
    };
    revoked.send_replace(Some(reason.clone()));
    tokio::select! {
        () = ended.cancelled() => return,
        () = tokio::time::sleep(REVOKED_GRACE) => {}
    }
    let _ = handle
        .disconnect(
            russh::Disconnect::ByApplication,
            format!("access revoked: {reason}"),
            "en".into(),
        )
        .await;
}
