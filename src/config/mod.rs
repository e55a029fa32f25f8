//! kbastion's configuration file (TOML): what it listens on, its host keys,
//! the cluster, timeouts, limits, and the people allowed in with their keys
//! and Kubernetes identities.
//!
//! Parsing rejects unknown keys and bad values with an error that names the
//! key. Loading also reads the authorized-keys files, so a `Config` in hand
//! holds every key it will accept.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use russh::keys::PublicKey;
use serde::{Deserialize, Serialize};

mod kube_proxy;
mod oidc;
mod paths;
mod web;

pub use kube_proxy::KubeProxyConfig;
pub use oidc::OidcConfig;
pub use web::WebConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the SSH server listens on.
    pub listen: SocketAddr,
    /// Host private keys (OpenSSH format). A missing file is generated as
    /// an Ed25519 key with mode 0600 on first start and reused after.
    #[serde(default = "default_host_keys")]
    pub host_keys: Vec<PathBuf>,
    /// Kubeconfig to reach the cluster; without it, KUBECONFIG,
    /// ~/.kube/config or the in-cluster service account are used.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (default: the current context).
    #[serde(default)]
    pub context: Option<String>,
    /// The bastion's own namespace; default: the pod's own namespace in a
    /// cluster, else `kbastion`. No login reaches a container in it, nor in
    /// the node-shell namespace (`node_shell.namespace`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The PROXY protocol from trusted load balancers (the real client
    /// address behind them).
    #[serde(default)]
    pub proxy_protocol: crate::proxy_protocol::ProxyProtocolConfig,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub limits: Limits,
    /// Node shells (`user@NODE`).
    #[serde(default)]
    pub node_shell: crate::node_shell::NodeShellConfig,
    /// Debug containers (`USER@NS/POD/CONTAINER.debug`).
    #[serde(default)]
    pub debug: DebugConfig,
    /// Metrics and health endpoints.
    #[serde(default)]
    pub metrics: crate::metrics::MetricsConfig,
    /// What happens on SIGTERM.
    #[serde(default)]
    pub shutdown: Shutdown,
    /// Who speaks SFTP and legacy scp for a session.
    #[serde(default)]
    pub files: Files,
    /// OpenSSH user CA public keys (authorized_keys format): certificates
    /// they sign log in the person named among the certificate's principals.
    #[serde(default)]
    pub user_ca_keys: Vec<String>,
    /// The CA keys parsed (filled in by `parse`).
    #[serde(skip)]
    pub ca_keys: Vec<PublicKey>,
    /// Revoked keys and certificates (OpenSSH's `RevokedKeys` plain form:
    /// public keys, plus `serial:`, `id:` and `hash:` lines). Re-read on
    /// SIGHUP; connections whose credential it revokes are ended.
    #[serde(default)]
    pub revoked_keys: Option<PathBuf>,
    /// The revocations read (filled in by `parse`).
    #[serde(skip)]
    pub revoked: crate::keys::RevokedKeys,
    /// Audit log and session recordings.
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
    /// The web terminal (off unless `web.listen` is set).
    #[serde(default)]
    pub web: WebConfig,
    /// The kubectl door (off unless `kube_proxy.listen` is set).
    #[serde(default)]
    pub kube_proxy: KubeProxyConfig,
    /// Single sign-on with the company's OpenID Connect provider (off
    /// unless the section is present; needs the web terminal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcConfig>,
    /// The Secret (in `namespace`) holding the key that signs the
    /// credentials every replica accepts: created by the first replica
    /// that needs it, read by the others.
    #[serde(default = "default_signing_secret")]
    pub signing_secret: String,
    /// Whether a person may be mapped to the `system:masters` group, which
    /// no RBAC rule can restrict or audit as a role (default: refused).
    #[serde(default)]
    pub allow_cluster_admin: bool,
    /// Environment variables a client may pass to its sessions (SSH `env`
    /// requests, OpenSSH's `SendEnv`): names, or prefixes ending in `*`.
    /// Default: `LANG` and `LC_*`, as Debian's and Ubuntu's sshd accept,
    /// so a shell reads the letters people type in their own locale.
    #[serde(default = "crate::session::environment::default_accept_env")]
    pub accept_env: Vec<String>,
    /// People allowed in.
    #[serde(default)]
    pub users: Vec<User>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Seconds an unauthenticated connection may take to log in.
    pub login_secs: u64,
    /// Seconds a session may carry no data, either way, before it is
    /// closed (0 = never); also closes connections silent that long.
    pub idle_secs: u64,
    /// Seconds between keepalive probes to a silent client (0 = off).
    pub keepalive_secs: u64,
    /// Unanswered keepalives before the client counts as gone.
    pub keepalive_max: usize,
    /// Seconds to wait for the Kubernetes API before telling the user it is
    /// unreachable.
    pub api_secs: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            login_secs: 30,
            idle_secs: 3600,
            keepalive_secs: 30,
            keepalive_max: 3,
            api_secs: 10,
        }
    }
}

impl Timeouts {
    pub fn api(&self) -> Duration {
        Duration::from_secs(self.api_secs)
    }

    /// How long a session may carry no data, if limited.
    pub fn idle(&self) -> Option<Duration> {
        (self.idle_secs > 0).then(|| Duration::from_secs(self.idle_secs))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Authentication attempts per connection.
    pub max_auth_attempts: usize,
    /// Channels (sessions, forwards) open at once on one connection.
    pub max_channels_per_connection: usize,
    /// Connections not yet logged in from one source address (IPv6: one
    /// /64); logged-in ones are bounded per person instead.
    pub max_connections_per_source: usize,
    /// Connections not yet authenticated, from all sources together (as
    /// sshd's MaxStartups): a flood of bogus connections cannot hold more.
    pub max_unauthenticated_connections: usize,
    /// Sessions (and forwards) open at once for one person, over all
    /// their connections to this replica.
    pub max_sessions_per_user: usize,
    /// Milliseconds added after a failed authentication once a source is
    /// past its first three failures, doubling with each further failure
    /// from that address (or, past ten, against that person), up to 32
    /// times; forgotten after 10 minutes, or a success from the address.
    pub auth_failure_delay_ms: u64,
    /// New connections per second from one source (an IPv4 address or an
    /// IPv6 /64), after a burst of `connection_burst_per_source`; the excess
    /// is closed at accept, before any SSH work.
    pub connections_per_second_per_source: u32,
    pub connection_burst_per_source: u32,
    /// Each channel's SSH receive window, in bytes: the most of a client's
    /// input that waits inside kbastion for one channel (it is given back
    /// as the input is handed on). A channel starts at 128 KiB and grows
    /// to this as it carries data. From 32 KiB (one packet) to 16 MiB.
    pub channel_window_bytes: u32,
    /// What every channel's window on this replica may grow to together
    /// (`ssh::window`): the most client input all people together can make
    /// kbastion hold, past which senders slow down. At least 1 MiB.
    pub bastion_window_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_auth_attempts: 6,
            max_channels_per_connection: 128,
            max_connections_per_source: 64,
            max_unauthenticated_connections: 256,
            max_sessions_per_user: 64,
            auth_failure_delay_ms: 250,
            connections_per_second_per_source: 10,
            connection_burst_per_source: 10,
            channel_window_bytes: 2 * 1024 * 1024,
            bastion_window_bytes: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shutdown {
    /// Seconds open sessions get to finish after SIGTERM (users are told).
    pub drain_secs: u64,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown { drain_secs: 45 }
    }
}

/// Who serves file transfers: the target's own tools, or kbastion through
/// exec (for targets with nothing but a POSIX shell and coreutils/busybox).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Files {
    pub sftp: SftpServer,
    pub scp: ScpServer,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SftpServer {
    /// The target's `sftp-server` where it has one, else kbastion's own.
    #[default]
    Auto,
    /// Always kbastion's own SFTP server.
    Builtin,
    /// Always the target's `sftp-server`.
    Target,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScpServer {
    /// kbastion speaks legacy scp itself (no `scp` needed in the target).
    #[default]
    Builtin,
    /// The command runs the target's own `scp`.
    Target,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The name people log in with (the part before the first `@`).
    pub name: String,
    /// Kubernetes user the bastion impersonates (default: `name`).
    #[serde(default)]
    pub kubernetes_user: Option<String>,
    /// Kubernetes groups the bastion impersonates.
    #[serde(default)]
    pub kubernetes_groups: Vec<String>,
    /// Public keys as `authorized_keys` lines.
    #[serde(default)]
    pub authorized_keys: Vec<String>,
    /// Addresses and CIDR blocks this person may connect from (empty: any).
    #[serde(default)]
    pub from: Vec<String>,
    /// Files in `authorized_keys` format.
    #[serde(default)]
    pub authorized_keys_files: Vec<PathBuf>,
    /// The keys parsed from both sources (filled in by `load`).
    #[serde(skip)]
    pub keys: Vec<PublicKey>,
}

impl User {
    pub fn kubernetes_user(&self) -> &str {
        self.kubernetes_user.as_deref().unwrap_or(&self.name)
    }

    /// Whether the person may connect from `source` (`from`).
    pub fn allowed_from(&self, source: std::net::IpAddr) -> bool {
        self.from.is_empty() || crate::certificates::source_allowed(&self.from.join(","), source)
    }
}

fn default_host_keys() -> Vec<PathBuf> {
    vec![PathBuf::from("ssh_host_ed25519_key")]
}

/// In a cluster, the namespace of the bastion's own pod (downward API
/// `POD_NAMESPACE`); elsewhere `kbastion`.
fn default_signing_secret() -> String {
    "kbastion-signing".into()
}

fn default_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "kbastion".into())
}

/// A TOML error as file position, the key (when the line is one of ours:
/// a lowercase key, under its `[section]`) and what was wrong, never the
/// file's text: a file given by mistake (a token, a key) must not be
/// echoed into a terminal or a log.
fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', " ");
    let Some(span) = error.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let column = start - line_start + 1;
    let is_key = |s: &str| {
        !s.is_empty() && s.len() <= 40 && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    };
    let key = before[line_start..]
        .trim()
        .strip_suffix('=')
        .map(str::trim)
        .filter(|k| is_key(k));
    let section = before[..line_start].lines().rev().find_map(|l| {
        let name = l.trim().strip_prefix('[')?.strip_suffix(']')?;
        let name = name.trim_start_matches('[').trim_end_matches(']');
        name.split('.').all(is_key).then_some(name)
    });
    match (section, key) {
        (Some(section), Some(key)) => {
            format!("line {line}, column {column}: {section}.{key}: {message}")
        }
        (None, Some(key)) => format!("line {line}, column {column}: {key}: {message}"),
        _ => format!("line {line}, column {column}: {message}"),
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and validates; relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let mut config: Config = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let resolve = |p: &Path| paths::resolve(base, p);
        config.host_keys = config.host_keys.iter().map(|p| resolve(p)).collect();
        if config.host_keys.is_empty() {
            return Err("host_keys: at least one host key path is required".into());
        }
        config.kubeconfig = config.kubeconfig.as_deref().map(resolve);
        config.audit.file = config.audit.file.as_deref().map(resolve);
        config.audit.recordings_dir = config.audit.recordings_dir.as_deref().map(resolve);
        if config.audit.require_recording && config.audit.recordings_dir.is_none() {
            return Err("audit.require_recording needs audit.recordings_dir: without a place for recordings every session would be refused".into());
        }
        crate::login::validate_kubernetes_name(&config.namespace, 63)
            .map_err(|e| format!("namespace: {e}"))?;
        if config.timeouts.login_secs == 0 || config.timeouts.api_secs == 0 {
            return Err("timeouts: login_secs and api_secs must be at least 1".into());
        }
        let limits = &config.limits;
        if [
            limits.max_auth_attempts,
            limits.max_channels_per_connection,
            limits.max_connections_per_source,
            limits.max_unauthenticated_connections,
            limits.max_sessions_per_user,
        ]
        .contains(&0)
        {
            return Err("limits: every limit must be at least 1".into());
        }
        if !(32 * 1024..=16 * 1024 * 1024).contains(&limits.channel_window_bytes) {
            return Err(format!(
                "limits.channel_window_bytes: {} is outside 32768 (one packet) to 16777216 (16 MiB)",
                limits.channel_window_bytes
            ));
        }
        if limits.bastion_window_bytes < 1024 * 1024 {
            return Err(format!(
                "limits.bastion_window_bytes: {} is below 1048576 (1 MiB); it bounds every channel's window together",
                limits.bastion_window_bytes
            ));
        }
        let shell_namespace = config.node_shell.namespace_for(&config.namespace);
        crate::login::validate_kubernetes_name(&shell_namespace, 63)
            .map_err(|e| format!("node_shell.namespace: {e}"))?;
        config.node_shell.namespace = Some(shell_namespace);
        let shell = &config.node_shell;
        if shell.image.is_empty() {
            return Err("node_shell.image: must not be empty".into());
        }
        if shell.nsenter.is_empty() {
            return Err("node_shell.nsenter: must name at least the nsenter command".into());
        }
        if shell.start_timeout_secs == 0 || shell.hold_secs < 3 {
            return Err(
                "node_shell: start_timeout_secs must be at least 1 and hold_secs at least 3".into(),
            );
        }
        if config.debug.image.trim().is_empty() || config.debug.start_timeout_secs == 0 {
            return Err(
                "debug: image must not be empty and start_timeout_secs must be at least 1".into(),
            );
        }
        for (i, line) in config.user_ca_keys.iter().enumerate() {
            if let Some(key) = crate::keys::parse_authorized_key(line)
                .map_err(|e| format!("user_ca_keys[{i}]: {e}"))?
            {
                config.ca_keys.push(key);
            }
        }
        config.proxy_protocol.validate()?;
        config.web.validate(base)?;
        let (web_certificate, web_key) = (config.web.certificate.clone(), config.web.key.clone());
        config
            .kube_proxy
            .validate(base, web_certificate.as_deref(), web_key.as_deref())?;
        let web_on = config.web.listen.is_some() && config.web.public_url.is_some();
        if let Some(oidc) = &mut config.oidc {
            oidc.validate(base, web_on)?;
        }
        config.revoked_keys = config.revoked_keys.as_deref().map(resolve);
        if let Some(path) = &config.revoked_keys {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("revoked_keys: cannot read {}: {e}", path.display()))?;
            config.revoked = crate::keys::RevokedKeys::parse(&text)
                .map_err(|e| format!("revoked_keys: {}: {e}", path.display()))?;
        }
        let mut seen = std::collections::HashSet::new();
        for (i, user) in config.users.iter_mut().enumerate() {
            crate::login::validate_person(&user.name)
                .map_err(|e| format!("users[{i}].name: {e}"))?;
            if !seen.insert(user.name.clone()) {
                return Err(format!("users[{i}].name: {:?} is listed twice", user.name));
            }
            if user.kubernetes_user().is_empty() {
                return Err(format!("users[{i}].kubernetes_user: must not be empty"));
            }
            if !config.allow_cluster_admin
                && user.kubernetes_groups.iter().any(|g| g == "system:masters")
            {
                return Err(format!(
                    "users[{i}].kubernetes_groups: \"system:masters\" passes every authorization check and no RBAC can narrow it; bind a group of your own to cluster-admin instead, or set allow_cluster_admin = true"
                ));
            }
            for (j, entry) in user.from.iter().enumerate() {
                if entry.parse::<ipnet::IpNet>().is_err()
                    && entry.parse::<std::net::IpAddr>().is_err()
                {
                    return Err(format!(
                        "users[{i}].from[{j}]: {entry:?} is not an address or CIDR block"
                    ));
                }
            }
            for (j, line) in user.authorized_keys.iter().enumerate() {
                if let Some(key) = crate::keys::parse_authorized_key(line)
                    .map_err(|e| format!("users[{i}].authorized_keys[{j}]: {e}"))?
                {
                    user.keys.push(key);
                }
            }
            user.authorized_keys_files = user
                .authorized_keys_files
                .iter()
                .map(|p| resolve(p))
                .collect();
            for file in &user.authorized_keys_files {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    format!(
                        "users[{i}].authorized_keys_files: cannot read {}: {e}",
                        file.display()
                    )
                })?;
                for (n, line) in text.lines().enumerate() {
                    if let Some(key) = crate::keys::parse_authorized_key(line).map_err(|e| {
                        format!(
                            "users[{i}].authorized_keys_files: {} line {}: {e}",
                            file.display(),
                            n + 1
                        )
                    })? {
                        user.keys.push(key);
                    }
                }
            }
        }
        Ok(config)
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The effective configuration, as `check-config` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

/// `[debug]` in the config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// The debug container's image; it needs `sh` and `sleep` (and
    /// whatever tools people debug with).
    pub image: String,
    /// Seconds to wait for the debug container to run.
    pub start_timeout_secs: u64,
}

impl Default for DebugConfig {
    fn default() -> Self {
        DebugConfig {
            image: "busybox:1.36".into(),
            start_timeout_secs: 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key the config takes is in the example, with a value of its
    /// type: the example with its commented keys uncommented is a config
    /// (unknown keys are refused), and it names every key that config
    /// writes back out.
    #[test]
    fn the_example_config_shows_every_key() {
        let example = include_str!("../../config/kbastion.example.toml");
        let uncommented: String = example
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(key, _)| {
                        !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    }) =>
                {
                    rest
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config: Config = toml::from_str(&uncommented).unwrap_or_else(|e| panic!("{e}"));
        fn keys(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
            match value {
                toml::Value::Table(table) => {
                    for (key, value) in table {
                        let path = format!("{prefix}{key}");
                        out.push(path.clone());
                        keys(&format!("{path}."), value, out);
                    }
                }
                toml::Value::Array(items) => {
                    for item in items.iter().filter(|i| i.is_table()) {
                        keys(prefix, item, out);
                    }
                }
                _ => {}
            }
        }
        let (mut written, mut shown) = (Vec::new(), Vec::new());
        keys("", &toml::Value::try_from(&config).unwrap(), &mut written);
        keys(
            "",
            &toml::from_str::<toml::Value>(&uncommented).unwrap(),
            &mut shown,
        );
        written.sort();
        written.dedup();
        shown.sort();
        shown.dedup();
        let missing: Vec<&String> = written.iter().filter(|k| !shown.contains(k)).collect();
        assert!(
            missing.is_empty(),
            "keys the example does not show: {missing:?}"
        );
        for key in [
            "web.listen",
            "web.certificate",
            "web.key",
            "web.public_url",
            "metrics.listen",
            "audit.file",
            "audit.recordings_dir",
            "node_shell.namespace",
            "kubeconfig",
            "context",
            "revoked_keys",
        ] {
            assert!(shown.contains(&key.to_string()), "{key}");
        }
    }

    #[test]
    fn a_file_that_is_not_toml_is_named_by_position_not_echoed() {
        let token = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2VuLWNvbnRlbnQ.signature";
        let error =
            Config::parse(&format!("# a token file\n{token}\n"), Path::new("/")).unwrap_err();
        assert!(error.starts_with("line 2, column "), "{error}");
        assert!(!error.contains("eyJ") && !error.contains("c2Vj"), "{error}");
    }

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMDfXAD8pTqWlh0C4MoJnLz2UlW3d5CzUtBQ4ilOF8Ba test@example";

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/kbastion"))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(&format!("listen = \"127.0.0.1:2222\"\n[[users]]\nname = \"alice\"\nauthorized_keys = [\"{KEY}\"]\n")).unwrap();
        assert_eq!(
            config.host_keys,
            vec![PathBuf::from("/etc/kbastion/ssh_host_ed25519_key")]
        );
        assert_eq!(config.users[0].keys.len(), 1);
        assert_eq!(config.users[0].kubernetes_user(), "alice");
        assert_eq!(config.timeouts.login_secs, 30);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = parse("listen = \"127.0.0.1:2222\"\nlisten_port = 3").unwrap_err();
        assert!(err.contains("listen_port"), "{err}");
        let err = parse("listen = \"nowhere\"").unwrap_err();
        assert!(err.contains("listen"), "{err}");
        let err = parse("listen = \"127.0.0.1:2222\"\n[timeouts]\nlogin_secs = -1").unwrap_err();
        assert!(err.contains("login_secs"), "{err}");
        let err = parse("listen = \"127.0.0.1:2222\"\n[[users]]\nname = \"alice\"\nauthorized_keys = [\"ssh-ed25519 garbage\"]").unwrap_err();
        assert!(err.contains("users[0].authorized_keys[0]"), "{err}");
        let err = parse("listen = \"127.0.0.1:2222\"\n[[users]]\nname = \"al ice\"").unwrap_err();
        assert!(err.contains("users[0].name"), "{err}");
        let err =
            parse("listen = \"127.0.0.1:2222\"\n[[users]]\nname = \"a\"\n[[users]]\nname = \"a\"")
                .unwrap_err();
        assert!(err.contains("twice"), "{err}");
    }

    #[test]
    fn shipped_examples_are_valid() {
        for (name, text) in [
            (
                "kbastion.example.toml",
                include_str!("../../config/kbastion.example.toml"),
            ),
            ("demo.toml", include_str!("../../config/demo.toml")),
        ] {
            parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn system_masters_is_refused_unless_allowed() {
        let person = format!(
            "[[users]]\nname = \"root\"\nkubernetes_groups = [\"system:masters\"]\nauthorized_keys = [\"{KEY}\"]\n"
        );
        let error = parse(&format!("listen = \"127.0.0.1:2222\"\n{person}")).unwrap_err();
        assert!(
            error.starts_with("users[0].kubernetes_groups: \"system:masters\""),
            "{error}"
        );
        parse(&format!(
            "listen = \"127.0.0.1:2222\"\nallow_cluster_admin = true\n{person}"
        ))
        .unwrap();
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any text: a config or a one-line error, never a panic.
            #[test]
            fn any_text_loads_or_fails_in_one_line(text in "\\PC{0,200}") {
                if let Err(message) = parse(&text) {
                    prop_assert!(!message.is_empty());
                    prop_assert!(!message.contains('\n'), "{message:?}");
                }
            }

            /// A wrong value under any known key is refused naming the key.
            #[test]
            fn bad_values_name_their_key(
                (section, key) in prop_oneof![
                    Just(("timeouts", "login_secs")),
                    Just(("timeouts", "api_secs")),
                    Just(("limits", "max_auth_attempts")),
                    Just(("limits", "max_sessions_per_user")),
                    Just(("node_shell", "linger_secs")),
                    Just(("shutdown", "drain_secs")),
                    Just(("files", "sftp")),
                ],
                value in prop_oneof![Just("-1".to_string()), Just("\"x\"".to_string()), Just("[]".to_string()), "[a-z]{1,8}".prop_map(|v| format!("\"{v}z\""))],
            ) {
                let text = format!("listen = \"127.0.0.1:2222\"\n[{section}]\n{key} = {value}\n");
                let message = parse(&text).expect_err("a wrong value is refused");
                // The key itself, not just its section: a user must know
                // which line to fix.
                prop_assert!(message.contains(key), "{message}");
            }
        }
    }
}
