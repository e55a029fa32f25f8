//! Single sign-on with the company's OpenID Connect provider (`[oidc]`):
//! people made from the provider's claims, beside the configured ones.
//!
//! One sign-in serves every door. The browser signs in at the provider
//! (the authorization code flow, `provider`); what it was for decides what
//! follows (`flows`): a browser session for the web terminal, or an ssh
//! connection that waits on a code (keyboard-interactive) and continues as
//! that person. A signed-in person may mint a short-lived OpenSSH
//! certificate from kbastion's own CA (`ca`), which `ssh`, `scp`, IDEs and
//! the kubectl door then use with no prompt. The person and their
//! Kubernetes identity are decided here (`person`); the gate admits them
//! as any other login.

pub mod ca;
pub mod flows;
pub mod person;
pub mod provider;

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::OidcConfig;
pub use person::Claimed;

/// What the access lists need to check a credential made here again.
#[derive(Debug, Clone)]
pub struct Trust {
    pub config: OidcConfig,
    pub ca: russh::keys::ssh_key::Fingerprint,
}

impl Trust {
    /// Whether `claimed` still signs in, as the same Kubernetes identity,
    /// beside the configured `users`; the reason, in a few words, when not.
    pub fn check(
        &self,
        claimed: &Claimed,
        identity: Option<&crate::cluster::Identity>,
        users: &[crate::config::User],
    ) -> Result<(), String> {
        if claimed.issuer != self.config.issuer.trim_end_matches('/')
            && claimed.issuer != self.config.issuer
        {
            return Err(format!(
                "{} signed in with another provider ({}) than the one configured now",
                claimed.name, claimed.issuer
            ));
        }
        claimed
            .admissible(&self.config, users)
            .map_err(|e| e.to_string())?;
        if identity.is_some_and(|i| *i != claimed.identity(&self.config)) {
            return Err(format!(
                "{}'s Kubernetes user or groups changed in the configuration; sign in again",
                claimed.name
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    #[error(transparent)]
    Flow(#[from] flows::FlowError),
    #[error(transparent)]
    Provider(#[from] provider::ProviderError),
    #[error(transparent)]
    Claim(#[from] person::ClaimError),
    #[error(
        "the name {name:?} belongs to another account of the provider on this bastion; ask for your username claim to be fixed"
    )]
    NameTaken { name: String },
}

/// A sign-in completed at the provider.
pub struct Completed {
    pub purpose: flows::Purpose,
    pub person: Claimed,
    /// When the ID token expires (unix seconds): a browser session ends
    /// then at the latest.
    pub token_expires: u64,
}

/// A browser sent to the provider: where, and the cookie that binds the
/// callback to it.
pub struct Redirect {
    pub url: String,
    pub binding: String,
}

/// Single sign-on, as the doors use it.
pub struct Sso {
    pub config: OidcConfig,
    provider: provider::Provider,
    pub flows: flows::Flows,
    pub ca: ca::UserCa,
    /// Which provider account each name was first signed in by on this
    /// replica: a second account with the same username claim is refused
    /// (the name only names; `sub` is the identity).
    names: Mutex<HashMap<String, (String, String)>>,
}

/// The path the provider sends browsers back to.
pub const CALLBACK: &str = "/oidc/callback";

impl Sso {
    pub fn new(
        config: &OidcConfig,
        web_public_url: &str,
        signing: &crate::signing::SigningKey,
        wait: std::time::Duration,
    ) -> Result<Sso, String> {
        let redirect = format!("{}{CALLBACK}", web_public_url.trim_end_matches('/'));
        Ok(Sso {
            provider: provider::Provider::new(config, &redirect, wait)?,
            flows: flows::Flows::new(config.max_pending_per_source, config.max_pending),
            ca: ca::UserCa::derive(signing),
            names: Mutex::default(),
            config: config.clone(),
        })
    }

    pub fn trust(&self) -> Trust {
        Trust {
            config: self.config.clone(),
            ca: self.ca.fingerprint(),
        }
    }

    pub fn issuer(&self) -> &str {
        self.provider.issuer()
    }

    /// Whether the provider answers now (an ssh connection is told at
    /// once when it does not, rather than sent to a page that fails).
    pub async fn probe(&self) -> Result<(), SsoError> {
        Ok(self.provider.probe().await?)
    }

    /// Begins a sign-in at the provider for `purpose`.
    pub async fn begin(&self, purpose: flows::Purpose, now: u64) -> Result<Redirect, SsoError> {
        let groups_scope = self.config.groups_claim == "groups";
        let begun = self.provider.begin(groups_scope).await?;
        let binding: [u8; 16] = rand::random();
        let binding: String = binding.iter().map(|b| format!("{b:02x}")).collect();
        self.flows.begin(
            begun.state,
            flows::Request {
                purpose,
                nonce: begun.nonce,
                verifier: begun.verifier,
                binding: binding.clone(),
                expires: now + self.config.sign_in_secs,
            },
            now,
        )?;
        Ok(Redirect {
            url: begun.url.to_string(),
            binding,
        })
    }

    /// Finishes the sign-in a callback names: the provider's code is
    /// exchanged, its ID token verified, and the person made from it.
    pub async fn finish(
        &self,
        state: &str,
        code: &str,
        binding: Option<&str>,
        users: &[crate::config::User],
        now: u64,
    ) -> Result<Completed, SsoError> {
        let request = self.flows.take(state, binding, now)?;
        let claims = self
            .provider
            .finish(code, &request.verifier, &request.nonce)
            .await?;
        let person = Claimed::from_claims(&claims, &self.config)?;
        person.admissible(&self.config, users)?;
        {
            let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
            let account = (person.issuer.clone(), person.subject.clone());
            match names.get(&person.name) {
                Some(known) if *known != account => {
                    return Err(SsoError::NameTaken {
                        name: person.name.clone(),
                    });
                }
                Some(_) => {}
                None => {
                    names.insert(person.name.clone(), account);
                }
            }
        }
        Ok(Completed {
            purpose: request.purpose,
            token_expires: claims.expiration().timestamp().max(0) as u64,
            person,
        })
    }

    /// Seconds a certificate (or a keyboard-interactive login) lasts.
    pub fn certificate_secs(&self) -> u64 {
        self.config.certificate_hours * 3600
    }
}

/// What `ssh PERSON@bastion certificate` prints (and the web page's
/// certificate form returns): a certificate from kbastion's CA for the
/// public key in `input`, for a login signed in with the provider just
/// now. A login with a certificate cannot mint another one: only a new
/// sign-in with the provider extends access. Audited.
pub fn answer_certificate(
    shared: &crate::bastion::Shared,
    credential: &crate::revocation::Credential,
    input: &str,
    source: &str,
) -> Result<String, String> {
    use crate::revocation::Credential;
    let Some(sso) = &shared.sso else {
        return Err(
            "this bastion has no single sign-on ([oidc]); certificates come from your own CA"
                .into(),
        );
    };
    let (claimed, valid_before) = match credential {
        Credential::SignedIn {
            claimed,
            valid_before,
            ..
        } => (claimed, *valid_before),
        Credential::Certificate {
            claimed: Some(_), ..
        } => {
            return Err("a certificate cannot renew itself; sign in with the provider again (ssh without the certificate: -o CertificateFile=none -o IdentitiesOnly=yes) and ask then".into());
        }
        Credential::Key { .. } | Credential::Certificate { .. } => {
            return Err(format!(
                "{} logs in with a configured key or CA; certificates here are for people signed in with the provider",
                credential.person()
            ));
        }
    };
    let mut keys = input
        .lines()
        .map(crate::keys::parse_authorized_key)
        .filter(|k| !matches!(k, Ok(None)));
    let key = match (keys.next(), keys.next()) {
        (Some(Ok(Some(key))), None) => key,
        (Some(Err(error)), _) => {
            return Err(format!(
                "{error}; send your public key (ssh PERSON@BASTION certificate < ~/.ssh/id_ed25519.pub)"
            ));
        }
        (None, _) => {
            return Err("no public key arrived on stdin; send one (ssh PERSON@BASTION certificate < ~/.ssh/id_ed25519.pub)".into());
        }
        _ => {
            return Err("send exactly one public key (ssh PERSON@BASTION certificate < ~/.ssh/id_ed25519.pub)".into());
        }
    };
    if let Some(reason) = crate::keys::refused_signature(&key.algorithm()) {
        return Err(reason.into());
    }
    let now = crate::audit::unix_now();
    let valid_before = valid_before.min(now + sso.certificate_secs());
    if valid_before <= now {
        return Err("your sign-in with the provider has ended; sign in again".into());
    }
    let certificate = sso
        .ca
        .mint(&key, claimed, now, valid_before)
        .map_err(|e| e.to_string())?;
    let text = certificate
        .to_openssh()
        .map_err(|e| format!("cannot write the certificate: {e}"))?;
    let fingerprint = key.fingerprint(russh::keys::HashAlg::Sha256).to_string();
    tracing::info!(%source, person = %claimed.name, %fingerprint, serial = certificate.serial(), valid_before, "SSH certificate issued");
    shared.audit.record(crate::audit::Event::Certificate {
        source: source.to_string(),
        person: claimed.name.clone(),
        fingerprint,
        serial: certificate.serial(),
        valid_before,
    });
    Ok(format!("{text}\n"))
}
