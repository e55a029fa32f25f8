//! Host keys: loaded from their files, or generated (Ed25519, mode 0600)
//! on first start and reused after, so `known_hosts` entries stay valid.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, HashAlg, PrivateKey};

#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("cannot read host key {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot write host key {path}: {reason}")]
    Write { path: String, reason: String },
}

pub fn load_or_generate(path: &Path) -> Result<PrivateKey, HostKeyError> {
    let shown = path.display().to_string();
    if path.exists() {
        return russh::keys::load_secret_key(path, None).map_err(|e| HostKeyError::Read {
            path: shown,
            reason: e.to_string(),
        });
    }
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).map_err(|e| {
        HostKeyError::Write {
            path: shown.clone(),
            reason: e.to_string(),
        }
    })?;
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| HostKeyError::Write {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    };
    write().map_err(|e| HostKeyError::Write {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    tracing::info!(path = %shown, "generated a new host key");
    Ok(key)
}

/// `SHA256:...` as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}
