//! What a person may reach, as far as their RBAC lets them see: the pods
//! they may list (cluster-wide, else namespace by namespace) and the
//! nodes. The answer to `ssh PERSON@bastion` without a target and the web
//! terminal's target page; a hint, not an inventory, so it is bounded.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams};

use crate::cluster::{Cluster, Identity};
use crate::pods::bounded;

/// Bounds on the answer.
const MAX_NAMESPACES_LISTED: usize = 50;
const MAX_TARGETS_LISTED: usize = 100;

/// Targets as login names spell them (`NAMESPACE/POD`, `NODE`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reachable {
    pub pods: Vec<String>,
    pub nodes: Vec<String>,
    /// Each listed pod's containers that have started at least once (and
    /// so have a log), by `NAMESPACE/POD`.
    pub containers: BTreeMap<String, Vec<String>>,
    /// Pods the person may see that are not listed (the list is capped):
    /// the API server's count, or at least 1 when it gave none.
    pub more_pods: u64,
}

/// How many items a list left out: the API server's `remainingItemCount`,
/// else 1 when it gave a `continue` token, else none.
fn left_out(metadata: &kube::core::ListMeta) -> u64 {
    match (metadata.remaining_item_count, &metadata.continue_) {
        (Some(count), _) => u64::try_from(count).unwrap_or(0),
        (None, Some(token)) if !token.is_empty() => 1,
        _ => 0,
    }
}

/// The containers of `pod` that have run (running now, or ended).
fn started_containers(pod: &Pod) -> Vec<String> {
    let statuses = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten());
    statuses
        .filter(|s| {
            let ran = |state: Option<&k8s_openapi::api::core::v1::ContainerState>| {
                state.is_some_and(|st| st.running.is_some() || st.terminated.is_some())
            };
            ran(s.state.as_ref()) || ran(s.last_state.as_ref())
        })
        .map(|s| s.name.clone())
        .collect()
}

/// The pods and nodes `identity` may list, each call bounded by `wait`.
pub async fn reachable(cluster: &Cluster, identity: &Identity, wait: Duration) -> Reachable {
    let Ok(client) = cluster.as_user(identity) else {
        return Reachable::default();
    };
    let name_of = |p: &Pod| {
        format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or(""),
            p.metadata.name.as_deref().unwrap_or("")
        )
    };
    let all: Api<Pod> = Api::all(client.clone());
    // One page of at most the cap: a hint, not an inventory, on clusters
    // of any size.
    let page = |room: usize| ListParams::default().limit(u32::try_from(room).unwrap_or(u32::MAX));
    let mut more_pods = 0;
    let mut listed: Vec<Pod> = match bounded(wait, all.list(&page(MAX_TARGETS_LISTED))).await {
        Ok(Ok(list)) => {
            more_pods = left_out(&list.metadata);
            list.items
        }
        // Not allowed cluster-wide: ask namespace by namespace (the
        // bastion may list namespaces; the person's RBAC decides the pods).
        _ => {
            let mut found = Vec::new();
            let namespaces: Api<Namespace> = Api::all(cluster.own());
            if let Ok(Ok(list)) = bounded(wait, namespaces.list(&page(MAX_NAMESPACES_LISTED))).await
            {
                for namespace in list.items.iter().filter_map(|n| n.metadata.name.as_deref()) {
                    let room = MAX_TARGETS_LISTED.saturating_sub(found.len());
                    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
                    if room == 0 {
                        // Full: whether this namespace has any is still news.
                        if let Ok(Ok(list)) = bounded(wait, pods.list(&page(1))).await {
                            more_pods += list.items.len() as u64 + left_out(&list.metadata);
                        }
                        continue;
                    }
                    if let Ok(Ok(list)) = bounded(wait, pods.list(&page(room))).await {
                        more_pods += left_out(&list.metadata);
                        found.extend(list.items);
                    }
                }
            }
            found
        }
    };
    listed.truncate(MAX_TARGETS_LISTED);
    let pods = listed.iter().map(name_of).collect();
    let containers = listed
        .iter()
        .map(|p| (name_of(p), started_containers(p)))
        .collect();
    let nodes: Api<Node> = Api::all(client);
    let nodes = match bounded(wait, nodes.list(&ListParams::default())).await {
        Ok(Ok(list)) => list
            .items
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .take(MAX_TARGETS_LISTED)
            .collect(),
        _ => Vec::new(),
    };
    Reachable {
        pods,
        nodes,
        containers,
        more_pods,
    }
}
