//! OpenSSH user certificates: the checks russh leaves to the server.
//!
//! russh verifies the certificate's own signature and the key proof; here
//! we check everything that makes it trustworthy for a login (as sshd does
//! with TrustedUserCAKeys): signed by a configured user CA, a user (not
//! host) certificate, inside its validity window, a non-empty principal
//! list naming the person, and only critical options we honour
//! (`source-address`, `force-command`).

use std::net::IpAddr;

use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::{Certificate, Fingerprint, HashAlg};

/// What a valid certificate brings to the session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grant {
    /// The `force-command` critical option, run instead of what the client asks.
    pub force_command: Option<String>,
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
    #[error("the certificate may not be used from {0}")]
    SourceAddress(IpAddr),
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
    if certificate.cert_type() != CertType::User {
        return Err(CertificateError::NotUser);
    }
    // An empty principal list means "anyone" to ssh-key; OpenSSH refuses it.
    if !certificate.valid_principals().iter().any(|p| p == person) {
        return Err(CertificateError::Principal(person.into()));
    }
    let mut grant = Grant::default();
    for (name, value) in certificate.critical_options().iter() {
        match name.as_str() {
            "source-address" => {
                if !source_allowed(value, source) {
                    return Err(CertificateError::SourceAddress(source));
                }
            }
            "force-command" => grant.force_command = Some(value.clone()),
            other => return Err(CertificateError::UnknownOption(other.into())),
        }
    }
    Ok(grant)
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
