//! Node shells: one privileged pod per node, shared by every session to
//! that node, created on first use and deleted after the last session ends
//! plus a linger, and never leaked.
//!
//! Who holds a node's pod lives in Kubernetes, not in one replica's memory:
//! the pod's `kbastion.io/holders` annotation maps each holding replica to
//! the unix time its hold expires. Holds are renewed while sessions run and
//! written with resourceVersion preconditions, so replicas never overwrite
//! each other. A sweeper in every replica deletes node-shell pods that
//! nobody holds (a replica killed with SIGKILL stops renewing); in a
//! cluster, pods are also owned by the replica's own Pod object.
//!
//! Sessions reach the node with an exec into the pod that runs the
//! configured nsenter prefix, through the same bridge as container sessions.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};

use crate::authz::Permission;
use crate::cluster::Identity;
use crate::pods::{ExecTarget, TargetError, bounded, own_call_failed};

pub const HOLDERS_ANNOTATION: &str = "kbastion.io/holders";
pub const NODE_ANNOTATION: &str = "kbastion.io/node";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kbastion");
const COMPONENT: (&str, &str) = ("app.kubernetes.io/component", "node-shell");
const CONTAINER: &str = "shell";
/// The node-shell container's command: it only waits for execs.
const SLEEP: [&str; 2] = ["sleep", "2147483647"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeShellConfig {
    /// The namespace node-shell pods live in: one of their own, which alone
    /// admits the `privileged` Pod Security level and which no login may
    /// name as a container target. Default: `<namespace>-node-shells`.
    pub namespace: Option<String>,
    /// Image of the node-shell pod; it needs only `nsenter` and `sleep`.
    pub image: String,
    /// The command prefix that enters the node from the pod.
    pub nsenter: Vec<String>,
    /// Seconds the pod stays after the last session, so a reconnect is instant.
    pub linger_secs: u64,
    /// Seconds to wait for the pod to run before giving up.
    pub start_timeout_secs: u64,
    /// Seconds a replica's hold lasts without renewal (renewed every third).
    pub hold_secs: u64,
    /// priorityClassName for node-shell pods (none when empty).
    pub priority_class: String,
    /// Kubernetes groups whose people may run node shells: `kbastion rbac`
    /// binds the node-shell Role (create, get and update on pods and
    /// create on pods/exec in the node-shell namespace) to them, since
    /// node-shell pods are created and exec'd into as the person. Each
    /// person still needs create on nodes/proxy for the node.
    pub groups: Vec<String>,
}

impl Default for NodeShellConfig {
    fn default() -> Self {
        NodeShellConfig {
            namespace: None,
            image: "busybox:1.36".into(),
            nsenter: [
                "nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--",
            ]
            .map(String::from)
            .to_vec(),
            linger_secs: 60,
            start_timeout_secs: 60,
            hold_secs: 45,
            priority_class: String::new(),
            groups: Vec::new(),
        }
    }
}

/// This replica's identity and, in a cluster, its own Pod (for
/// ownerReferences, from the downward API: POD_NAME, POD_UID).
#[derive(Debug, Clone)]
pub struct Replica {
    pub id: String,
    pub owner: Option<OwnerReference>,
}

impl NodeShellConfig {
    /// The node-shell namespace for a bastion in `namespace`.
    pub fn namespace_for(&self, namespace: &str) -> String {
        self.namespace
            .clone()
            .unwrap_or_else(|| format!("{namespace}-node-shells"))
    }
}

impl Replica {
    pub fn from_environment() -> Self {
        let pod = std::env::var("POD_NAME").ok().filter(|s| !s.is_empty());
        let uid = std::env::var("POD_UID").ok().filter(|s| !s.is_empty());
        let id = pod.clone().unwrap_or_else(|| {
            let host = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "local".into());
            format!(
                "{host}-{}-{:06x}",
                std::process::id(),
                rand::random::<u32>() & 0xff_ffff
            )
        });
        let owner = pod.zip(uid).map(|(name, uid)| OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name,
            uid,
            ..Default::default()
        });
        Replica { id, owner }
    }
}

/// The label naming the node a node-shell pod serves.
pub const NODE_LABEL: &str = "kbastion.io/node";

/// The pod name for a node: `kbastion-node-NODE` where the node's name is
/// already a valid pod-name label (no dots) and fits; otherwise a readable
/// prefix and 80 bits of the SHA-256 of the full node name. Distinct
/// nodes get distinct names (`node.1` and `node-1` no longer meet), and a
/// name alone is never trusted: `serves_node` checks the pod itself.
pub fn pod_name(node: &str) -> String {
    const PREFIX: &str = "kbastion-node-";
    if !node.contains('.') && PREFIX.len() + node.len() <= 63 {
        return format!("{PREFIX}{node}");
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(node.as_bytes());
    let hash: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    // Node names are validated DNS subdomains (ASCII): dots become dashes.
    let safe = node.replace('.', "-");
    let readable = safe[..safe.len().min(28)].trim_end_matches('-');
    format!("{PREFIX}{readable}-{hash}")
}

/// Whether `pod` is `node`'s node-shell pod: kbastion's labels, pinned to
/// the node by `spec.nodeName`, and naming the node in its annotation and
/// (where the name fits a label value) its label. A pod that merely has
/// the right name (made by someone else, or for another node) is not.
pub fn serves_node(pod: &Pod, node: &str) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    let annotation = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NODE_ANNOTATION))
        .map(String::as_str);
    let pinned = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    label(MANAGED_BY.0) == Some(MANAGED_BY.1)
        && label(COMPONENT.0) == Some(COMPONENT.1)
        && pinned == Some(node)
        && annotation == Some(node)
        && (node.len() > 63 || label(NODE_LABEL) == Some(node))
}

/// What differs between `pod` and the node-shell pod kbastion makes with
/// `config`, in the fields a node-shell pod's power lies in: its one
/// container's name, image, command and privilege, no init or ephemeral
/// containers, no volumes, no service-account token, and the host's PID,
/// network and IPC namespaces. Fields the API server or the usual
/// webhooks default (pull policy, resources, tolerations, termination
/// message paths) are not compared. None when it is kbastion's shape.
pub fn shape_differs(pod: &Pod, config: &NodeShellConfig) -> Option<String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Some("it has no spec".into());
    };
    let [container] = spec.containers.as_slice() else {
        return Some(format!("it has {} containers", spec.containers.len()));
    };
    if container.name != CONTAINER {
        return Some(format!("its container is {:?}", container.name));
    }
    if container.image.as_deref() != Some(config.image.as_str()) {
        return Some(format!(
            "its image is {:?}, not {:?}",
            container.image.as_deref().unwrap_or_default(),
            config.image
        ));
    }
    if container.command.as_deref() != Some(&SLEEP.map(String::from)[..])
        || container.args.is_some()
    {
        return Some("its command is not kbastion's".into());
    }
    let privileged = container
        .security_context
        .as_ref()
        .and_then(|c| c.privileged)
        .unwrap_or(false);
    if !privileged {
        return Some("its container is not privileged".into());
    }
    if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty())
        || spec
            .ephemeral_containers
            .as_ref()
            .is_some_and(|c| !c.is_empty())
    {
        return Some("it has init or ephemeral containers".into());
    }
    if spec.volumes.as_ref().is_some_and(|v| !v.is_empty())
        || container
            .volume_mounts
            .as_ref()
            .is_some_and(|v| !v.is_empty())
    {
        return Some("it mounts volumes".into());
    }
    if spec.automount_service_account_token != Some(false) {
        return Some("it may mount a service-account token".into());
    }
    if spec.host_pid != Some(true) || spec.host_network != Some(true) || spec.host_ipc != Some(true)
    {
        return Some("it does not share the node's namespaces as kbastion's does".into());
    }
    None
}

/// The ValidatingAdmissionPolicy and its binding that admit, in the
/// node-shell namespace `namespace`, only pods of kbastion's node-shell
/// shape (the fields `shape_differs` compares, and kbastion's labels),
/// and refuse any change to a pod's spec (the holder annotations kbastion
/// writes stay allowed). Standard CEL; every field that API-server
/// defaulting or the usual mutating webhooks fill (pull policy,
/// resources, tolerations, DNS, scheduler) is left unconstrained. Printed
/// by `kbastion rbac`, with the RBAC.
pub fn admission_policy(config: &NodeShellConfig, namespace: &str) -> String {
    let q = |text: &str| serde_json::to_string(text).expect("a string serializes");
    // A CEL string literal: single-quoted, with its own escapes.
    let cel = |text: &str| format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"));
    let container = "object.spec.containers[0]";
    let validations = [
        (
            "request.operation == 'CREATE' || object.spec == oldObject.spec".to_string(),
            "a node-shell pod's spec cannot change (only kbastion's holder annotations may)".to_string(),
        ),
        (
            format!(
                "object.spec.containers.size() == 1 && {container}.name == '{CONTAINER}' && has({container}.image) && {container}.image == {}",
                cel(&config.image)
            ),
            format!(
                "only kbastion's node shell runs in this namespace: one container named {CONTAINER}, image {}",
                config.image
            ),
        ),
        (
            format!(
                "has(object.metadata.labels) && '{managed}' in object.metadata.labels && object.metadata.labels['{managed}'] == '{by}' && '{component}' in object.metadata.labels && object.metadata.labels['{component}'] == '{shell}'",
                managed = MANAGED_BY.0,
                by = MANAGED_BY.1,
                component = COMPONENT.0,
                shell = COMPONENT.1
            ),
            "only kbastion's node-shell pods run in this namespace (labels)".to_string(),
        ),
        (
            format!(
                "has({container}.command) && {container}.command == ['{}', '{}'] && !has({container}.args)",
                SLEEP[0], SLEEP[1]
            ),
            "a node-shell container runs kbastion's command only".to_string(),
        ),
        (
            format!(
                "(!has(object.spec.volumes) || object.spec.volumes.size() == 0) && (!has({container}.volumeMounts) || {container}.volumeMounts.size() == 0)"
            ),
            "a node-shell pod mounts no volumes".to_string(),
        ),
        (
            "(!has(object.spec.initContainers) || object.spec.initContainers.size() == 0) && (!has(object.spec.ephemeralContainers) || object.spec.ephemeralContainers.size() == 0)".to_string(),
            "a node-shell pod has no init or ephemeral containers".to_string(),
        ),
        (
            "has(object.spec.automountServiceAccountToken) && object.spec.automountServiceAccountToken == false".to_string(),
            "a node-shell pod mounts no service-account token".to_string(),
        ),
    ];
    let mut out = String::from(
        "---\n# Only kbastion's own node-shell pod, unchanged, in the node-shell namespace:\n\
         # even a person allowed node shells cannot run another image or mount the\n\
         # node there. The constrained fields: labels, the one container's name,\n\
         # image, command and args, volumes and volume mounts, init and ephemeral\n\
         # containers, automountServiceAccountToken; and no spec change on update.\n\
         apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata:\n  name: kbastion-node-shells\nspec:\n  failurePolicy: Fail\n  matchConstraints:\n    resourceRules:\n\
         \x20     - apiGroups: [\"\"]\n        apiVersions: [\"v1\"]\n        operations: [\"CREATE\", \"UPDATE\"]\n        resources: [\"pods\", \"pods/ephemeralcontainers\"]\n  validations:\n",
    );
    for (expression, message) in validations {
        out.push_str(&format!(
            "    - expression: {}\n      message: {}\n",
            q(&expression),
            q(&message)
        ));
    }
    out.push_str(&format!(
        "---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata:\n  name: kbastion-node-shells\nspec:\n  policyName: kbastion-node-shells\n  validationActions: [\"Deny\"]\n  matchResources:\n    namespaceSelector:\n      matchLabels:\n        kubernetes.io/metadata.name: {}\n",
        q(namespace)
    ));
    out
}

/// The refusal for a pod with `node`'s pod name that is not its pod.
fn not_the_nodes_pod(pod: &Pod, node: &str) -> TargetError {
    TargetError::ForeignNodePod {
        node: node.into(),
        pod: format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        ),
        pinned_to: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| "no node".into()),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Holders from the annotation; unreadable means none.
pub fn holders(pod: &Pod) -> BTreeMap<String, u64> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HOLDERS_ANNOTATION))
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// Whether anyone still holds the pod at `at`.
pub fn held(holders: &BTreeMap<String, u64>, at: u64) -> bool {
    holders.values().any(|expiry| *expiry > at)
}

/// Holders with `replica` set to expire at `expiry` (or removed for None),
/// and expired ones dropped.
/// Whether `replica`'s hold has more than half its length left: upkeep
/// renews every third, so a live replica's hold always does.
pub fn hold_is_fresh(
    holders: &BTreeMap<String, u64>,
    replica: &str,
    at: u64,
    hold_secs: u64,
) -> bool {
    holders
        .get(replica)
        .is_some_and(|expiry| *expiry > at + hold_secs / 2)
}

/// Adds or removes `owner` among the pod's ownerReferences.
pub fn set_owner(pod: &mut Pod, owner: Option<&OwnerReference>, present: bool) {
    let Some(owner) = owner else {
        return;
    };
    let owners = pod.metadata.owner_references.get_or_insert_with(Vec::new);
    owners.retain(|o| o.uid != owner.uid);
    if present {
        owners.push(owner.clone());
    }
}

pub fn with_hold(
    mut holders: BTreeMap<String, u64>,
    replica: &str,
    expiry: Option<u64>,
    at: u64,
) -> BTreeMap<String, u64> {
    holders.retain(|_, e| *e > at);
    match expiry {
        Some(expiry) => {
            holders.insert(replica.to_string(), expiry);
        }
        None => {
            holders.remove(replica);
        }
    }
    holders
}

fn set_holders(pod: &mut Pod, holders: &BTreeMap<String, u64>) {
    let text = serde_json::to_string(holders).expect("a map of strings to numbers serializes");
    pod.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(HOLDERS_ANNOTATION.into(), text);
}

#[derive(Default)]
struct NodeState {
    sessions: usize,
    /// Bumped on every acquire, so a linger timer can tell it is stale.
    generation: u64,
    /// The pods as the person whose session last acquired the node: the
    /// hold is renewed and given up with their rights, never the
    /// bastion's own (which may only read and delete node-shell pods).
    holder: Option<Api<Pod>>,
}

pub struct NodeShells {
    metrics: Arc<crate::metrics::Metrics>,
    client: Client,
    namespace: String,
    config: NodeShellConfig,
    replica: Replica,
    api_wait: Duration,
    nodes: Mutex<HashMap<String, NodeState>>,
}

/// Keeps a node's pod held while a session runs; dropping it releases.
pub struct NodeHold {
    shells: Arc<NodeShells>,
    node: String,
}

impl Drop for NodeHold {
    fn drop(&mut self) {
        self.shells.clone().release(self.node.clone());
    }
}

impl NodeShells {
    /// Node shells in `namespace` for a replica whose own Pod lives in
    /// `replica_namespace`. Kubernetes forbids ownerReferences across
    /// namespaces (the garbage collector would take the owner for gone and
    /// delete the pod at once), so the replica owns its node pods only when
    /// both share a namespace; otherwise expiring holds and every
    /// replica's sweeper remove them.
    pub fn new(
        metrics: Arc<crate::metrics::Metrics>,
        client: Client,
        namespace: String,
        config: NodeShellConfig,
        mut replica: Replica,
        replica_namespace: &str,
        api_wait: Duration,
    ) -> Arc<Self> {
        if replica_namespace != namespace {
            replica.owner = None;
        }
        Arc::new(NodeShells {
            metrics,
            client,
            namespace,
            config,
            replica,
            api_wait,
            nodes: Mutex::default(),
        })
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeState>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expiry(&self) -> u64 {
        now() + self.config.hold_secs
    }

    /// A node shell may be opened only by someone allowed `create` on
    /// `nodes/proxy` for that node: the kubelet proxy already gives root on
    /// the node, so the permission says exactly what this gives.
    async fn authorize(&self, identity: &Identity, node: &str) -> Result<(), TargetError> {
        let permission = Permission {
            verb: "create",
            resource: "nodes",
            subresource: "proxy",
            namespace: None,
            name: Some(node),
        };
        crate::authz::require(&self.client, identity, &permission, self.api_wait)
            .await
            .map_err(|error| match error {
                TargetError::Forbidden(_) => TargetError::Forbidden(format!(
                    "User \"{}\" may not open a shell on node {node} (needs create on nodes/proxy)",
                    identity.user
                )),
                other => other,
            })?;
        // The pod is created, held and exec'd into as the person: their
        // own rights in the node-shell namespace decide, not the bastion's.
        for (verb, subresource) in [("create", ""), ("update", ""), ("create", "exec")] {
            let permission = Permission {
                verb,
                resource: "pods",
                subresource,
                namespace: Some(&self.namespace),
                name: None,
            };
            crate::authz::require(&self.client, identity, &permission, self.api_wait)
                .await
                .map_err(|error| match error {
                    TargetError::Forbidden(_) => TargetError::Forbidden(format!(
                        "User \"{}\" may not run node shells: needs create and update on pods and create on pods/exec in namespace {} (the Role `kbastion rbac` prints for node_shell.groups)",
                        identity.user, self.namespace
                    )),
                    other => other,
                })?;
        }
        Ok(())
    }

    async fn check_node(&self, node: &str) -> Result<(), TargetError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let found = bounded(self.api_wait, nodes.get(node))
            .await?
            .map_err(|e| crate::pods::api_error(e, || TargetError::NodeNotFound(node.into())))?;
        let ready = found
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready");
        match ready {
            Some(c) if c.status == "True" => Ok(()),
            Some(c) => Err(TargetError::NodeNotReady {
                node: node.into(),
                reason: [c.reason, c.message]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": "),
            }),
            None => Err(TargetError::NodeNotReady {
                node: node.into(),
                reason: "no Ready condition reported".into(),
            }),
        }
    }

    fn pod_spec(&self, node: &str) -> Result<Pod, TargetError> {
        let name = pod_name(node);
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {MANAGED_BY.0: MANAGED_BY.1, COMPONENT.0: COMPONENT.1},
                "annotations": {NODE_ANNOTATION: node},
            },
            "spec": {
                "nodeName": node,
                "hostPID": true,
                "hostNetwork": true,
                "hostIPC": true,
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "terminationGracePeriodSeconds": 0,
                "tolerations": [{"operator": "Exists"}],
                "containers": [{
                    "name": CONTAINER,
                    "image": self.config.image,
                    "command": SLEEP,
                    "securityContext": {"privileged": true},
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "16Mi"},
                        "limits": {"cpu": "1", "memory": "256Mi"},
                    },
                }],
            },
        }))
        .map_err(|e| TargetError::Api(format!("node-shell pod spec: {e}")))?;
        if let Some(spec) = pod.spec.as_mut()
            && !self.config.priority_class.is_empty()
        {
            spec.priority_class_name = Some(self.config.priority_class.clone());
        }
        set_owner(&mut pod, self.replica.owner.as_ref(), true);
        // The node as a label too where it fits a label value (at most 63
        // characters), so `kubectl get pods -l kbastion.io/node=NODE` works;
        // the annotation always has it.
        if node.len() <= 63
            && let Some(labels) = pod.metadata.labels.as_mut()
        {
            labels.insert(NODE_LABEL.into(), node.into());
        }
        set_holders(
            &mut pod,
            &with_hold(
                BTreeMap::new(),
                &self.replica.id,
                Some(self.expiry()),
                now(),
            ),
        );
        Ok(pod)
    }

    /// Adds or renews this replica's hold, creating the pod if there is
    /// none. Conflicts (another replica wrote first) are retried.
    async fn hold(&self, node: &str, pods: &Api<Pod>) -> Result<Pod, TargetError> {
        let name = pod_name(node);
        for _ in 0..10 {
            match bounded(self.api_wait, pods.get_opt(&name))
                .await?
                .map_err(|e| {
                    own_call_failed(
                        e,
                        &format!("cannot read node-shell pod {}/{name}", self.namespace),
                    )
                })? {
                None => match bounded(
                    self.api_wait,
                    pods.create(&PostParams::default(), &self.pod_spec(node)?),
                )
                .await?
                {
                    Ok(pod) => {
                        self.metrics.node_shell_pods_created.inc();
                        return Ok(pod);
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => continue,
                    Err(e) => {
                        return Err(own_call_failed(
                            e,
                            &format!("cannot create node-shell pod {}/{name}", self.namespace),
                        ));
                    }
                },
                Some(pod) if !serves_node(&pod, node) => {
                    return Err(not_the_nodes_pod(&pod, node));
                }
                Some(pod) if shape_differs(&pod, &self.config).is_some() => {
                    return Err(self.look_alike(&pod, node));
                }
                Some(pod)
                    if pod.metadata.deletion_timestamp.is_none()
                        && hold_is_fresh(
                            &holders(&pod),
                            &self.replica.id,
                            now(),
                            self.config.hold_secs,
                        ) =>
                {
                    // Already ours for a good while (upkeep renews it): no
                    // write, so many sessions at once cause no 409 storm.
                    return Ok(pod);
                }
                Some(mut pod) if pod.metadata.deletion_timestamp.is_none() => {
                    let holders =
                        with_hold(holders(&pod), &self.replica.id, Some(self.expiry()), now());
                    set_holders(&mut pod, &holders);
                    // Every holding replica's Pod owns it: the garbage
                    // collector removes it only once all of them are gone.
                    set_owner(&mut pod, self.replica.owner.as_ref(), true);
                    // `replace` sends the resourceVersion we read: a
                    // concurrent writer makes this a 409 and we retry.
                    match bounded(
                        self.api_wait,
                        pods.replace(&name, &PostParams::default(), &pod),
                    )
                    .await?
                    {
                        Ok(pod) => return Ok(pod),
                        Err(kube::Error::Api(status))
                            if status.code == 409 || status.code == 404 =>
                        {
                            // Another writer won: retry after a short random
                            // pause so the contenders spread out.
                            let pause = rand::random_range(10..60);
                            tokio::time::sleep(Duration::from_millis(pause)).await;
                            continue;
                        }
                        Err(e) => {
                            return Err(own_call_failed(
                                e,
                                &format!("cannot update node-shell pod {}/{name}", self.namespace),
                            ));
                        }
                    }
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        Err(TargetError::Api(format!(
            "could not hold node-shell pod {name}: too many concurrent updates"
        )))
    }

    /// The refusal for a pod that carries `node`'s node-shell name, labels
    /// and pinning but not kbastion's shape; logged for the operators.
    fn look_alike(&self, pod: &Pod, node: &str) -> TargetError {
        let why = shape_differs(pod, &self.config).unwrap_or_default();
        let name = format!(
            "{}/{}",
            self.namespace,
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        tracing::warn!(pod = %name, %node, %why, "a look-alike node-shell pod was refused");
        TargetError::LookAlikeNodePod {
            node: node.into(),
            pod: name,
            why,
        }
    }

    /// Waits (with a watch) until the pod runs, or fails with its reason.
    async fn wait_running(&self, node: &str) -> Result<(), TargetError> {
        let name = pod_name(node);
        let timeout = Duration::from_secs(self.config.start_timeout_secs);
        let decided = |pod: Option<&Pod>| {
            pod.is_none_or(|p| pod_failure(p).is_some() || phase(p) == "Running")
        };
        let result = tokio::time::timeout(
            timeout,
            kube::runtime::wait::await_condition(self.pods(), &name, decided),
        )
        .await;
        match result {
            Err(_) => Err(TargetError::NodeShellStart {
                node: node.into(),
                reason: format!("the node-shell pod did not run within {timeout:?}"),
            }),
            Ok(Err(e)) => Err(TargetError::Unreachable(e.to_string())),
            Ok(Ok(None)) => Err(TargetError::NodeShellStart {
                node: node.into(),
                reason: "the node-shell pod was deleted while starting".into(),
            }),
            Ok(Ok(Some(pod))) if !serves_node(&pod, node) => Err(not_the_nodes_pod(&pod, node)),
            Ok(Ok(Some(pod))) if shape_differs(&pod, &self.config).is_some() => {
                Err(self.look_alike(&pod, node))
            }
            Ok(Ok(Some(pod))) => match pod_failure(&pod) {
                Some(reason) => Err(TargetError::NodeShellStart {
                    node: node.into(),
                    reason,
                }),
                None => Ok(()),
            },
        }
    }

    /// Opens a node shell target for `identity`: authorized, node Ready,
    /// pod held and running. The pod's creation, the hold and the
    /// session's execs go through `acting`, which impersonates the person:
    /// when bob's session shares the pod alice's created, bob's own rights
    /// write his hold and open his exec.
    pub async fn acquire(
        self: &Arc<Self>,
        identity: &Identity,
        node: &str,
        acting: Client,
    ) -> Result<(ExecTarget, NodeHold), TargetError> {
        let acting: Api<Pod> = Api::namespaced(acting, &self.namespace);
        self.authorize(identity, node).await?;
        self.check_node(node).await?;
        {
            let mut nodes = self.state();
            let state = nodes.entry(node.to_string()).or_default();
            state.sessions += 1;
            state.generation += 1;
            state.holder = Some(acting.clone());
            self.metrics.node_shell_pods_held.set(nodes.len() as i64);
        }
        let hold = NodeHold {
            shells: self.clone(),
            node: node.to_string(),
        };
        self.hold(node, &acting).await?;
        if let Err(error) = self.wait_running(node).await {
            if matches!(
                error,
                TargetError::ForeignNodePod { .. } | TargetError::LookAlikeNodePod { .. }
            ) {
                // Not ours to delete.
                return Err(error);
            }
            // A pod that cannot run is removed now, not left to the sweeper.
            let _ = bounded(
                self.api_wait,
                self.pods()
                    .delete(&pod_name(node), &DeleteParams::default()),
            )
            .await;
            return Err(error);
        }
        let target = ExecTarget {
            pods: acting,
            namespace: self.namespace.clone(),
            pod: pod_name(node),
            container: CONTAINER.into(),
            prefix: self.config.nsenter.clone(),
            files_root: None,
            note: None,
            // The pod shares the node's network: its loopback is the node's.
            local_names: crate::pods::local_names([node.to_string()]),
        };
        Ok((target, hold))
    }

    /// A session to `node` ended: after the linger, if no session came
    /// back, drop this replica's hold and delete the pod if nobody else
    /// holds it.
    fn release(self: Arc<Self>, node: String) {
        let generation = {
            let mut nodes = self.state();
            let Some(state) = nodes.get_mut(&node) else {
                return;
            };
            state.sessions = state.sessions.saturating_sub(1);
            if state.sessions > 0 {
                return;
            }
            state.generation
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            tokio::time::sleep(Duration::from_secs(self.config.linger_secs)).await;
            let holder = {
                let mut nodes = self.state();
                match nodes.get(&node) {
                    Some(state) if state.sessions == 0 && state.generation == generation => {
                        let holder = nodes.remove(&node).and_then(|state| state.holder);
                        self.metrics.node_shell_pods_held.set(nodes.len() as i64);
                        holder
                    }
                    _ => return,
                }
            };
            if let Err(error) = self.let_go(&node, holder.as_ref()).await {
                tracing::warn!(%node, %error, "could not release the node-shell pod; the sweeper will");
            }
        });
    }

    /// Removes this replica's hold, written as the person who held it
    /// (`holder`; without one the hold simply expires); deletes the pod
    /// when nobody holds it, with the bastion's own right to delete.
    async fn let_go(&self, node: &str, holder: Option<&Api<Pod>>) -> Result<(), TargetError> {
        let pods = self.pods();
        let name = pod_name(node);
        for _ in 0..10 {
            let Some(mut pod) =
                bounded(self.api_wait, pods.get_opt(&name))
                    .await?
                    .map_err(|e| {
                        own_call_failed(
                            e,
                            &format!("cannot read node-shell pod {}/{name}", self.namespace),
                        )
                    })?
            else {
                return Ok(());
            };
            let holders = with_hold(holders(&pod), &self.replica.id, None, now());
            let result = if held(&holders, now()) {
                let Some(holder) = holder else {
                    return Ok(());
                };
                set_holders(&mut pod, &holders);
                set_owner(&mut pod, self.replica.owner.as_ref(), false);
                bounded(
                    self.api_wait,
                    holder.replace(&name, &PostParams::default(), &pod),
                )
                .await?
                .map(|_| ())
            } else {
                delete_exactly(&pods, &pod, self.api_wait).await?
            };
            match result {
                Ok(()) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
                Err(e) => {
                    return Err(own_call_failed(
                        e,
                        &format!("cannot release node-shell pod {}/{name}", self.namespace),
                    ));
                }
            }
        }
        Err(TargetError::Api(format!(
            "could not release {name}: too many concurrent updates"
        )))
    }

    /// Lets go of every node this replica holds, at once (shutdown): the
    /// pods stay if another replica holds them, else they are deleted.
    pub async fn release_all(&self) {
        let nodes: Vec<(String, Option<Api<Pod>>)> = self
            .state()
            .drain()
            .map(|(node, state)| (node, state.holder))
            .collect();
        self.metrics.node_shell_pods_held.set(0);
        for (node, holder) in nodes {
            if let Err(error) = self.let_go(&node, holder.as_ref()).await {
                tracing::warn!(%node, %error, "could not release the node-shell pod at shutdown; the sweeper will");
            }
        }
    }

    /// Renews this replica's holds and sweeps unheld node-shell pods, every
    /// third of the hold time, until the process ends.
    pub fn spawn_maintenance(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let shells = self.clone();
        tokio::spawn(async move {
            let period = Duration::from_secs((shells.config.hold_secs / 3).max(1));
            loop {
                tokio::time::sleep(period).await;
                let held_nodes: Vec<(String, Api<Pod>)> = shells
                    .state()
                    .iter()
                    .filter_map(|(node, state)| Some((node.clone(), state.holder.clone()?)))
                    .collect();
                for (node, holder) in held_nodes {
                    if let Err(error) = shells.hold(&node, &holder).await {
                        tracing::warn!(%node, %error, "could not renew the node-shell hold");
                    }
                }
                if let Err(error) = shells.sweep().await {
                    tracing::warn!(%error, "node-shell sweep failed");
                }
            }
        })
    }

    /// Deletes node-shell pods that nobody holds (their replicas are gone).
    pub async fn sweep(&self) -> Result<usize, TargetError> {
        let pods = self.pods();
        let selector = format!(
            "{}={},{}={}",
            MANAGED_BY.0, MANAGED_BY.1, COMPONENT.0, COMPONENT.1
        );
        let list = bounded(
            self.api_wait,
            pods.list(&ListParams::default().labels(&selector)),
        )
        .await?
        .map_err(|e| {
            own_call_failed(
                e,
                &format!("cannot list node-shell pods in {}", self.namespace),
            )
        })?;
        let mut deleted = 0;
        let mine: Vec<String> = self.state().keys().map(|n| pod_name(n)).collect();
        for pod in list.items {
            let name = pod.metadata.name.clone().unwrap_or_default();
            if mine.contains(&name) || held(&holders(&pod), now()) {
                continue;
            }
            if let Ok(Ok(())) = delete_exactly(&pods, &pod, self.api_wait).await {
                tracing::info!(pod = %name, "swept a node-shell pod nobody holds");
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// Deletes `pod` only if it is still the version we looked at.
async fn delete_exactly(
    pods: &Api<Pod>,
    pod: &Pod,
    wait: Duration,
) -> Result<Result<(), kube::Error>, TargetError> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    Ok(bounded(wait, pods.delete(&name, &params))
        .await?
        .map(|_| ()))
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Why a node-shell pod will not run, if it will not: image pull errors
/// (with the image), unschedulable, or a terminal phase.
pub fn pod_failure(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    for container in status.container_statuses.iter().flatten() {
        if let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = waiting.reason.as_deref().unwrap_or("");
            if matches!(
                reason,
                "ErrImagePull"
                    | "ImagePullBackOff"
                    | "InvalidImageName"
                    | "CreateContainerConfigError"
            ) {
                return Some(format!("{reason} for image {}", container.image));
            }
        }
    }
    for condition in status.conditions.iter().flatten() {
        if condition.type_ == "PodScheduled"
            && condition.status == "False"
            && condition.reason.as_deref() == Some("Unschedulable")
        {
            return Some(format!(
                "unschedulable: {}",
                condition.message.clone().unwrap_or_default()
            ));
        }
    }
    match phase(pod) {
        "Failed" | "Succeeded" => Some(format!("the node-shell pod ended (phase {})", phase(pod))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_expire_and_are_kept_per_replica() {
        let holders = with_hold(BTreeMap::new(), "a", Some(100), 50);
        let holders = with_hold(holders, "b", Some(120), 60);
        assert!(held(&holders, 110));
        let holders = with_hold(holders, "b", None, 60);
        assert!(held(&holders, 99) && !held(&holders, 100));
        // Expired holders are dropped when anyone writes.
        let holders = with_hold(holders, "c", Some(300), 200);
        assert_eq!(holders.keys().collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn only_kbastions_own_shape_is_a_node_shell_pod() {
        let config = NodeShellConfig::default();
        let ours = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut pod = serde_json::json!({
                "metadata": {"name": "kbastion-node-node-1"},
                "spec": {
                    "nodeName": "node-1", "hostPID": true, "hostNetwork": true, "hostIPC": true,
                    "automountServiceAccountToken": false,
                    // What API-server defaulting adds must not matter.
                    "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                    "containers": [{
                        "name": "shell", "image": config.image, "command": SLEEP,
                        "imagePullPolicy": "IfNotPresent",
                        "terminationMessagePath": "/dev/termination-log",
                        "securityContext": {"privileged": true},
                    }],
                },
            });
            edit(&mut pod);
            serde_json::from_value::<Pod>(pod).unwrap()
        };
        assert_eq!(shape_differs(&ours(&|_| {}), &config), None);
        let attacker = ours(&|p| {
            p["spec"]["containers"][0]["image"] = "registry.example/attacker-shell:1.0".into();
            p["spec"]["containers"][0]["securityContext"]["privileged"] = false.into();
        });
        assert!(
            shape_differs(&attacker, &config)
                .unwrap()
                .contains("attacker-shell")
        );
        let mounted = ours(&|p| {
            p["spec"]["volumes"] = serde_json::json!([{"name": "root", "hostPath": {"path": "/"}}]);
        });
        assert!(
            shape_differs(&mounted, &config)
                .unwrap()
                .contains("volumes")
        );
        let token = ours(&|p| p["spec"]["automountServiceAccountToken"] = true.into());
        assert!(shape_differs(&token, &config).is_some());
        let other_command = ours(&|p| {
            p["spec"]["containers"][0]["command"] = serde_json::json!(["sh", "-c", "evil"]);
        });
        assert!(shape_differs(&other_command, &config).is_some());
    }

    #[test]
    fn pod_names_fit_kubernetes_limits() {
        assert_eq!(pod_name("node-1"), "kbastion-node-node-1");
        // Names that once met: dots and dashes, long names sharing a prefix.
        assert_ne!(pod_name("node.1"), pod_name("node-1"));
        let long = "a".repeat(60);
        assert_ne!(
            pod_name(&format!("{long}.x")),
            pod_name(&format!("{long}.y"))
        );
        let long = pod_name(&"ip-10-0-0-1.eu-west-1.compute.internal.example".repeat(3));
        assert!(long.len() <= 63, "{long}");
        assert!(
            crate::login::validate_kubernetes_name(&long, 63).is_ok(),
            "{long}"
        );
    }
}
