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
pub mod certificate;
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
    #[error("{name}'s name or groups at the provider changed; sign in again")]
    Changed { name: String },
}

/// A sign-in completed at the provider.
pub struct Completed {
    pub purpose: flows::Purpose,
    pub person: Claimed,
    /// When the ID token expires (unix seconds): a browser session ends
    /// then at the latest, unless the provider renews it.
    pub token_expires: u64,
    /// The provider's refresh token, when it gave one: a browser session
    /// is renewed with it for as long as the provider allows.
    pub refresh: Option<String>,
}

/// A renewal of a sign-in with the provider.
pub struct Renewed {
    /// When the new ID token expires (unix seconds).
    pub token_expires: u64,
    /// The refresh token to use next time.
    pub refresh: String,
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

    /// Begins a sign-in at the provider for `purpose`, from a browser at
    /// `source`.
    pub async fn begin(
        &self,
        purpose: flows::Purpose,
        source: std::net::IpAddr,
        now: u64,
    ) -> Result<Redirect, SsoError> {
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
                source,
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
        let (claims, refresh) = self
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
            refresh,
        })
    }

    /// Renews `person`'s sign-in with the provider's refresh token: it
    /// still holds only if the provider says so and names the same person,
    /// in the same groups, still admissible beside the configured `users`.
    pub async fn renew(
        &self,
        refresh: &str,
        person: &Claimed,
        users: &[crate::config::User],
    ) -> Result<Renewed, SsoError> {
        let (claims, refresh) = self.provider.refresh(refresh, &person.subject).await?;
        let now = Claimed::from_claims(&claims, &self.config)?;
        now.admissible(&self.config, users)?;
        if now != *person {
            return Err(SsoError::Changed {
                name: person.name.clone(),
            });
        }
        Ok(Renewed {
            token_expires: claims.expiration().timestamp().max(0) as u64,
            refresh,
        })
    }

    /// Seconds a certificate (or a keyboard-interactive login) lasts.
    pub fn certificate_secs(&self) -> u64 {
        self.config.certificate_hours * 3600
    }
}
