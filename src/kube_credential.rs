//! The kubectl door's credential: minted by `ssh PERSON@bastion
//! kube-credential` for the SSH login that asked, and checked by the door
//! on every request. It is a JWT (HS256, with the shared key of
//! `signing.rs`), so any replica verifies any replica's credential.
//!
//! It carries what the SSH login was (the key, or the certificate's
//! serial, key ID, CA, end and `source-address`), so every request is
//! checked against the access lists as they are *now*, exactly as an open
//! SSH connection is (`revocation::Credential::check`).
//!
//! `kubeconfig` is the file whose exec plugin is `ssh` itself.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use russh::keys::ssh_key::{Fingerprint, PublicKey};
use serde::{Deserialize, Serialize};

use crate::revocation::Credential;
use crate::signing::SigningKey;

/// Who issues the credentials, and for what.
const ISSUER: &str = "kbastion";
const AUDIENCE: &str = "kbastion-kube-proxy";

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "no credential was sent; run kubectl with the kubeconfig that `ssh PERSON@BASTION kubeconfig` prints"
    )]
    Missing,
    #[error("the credential has expired; kubectl runs its ssh plugin again for a new one")]
    Expired,
    #[error("the credential is not one this bastion issued (bad signature, audience or form)")]
    Forged,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    /// The person.
    sub: String,
    iat: u64,
    exp: u64,
    /// The login's public key (OpenSSH form; a certificate's own key);
    /// none for a sign-in with the OpenID provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cert: Option<CertificateClaims>,
    /// The provider's person, for a single sign-on login (its own, or its
    /// certificate's from kbastion's CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sso: Option<crate::sso::Claimed>,
    /// The certificate has no `permit-pty`: no terminal through the door.
    #[serde(default, skip_serializing_if = "is_false")]
    no_pty: bool,
    /// The certificate has no `permit-port-forwarding` (or has a
    /// `force-command`): no port-forward through the door.
    #[serde(default, skip_serializing_if = "is_false")]
    no_port_forwarding: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A verified credential: the login, and what its certificate withholds.
#[derive(Debug, Clone)]
pub struct Verified {
    pub credential: Credential,
    /// Why a terminal is refused, if it is (as for the SSH login).
    pub pty_refusal: Option<&'static str>,
    /// Why a port-forward is refused, if it is.
    pub forwarding_refusal: Option<&'static str>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CertificateClaims {
    serial: u64,
    key_id: String,
    /// The signing CA's SHA-256 fingerprint.
    ca: String,
    valid_before: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_address: Option<String>,
}

/// A minted credential.
#[derive(Debug, Clone)]
pub struct Minted {
    pub token: String,
    /// Unix seconds.
    pub expires: u64,
}

/// Mints a credential for `credential`'s login, valid `secs` from `now`
/// and never past its certificate's end, carrying what `grant` (its
/// certificate's extensions) withholds.
pub fn mint(
    key: &SigningKey,
    credential: &Credential,
    grant: &crate::certificates::Grant,
    now: u64,
    secs: u64,
) -> Result<Minted, String> {
    let (public, cert) = match credential {
        Credential::Key { key, .. } => (Some(key), None),
        Credential::SignedIn { .. } => (None, None),
        Credential::Certificate {
            key,
            serial,
            key_id,
            valid_before,
            ca,
            source_address,
            ..
        } => (
            Some(key),
            Some(CertificateClaims {
                serial: *serial,
                key_id: key_id.clone(),
                ca: ca.to_string(),
                valid_before: *valid_before,
                source_address: source_address.clone(),
            }),
        ),
    };
    let mut exp = now.saturating_add(secs);
    if let Some(end) = credential.expires() {
        exp = exp.min(end);
    }
    if exp <= now {
        return Err("the SSH certificate has expired; renew it and log in again".into());
    }
    let public = match public {
        Some(key) => Some(
            PublicKey::from(key.clone())
                .to_openssh()
                .map_err(|e| format!("cannot write the login's public key: {e}"))?,
        ),
        None => None,
    };
    let claims = Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: credential.person().to_string(),
        iat: now,
        exp,
        key: public,
        cert,
        sso: credential.claimed().cloned(),
        no_pty: grant.pty_refusal().is_some(),
        no_port_forwarding: grant.forwarding_refusal().is_some(),
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key.bytes()),
    )
    .map_err(|e| format!("cannot sign the credential: {e}"))?;
    Ok(Minted {
        token,
        expires: exp,
    })
}

/// The login a credential was minted for, when it is one of ours and has
/// not expired at `now`. Whether that login still holds is for the gate.
pub fn verify(key: &SigningKey, token: &str, now: u64) -> Result<Verified, CredentialError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[ISSUER]);
    validation.leeway = 0;
    // `exp` is compared below against the caller's clock.
    validation.validate_exp = false;
    let data =
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(key.bytes()), &validation)
            .map_err(|_| CredentialError::Forged)?;
    let claims = data.claims;
    if now >= claims.exp {
        return Err(CredentialError::Expired);
    }
    let key = match &claims.key {
        Some(key) => Some(
            PublicKey::from_openssh(key)
                .map_err(|_| CredentialError::Forged)?
                .key_data()
                .clone(),
        ),
        None => None,
    };
    let withheld = crate::certificates::Grant {
        force_command: None,
        pty: !claims.no_pty,
        port_forwarding: !claims.no_port_forwarding,
        no_touch_required: false,
    };
    let credential = match (key, claims.cert, claims.sso) {
        (None, None, Some(claimed)) => Credential::SignedIn {
            person: claims.sub,
            claimed: Box::new(claimed),
            valid_before: claims.exp,
            // The door mints no certificates.
            certify_until: 0,
            identity: None,
        },
        (Some(key), None, None) => Credential::Key {
            person: claims.sub,
            key,
            identity: None,
        },
        (Some(key), Some(cert), claimed) => Credential::Certificate {
            person: claims.sub,
            key,
            serial: cert.serial,
            key_id: cert.key_id,
            valid_before: cert.valid_before,
            ca: cert
                .ca
                .parse::<Fingerprint>()
                .map_err(|_| CredentialError::Forged)?,
            source_address: cert.source_address,
            claimed: claimed.map(Box::new),
            identity: None,
        },
        _ => return Err(CredentialError::Forged),
    };
    Ok(Verified {
        credential,
        pty_refusal: withheld.pty_refusal(),
        forwarding_refusal: withheld.forwarding_refusal(),
    })
}

/// The `ExecCredential` kubectl's exec plugin prints (JSON).
pub fn exec_credential(minted: &Minted) -> String {
    let expires = jiff::Timestamp::from_second(minted.expires as i64)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let document = serde_json::json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {
            "token": minted.token,
            "expirationTimestamp": expires,
        },
    });
    format!("{document}\n")
}

/// What a kubeconfig for the door names.
pub struct KubeconfigFor<'a> {
    /// The door's URL.
    pub server: &'a str,
    /// The PEM the door's certificate is verified with.
    pub certificate_authority: &'a [u8],
    /// The person, as they log in.
    pub person: &'a str,
    /// Where the `ssh` plugin connects.
    pub ssh_host: &'a str,
    pub ssh_port: u16,
}

/// A kubeconfig for the door whose user's exec plugin is
/// `ssh -p PORT PERSON@HOST kube-credential`. Every value is JSON-quoted
/// (a JSON string is a YAML scalar), so no name can break the document.
pub fn kubeconfig(what: &KubeconfigFor<'_>) -> String {
    use base64::Engine as _;
    let q = |text: &str| serde_json::to_string(text).unwrap_or_default();
    let ca = base64::engine::general_purpose::STANDARD.encode(what.certificate_authority);
    let user = format!("{}@kbastion", what.person);
    let destination = format!("{}@{}", what.person, what.ssh_host);
    format!(
        "# kubectl through kbastion as {person}: the credential comes from\n\
         # `ssh {destination} kube-credential`, run by kubectl when needed.\n\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: kbastion\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n\
         - name: {user}\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: ssh\n      args: [\"-T\", \"-p\", {port}, {destination_q}, \"kube-credential\"]\n      interactiveMode: IfAvailable\n      provideClusterInfo: false\n\
         contexts:\n\
         - name: kbastion\n  context:\n    cluster: kbastion\n    user: {user_q}\n\
         current-context: kbastion\n",
        person = what.person,
        server = q(what.server),
        user = q(&user),
        user_q = q(&user),
        port = q(&what.ssh_port.to_string()),
        destination_q = q(&destination),
    )
}

/// What `ssh PERSON@bastion kube-credential` prints for the login
/// `credential` from `source`: an `ExecCredential`, audited.
pub fn answer_credential(
    shared: &crate::bastion::Shared,
    credential: &Credential,
    grant: &crate::certificates::Grant,
    source: &str,
) -> Result<String, String> {
    let key = shared.signing.as_ref().ok_or_else(door_off)?;
    let minted = mint(
        key,
        credential,
        grant,
        crate::audit::unix_now(),
        shared.config.kube_proxy.credential_secs,
    )?;
    let person = credential.person();
    tracing::info!(%source, %person, expires = minted.expires, "kubectl door credential issued");
    shared.audit.record(crate::audit::Event::KubeCredential {
        source: source.to_string(),
        person: person.to_string(),
        expires: minted.expires,
    });
    Ok(exec_credential(&minted))
}

/// What `ssh PERSON@bastion kubeconfig` prints.
pub fn answer_kubeconfig(shared: &crate::bastion::Shared, person: &str) -> Result<String, String> {
    let config = &shared.config.kube_proxy;
    if shared.signing.is_none() {
        return Err(door_off());
    }
    let (Some(server), Some(ssh_host)) = (config.public_url.as_deref(), config.ssh_host()) else {
        return Err(door_off());
    };
    let ca_file = config
        .certificate_authority
        .as_ref()
        .or(config.certificate.as_ref())
        .ok_or_else(door_off)?;
    let certificate_authority = std::fs::read(ca_file).map_err(|e| {
        tracing::error!(error = %e, file = %ca_file.display(), "cannot read the kubectl door's CA");
        "the bastion cannot read its kubectl door's certificate; ask its operators to check kube_proxy.certificate_authority".to_string()
    })?;
    Ok(kubeconfig(&KubeconfigFor {
        server,
        certificate_authority: &certificate_authority,
        person,
        ssh_host: &ssh_host,
        ssh_port: config.ssh_port.unwrap_or_else(|| {
            shared
                .ssh_address
                .get()
                .map_or(shared.config.listen.port(), |a| a.port())
        }),
    }))
}

fn door_off() -> String {
    "this bastion has no kubectl door (kube_proxy.listen is not set); ask its operators".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMDfXAD8pTqWlh0C4MoJnLz2UlW3d5CzUtBQ4ilOF8Ba test@example";

    fn open() -> crate::certificates::Grant {
        crate::certificates::Grant::unrestricted()
    }

    fn login() -> Credential {
        Credential::Key {
            person: "alice".into(),
            key: PublicKey::from_openssh(KEY).unwrap().key_data().clone(),
            identity: None,
        }
    }

    #[test]
    fn a_minted_credential_verifies_as_its_login_until_it_expires() {
        let key = SigningKey::random();
        let minted = mint(&key, &login(), &open(), 1000, 3600).unwrap();
        assert_eq!(minted.expires, 1000 + 3600);
        let verified = verify(&key, &minted.token, 1001).unwrap();
        assert_eq!(
            (verified.pty_refusal, verified.forwarding_refusal),
            (None, None)
        );
        let Credential::Key { person, key: k, .. } = verified.credential else {
            panic!("not a key credential");
        };
        assert_eq!(person, "alice");
        assert_eq!(&k, PublicKey::from_openssh(KEY).unwrap().key_data());
        assert!(matches!(
            verify(&key, &minted.token, 1000 + 3600),
            Err(CredentialError::Expired)
        ));
    }

    #[test]
    fn another_key_or_a_changed_token_is_forged() {
        let minted = mint(&SigningKey::random(), &login(), &open(), 1000, 3600).unwrap();
        assert!(matches!(
            verify(&SigningKey::random(), &minted.token, 1001),
            Err(CredentialError::Forged)
        ));
        let key = SigningKey::random();
        let minted = mint(&key, &login(), &open(), 1000, 3600).unwrap();
        let mut parts: Vec<String> = minted.token.split('.').map(str::to_string).collect();
        parts[1] = parts[1].replace('A', "B");
        assert!(matches!(
            verify(&key, &parts.join("."), 1001),
            Err(CredentialError::Forged)
        ));
        assert!(matches!(
            verify(&key, "not a token", 1001),
            Err(CredentialError::Forged)
        ));
    }

    #[test]
    fn a_certificates_credential_ends_with_the_certificate() {
        let key = SigningKey::random();
        let ca = PublicKey::from_openssh(KEY)
            .unwrap()
            .fingerprint(Default::default());
        let credential = Credential::Certificate {
            person: "alice".into(),
            key: PublicKey::from_openssh(KEY).unwrap().key_data().clone(),
            serial: 7,
            key_id: "alice-laptop".into(),
            valid_before: 1600,
            ca,
            source_address: Some("10.0.0.0/8".into()),
            claimed: None,
            identity: None,
        };
        let restricted = crate::certificates::Grant {
            pty: false,
            port_forwarding: false,
            ..open()
        };
        let minted = mint(&key, &credential, &restricted, 1000, 3600).unwrap();
        assert_eq!(minted.expires, 1600);
        let verified = verify(&key, &minted.token, 1001).unwrap();
        assert!(verified.pty_refusal.is_some() && verified.forwarding_refusal.is_some());
        let Credential::Certificate {
            serial,
            key_id,
            ca: back,
            source_address,
            ..
        } = verified.credential
        else {
            panic!("not a certificate credential");
        };
        assert_eq!((serial, key_id.as_str()), (7, "alice-laptop"));
        assert_eq!(back, ca);
        assert_eq!(source_address.as_deref(), Some("10.0.0.0/8"));
        assert!(mint(&key, &credential, &restricted, 1600, 3600).is_err());
    }

    #[test]
    fn the_kubeconfig_names_the_door_and_runs_ssh_for_its_credential() {
        let text = kubeconfig(&KubeconfigFor {
            server: "https://bastion.example.com:6443",
            certificate_authority: b"-----BEGIN CERTIFICATE-----\n",
            person: "alice",
            ssh_host: "bastion.example.com",
            ssh_port: 2222,
        });
        assert!(
            text.contains("server: \"https://bastion.example.com:6443\""),
            "{text}"
        );
        assert!(
            text.contains(
                "args: [\"-T\", \"-p\", \"2222\", \"alice@bastion.example.com\", \"kube-credential\"]"
            ),
            "{text}"
        );
        assert!(!text.contains("insecure"), "{text}");
    }
}
