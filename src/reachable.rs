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
    let mut listed: Vec<Pod> = match bounded(wait, all.list(&ListParams::default())).await {
        Ok(Ok(list)) => list.items,
        // Not allowed cluster-wide: ask namespace by namespace (the
        // bastion may list namespaces; the person's RBAC decides the pods).
        _ => {
            let mut found = Vec::new();
            let namespaces: Api<Namespace> = Api::all(cluster.own());
            if let Ok(Ok(list)) = bounded(wait, namespaces.list(&ListParams::default())).await {
                for namespace in list
                    .items
                    .iter()
                    .filter_map(|n| n.metadata.name.as_deref())
                    .take(MAX_NAMESPACES_LISTED)
                {
                    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
                    if let Ok(Ok(list)) = bounded(wait, pods.list(&ListParams::default())).await {
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
    }
}
