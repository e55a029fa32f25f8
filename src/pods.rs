//! Pods as the person reaches them: where a command runs (`ExecTarget`),
//! the one-line errors of every way reaching it can fail (`TargetError`),
//! API calls bounded in time, and the container kubectl would pick.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

/// Where a command runs: the pod's API (as the user), the pod and container,
/// and the argv prefix that enters the target (empty for containers; the
/// nsenter command for node shells).
pub struct ExecTarget {
    pub pods: Api<Pod>,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub prefix: Vec<String>,
    /// Where file transfers' paths lead when not to the container's own
    /// root: a debug container's target's root file system.
    pub files_root: Option<String>,
    /// A line for the person at the start of a shell (a debug container
    /// says where the target's files are).
    pub note: Option<String>,
    /// Host names that mean "the target itself" for port forwarding:
    /// loopback, the pod's name and IP (or the node's name).
    pub local_names: Vec<String>,
}

fn loopback_names() -> Vec<String> {
    ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec()
}

/// Loopback and the given names, for `ExecTarget::local_names`.
pub fn local_names(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut all = loopback_names();
    all.extend(names);
    all
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(
        "pod {namespace}/{pod} not found; check the name with: kubectl get pods -n {namespace}"
    )]
    PodNotFound { namespace: String, pod: String },
    #[error("container {container} not found in pod {namespace}/{pod}; it has: {available}")]
    ContainerNotFound {
        namespace: String,
        pod: String,
        container: String,
        available: String,
    },
    #[error(
        "pod {namespace}/{pod} is not running (phase {phase}{reason}); wait for it to start or pick another pod"
    )]
    PodNotRunning {
        namespace: String,
        pod: String,
        phase: String,
        reason: String,
    },
    #[error(
        "container {container} in pod {namespace}/{pod} is not running ({reason}); wait for it to start"
    )]
    ContainerNotRunning {
        namespace: String,
        pod: String,
        container: String,
        reason: String,
    },
    #[error("access denied by Kubernetes RBAC: {0}")]
    Forbidden(String),
    #[error("the Kubernetes API server did not answer within {0:?}; try again later")]
    Timeout(Duration),
    #[error("the Kubernetes API server is unreachable ({0}); try again later")]
    Unreachable(String),
    #[error("the Kubernetes API refused the request: {0}")]
    Api(String),
    #[error("node {0} not found; check the name with: kubectl get nodes")]
    NodeNotFound(String),
    #[error(
        "node {node} is NotReady ({reason}); its kubelet cannot start a shell, pick another node"
    )]
    NodeNotReady { node: String, reason: String },
    #[error("cannot start a shell on node {node}: {reason}")]
    NodeShellStart { node: String, reason: String },
    #[error(
        "namespace {0} belongs to the bastion and its node shells and is not a target; for a node shell use: ssh PERSON@NODE@bastion"
    )]
    BastionNamespace(String),
    #[error("debug container {container} in pod {namespace}/{pod}: {reason}")]
    DebugContainer {
        namespace: String,
        pod: String,
        container: String,
        reason: String,
    },
    #[error(
        "{0}.logs is a container's log and carries no connections; forward ports through the pod itself (drop the .logs)"
    )]
    LogsForward(String),
    #[error(
        "pod {pod} is not node {node}'s node-shell pod (it is pinned to {pinned_to}); refusing it, an administrator should delete it"
    )]
    ForeignNodePod {
        node: String,
        pod: String,
        pinned_to: String,
    },
    #[error(
        "pod {pod} looks like node {node}'s node-shell pod but is not what kbastion makes ({why}); refusing it, an administrator should delete it"
    )]
    LookAlikeNodePod {
        node: String,
        pod: String,
        why: String,
    },
}

impl TargetError {
    /// The cluster failed us (as opposed to the user asking for something
    /// missing or forbidden): what the `api_errors` metric counts.
    pub fn is_cluster_failure(&self) -> bool {
        matches!(
            self,
            TargetError::Timeout(_) | TargetError::Unreachable(_) | TargetError::Api(_)
        )
    }
}

/// A failed call the bastion made with its own identity on its own objects
/// (node-shell pods): the API's own first line, after what kbastion was
/// doing. A 404 or 403 here is not the user's (a missing namespace, a
/// missing grant of the bastion's service account), so it is never
/// reported as the user's target missing or the user's RBAC.
pub fn own_call_failed(error: kube::Error, doing: &str) -> TargetError {
    match error {
        kube::Error::Api(status) => {
            TargetError::Api(format!("{doing}: {}", first_line(&status.message)))
        }
        other => api_error(other, || TargetError::Api(doing.to_string())),
    }
}

/// The first line of a message (the API's messages can run on).
pub fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().to_string()
}

/// Turns a failed API call into the user's one line.
pub fn api_error(error: kube::Error, not_found: impl FnOnce() -> TargetError) -> TargetError {
    match error {
        kube::Error::Api(status) if status.code == 404 => not_found(),
        kube::Error::Api(status) if status.code == 403 => {
            TargetError::Forbidden(first_line(&status.message))
        }
        kube::Error::Api(status) => TargetError::Api(first_line(&status.message)),
        other => TargetError::Unreachable(first_line(&other.to_string())),
    }
}

/// Bounds an API call by the configured wait.
pub async fn bounded<T>(
    wait: Duration,
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<Result<T, kube::Error>, TargetError> {
    tokio::time::timeout(wait, call)
        .await
        .map_err(|_| TargetError::Timeout(wait))
}

/// The container kubectl would pick: the named one, else the
/// `kubectl.kubernetes.io/default-container` annotation, else the first.
/// The API server ignores the annotation, so the client must apply it.
pub fn pick_container(pod: &Pod, wanted: Option<&str>) -> Result<String, Vec<String>> {
    let names: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubectl.kubernetes.io/default-container"))
        .filter(|name| names.contains(name));
    match wanted {
        Some(name) if names.iter().any(|n| n == name) => Ok(name.to_string()),
        Some(_) => Err(names),
        None => annotated.or(names.first()).cloned().ok_or(names),
    }
}

/// Resolves a container target: the pod exists, is Running, and has the
/// container running, all as the user (so RBAC on `pods` applies too).
pub async fn resolve_container(
    client: kube::Client,
    namespace: &str,
    pod_name: &str,
    container: Option<&str>,
    wait: Duration,
) -> Result<ExecTarget, TargetError> {
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let pod = bounded(wait, pods.get(pod_name)).await?.map_err(|e| {
        api_error(e, || TargetError::PodNotFound {
            namespace: namespace.into(),
            pod: pod_name.into(),
        })
    })?;
    let container =
        pick_container(&pod, container).map_err(|available| TargetError::ContainerNotFound {
            namespace: namespace.into(),
            pod: pod_name.into(),
            container: container.unwrap_or_default().into(),
            available: available.join(", "),
        })?;
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.clone().unwrap_or_else(|| "Unknown".into());
    let waiting = status
        .container_statuses
        .iter()
        .flatten()
        .find(|s| s.name == container)
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.clone());
    if phase != "Running" {
        let reason = waiting
            .or(status.reason.clone())
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        return Err(TargetError::PodNotRunning {
            namespace: namespace.into(),
            pod: pod_name.into(),
            phase,
            reason,
        });
    }
    let running =
        status.container_statuses.iter().flatten().any(|s| {
            s.name == container && s.state.as_ref().is_some_and(|st| st.running.is_some())
        });
    if !running {
        return Err(TargetError::ContainerNotRunning {
            namespace: namespace.into(),
            pod: pod_name.into(),
            container,
            reason: waiting.unwrap_or_else(|| "not started".into()),
        });
    }
    Ok(ExecTarget {
        pods,
        namespace: namespace.into(),
        pod: pod_name.into(),
        container,
        prefix: Vec::new(),
        files_root: None,
        note: None,
        local_names: local_names(
            std::iter::once(pod_name.to_string()).chain(status.pod_ip.clone()),
        ),
    })
}
