//! Scenario files: the cluster the simulator pretends to be.
//!
//! A scenario is TOML. It names the Kubernetes version to emulate, the nodes,
//! namespaces and pods (in a compact form), the bearer tokens and who they
//! stand for, timing knobs, and any further objects in their real Kubernetes
//! shape (`[[objects]]`, e.g. RBAC `ClusterRole`s and `RoleBinding`s).
//! This module only parses and checks; turning a scenario into stored
//! objects is `sim::cluster`'s job.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("scenario {path} is not valid: {message}")]
    Parse { path: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Kubernetes minor version emulated, as "1.33".
    #[serde(default = "default_version")]
    pub version: String,
    /// How long a scheduled pod on a Ready node stays Pending before it runs.
    #[serde(default = "default_start_delay")]
    pub pod_start_delay_ms: u64,
    /// Images that cannot be pulled: pods using them end in ImagePullBackOff.
    #[serde(default)]
    pub missing_images: Vec<String>,
    /// What the simulator knows of particular images (their programs, their
    /// entrypoint); an image not listed has every program of this machine.
    #[serde(default)]
    pub images: Vec<ImageSpec>,
    /// How long the kubelet waits before restarting a container whose main
    /// process ended (its crash-loop back-off starts at 10 s).
    #[serde(default = "default_restart_backoff")]
    pub restart_backoff_ms: u64,
    #[serde(default)]
    pub users: Vec<UserSpec>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub pods: Vec<PodSpec>,
    /// Further objects in their Kubernetes shape (apiVersion, kind, metadata, ...).
    #[serde(default)]
    pub objects: Vec<toml::Value>,
    #[serde(default)]
    pub faults: Faults,
}

/// A bearer token and the identity it authenticates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub name: String,
    pub token: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    #[serde(default = "yes")]
    pub ready: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Taints as "key=value:Effect" or "key:Effect".
    #[serde(default)]
    pub taints: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    /// Node to bind to; empty lets the simulated scheduler pick a Ready node.
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub containers: Vec<ContainerSpec>,
    /// Pin a final phase ("Succeeded" or "Failed") instead of running.
    #[serde(default)]
    pub phase: Option<String>,
    /// Runs with `hostPID`, `hostNetwork` and a privileged first container.
    #[serde(default)]
    pub privileged: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub name: String,
    #[serde(default = "default_image")]
    pub image: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<u16>,
    /// The container's main process (`command` in the pod spec). Without
    /// it (and without an entrypoint for the image) the container runs no
    /// process and its log stays empty.
    #[serde(default)]
    pub command: Vec<String>,
}

/// An image as far as the simulator needs to know it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// The image reference as pods name it (`gcr.io/distroless/static:nonroot`).
    pub name: String,
    /// The only programs in the image (absolute paths), for distroless and
    /// scratch images: an exec of anything else fails as containerd fails
    /// it. Absent: every program of this machine is there.
    #[serde(default)]
    pub executables: Option<Vec<String>>,
    /// The image's ENTRYPOINT/CMD, run when a container names no command.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// Files in the image besides its programs (path: content), for an
    /// image with `executables` (its own root file system).
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// Faults injected from the start; the admin endpoint can change them later.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Extra latency before every API answer.
    #[serde(default)]
    pub latency_ms: u64,
    /// Answer every API request (except /healthz) with this status (500 or 503).
    #[serde(default)]
    pub fail_status: Option<u16>,
}

impl Faults {
    /// Checks what cannot be injected: a "failure" that is not an HTTP
    /// error status.
    pub fn check(&self) -> Result<(), String> {
        match self.fail_status {
            Some(code) if !(400..=599).contains(&code) => Err(format!(
                "faults.fail_status: {code} is not an HTTP error status (400-599)"
            )),
            _ => Ok(()),
        }
    }
}

fn default_version() -> String {
    "1.33".into()
}
fn default_start_delay() -> u64 {
    300
}
fn default_restart_backoff() -> u64 {
    10_000
}
fn default_image() -> String {
    "busybox:1.36".into()
}
fn yes() -> bool {
    true
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ScenarioError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        scenario.minor()?;
        scenario.faults.check()?;
        Ok(scenario)
    }

    /// What the scenario says of `image`: its programs and entrypoint.
    /// Busybox images (not listed) have busybox's CMD, `sh`.
    pub fn image(&self, image: &str) -> ImageSpec {
        if let Some(known) = self.images.iter().find(|i| i.name == image) {
            return known.clone();
        }
        let repository = image.split([':', '@']).next().unwrap_or(image);
        let entrypoint = if repository.rsplit('/').next() == Some("busybox") {
            vec!["sh".to_string()]
        } else {
            Vec::new()
        };
        ImageSpec {
            name: image.to_string(),
            executables: None,
            entrypoint,
            files: BTreeMap::new(),
        }
    }

    /// The emulated minor version (33 for "1.33").
    pub fn minor(&self) -> Result<u32, String> {
        self.version
            .strip_prefix("1.")
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| format!("version: {:?} is not of the form 1.N", self.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_and_rejects_unknown_keys() {
        let s = Scenario::parse("version = \"1.35\"").unwrap();
        assert_eq!(s.minor().unwrap(), 35);
        let err = Scenario::parse("versoin = \"1.35\"").unwrap_err();
        assert!(err.contains("versoin"), "{err}");
        assert!(Scenario::parse("version = \"2\"").is_err());
        assert!(Scenario::parse("[faults]\nfail_status = 503").is_ok());
        assert!(Scenario::parse("[faults]\nfail_status = 200").is_err());
    }

    #[test]
    fn demo_scenario_parses() {
        let text = include_str!("../../config/demo-cluster.toml");
        let s = Scenario::parse(text).unwrap();
        assert!(s.nodes.iter().any(|n| n.name == "edge-1" && !n.ready));
    }
}
