//! The `[kube_proxy]` section of the configuration: the kubectl door's
//! listener, the URL its kubeconfigs name, and how long the credentials
//! that `ssh PERSON@bastion kube-credential` prints are valid.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::paths::resolve;

/// The `[kube_proxy]` section of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeProxyConfig {
    /// Address of the HTTPS listener kubectl talks to (none: no door).
    pub listen: Option<SocketAddr>,
    /// The URL the printed kubeconfig names (`https://bastion.example.com:6443`).
    pub public_url: Option<String>,
    /// PEM certificate chain and private key of the listener (default:
    /// the web terminal's pair).
    pub certificate: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The CA kubectl verifies the listener's certificate with, as the
    /// kubeconfig's `certificate-authority-data` (default: the certificate
    /// file itself, right for a self-signed certificate).
    pub certificate_authority: Option<PathBuf>,
    /// Seconds a credential from `kube-credential` is valid; never past
    /// the end of the SSH certificate that minted it.
    pub credential_secs: u64,
    /// The host the kubeconfig's `ssh` plugin connects to (default: the
    /// host of `public_url`).
    pub ssh_host: Option<String>,
    /// The port it connects to (default: the port of `listen`, the SSH
    /// listener's).
    pub ssh_port: Option<u16>,
}

impl Default for KubeProxyConfig {
    fn default() -> Self {
        KubeProxyConfig {
            listen: None,
            public_url: None,
            certificate: None,
            key: None,
            certificate_authority: None,
            credential_secs: 3600,
            ssh_host: None,
            ssh_port: None,
        }
    }
}

impl KubeProxyConfig {
    /// Checks the section, resolves its file paths against `base` and
    /// takes the web terminal's certificate and key where it names none.
    pub fn validate(
        &mut self,
        base: &Path,
        web_certificate: Option<&Path>,
        web_key: Option<&Path>,
    ) -> Result<(), String> {
        let resolve = |p: &Path| resolve(base, p);
        self.certificate = self.certificate.as_deref().map(resolve);
        self.key = self.key.as_deref().map(resolve);
        self.certificate_authority = self.certificate_authority.as_deref().map(resolve);
        if self.credential_secs == 0 || self.credential_secs > 24 * 3600 {
            return Err(format!(
                "kube_proxy.credential_secs: {} is out of range; give 1 to 86400 (a day)",
                self.credential_secs
            ));
        }
        if let Some(url) = &self.public_url {
            server_url(url)?;
        }
        if self.listen.is_none() {
            return Ok(());
        }
        if self.certificate.is_none() && self.key.is_none() {
            self.certificate = web_certificate.map(Path::to_path_buf);
            self.key = web_key.map(Path::to_path_buf);
        }
        if self.certificate.is_none() || self.key.is_none() {
            return Err("kube_proxy: listen needs certificate and key (PEM files), or the web terminal's [web] certificate and key to reuse".into());
        }
        if self.public_url.is_none() {
            return Err("kube_proxy: listen needs public_url, the https:// address the printed kubeconfigs name".into());
        }
        Ok(())
    }

    /// The host the kubeconfig's `ssh` plugin connects to.
    pub fn ssh_host(&self) -> Option<String> {
        self.ssh_host.clone().or_else(|| {
            let url = url::Url::parse(self.public_url.as_deref()?).ok()?;
            url.host_str().map(str::to_string)
        })
    }
}

/// Checks `public_url`: an https URL, without query or fragment.
fn server_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url)
        .map_err(|e| format!("kube_proxy.public_url: {url:?} is not a URL: {e}"))?;
    if parsed.scheme() != "https" {
        return Err(format!(
            "kube_proxy.public_url: {url:?} must start with https:// (kubectl verifies the door's certificate)"
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || parsed.host_str().is_none() {
        return Err(format!(
            "kube_proxy.public_url: {url:?} must be https://HOST[:PORT], without query or fragment"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> Result<KubeProxyConfig, String> {
        let mut section: KubeProxyConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        section.validate(Path::new("/etc/kbastion"), None, None)?;
        Ok(section)
    }

    #[test]
    fn a_listener_needs_its_url_and_a_key_pair_and_says_which() {
        let error =
            section("listen = \"127.0.0.1:6443\"\npublic_url = \"https://b:6443\"").unwrap_err();
        assert!(error.contains("certificate and key"), "{error}");
        let error =
            section("listen = \"127.0.0.1:6443\"\ncertificate = \"c.pem\"\nkey = \"k.pem\"")
                .unwrap_err();
        assert!(error.contains("public_url"), "{error}");
        let error = section("public_url = \"http://b:6443\"").unwrap_err();
        assert!(error.contains("https://"), "{error}");
        let error = section("credential_secs = 0").unwrap_err();
        assert!(error.contains("credential_secs"), "{error}");
        let ok = section(
            "listen = \"127.0.0.1:6443\"\npublic_url = \"https://bastion.example.com:6443\"\ncertificate = \"c.pem\"\nkey = \"k.pem\"",
        )
        .unwrap();
        assert_eq!(
            ok.certificate.as_deref(),
            Some(Path::new("/etc/kbastion/c.pem"))
        );
        assert_eq!(ok.ssh_host().as_deref(), Some("bastion.example.com"));
    }

    #[test]
    fn the_web_terminals_pair_is_reused_when_none_is_named() {
        let mut section: KubeProxyConfig =
            toml::from_str("listen = \"127.0.0.1:6443\"\npublic_url = \"https://b:6443\"").unwrap();
        section
            .validate(
                Path::new("/"),
                Some(Path::new("/w/cert.pem")),
                Some(Path::new("/w/key.pem")),
            )
            .unwrap();
        assert_eq!(section.key.as_deref(), Some(Path::new("/w/key.pem")));
    }
}
