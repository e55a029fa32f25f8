//! The user keys kbastion reads and refuses: `authorized_keys` lines,
//! the revoked keys and certificates (`revoked_keys`), and the signature
//! algorithms refused even where russh would verify them.
//!
//! The revoked-keys file is OpenSSH's plain `RevokedKeys` form (one public key per
//! line, `authorized_keys` syntax; a certificate line revokes its key)
//! with the certificate lines of `ssh-keygen -k`'s KRL specification:
//! `serial: N` or `serial: N-M`, `id: KEY_ID`, and `hash: SHA256:...`
//! (a key by fingerprint). Serials and key IDs apply to certificates from
//! every trusted CA. Blank lines and `#` comments are ignored.

use std::collections::HashSet;

use russh::keys::ssh_key::public::KeyData;
use russh::keys::ssh_key::{Fingerprint, HashAlg};
use russh::keys::{Algorithm, PublicKey};

/// Parses the key part of an `authorized_keys` line (options before the key
/// type are not supported and are reported as such).
pub fn parse_authorized_key(line: &str) -> Result<Option<PublicKey>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    PublicKey::from_openssh(line)
        .map(Some)
        .map_err(|e| format!("not an OpenSSH public key ({e}): {:.40}", line))
}

/// Why a user's signature algorithm is refused even though russh would
/// verify it: `ssh-rsa` signs with SHA-1, which is broken for collisions
/// (SHA-1 is a Shambles, 2020); OpenSSH 8.8 stopped accepting it. russh
/// leaves refusing it to the handler (`PublicKeyOffer::algorithm`).
pub fn refused_signature(algorithm: &Algorithm) -> Option<&'static str> {
    matches!(algorithm, Algorithm::Rsa { hash: None }).then_some(SHA1_SIGNATURE_REFUSED)
}

pub const SHA1_SIGNATURE_REFUSED: &str = "ssh-rsa (SHA-1) signatures are refused; sign with rsa-sha2-256 or rsa-sha2-512 (OpenSSH 7.2 or later) or use an Ed25519 key";

/// What `revoked_keys` revokes.
#[derive(Debug, Clone, Default)]
pub struct RevokedKeys {
    keys: HashSet<Fingerprint>,
    serials: Vec<(u64, u64)>,
    key_ids: HashSet<String>,
}

fn fingerprint(key: &KeyData) -> Fingerprint {
    key.fingerprint(HashAlg::Sha256)
}

impl RevokedKeys {
    /// Parses the file's text; an error names the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut revoked = RevokedKeys::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            let at = |message: String| format!("line {}: {message}", n + 1);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(range) = line.strip_prefix("serial:") {
                let range = range.trim();
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                let number = |s: &str| {
                    s.trim()
                        .parse::<u64>()
                        .map_err(|_| at(format!("{range:?} is not a serial or serial range")))
                };
                let (low, high) = (number(low)?, number(high)?);
                if low > high {
                    return Err(at(format!("serial range {range:?} is empty")));
                }
                revoked.serials.push((low, high));
            } else if let Some(id) = line.strip_prefix("id:") {
                revoked.key_ids.insert(id.trim().to_string());
            } else if let Some(hash) = line.strip_prefix("hash:") {
                let hash: Fingerprint = hash
                    .trim()
                    .parse()
                    .map_err(|e| at(format!("not a SHA256 fingerprint ({e})")))?;
                revoked.keys.insert(hash);
            } else if let Ok(certificate) = russh::keys::Certificate::from_openssh(line) {
                revoked.keys.insert(fingerprint(certificate.public_key()));
            } else {
                let key = parse_authorized_key(line)
                    .map_err(at)?
                    .ok_or_else(|| at("empty key".into()))?;
                revoked.keys.insert(fingerprint(key.key_data()));
            }
        }
        Ok(revoked)
    }

    pub fn key_revoked(&self, key: &KeyData) -> bool {
        self.keys.contains(&fingerprint(key))
    }

    /// Why a certificate is revoked, if it is: its key, serial or key ID.
    pub fn certificate_revoked(&self, key: &KeyData, serial: u64, key_id: &str) -> Option<String> {
        if self.key_revoked(key) {
            Some("its key is revoked".into())
        } else if self
            .serials
            .iter()
            .any(|(low, high)| (*low..=*high).contains(&serial))
        {
            Some(format!("its serial {serial} is revoked"))
        } else if self.key_ids.contains(key_id) {
            Some(format!("its key ID {key_id:?} is revoked"))
        } else {
            None
        }
    }
}
