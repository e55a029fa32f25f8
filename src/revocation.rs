//! Revoked keys and certificates (`revoked_keys`), and the re-check of a
//! logged-in connection's credential when the configuration is reloaded
//! or its certificate expires.
//!
//! This module decides; it does not disconnect anyone (`ssh::handler`
//! does, with a notice).

use std::net::IpAddr;

use russh::keys::ssh_key::public::KeyData;

use crate::cluster::Identity;
use crate::keys::RevokedKeys;
use crate::sso::Claimed;
use russh::keys::ssh_key::Fingerprint;

/// What a connection logged in with, kept to check it again.
#[derive(Debug, Clone)]
pub enum Credential {
    Key {
        person: String,
        key: KeyData,
        /// The Kubernetes user and groups the login was given
        /// (`for_identity`); a configuration that now gives others ends it.
        identity: Option<Identity>,
    },
    Certificate {
        person: String,
        key: KeyData,
        serial: u64,
        key_id: String,
        /// Unix seconds; `u64::MAX` for "forever".
        valid_before: u64,
        ca: Fingerprint,
        /// The certificate's `source-address` critical option: it binds
        /// every door the credential opens (a web session minted with it
        /// too), not only the SSH login.
        source_address: Option<String>,
        /// The person kbastion's own CA certified (single sign-on); None
        /// for a configured person's certificate.
        claimed: Option<Box<Claimed>>,
        identity: Option<Identity>,
    },
    /// A sign-in with the OpenID provider (keyboard-interactive, or the
    /// browser): the person its claims made, until `valid_before`.
    SignedIn {
        person: String,
        claimed: Box<Claimed>,
        /// Unix seconds.
        valid_before: u64,
        /// Until when (unix seconds) it may mint SSH certificates: a few
        /// minutes after an ssh connection's sign-in, so a long-lived
        /// connection cannot outlast the provider by minting; a browser
        /// session's whole time (the provider renews or ends it).
        certify_until: u64,
        identity: Option<Identity>,
    },
}

/// The access lists a credential is checked against.
pub struct Lists<'a> {
    pub users: &'a [crate::config::User],
    pub ca_fingerprints: &'a [Fingerprint],
    pub revoked: &'a RevokedKeys,
    /// Single sign-on's provider and CA, when `[oidc]` is on.
    pub sso: Option<&'a crate::sso::Trust>,
}

impl Credential {
    /// When a certificate stops being valid (unix seconds).
    pub fn expires(&self) -> Option<u64> {
        match self {
            Credential::Key { .. } => None,
            Credential::Certificate { valid_before, .. }
            | Credential::SignedIn { valid_before, .. } => Some(*valid_before),
        }
    }

    /// The person who logged in.
    pub fn person(&self) -> &str {
        match self {
            Credential::Key { person, .. }
            | Credential::Certificate { person, .. }
            | Credential::SignedIn { person, .. } => person,
        }
    }

    /// The provider's person, for a login made by single sign-on.
    pub fn claimed(&self) -> Option<&Claimed> {
        match self {
            Credential::Key { .. } => None,
            Credential::Certificate { claimed, .. } => claimed.as_deref(),
            Credential::SignedIn { claimed, .. } => Some(claimed),
        }
    }

    /// The credential of a login given `identity`.
    pub fn for_identity(mut self, given: Identity) -> Credential {
        match &mut self {
            Credential::Key { identity, .. }
            | Credential::Certificate { identity, .. }
            | Credential::SignedIn { identity, .. } => *identity = Some(given),
        }
        self
    }

    /// Whether the credential still logs its person in from `source` at
    /// `now`, as the same Kubernetes user and groups; the reason, in a few
    /// words, when not.
    pub fn check(&self, lists: &Lists<'_>, source: IpAddr, now: u64) -> Result<(), String> {
        let person = self.person();
        let identity = match self {
            Credential::Key { identity, .. }
            | Credential::Certificate { identity, .. }
            | Credential::SignedIn { identity, .. } => identity.as_ref(),
        };
        let configured = lists.users.iter().find(|u| u.name == person);
        match (self.claimed(), configured) {
            (Some(claimed), _) => {
                let Some(sso) = lists.sso else {
                    return Err(format!(
                        "single sign-on is no longer configured; {person} signed in with it"
                    ));
                };
                sso.check(claimed, identity, lists.users)?;
            }
            (None, None) => return Err(format!("{person} is no longer a configured user")),
            (None, Some(user)) => {
                if let Some(identity) = identity
                    && (identity.user != user.kubernetes_user()
                        || identity.groups != user.kubernetes_groups)
                {
                    return Err(format!(
                        "{person}'s Kubernetes user or groups changed in the configuration; log in again"
                    ));
                }
                if !user.allowed_from(source) {
                    return Err(format!("{person} may no longer connect from {source}"));
                }
            }
        }
        match self {
            Credential::Key { key, .. } => {
                if lists.revoked.key_revoked(key) {
                    return Err("the key is revoked".into());
                }
                if !configured.is_some_and(|user| user.keys.iter().any(|k| k.key_data() == key)) {
                    return Err(format!("the key is no longer authorized for {person}"));
                }
            }
            Credential::Certificate {
                key,
                serial,
                key_id,
                valid_before,
                ca,
                source_address,
                claimed,
                ..
            } => {
                if now >= *valid_before {
                    return Err("the certificate has expired".into());
                }
                if let Some(list) = source_address
                    && !crate::certificates::source_allowed(list, source)
                {
                    return Err(format!(
                        "the certificate's source-address ({list}) does not include {source}"
                    ));
                }
                let trusted = match claimed {
                    Some(_) => lists.sso.is_some_and(|sso| sso.ca == *ca),
                    None => lists.ca_fingerprints.contains(ca),
                };
                if !trusted {
                    return Err("the certificate's CA is no longer trusted".into());
                }
                if let Some(why) = lists.revoked.certificate_revoked(key, *serial, key_id) {
                    return Err(format!("the certificate is revoked: {why}"));
                }
            }
            Credential::SignedIn { valid_before, .. } => {
                if now >= *valid_before {
                    return Err(format!(
                        "the sign-in with the provider has ended; sign in again ({person})"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMDfXAD8pTqWlh0C4MoJnLz2UlW3d5CzUtBQ4ilOF8Ba test@example";

    const OTHER: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBF+Qzc3Tzq13JCA0Ih+hQCCctc9BJF3Oi6ClC7YsaO6 other";

    #[test]
    fn keys_serials_and_ids_are_read_and_bad_lines_named() {
        let revoked = RevokedKeys::parse(&format!(
            "# revoked\n{KEY}\nserial: 7\nserial: 10-20\nid: laptop\n"
        ))
        .unwrap();
        let key = russh::keys::PublicKey::from_openssh(KEY).unwrap();
        assert!(revoked.key_revoked(key.key_data()));
        let other = russh::keys::PublicKey::from_openssh(OTHER).unwrap();
        let other = other.key_data().clone();
        assert!(!revoked.key_revoked(&other));
        assert!(revoked.certificate_revoked(&other, 15, "x").is_some());
        assert!(revoked.certificate_revoked(&other, 7, "x").is_some());
        assert!(revoked.certificate_revoked(&other, 8, "laptop").is_some());
        assert!(revoked.certificate_revoked(&other, 8, "desk").is_none());
        let error = RevokedKeys::parse("serial: 9-3\n").unwrap_err();
        assert!(error.starts_with("line 1:"), "{error}");
        let error = RevokedKeys::parse("\nnot a key\n").unwrap_err();
        assert!(error.starts_with("line 2:"), "{error}");
    }
}
