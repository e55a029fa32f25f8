//! OpenSSH user certificates: the checks russh leaves to the server.
//!
//! russh verifies the certificate's own signature and the key proof; here
//! we check everything that makes it trustworthy for a login (as sshd does
//! with TrustedUserCAKeys): signed by a configured user CA, a user (not
//! host) certificate, inside its validity window, a non-empty principal
//! list naming the person, a CA signature without SHA-1 (`ssh-rsa`), and
//! only critical options we honour (`source-address`, `force-command`);
//! its extensions become the login's `Grant` (pty, port forwarding).

use std::net::IpAddr;

use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::{Certificate, Fingerprint, HashAlg};

/// What a login may do beyond running a session: everything for a plain
/// key; for a certificate, what its extensions and critical options say
/// (`PROTOCOL.certkeys`), as OpenSSH's sshd reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The `force-command` critical option, run instead of what the client
    /// asks (shell, exec and subsystem alike, as sshd does).
    pub force_command: Option<String>,
    /// The `permit-pty` extension.
    pub pty: bool,
    /// The `permit-port-forwarding` extension.
    pub port_forwarding: bool,
    /// The `no-touch-required` extension (FIDO keys only).
    pub no_touch_required: bool,
}

impl Grant {
    /// A plain authorized key: no restrictions (key options are not read).
    pub fn unrestricted() -> Self {
        Grant {
            force_command: None,
            pty: true,
            port_forwarding: true,
            no_touch_required: false,
        }
    }

    /// Why a pty is refused, if it is.
    pub fn pty_refusal(&self) -> Option<&'static str> {
        (!self.pty).then_some(
            "pty refused: the certificate has no permit-pty extension; the session runs without a terminal",
        )
    }

    /// Why port forwarding is refused, if it is. A `force-command`
    /// certificate may run that command and nothing else, so it forwards
    /// nothing either (sshd would still forward unless
    /// `no-port-forwarding`; here a forward reaches the pod's network,
    /// which is more than the command).
    pub fn forwarding_refusal(&self) -> Option<&'static str> {
        if !self.port_forwarding {
            Some("port forwarding refused: the certificate has no permit-port-forwarding extension")
        } else if self.force_command.is_some() {
            Some(
                "port forwarding refused: the certificate's force-command permits only its command",
            )
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CertificateError {
    #[error(
        "the certificate is not signed by a trusted user CA, or is expired or not yet valid ({0})"
    )]
    Invalid(String),
    #[error("the certificate is not a user certificate")]
    NotUser,
    #[error("the certificate does not name {0:?} among its principals")]
    Principal(String),
    #[error("the certificate's critical option {0:?} is not supported")]
    UnknownOption(String),
    #[error(
        "the certificate's critical option verify-required cannot be honoured: kbastion cannot see a FIDO signature's user-verification flag"
    )]
    VerifyRequired,
    #[error(
        "FIDO keys need user presence, which kbastion cannot verify (russh does not pass a signature's flags to the server); use a certificate with the no-touch-required extension, or a non-FIDO key"
    )]
    TouchRequired,
    #[error("the certificate may not be used from {0}")]
    SourceAddress(IpAddr),
    #[error(
        "the certificate is signed with ssh-rsa (SHA-1); re-sign it with: ssh-keygen -s CA -t rsa-sha2-512"
    )]
    Sha1Signature,
}

/// Checks `certificate` for `person` connecting from `source`, against
/// the trusted CA fingerprints, at `now` (unix seconds).
pub fn check(
    certificate: &Certificate,
    person: &str,
    source: IpAddr,
    trusted: &[Fingerprint],
    now: u64,
) -> Result<Grant, CertificateError> {
    certificate
        .validate_at(now, trusted)
        .map_err(|e| CertificateError::Invalid(e.to_string()))?;
    // russh verifies a SHA-1 CA signature like any other: refused here.
    if crate::keys::refused_signature(&certificate.signature().algorithm()).is_some() {
        return Err(CertificateError::Sha1Signature);
    }
    if certificate.cert_type() != CertType::User {
        return Err(CertificateError::NotUser);
    }
    // An empty principal list means "anyone" to ssh-key; OpenSSH refuses it.
    if !certificate.valid_principals().iter().any(|p| p == person) {
        return Err(CertificateError::Principal(person.into()));
    }
    // Extensions grant; unknown ones are ignored (sshd does the same).
    // permit-agent-forwarding and permit-X11-forwarding grant nothing
    // here: kbastion refuses both to everyone. permit-user-rc has nothing
    // to run (no ~/.ssh/rc in a target).
    let extensions = certificate.extensions();
    let mut grant = Grant {
        force_command: None,
        pty: extensions.contains_key("permit-pty"),
        port_forwarding: extensions.contains_key("permit-port-forwarding"),
        no_touch_required: extensions.contains_key("no-touch-required"),
    };
    // Critical options restrict; one we cannot honour refuses the login.
    for (name, value) in certificate.critical_options().iter() {
        match name.as_str() {
            "source-address" => {
                if !source_allowed(value, source) {
                    return Err(CertificateError::SourceAddress(source));
                }
            }
            "force-command" => grant.force_command = Some(value.clone()),
            // User verification is a FIDO signature flag: sshd checks it
            // for FIDO keys only, and we cannot see it (see TouchRequired).
            "verify-required" if is_fido(certificate.public_key().algorithm()) => {
                return Err(CertificateError::VerifyRequired);
            }
            "verify-required" => {}
            other => return Err(CertificateError::UnknownOption(other.into())),
        }
    }
    if is_fido(certificate.public_key().algorithm()) && !grant.no_touch_required {
        return Err(CertificateError::TouchRequired);
    }
    Ok(grant)
}

/// FIDO (security key) algorithms, whose signatures carry user-presence
/// flags (`PROTOCOL.u2f`).
pub fn is_fido(algorithm: russh::keys::Algorithm) -> bool {
    matches!(
        algorithm,
        russh::keys::Algorithm::SkEd25519 | russh::keys::Algorithm::SkEcdsaSha2NistP256
    )
}

/// Whether `source` is in a comma-separated list of addresses and CIDR
/// blocks (the `source-address` and `from` syntax).
pub fn source_allowed(list: &str, source: IpAddr) -> bool {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .any(|entry| {
            if let Ok(net) = entry.parse::<ipnet::IpNet>() {
                net.contains(&source)
            } else {
                entry.parse::<IpAddr>().is_ok_and(|ip| ip == source)
            }
        })
}

/// SHA-256 fingerprints of the configured CA keys.
pub fn fingerprints(keys: &[russh::keys::PublicKey]) -> Vec<Fingerprint> {
    keys.iter()
        .map(|k| k.fingerprint(HashAlg::Sha256))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_lists_match_addresses_and_blocks() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(source_allowed("10.0.0.0/8", ip));
        assert!(source_allowed("192.168.0.1, 10.1.2.3", ip));
        assert!(!source_allowed("10.1.2.4/32,192.168.0.0/16", ip));
        assert!(!source_allowed("", ip));
        assert!(!source_allowed("nonsense", ip));
    }
}
