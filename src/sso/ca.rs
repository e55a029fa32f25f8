//! kbastion's own user CA: the short-lived OpenSSH certificates it mints
//! for people signed in with the provider, and what it reads back from
//! them at login.
//!
//! The CA key is derived from the signing Secret every replica shares
//! (`signing`), so every replica signs and trusts the same CA with
//! nothing else to share or rotate. A certificate names its person as its
//! one principal and carries the provider's issuer, `sub` and groups in
//! kbastion extensions; no lookup is needed per connection.

use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::{Certificate, Fingerprint, HashAlg, PrivateKey, PublicKey};
use sha2::Digest;

use super::person::Claimed;

/// The extensions kbastion writes (an `@domain` suffix, as
/// PROTOCOL.certkeys asks of non-standard ones): ignored by sshd and
/// every other server, read back here.
pub const GROUPS_EXTENSION: &str = "groups@kbastion.dev";
pub const SUBJECT_EXTENSION: &str = "subject@kbastion.dev";
pub const ISSUER_EXTENSION: &str = "issuer@kbastion.dev";

/// What derives the CA key from the shared secret (a new label would make
/// a new CA).
const LABEL: &[u8] = b"kbastion ssh user CA v1\0";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot sign the certificate: {0}")]
    Sign(String),
    #[error(
        "the certificate from kbastion's CA has no readable {0} extension; get a new one with ssh PERSON@BASTION certificate"
    )]
    Extension(&'static str),
}

/// The CA every replica derives from the signing Secret.
pub struct UserCa {
    key: PrivateKey,
    fingerprint: Fingerprint,
}

impl std::fmt::Debug for UserCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserCa({})", self.fingerprint)
    }
}

impl UserCa {
    pub fn derive(signing: &crate::signing::SigningKey) -> UserCa {
        let seed: [u8; 32] = sha2::Sha256::new()
            .chain_update(LABEL)
            .chain_update(signing.bytes())
            .finalize()
            .into();
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
        let fingerprint = key.public_key().fingerprint(HashAlg::Sha256);
        UserCa { key, fingerprint }
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The CA's public key, as `user_ca_keys`/`TrustedUserCAKeys` take it.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key().clone()
    }

    /// A user certificate for `key`, naming `person`, valid from a minute
    /// ago (clock skew) to `valid_before`, with the usual permissions of
    /// `ssh-keygen -s` and the person's claims.
    pub fn mint(
        &self,
        key: &PublicKey,
        person: &Claimed,
        now: u64,
        valid_before: u64,
    ) -> Result<Certificate, CaError> {
        let failed = |e: russh::keys::ssh_key::Error| CaError::Sign(e.to_string());
        let nonce: [u8; 32] = rand::random();
        let mut builder = Builder::new(
            nonce.to_vec(),
            key.key_data().clone(),
            now.saturating_sub(60),
            valid_before,
        )
        .map_err(failed)?;
        let groups =
            serde_json::to_string(&person.groups).map_err(|e| CaError::Sign(e.to_string()))?;
        builder
            .serial(rand::random())
            .map_err(failed)?
            .cert_type(CertType::User)
            .map_err(failed)?
            .key_id(format!("{} (sso {})", person.name, person.subject))
            .map_err(failed)?
            .valid_principal(person.name.clone())
            .map_err(failed)?;
        for extension in [
            "permit-pty",
            "permit-port-forwarding",
            "permit-agent-forwarding",
            "permit-X11-forwarding",
            "permit-user-rc",
        ] {
            builder.extension(extension, "").map_err(failed)?;
        }
        builder
            .extension(GROUPS_EXTENSION, groups)
            .map_err(failed)?
            .extension(SUBJECT_EXTENSION, person.subject.clone())
            .map_err(failed)?
            .extension(ISSUER_EXTENSION, person.issuer.clone())
            .map_err(failed)?;
        builder.sign(&self.key).map_err(failed)
    }
}

/// The person a certificate of kbastion's CA names (its signature, time
/// and principal are checked by `certificates::check`).
pub fn claimed(certificate: &Certificate, person: &str) -> Result<Claimed, CaError> {
    let extensions = certificate.extensions();
    let text = |name: &'static str| {
        extensions
            .get(name)
            .cloned()
            .ok_or(CaError::Extension(name))
    };
    let groups: Vec<String> = serde_json::from_str(&text(GROUPS_EXTENSION)?)
        .map_err(|_| CaError::Extension(GROUPS_EXTENSION))?;
    Ok(Claimed {
        name: person.to_string(),
        issuer: text(ISSUER_EXTENSION)?,
        subject: text(SUBJECT_EXTENSION)?,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_certificates_validate_and_carry_the_person() {
        let signing = crate::signing::SigningKey::random();
        let ca = UserCa::derive(&signing);
        // Every replica derives the same CA from the same Secret.
        assert_eq!(UserCa::derive(&signing).fingerprint(), ca.fingerprint());
        assert_ne!(
            UserCa::derive(&crate::signing::SigningKey::random()).fingerprint(),
            ca.fingerprint()
        );
        let key = PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)
            .unwrap()
            .public_key()
            .clone();
        let carol = Claimed {
            name: "carol".into(),
            issuer: "https://id.example.com".into(),
            subject: "s-1".into(),
            groups: vec!["devs".into(), "a,b".into()],
        };
        let certificate = ca.mint(&key, &carol, 1000, 1000 + 3600).unwrap();
        let grant = crate::certificates::check(
            &certificate,
            "carol",
            "127.0.0.1".parse().unwrap(),
            &[ca.fingerprint()],
            1500,
        )
        .unwrap();
        assert!(grant.pty && grant.port_forwarding);
        assert_eq!(claimed(&certificate, "carol").unwrap(), carol);
        assert!(
            crate::certificates::check(
                &certificate,
                "carol",
                "127.0.0.1".parse().unwrap(),
                &[ca.fingerprint()],
                4600,
            )
            .is_err()
        );
    }
}
