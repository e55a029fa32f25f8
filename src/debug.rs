//! `USER@NAMESPACE/POD/CONTAINER.debug`: a session in an ephemeral debug
//! container beside a container that has no shell (distroless, scratch),
//! the way `kubectl debug -it POD --image=busybox --target=CONTAINER` adds
//! one.
//!
//! As the person (impersonated; their `patch` on `pods/ephemeralcontainers`
//! decides, asked first with a SubjectAccessReview so a refusal comes
//! before anything is added) kbastion adds an ephemeral container that
//! targets the container (sharing its process namespace, so the target's
//! files are under `/proc/1/root`: the target's main process is PID 1
//! there, unless the pod shares one process namespace, see `target_root`), runs a long-lived `sleep` and has the capability the `general`
//! profile of `kubectl debug` gives (`SYS_PTRACE`). Ephemeral containers
//! cannot be removed, so its name is derived from the target container and
//! the image, and a running one is reused: a pod gets one per target and
//! image, not one per session, and two sessions that add it at once send
//! the same patch (a strategic merge by name), which the second finds
//! already applied. The session then runs in it like any container's.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams};

use serde_json::json;

use crate::authz::Permission;
use crate::bastion::Shared;
use crate::cluster::Identity;
use crate::pods::{ExecTarget, TargetError, api_error, bounded, local_names, resolve_container};

/// Where the target's root file system is seen from the debug container:
/// the root of PID 1 of the target's process namespace, which is the
/// target's main process.
pub const TARGET_ROOT: &str = "/proc/1/root";

/// Debug containers of one target and image that may end (their `sleep`
/// killed) before kbastion stops adding new ones to the pod.
const MAX_GENERATIONS: u32 = 5;

/// How often the pod is read while the debug container starts.
const POLL: Duration = Duration::from_millis(250);

/// The debug container's name for a target container, image and
/// generation (the first is 0): `kbastion-debug-CONTAINER-HASH`, a
/// DNS-1123 label (63 characters at most), the hash telling images and
/// generations apart.
pub fn container_name(target: &str, image: &str, generation: u32) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{target}\0{image}\0{generation}").as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    // "kbastion-debug-" (15) + name + "-" + 8 hex <= 63.
    let name: String = target.chars().take(63 - 15 - 1 - 8).collect();
    let name = name.trim_end_matches('-');
    format!("kbastion-debug-{name}-{hash}")
}

/// Where the target's files are seen from a debug container, when kbastion
/// can tell: with the pod's processes apart (the default), the debug
/// container shares the target's PID namespace, whose PID 1 is the
/// target's main process. In a pod that shares one process namespace
/// (`shareProcessNamespace`), PID 1 is the pod's pause process and the
/// target's processes are among the others: None.
pub fn target_root(pod: &Pod) -> Option<&'static str> {
    let shared = pod
        .spec
        .as_ref()
        .and_then(|s| s.share_process_namespace)
        .unwrap_or(false);
    (!shared).then_some(TARGET_ROOT)
}

/// What the person's session runs in: the debug container of `container`
/// (or of the pod's default container), running.
pub async fn resolve(
    shared: &Shared,
    identity: &Identity,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
) -> Result<ExecTarget, TargetError> {
    let wait = shared.config.timeouts.api();
    let config = &shared.config.debug;
    let client = shared
        .cluster
        .as_user(identity)
        .map_err(|e| TargetError::Api(e.to_string()))?;
    // The pod and its target container must be running (kubectl's checks).
    let target = resolve_container(client.clone(), namespace, pod, container, wait).await?;
    let own = shared.cluster.own();
    for (verb, subresource) in [
        ("patch", "ephemeralcontainers"),
        (shared.stream_verb, "exec"),
    ] {
        let permission = Permission {
            verb,
            resource: "pods",
            subresource,
            namespace: Some(namespace),
            name: Some(pod),
        };
        crate::authz::require(&own, identity, &permission, wait).await?;
    }
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let current = get_pod(&pods, namespace, pod, wait).await?;
    // The first generation whose container has not ended: an ended one
    // cannot be restarted, so the next generation takes its place.
    let ended = |name: &str| {
        current
            .status
            .as_ref()
            .and_then(|s| s.ephemeral_container_statuses.as_ref())
            .into_iter()
            .flatten()
            .any(|s| s.name == name && s.state.as_ref().is_some_and(|st| st.terminated.is_some()))
    };
    let Some(name) = (0..MAX_GENERATIONS)
        .map(|generation| container_name(&target.container, &config.image, generation))
        .find(|name| !ended(name))
    else {
        return Err(TargetError::DebugContainer {
            namespace: namespace.into(),
            pod: pod.into(),
            container: container_name(&target.container, &config.image, MAX_GENERATIONS - 1),
            reason: format!(
                "{MAX_GENERATIONS} debug containers for {} have ended in this pod; ask an administrator to recreate the pod",
                target.container
            ),
        });
    };
    let exists = current
        .spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_ref())
        .is_some_and(|list| list.iter().any(|c| c.name == name));
    if !exists {
        let patch = json!({"spec": {"ephemeralContainers": [{
            "name": name,
            "image": config.image,
            "targetContainerName": target.container,
            "command": ["sleep", "2147483647"],
            "terminationMessagePolicy": "File",
            "securityContext": {"capabilities": {"add": ["SYS_PTRACE"]}},
        }]}});
        let params = PatchParams::default();
        bounded(
            wait,
            pods.patch_ephemeral_containers(pod, &params, &Patch::Strategic(patch)),
        )
        .await?
        .map_err(|e| {
            api_error(e, || TargetError::PodNotFound {
                namespace: namespace.into(),
                pod: pod.into(),
            })
        })?;
    }
    wait_running(
        &pods,
        namespace,
        pod,
        &name,
        config.start_timeout_secs,
        wait,
    )
    .await?;
    let root = target_root(&current);
    let debug = ExecTarget {
        pods,
        namespace: namespace.into(),
        pod: pod.into(),
        container: name.clone(),
        prefix: match root {
            Some(root) => vec!["env".into(), format!("TARGET_ROOT={root}")],
            None => Vec::new(),
        },
        // SFTP and scp act on the target's files, not the debug image's.
        files_root: root.map(String::from),
        note: Some(note(&name, &target.container, root)),
        local_names: local_names(target.local_names.iter().skip(3).cloned()),
    };
    Ok(debug)
}

/// What a debug container's shell says first: where the target's files
/// are.
fn note(debug: &str, beside: &str, root: Option<&str>) -> String {
    match root {
        Some(root) => format!(
            "debug container {debug} beside {beside}; its files are under $TARGET_ROOT ({root})"
        ),
        None => format!(
            "debug container {debug} beside {beside}; this pod shares one process namespace: find {beside}'s processes with ps, its files are under /proc/PID/root (scp and sftp reach the debug container's own files)"
        ),
    }
}

async fn get_pod(
    pods: &Api<Pod>,
    namespace: &str,
    pod: &str,
    wait: Duration,
) -> Result<Pod, TargetError> {
    bounded(wait, pods.get(pod)).await?.map_err(|e| {
        api_error(e, || TargetError::PodNotFound {
            namespace: namespace.into(),
            pod: pod.into(),
        })
    })
}

/// Waits until the debug container runs; a pull failure, an ended
/// container or the time limit is one line.
async fn wait_running(
    pods: &Api<Pod>,
    namespace: &str,
    pod: &str,
    name: &str,
    timeout_secs: u64,
    wait: Duration,
) -> Result<(), TargetError> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let failed = |reason: String| TargetError::DebugContainer {
        namespace: namespace.into(),
        pod: pod.into(),
        container: name.into(),
        reason,
    };
    let mut last = String::from("not started yet");
    loop {
        let current = get_pod(pods, namespace, pod, wait).await?;
        let status: Option<ContainerStatus> = current
            .status
            .and_then(|s| s.ephemeral_container_statuses)
            .into_iter()
            .flatten()
            .find(|s| s.name == name);
        if let Some(state) = status.and_then(|s| s.state) {
            if state.running.is_some() {
                return Ok(());
            }
            if let Some(terminated) = state.terminated {
                return Err(failed(format!(
                    "it has ended (exit code {}{}) and ephemeral containers cannot be restarted; try again for a new one",
                    terminated.exit_code,
                    terminated
                        .reason
                        .map(|r| format!(", {r}"))
                        .unwrap_or_default()
                )));
            }
            if let Some(waiting) = state.waiting {
                let reason = waiting.reason.unwrap_or_default();
                let message = waiting.message.unwrap_or_default();
                last = if message.is_empty() {
                    reason.clone()
                } else {
                    format!("{reason}: {message}")
                };
                if matches!(
                    reason.as_str(),
                    "ErrImagePull"
                        | "ImagePullBackOff"
                        | "InvalidImageName"
                        | "CreateContainerError"
                ) {
                    return Err(failed(last));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(failed(format!(
                "it did not start within {timeout_secs} s ({last})"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_root_is_pid_1s_unless_the_pod_shares_its_process_namespace() {
        let mut pod = Pod::default();
        assert_eq!(target_root(&pod), Some("/proc/1/root"));
        pod.spec = Some(Default::default());
        assert_eq!(target_root(&pod), Some("/proc/1/root"));
        pod.spec.as_mut().unwrap().share_process_namespace = Some(true);
        assert_eq!(target_root(&pod), None);
    }

    #[test]
    fn names_are_labels_derived_from_target_and_image() {
        let a = container_name("app", "busybox:1.36", 0);
        assert!(a.starts_with("kbastion-debug-app-"), "{a}");
        assert_eq!(a, container_name("app", "busybox:1.36", 0));
        assert_ne!(a, container_name("app", "busybox:1.37", 0));
        assert_ne!(a, container_name("web", "busybox:1.36", 0));
        assert_ne!(a, container_name("app", "busybox:1.36", 1));
        let long = container_name(&"a".repeat(63), "busybox:1.36", 0);
        assert!(long.len() <= 63, "{long}");
        crate::login::validate_kubernetes_name(&long, 63).unwrap();
        let dashed = container_name(&format!("{}-b", "a".repeat(38)), "x", 0);
        crate::login::validate_kubernetes_name(&dashed, 63).unwrap();
    }
}
