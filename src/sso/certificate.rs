//! The `certificate` command (`ssh PERSON@bastion certificate`, and the
//! web page's form): an SSH certificate from kbastion's CA for a person
//! signed in with the provider, audited.

/// What `ssh PERSON@bastion certificate` prints (and the web page's
/// certificate form returns): a certificate from kbastion's CA for the
/// public key in `input`, for a login signed in with the provider just
/// now. A login with a certificate cannot mint another one: only a new
/// sign-in with the provider extends access. Audited.
pub fn answer(
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
    let (claimed, signed_in_until) = match credential {
        Credential::SignedIn {
            claimed,
            certify_until,
            ..
        } => (claimed, *certify_until),
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
    if signed_in_until <= now {
        return Err("certificates are minted right after a sign-in with the provider; sign in again (ssh without a key, or the web page) and ask then".into());
    }
    // A certificate keeps its own time, whatever is left of the sign-in
    // (a browser session's ID token may be short).
    let valid_before = now + sso.certificate_secs();
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
