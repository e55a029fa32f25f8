//! The `[oidc]` section of the configuration: single sign-on with the
//! company's OpenID Connect provider, for the browser and for plain ssh,
//! and the short-lived SSH certificates a signed-in person may mint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::paths::resolve;

/// The `[oidc]` section of the configuration. Present: people may sign in
/// with the provider (the web terminal must be on, since the provider
/// sends them back to it). Absent: keys and certificates only, and
/// keyboard-interactive is not offered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (`https://login.example.com/realms/x`);
    /// `http://` only on a loopback address.
    pub issuer: String,
    /// The name of the provider on the sign-in page ("Sign in with …");
    /// default: the issuer's host.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The client kbastion is registered as, and the file holding its
    /// secret (a trailing newline is ignored).
    pub client_id: String,
    pub client_secret_file: PathBuf,
    /// The secret read (filled in by `validate`; never printed).
    #[serde(skip)]
    pub client_secret: String,
    /// A PEM file of CAs the provider's certificate is checked against,
    /// besides the system's (an internal provider's own CA).
    #[serde(default)]
    pub certificate_authority: Option<PathBuf>,
    /// The ID token claim that names the person (a login name: letters,
    /// digits, `.`, `_`, `-`).
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// The ID token claim listing the person's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// What people made from claims are impersonated as: this prefix and
    /// their name, in groups of this prefix and each of theirs. kbastion
    /// impersonates nothing else for them.
    #[serde(default = "default_prefix")]
    pub kubernetes_user_prefix: String,
    #[serde(default = "default_prefix")]
    pub kubernetes_group_prefix: String,
    /// Only people in one of these groups may sign in (empty: anyone the
    /// provider signs in); only these groups are impersonated.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// Hours an SSH certificate minted for a signed-in person is valid.
    #[serde(default = "default_certificate_hours")]
    pub certificate_hours: u64,
    /// Seconds a sign-in (a browser's, or an ssh connection's code) may
    /// take at the provider.
    #[serde(default = "default_sign_in_secs")]
    pub sign_in_secs: u64,
    /// Sign-ins waiting at the provider at once: from one address, and
    /// from everywhere. They are counted apart from the connections that
    /// are logging in with keys, so they cannot crowd those out.
    #[serde(default = "default_max_pending_per_source")]
    pub max_pending_per_source: usize,
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
}

fn default_username_claim() -> String {
    "preferred_username".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_prefix() -> String {
    "oidc:".into()
}
fn default_certificate_hours() -> u64 {
    8
}
fn default_sign_in_secs() -> u64 {
    300
}
fn default_max_pending_per_source() -> usize {
    8
}
fn default_max_pending() -> usize {
    256
}

impl OidcConfig {
    /// Checks the section, resolves its paths against `base` and reads
    /// the client secret.
    pub fn validate(&mut self, base: &Path, web_on: bool) -> Result<(), String> {
        let resolve = |p: &Path| resolve(base, p);
        issuer_url(&self.issuer)?;
        if !web_on {
            return Err("oidc: needs the web terminal ([web] listen and public_url): the provider sends people back to <web public_url>/oidc/callback".into());
        }
        if self.client_id.trim().is_empty() {
            return Err("oidc.client_id: must not be empty".into());
        }
        self.client_secret_file = resolve(&self.client_secret_file);
        let secret = std::fs::read_to_string(&self.client_secret_file).map_err(|e| {
            format!(
                "oidc.client_secret_file: cannot read {}: {e}",
                self.client_secret_file.display()
            )
        })?;
        self.client_secret = secret.trim_end_matches(['\r', '\n']).to_string();
        if self.client_secret.is_empty() {
            return Err(format!(
                "oidc.client_secret_file: {} is empty",
                self.client_secret_file.display()
            ));
        }
        self.certificate_authority = self.certificate_authority.as_deref().map(resolve);
        for (key, value) in [
            ("username_claim", &self.username_claim),
            ("groups_claim", &self.groups_claim),
        ] {
            if value.trim().is_empty() {
                return Err(format!("oidc.{key}: must not be empty"));
            }
        }
        for (key, prefix) in [
            ("kubernetes_user_prefix", &self.kubernetes_user_prefix),
            ("kubernetes_group_prefix", &self.kubernetes_group_prefix),
        ] {
            // Without a prefix, a claim could name any Kubernetes user or
            // group (`system:masters`), and RBAC could not tell people
            // from the provider from anyone else.
            if prefix.is_empty() || prefix.starts_with("system:") {
                return Err(format!(
                    "oidc.{key}: {prefix:?} must be a non-empty prefix not starting with system: (default \"oidc:\")"
                ));
            }
        }
        if self.certificate_hours == 0 || self.certificate_hours > 24 * 7 {
            return Err(format!(
                "oidc.certificate_hours: {} is out of range; give 1 to 168 (a week)",
                self.certificate_hours
            ));
        }
        if !(30..=3600).contains(&self.sign_in_secs) {
            return Err(format!(
                "oidc.sign_in_secs: {} is out of range; give 30 to 3600",
                self.sign_in_secs
            ));
        }
        if self.max_pending == 0 || self.max_pending_per_source == 0 {
            return Err("oidc: max_pending and max_pending_per_source must be at least 1".into());
        }
        Ok(())
    }

    /// The name the sign-in page gives the provider.
    pub fn display_name(&self) -> String {
        self.display_name.clone().unwrap_or_else(|| {
            url::Url::parse(&self.issuer)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| self.issuer.clone())
        })
    }
}

/// Checks an issuer URL: `https://`, or `http://` on a loopback address
/// (tests and a provider on the same machine), without query or fragment.
fn issuer_url(issuer: &str) -> Result<(), String> {
    let url = url::Url::parse(issuer)
        .map_err(|e| format!("oidc.issuer: {issuer:?} is not a URL: {e}"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "oidc.issuer: {issuer:?} must have no query or fragment"
        ));
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "oidc.issuer: {issuer:?} must start with https:// (http:// only on a loopback address)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str, secret: &str) -> Result<OidcConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), secret).unwrap();
        let mut section: OidcConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        section.validate(dir.path(), true)?;
        Ok(section)
    }

    const BASE: &str = "client_id = \"kbastion\"\nclient_secret_file = \"secret\"\n";

    #[test]
    fn issuers_are_https_except_on_loopback() {
        for ok in [
            "https://login.example.com",
            "https://login.example.com/realms/staff",
            "http://127.0.0.1:9000",
            "http://localhost:9000/x",
            "http://[::1]:9000",
        ] {
            section(&format!("issuer = \"{ok}\"\n{BASE}"), "s").unwrap_or_else(|e| panic!("{e}"));
        }
        for bad in [
            "http://login.example.com",
            "http://10.0.0.1",
            "ftp://127.0.0.1",
            "https://x/?a=b",
            "login.example.com",
        ] {
            let error = section(&format!("issuer = \"{bad}\"\n{BASE}"), "s").unwrap_err();
            assert!(error.starts_with("oidc.issuer: "), "{bad}: {error}");
        }
    }

    #[test]
    fn defaults_the_secret_and_bad_prefixes() {
        let ok = section(
            &format!("issuer = \"https://id.example.com\"\n{BASE}"),
            "s3\n",
        )
        .unwrap();
        assert_eq!(ok.client_secret, "s3");
        assert_eq!(ok.username_claim, "preferred_username");
        assert_eq!(ok.kubernetes_group_prefix, "oidc:");
        assert_eq!(ok.certificate_hours, 8);
        assert_eq!(ok.display_name(), "id.example.com");
        let error = section(&format!("issuer = \"https://i\"\n{BASE}"), "\n").unwrap_err();
        assert!(error.contains("is empty"), "{error}");
        for prefix in ["", "system:oidc:"] {
            let error = section(
                &format!("issuer = \"https://i\"\n{BASE}kubernetes_user_prefix = \"{prefix}\"\n"),
                "s",
            )
            .unwrap_err();
            assert!(error.starts_with("oidc.kubernetes_user_prefix"), "{error}");
        }
        let mut no_web: OidcConfig =
            toml::from_str(&format!("issuer = \"https://i\"\n{BASE}")).unwrap();
        let error = no_web.validate(Path::new("/"), false).unwrap_err();
        assert!(error.contains("web terminal"), "{error}");
    }
}
