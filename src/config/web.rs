//! The `[web]` section of the configuration: the web terminal's listener,
//! its public URL and the limits on sign-in links and browser sessions.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::paths::resolve;

/// The `[web]` section of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Address of the HTTPS listener (none: no web terminal).
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain and private key for the listener.
    pub certificate: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The URL people open (`https://bastion.example.com`): links are
    /// printed with it, and a WebSocket whose Origin is not exactly its
    /// origin is refused (cross-site WebSocket hijacking).
    pub public_url: Option<String>,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` is
    /// believed; anyone else's address is the TCP peer's.
    pub trusted_proxies: Vec<String>,
    /// Seconds a terminal's process waits for its page to come back after
    /// the WebSocket drops; then it ends as for a vanished SSH client.
    pub reattach_secs: u64,
    /// Seconds a sign-in link is valid (it works once).
    pub link_secs: u64,
    /// A browser session unused this long is over.
    pub session_idle_secs: u64,
    /// A browser session is over this long after sign-in, and never
    /// later than the credential that minted it (a certificate's end).
    pub session_max_secs: u64,
    /// The locale a web terminal's session runs in (`LANG`): a browser
    /// sends UTF-8, and a shell with no locale misreads its letters.
    pub locale: String,
    /// Unused sign-in links one person may hold at once.
    pub max_links_per_person: usize,
    /// Browser sessions one person may have at once.
    pub max_sessions_per_person: usize,
    /// Connections to the web port open at once, from everywhere.
    pub max_connections: usize,
    /// Connections open at once from one address (not counted for
    /// `trusted_proxies`, whose connections carry everyone's).
    pub max_connections_per_source: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: None,
            certificate: None,
            key: None,
            public_url: None,
            trusted_proxies: Vec::new(),
            reattach_secs: 60,
            link_secs: 60,
            session_idle_secs: 30 * 60,
            session_max_secs: 12 * 3600,
            locale: crate::session::environment::FALLBACK_LOCALE.into(),
            max_links_per_person: 20,
            max_sessions_per_person: 20,
            max_connections: 1024,
            max_connections_per_source: 64,
        }
    }
}

impl WebConfig {
    /// Checks the section and resolves its file paths against `base`.
    pub fn validate(&mut self, base: &Path) -> Result<(), String> {
        let resolve = |p: &Path| resolve(base, p);
        self.certificate = self.certificate.as_deref().map(resolve);
        self.key = self.key.as_deref().map(resolve);
        for (i, entry) in self.trusted_proxies.iter().enumerate() {
            if entry.parse::<ipnet::IpNet>().is_err() && entry.parse::<IpAddr>().is_err() {
                return Err(format!(
                    "web.trusted_proxies[{i}]: {entry:?} is not an address or CIDR block"
                ));
            }
        }
        if self.link_secs == 0 || self.session_idle_secs == 0 || self.session_max_secs == 0 {
            return Err(
                "web: link_secs, session_idle_secs and session_max_secs must be at least 1".into(),
            );
        }
        if let Some(url) = &self.public_url {
            public_origin(url)?;
        }
        if self.max_links_per_person == 0 || self.max_sessions_per_person == 0 {
            return Err(
                "web: max_links_per_person and max_sessions_per_person must be at least 1".into(),
            );
        }
        if self.max_connections == 0 || self.max_connections_per_source == 0 {
            return Err(
                "web: max_connections and max_connections_per_source must be at least 1".into(),
            );
        }
        let locale_ok = !self.locale.is_empty()
            && self.locale.len() <= 64
            && self
                .locale
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
        if !locale_ok {
            return Err(format!(
                "web.locale: {:?} is not a locale name (such as C.UTF-8 or en_US.UTF-8)",
                self.locale
            ));
        }
        if self.listen.is_none() {
            return Ok(());
        }
        if self.certificate.is_none() || self.key.is_none() {
            return Err("web: listen needs certificate and key (PEM files); the web terminal is served over HTTPS only".into());
        }
        if self.public_url.is_none() {
            return Err("web: listen needs public_url, the https:// address people open (the WebSocket Origin check compares against it)".into());
        }
        Ok(())
    }

    /// The origin a page of ours has (`https://host[:port]`).
    pub fn origin(&self) -> Option<String> {
        self.public_url
            .as_deref()
            .and_then(|u| public_origin(u).ok())
    }

    /// The address a request comes from: the TCP peer's, or behind a
    /// trusted proxy the rightmost address of `X-Forwarded-For` that is
    /// not a trusted proxy's. Every header line counts, in order: a proxy
    /// that adds a line of its own (HAProxy's `option forwardfor`) must not
    /// leave the client's own line to choose the address.
    pub fn client_address<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = &'a str>,
    ) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let lines: Vec<&str> = forwarded_for.into_iter().collect();
        let hops: Vec<&str> = lines.iter().flat_map(|line| line.split(',')).collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(address) if self.trusts(address) => client = address,
                Ok(address) => return address,
                // Whatever a trusted proxy passed on that is not an
                // address: nothing left of it can be believed.
                Err(_) => return client,
            }
        }
        client
    }

    /// Whether `peer` is one of `trusted_proxies`.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|entry| {
            entry
                .parse::<ipnet::IpNet>()
                .map(|net| net.contains(&peer))
                .or_else(|_| entry.parse::<IpAddr>().map(|a| a == peer))
                .unwrap_or(false)
        })
    }
}

/// The origin of `public_url`, which must be an https URL without a path.
fn public_origin(url: &str) -> Result<String, String> {
    let parsed =
        url::Url::parse(url).map_err(|e| format!("web.public_url: {url:?} is not a URL: {e}"))?;
    if parsed.scheme() != "https" {
        return Err(format!(
            "web.public_url: {url:?} must start with https:// (the session cookie is Secure)"
        ));
    }
    if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "web.public_url: {url:?} must have no path: the web terminal is served at the root"
        ));
    }
    Ok(parsed.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<WebConfig, String> {
        let mut web: WebConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        web.validate(Path::new("/etc/kbastion")).map(|()| web)
    }

    #[test]
    fn listening_needs_certificate_key_and_public_url() {
        let error = config("listen = \"127.0.0.1:8443\"").unwrap_err();
        assert!(error.contains("certificate and key"), "{error}");
        let error = config("listen = \"127.0.0.1:8443\"\ncertificate = \"c.pem\"\nkey = \"k.pem\"")
            .unwrap_err();
        assert!(error.contains("public_url"), "{error}");
        let web = config(
            "listen = \"127.0.0.1:8443\"\ncertificate = \"c.pem\"\nkey = \"/k.pem\"\npublic_url = \"https://Bastion.example.com:443/\"",
        )
        .unwrap();
        assert_eq!(
            web.certificate.as_deref(),
            Some(Path::new("/etc/kbastion/c.pem"))
        );
        assert_eq!(web.origin().as_deref(), Some("https://bastion.example.com"));
    }

    #[test]
    fn public_url_is_https_without_a_path() {
        for bad in ["http://bastion", "https://bastion/term", "not a url"] {
            let error = config(&format!("public_url = \"{bad}\"")).unwrap_err();
            assert!(error.starts_with("web.public_url:"), "{error}");
        }
        let web = config("public_url = \"https://127.0.0.1:8443\"").unwrap();
        assert_eq!(web.origin().as_deref(), Some("https://127.0.0.1:8443"));
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let web = config("trusted_proxies = [\"10.0.0.0/8\"]").unwrap();
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "192.0.2.7".parse().unwrap();
        let address = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(
            web.client_address(proxy, ["198.51.100.1, 203.0.113.9"]),
            address("203.0.113.9")
        );
        assert_eq!(web.client_address(proxy, ["junk"]), proxy);
        assert_eq!(web.client_address(proxy, []), proxy);
        assert_eq!(web.client_address(stranger, ["203.0.113.9"]), stranger);
        // The client's own line comes first; the proxy appends its own.
        assert_eq!(
            web.client_address(proxy, ["127.0.0.1", "203.0.113.9"]),
            address("203.0.113.9")
        );
        // Trusted hops on the right are skipped.
        assert_eq!(
            web.client_address(proxy, ["127.0.0.1, 203.0.113.9, 10.9.9.9", "10.0.0.1"]),
            address("203.0.113.9")
        );
        assert!(config("trusted_proxies = [\"everyone\"]").is_err());
    }
}
