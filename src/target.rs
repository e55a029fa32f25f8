//! Resolving a login target to what a session reaches: a pod and
//! container the person may reach, checked the way kubectl checks them; a
//! debug container beside one (`.debug`); a container's log (`.logs`); or
//! a node through its held node-shell pod, with one clear line for every
//! way it can fail; and, for a login without a target, what the person
//! may reach. The one router of target kinds, for every door
//! (`session::gate`).

use crate::authz::Permission;
use crate::bastion::Shared;
use crate::cluster::Identity;
use crate::login::{self, Target};
use crate::node_shell::NodeHold;
use crate::pods::{ExecTarget, TargetError, resolve_container};

/// What a session reaches.
pub enum Reached {
    /// A container or a node, through execs.
    Exec(ExecTarget),
    /// A container's log (`CONTAINER.logs`), through `pods/log`.
    Log(crate::log_files::LogSource),
}

/// Resolves a target for a person: a container (or its log, or a debug
/// container beside it) as them (their RBAC), or a node through its held
/// node-shell pod.
pub async fn resolve(
    shared: &Shared,
    identity: &Identity,
    target: &Target,
    subresource: &str,
) -> Result<(Reached, Option<NodeHold>), TargetError> {
    let resolved = resolve_uncounted(shared, identity, target, subresource).await;
    if let Err(error) = &resolved
        && error.is_cluster_failure()
    {
        shared.metrics.api_errors.inc();
    }
    resolved
}

async fn resolve_uncounted(
    shared: &Shared,
    identity: &Identity,
    target: &Target,
    subresource: &str,
) -> Result<(Reached, Option<NodeHold>), TargetError> {
    let wait = shared.config.timeouts.api();
    // Its pods are the bastion's replicas (their token can impersonate
    // anyone) and node shells (root on a node): an exec there would skip
    // the node check (`nodes/proxy`), so no one's RBAC may open that path,
    // nor read its logs, nor add a debug container there.
    if let Target::Container { namespace, .. } = target
        && shared.protected_namespaces().contains(&namespace.as_str())
    {
        return Err(TargetError::BastionNamespace(namespace.clone()));
    }
    match target {
        // A session in a debug container beside the target (forwards reach
        // the pod itself, below: they need no debug container).
        Target::Container {
            view: login::View::Debug,
            namespace,
            pod,
            container,
        } if subresource == "exec" => {
            crate::debug::resolve(shared, identity, namespace, pod, container.as_deref())
                .await
                .map(|debug| (Reached::Exec(debug), None))
        }
        Target::Container {
            view: login::View::Logs,
            namespace,
            pod,
            container,
        } if subresource == "exec" => {
            crate::logs::authorize(shared, identity, namespace, pod, container.as_deref())
                .await
                .map(|source| (Reached::Log(source), None))
        }
        Target::Container {
            view: login::View::Logs,
            namespace,
            pod,
            container,
        } => Err(TargetError::LogsForward(format!(
            "{namespace}/{pod}/{}",
            container.as_deref().unwrap_or_default()
        ))),
        Target::Container {
            namespace,
            pod,
            container,
            ..
        } => {
            let client = shared
                .cluster
                .as_user(identity)
                .map_err(|e| TargetError::Api(e.to_string()))?;
            let resolved =
                resolve_container(client, namespace, pod, container.as_deref(), wait).await?;
            // A clear line now, rather than a failed upgrade later.
            let permission = Permission {
                verb: shared.stream_verb,
                resource: "pods",
                subresource,
                namespace: Some(namespace),
                name: Some(pod),
            };
            crate::authz::require(&shared.cluster.own(), identity, &permission, wait).await?;
            Ok((Reached::Exec(resolved), None))
        }
        Target::Node { node } => {
            let acting = shared
                .cluster
                .as_user(identity)
                .map_err(|e| TargetError::Api(e.to_string()))?;
            let (resolved, hold) = shared.node_shells.acquire(identity, node, acting).await?;
            Ok((Reached::Exec(resolved), Some(hold)))
        }
    }
}

/// The answer to a login without a target: the syntax and what the person
/// may reach (pods they can list; nodes too if they can list them).
pub async fn reachable_targets(shared: &Shared, identity: &Identity) -> String {
    let mut message = format!("no target given; {}", login::SYNTAX);
    let reachable =
        crate::reachable::reachable(&shared.cluster, identity, shared.config.timeouts.api()).await;
    if !reachable.pods.is_empty() {
        message.push_str(&format!(
            "\npods you may see: {}",
            reachable.pods.join(", ")
        ));
        if reachable.more_pods > 0 {
            message.push_str(&format!(
                " (and {} more not shown: name one in the login, or list them with kubectl)",
                reachable.more_pods
            ));
        }
    }
    if !reachable.nodes.is_empty() {
        message.push_str(&format!("\nnodes: {}", reachable.nodes.join(", ")));
    }
    message
}
