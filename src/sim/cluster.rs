//! What the controllers and the kubelet do in a real cluster: the scenario
//! loaded into the store, pods scheduled and moved through their phases,
//! image pull failures, garbage collection by ownerReferences, and pod
//! processes ended on deletion.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::Sim;
use super::resources;
use super::scenario::PodSpec;
use super::store::{self, Key, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("object #{index} in [[objects]]: {message}")]
    Object { index: usize, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// DNS-1123 subdomain, the rule for most object names.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty()
        || name.len() > 253
        || !name.chars().all(ok_char)
        || !alnum(name.chars().next())
        || !alnum(name.chars().last())
    {
        return Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into());
    }
    Ok(())
}

pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|x| x.parse::<f64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400) as u64 + (hh * 3600.0 + mm * 60.0 + ss) as u64)
}

/// Fills in what the API server defaults on a new pod and checks what it
/// validates.
pub fn default_pod(pod: &mut Value) -> Result<(), String> {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or("spec.containers: Required value")?;
    for container in containers {
        let name = container["name"].as_str().unwrap_or("");
        if name.is_empty() {
            return Err("spec.containers[0].name: Required value".into());
        }
        if container["image"].as_str().unwrap_or("").is_empty() {
            return Err(format!("spec.containers[{name}].image: Required value"));
        }
    }
    let spec = pod["spec"].as_object_mut().ok_or("spec: Required value")?;
    spec.entry("restartPolicy").or_insert(json!("Always"));
    spec.entry("schedulerName")
        .or_insert(json!("default-scheduler"));
    spec.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    // SetDefaults_PodSpec: a pod always has a security context, empty at
    // least (kubectl debug dereferences it without a nil check).
    spec.entry("securityContext").or_insert(json!({}));
    spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    pod["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
    Ok(())
}

fn pod_json(spec: &PodSpec) -> Value {
    let containers: Vec<Value> = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let env: Vec<Value> = c
                .env
                .iter()
                .map(|(k, v)| json!({"name": k, "value": v}))
                .collect();
            let ports: Vec<Value> = c
                .ports
                .iter()
                .map(|p| json!({"containerPort": p, "protocol": "TCP"}))
                .collect();
            let mut container =
                json!({"name": c.name, "image": c.image, "env": env, "ports": ports});
            if !c.command.is_empty() {
                container["command"] = json!(c.command);
            }
            if spec.privileged && i == 0 {
                container["securityContext"] = json!({"privileged": true});
            }
            container
        })
        .collect();
    let mut pod = json!({
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": spec.labels, "annotations": spec.annotations},
        "spec": {"containers": containers},
    });
    if let Some(node) = &spec.node {
        pod["spec"]["nodeName"] = json!(node);
    }
    if spec.privileged {
        pod["spec"]["hostPID"] = json!(true);
        pod["spec"]["hostNetwork"] = json!(true);
    }
    pod
}

/// Loads the scenario into the store and starts its pods.
pub fn load(sim: &Arc<Sim>) -> Result<(), LoadError> {
    let scenario = &sim.scenario;
    let mut namespaces: Vec<String> = ["default", "kube-system", "kube-public", "kube-node-lease"]
        .into_iter()
        .map(String::from)
        .collect();
    namespaces.extend(scenario.namespaces.iter().cloned());
    namespaces.extend(scenario.pods.iter().map(|p| p.namespace.clone()));
    namespaces.sort();
    namespaces.dedup();
    for namespace in &namespaces {
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": {"kubernetes.io/metadata.name": namespace}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        create_raw(sim, Key::new("namespaces", "", namespace), object)?;
    }
    for node in &scenario.nodes {
        let taints: Vec<Value> = node
            .taints
            .iter()
            .map(|t| {
                let (kv, effect) = t.split_once(':').unwrap_or((t, "NoSchedule"));
                let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
                json!({"key": key, "value": value, "effect": effect})
            })
            .collect();
        let mut labels = node.labels.clone();
        labels.insert("kubernetes.io/hostname".into(), node.name.clone());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        let mut object = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node.name, "labels": labels},
            "spec": {},
            "status": node_status(sim.minor, &node.name, node.ready),
        });
        if !taints.is_empty() {
            object["spec"]["taints"] = json!(taints);
        }
        create_raw(sim, Key::new("nodes", "", &node.name), object)?;
    }
    bootstrap_policy(sim)?;
    for (index, object) in scenario.objects.iter().enumerate() {
        let object: Value = serde_json::to_value(object).map_err(|e| LoadError::Object {
            index,
            message: e.to_string(),
        })?;
        let kind = object["kind"].as_str().unwrap_or_default();
        let resource = resources::by_kind(kind).ok_or_else(|| LoadError::Object {
            index,
            message: format!("kind {kind:?} is not served by the simulator"),
        })?;
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let namespace = if resource.namespaced {
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
        } else {
            ""
        };
        validate_name(name).map_err(|message| LoadError::Object {
            index,
            message: format!("metadata.name {name:?}: {message}"),
        })?;
        create_raw(
            sim,
            Key::new(resource.name, namespace, name),
            object.clone(),
        )?;
    }
    for pod in &scenario.pods {
        let mut object = pod_json(pod);
        object["apiVersion"] = json!("v1");
        object["kind"] = json!("Pod");
        default_pod(&mut object)
            .map_err(|e| LoadError::Invalid(format!("pod {}/{}: {e}", pod.namespace, pod.name)))?;
        let key = Key::new("pods", &pod.namespace, &pod.name);
        create_raw(sim, key.clone(), object)?;
        match pod.phase.as_deref() {
            Some(phase @ ("Succeeded" | "Failed")) => {
                let phase = phase.to_string();
                let _ = sim.store.modify(&key, |p| {
                    p["status"]["phase"] = json!(phase);
                    true
                });
            }
            Some(other) => {
                return Err(LoadError::Invalid(format!(
                    "pod {}/{}: phase {other:?}: only Succeeded or Failed can be pinned",
                    pod.namespace, pod.name
                )));
            }
            None => start_pod(sim.clone(), key),
        }
    }
    Ok(())
}

/// The API server's bootstrap RBAC that every authenticated user has:
/// discovery and reviewing their own access (`system:basic-user`).
fn bootstrap_policy(sim: &Sim) -> Result<(), LoadError> {
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "system:basic-user"},
        "rules": [
            {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
        ],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "system:basic-user"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:basic-user"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}],
    });
    create_raw(sim, Key::new("clusterroles", "", "system:basic-user"), role)?;
    create_raw(
        sim,
        Key::new("clusterrolebindings", "", "system:basic-user"),
        binding,
    )
}

/// A node's status as its kubelet posts it: the four conditions a kubelet
/// reports (or, for a node that stopped posting, all of them `Unknown` as
/// the node lifecycle controller sets them), capacity, the kubelet's port
/// and every `nodeInfo` field (the OpenAPI schema requires all ten, and
/// clients that validate models refuse a node without them).
fn node_status(minor: u32, name: &str, ready: bool) -> Value {
    let now = store::now();
    let conditions: Vec<Value> = [
        ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "KubeletReady", "kubelet is posting ready status"),
    ]
    .into_iter()
    .map(|(kind, reason, message)| {
        let (status, reason, message) = match (ready, kind) {
            (true, "Ready") => ("True", reason, message),
            (true, _) => ("False", reason, message),
            (false, _) => ("Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status."),
        };
        json!({"type": kind, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": now, "lastTransitionTime": now})
    })
    .collect();
    // The nodes are this machine: its kernel, read once at load.
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_default();
    // Stable per node name, shaped as the kubelet reads them from the host.
    let digest = |salt: &str| {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (salt, name).hash(&mut hasher);
        let high = hasher.finish();
        (name, salt).hash(&mut hasher);
        format!("{high:016x}{:016x}", hasher.finish())
    };
    let uuid = |hex: String| {
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    };
    // kubeProxyVersion is deprecated: kubelets stop filling it in 1.33
    // (DisableNodeKubeProxyVersion on by default); the field stays, empty.
    let kube_proxy_version = if minor >= 33 {
        String::new()
    } else {
        format!("v1.{minor}.0")
    };
    let capacity = json!({"cpu": "2", "ephemeral-storage": "20470Mi", "hugepages-2Mi": "0", "memory": "4026748Ki", "pods": "110"});
    json!({
        "conditions": conditions,
        "addresses": [{"type": "InternalIP", "address": NODE_ADDRESS}, {"type": "Hostname", "address": name}],
        "capacity": capacity,
        "allocatable": capacity,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
        "nodeInfo": {
            "machineID": digest("machine-id"),
            "systemUUID": uuid(digest("system-uuid")),
            "bootID": uuid(digest("boot-id")),
            "kernelVersion": kernel,
            "osImage": "Debian GNU/Linux 12 (bookworm)",
            "containerRuntimeVersion": "containerd://1.7.0",
            "kubeletVersion": format!("v1.{minor}.0"),
            "kubeProxyVersion": kube_proxy_version,
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    })
}

/// The port every simulated kubelet is reached on (the kubelet's default).
pub const KUBELET_PORT: u16 = 10250;

/// Every simulated node's InternalIP: they all are this machine.
pub const NODE_ADDRESS: &str = "127.0.0.1";

fn create_raw(sim: &Sim, key: Key, object: Value) -> Result<(), LoadError> {
    let described = format!("{} {}/{}", key.resource, key.namespace, key.name);
    sim.store
        .create(key, object)
        .map(|_| ())
        .map_err(|e| LoadError::Invalid(format!("{described}: {e}")))
}

/// Whether a node is Ready (None: no such node).
pub fn node_ready(sim: &Sim, node: &str) -> Option<bool> {
    let node = sim.store.get(&Key::new("nodes", "", node))?;
    Some(
        node.pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"),
    )
}

fn tolerates(pod: &Value, taint: &Value) -> bool {
    pod.pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|t| {
            let key_ok = t["operator"] == "Exists"
                && t.get("key")
                    .is_none_or(|k| k.is_null() || *k == taint["key"] || k == "")
                || t["key"] == taint["key"]
                    && t.get("value").unwrap_or(&json!(""))
                        == taint.get("value").unwrap_or(&json!(""));
            let effect_ok = t
                .get("effect")
                .is_none_or(|e| e.is_null() || e == "" || *e == taint["effect"]);
            key_ok && effect_ok
        })
}

/// Why a node cannot take a pod, worded as in the scheduler's message, in
/// the order of its filters (taints before node affinity).
fn unfit(sim: &Sim, pod: &Value, node: &Value) -> Option<&'static str> {
    let name = node.pointer("/metadata/name")?.as_str()?;
    let taints = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let tolerated = taints
        .iter()
        .filter(|t| t["effect"] == "NoSchedule")
        .all(|t| tolerates(pod, t));
    if node_ready(sim, name) != Some(true) || !tolerated {
        return Some("were not ready or had untolerated taints");
    }
    let labels = &node["metadata"]["labels"];
    let selected = pod
        .pointer("/spec/nodeSelector")
        .and_then(Value::as_object)
        .is_none_or(|selector| selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
    if !selected {
        return Some("didn't match Pod's node affinity/selector");
    }
    None
}

/// The scheduler's choice: a Ready node matching the pod's nodeSelector
/// whose NoSchedule taints the pod tolerates; or, when there is none, the
/// scheduler's `0/N nodes are available: ...` message.
fn schedule(sim: &Sim, pod: &Value) -> Result<String, String> {
    let (nodes, _) = sim.store.list("nodes", None);
    if nodes.is_empty() {
        return Err("no nodes available to schedule pods".into());
    }
    let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
    for node in &nodes {
        match unfit(sim, pod, node) {
            None => {
                if let Some(name) = node.pointer("/metadata/name").and_then(Value::as_str) {
                    return Ok(name.to_string());
                }
            }
            Some(reason) => *reasons.entry(reason).or_default() += 1,
        }
    }
    // Sorted as strings, count first, as the scheduler sorts them.
    let mut reasons: Vec<String> = reasons
        .into_iter()
        .map(|(reason, count)| format!("{count} node(s) {reason}"))
        .collect();
    reasons.sort();
    Err(format!(
        "0/{} nodes are available: {}.",
        nodes.len(),
        reasons.join(", ")
    ))
}

fn set_condition(
    pod: &mut Value,
    kind: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    let mut condition = json!({"type": kind, "status": status, "lastTransitionTime": store::now()});
    if let Some(reason) = reason {
        condition["reason"] = json!(reason);
    }
    if let Some(message) = message {
        condition["message"] = json!(message);
    }
    let conditions = pod["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut conditions: Vec<Value> = conditions
        .into_iter()
        .filter(|c| c["type"] != kind)
        .collect();
    conditions.push(condition);
    pod["status"]["conditions"] = json!(conditions);
}

/// Drives a new pod to where a real cluster would take it: scheduled,
/// then Running after the scenario's delay, or stuck Pending (NotReady
/// node, no fitting node) or in ImagePullBackOff (missing image).
pub fn start_pod(sim: Arc<Sim>, key: Key) {
    tokio::spawn(async move {
        let poll = Duration::from_millis(200);
        // Scheduling.
        let node = loop {
            let Some(pod) = sim.store.get(&key) else {
                return;
            };
            if let Some(node) = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                break node.to_string();
            }
            let message = match schedule(&sim, &pod) {
                Ok(node) => {
                    let _ = sim.store.modify(&key, |p| {
                        p["spec"]["nodeName"] = json!(node);
                        set_condition(p, "PodScheduled", "True", None, None);
                        true
                    });
                    break node;
                }
                Err(message) => message,
            };
            let _ = sim.store.modify(&key, |p| {
                let unchanged = p.pointer("/status/conditions/0/reason")
                    == Some(&json!("Unschedulable"))
                    && p.pointer("/status/conditions/0/message") == Some(&json!(message));
                if unchanged {
                    return false;
                }
                set_condition(
                    p,
                    "PodScheduled",
                    "False",
                    Some("Unschedulable"),
                    Some(&message),
                );
                true
            });
            tokio::time::sleep(poll).await;
        };
        // The node's kubelet picks the pod up only while it is Ready.
        loop {
            if sim.store.get(&key).is_none() {
                return;
            }
            if node_ready(&sim, &node) == Some(true) {
                break;
            }
            tokio::time::sleep(poll).await;
        }
        tokio::time::sleep(Duration::from_millis(sim.scenario.pod_start_delay_ms)).await;
        let Some(pod) = sim.store.get(&key) else {
            return;
        };
        let containers = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let missing = containers.iter().find_map(|c| {
            let image = c["image"].as_str()?;
            sim.scenario
                .missing_images
                .iter()
                .any(|m| m == image)
                .then(|| image.to_string())
        });
        let now = store::now();
        if let Some(image) = missing {
            for (reason, message) in [
                (
                    "ErrImagePull",
                    format!(
                        "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": {image}: not found"
                    ),
                ),
                (
                    "ImagePullBackOff",
                    format!("Back-off pulling image \"{image}\""),
                ),
            ] {
                let _ = sim.store.modify(&key, |p| {
                    let statuses: Vec<Value> = containers.iter().map(|c| {
                        let waiting = if c["image"] == json!(image) {
                            json!({"reason": reason, "message": message})
                        } else {
                            json!({"reason": "PodInitializing"})
                        };
                        json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": false, "restartCount": 0, "started": false, "state": {"waiting": waiting}})
                    }).collect();
                    p["status"]["containerStatuses"] = json!(statuses);
                    p["status"]["hostIP"] = json!("127.0.0.1");
                    set_condition(p, "Ready", "False", Some("ContainersNotReady"), None);
                    true
                });
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            return;
        }
        let _ = sim.store.modify(&key, |p| {
            let statuses: Vec<Value> = containers.iter().map(|c| json!({
                "name": c["name"], "image": c["image"], "imageID": "", "ready": true, "restartCount": 0, "started": true,
                "containerID": format!("containerd://{:016x}", rand::random::<u64>()),
                "state": {"running": {"startedAt": now}},
            })).collect();
            p["status"]["phase"] = json!("Running");
            p["status"]["containerStatuses"] = json!(statuses);
            p["status"]["hostIP"] = json!("127.0.0.1");
            p["status"]["podIP"] = json!("127.0.0.1");
            p["status"]["startTime"] = json!(now);
            for kind in ["Initialized", "ContainersReady", "Ready", "PodScheduled"] {
                set_condition(p, kind, "True", None, None);
            }
            true
        });
        super::container::start_all(&sim, &key);
    });
}

/// What a deletion does to the objects that name the deleted one in their
/// ownerReferences (`DeleteOptions.propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// The garbage collector deletes the dependents (`Background`, the
    /// default, and `Foreground`, which ends in the same state).
    Cascade,
    /// The dependents stay, without their reference to the owner
    /// (`Orphan`, or the older `orphanDependents: true`).
    Orphan,
}

impl Propagation {
    /// Reads the policy from a request's DeleteOptions.
    pub fn from_options(options: &Value) -> Propagation {
        if options["propagationPolicy"] == "Orphan" || options["orphanDependents"] == true {
            Propagation::Orphan
        } else {
            Propagation::Cascade
        }
    }
}

/// The grace period the API server gives a pod being deleted (its
/// `CheckGracefulDelete`): none for a pod never scheduled or already
/// finished; otherwise the request's `gracePeriodSeconds`, else the pod's
/// `terminationGracePeriodSeconds`, else 30; a negative one becomes 1.
pub fn pod_grace_period(pod: &Value, requested: Option<i64>) -> u64 {
    let scheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !scheduled || finished {
        return 0;
    }
    let period = requested
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30);
    u64::try_from(period).unwrap_or(1)
}

/// Deletes an object and what depends on it: a pod's processes, a
/// namespace's contents, and the objects it owns, as the garbage collector
/// treats them: with `Cascade`, a dependent whose other owners are gone
/// too is deleted, one with an owner still present only loses the
/// reference to the deleted one; with `Orphan`, every dependent only loses
/// that reference.
///
/// A pod with a grace period (`pod_grace_period`, with the request's
/// `gracePeriodSeconds` in `grace`) is not removed at once: it gets its
/// `deletionTimestamp` (when the grace period ends) and
/// `deletionGracePeriodSeconds`, its processes get SIGTERM, and SIGKILL
/// when the period is over; then it is removed, as its kubelet does.
pub fn delete(
    sim: &Arc<Sim>,
    key: &Key,
    propagation: Propagation,
    grace: Option<i64>,
) -> Result<Value, StoreError> {
    if key.resource == "pods" {
        let pod = sim.store.get(key).ok_or(StoreError::NotFound)?;
        let period = pod_grace_period(&pod, grace);
        if period > 0 {
            return begin_termination(sim, key, pod, period, propagation);
        }
    }
    let deleted = sim.store.delete(key)?;
    if key.resource == "pods" {
        sim.runtime.kill_pod(&key.namespace, &key.name);
    }
    if key.resource == "namespaces" {
        for resource in resources::available().filter(|r| r.namespaced) {
            for object in sim.store.list(resource.name, Some(&key.name)).0 {
                if let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str) {
                    // The namespace is gone at once here (no Terminating
                    // phase), so its pods are too.
                    let _ = delete(
                        sim,
                        &Key::new(resource.name, &key.name, name),
                        propagation,
                        Some(0),
                    );
                }
            }
        }
    }
    let Some(uid) = deleted.pointer("/metadata/uid").and_then(Value::as_str) else {
        return Ok(deleted);
    };
    for resource in resources::available() {
        for dependent in sim.store.list(resource.name, None).0 {
            let references = owner_references(&dependent);
            if !references.iter().any(|r| r["uid"] == uid) {
                continue;
            }
            let name = dependent
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let namespace = dependent
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let dependent_key = Key::new(resource.name, namespace, name);
            // References to owners that no longer exist are dangling.
            let remaining: Vec<Value> =
                references.into_iter().filter(|r| r["uid"] != uid).collect();
            let owner_left = remaining.iter().any(|r| exists(sim, r, namespace));
            if propagation == Propagation::Cascade && !owner_left {
                let _ = delete(sim, &dependent_key, propagation, None);
                continue;
            }
            // Checked before `modify`, which holds the store's lock.
            let kept: Vec<Value> = match propagation {
                Propagation::Orphan => remaining,
                Propagation::Cascade => remaining
                    .into_iter()
                    .filter(|r| exists(sim, r, namespace))
                    .collect(),
            };
            let _ = sim.store.modify(&dependent_key, |object| {
                let meta = &mut object["metadata"];
                match meta.as_object_mut() {
                    Some(meta) if kept.is_empty() => {
                        meta.remove("ownerReferences");
                    }
                    Some(meta) => {
                        meta.insert("ownerReferences".into(), json!(kept));
                    }
                    None => return false,
                }
                true
            });
        }
    }
    Ok(deleted)
}

/// Marks a pod as terminating and ends it in the background. A second
/// deletion while it terminates answers the pod as it is (the first grace
/// period stands).
fn begin_termination(
    sim: &Arc<Sim>,
    key: &Key,
    pod: Value,
    period: u64,
    propagation: Propagation,
) -> Result<Value, StoreError> {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return Ok(pod);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let marked = sim.store.modify(key, |p| {
        let Some(meta) = p["metadata"].as_object_mut() else {
            return false;
        };
        meta.insert(
            "deletionTimestamp".into(),
            json!(store::rfc3339(now + period)),
        );
        meta.insert("deletionGracePeriodSeconds".into(), json!(period));
        true
    })?;
    let sim = sim.clone();
    let key = key.clone();
    tokio::spawn(async move {
        sim.runtime
            .terminate_pod(&key.namespace, &key.name, Duration::from_secs(period))
            .await;
        let _ = delete(&sim, &key, propagation, Some(0));
    });
    Ok(marked)
}

/// The garbage collector's look at an object written with
/// ownerReferences (its `attemptToDeleteItem`): when every owner it names
/// is absent (no object of that kind and name with that uid), the object
/// is deleted; when some owner exists, only the references to absent ones
/// are removed. An owner of a kind the simulator does not serve cannot be
/// resolved, and the garbage collector leaves such an object alone.
pub fn collect_if_dangling(sim: &Arc<Sim>, key: &Key) {
    let Some(object) = sim.store.get(key) else {
        return;
    };
    let references = owner_references(&object);
    if references.is_empty()
        || references
            .iter()
            .any(|r| r["kind"].as_str().and_then(resources::by_kind).is_none())
    {
        return;
    }
    let (solid, dangling): (Vec<Value>, Vec<Value>) = references
        .into_iter()
        .partition(|r| exists(sim, r, &key.namespace));
    if dangling.is_empty() {
        return;
    }
    if solid.is_empty() {
        let _ = delete(sim, key, Propagation::Cascade, None);
        return;
    }
    let _ = sim.store.modify(key, |object| {
        object["metadata"]["ownerReferences"] = json!(solid);
        true
    });
}

fn owner_references(object: &Value) -> Vec<Value> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Whether an owner reference names an object that exists: same kind, name
/// and uid, in the dependent's namespace or cluster-scoped.
fn exists(sim: &Sim, reference: &Value, namespace: &str) -> bool {
    let Some(resource) = reference["kind"].as_str().and_then(resources::by_kind) else {
        return false;
    };
    let namespace = if resource.namespaced { namespace } else { "" };
    let name = reference["name"].as_str().unwrap_or_default();
    sim.store
        .get(&Key::new(resource.name, namespace, name))
        .is_some_and(|owner| owner.pointer("/metadata/uid") == Some(&reference["uid"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_1123() {
        assert!(validate_name("web-0").is_ok());
        assert!(validate_name("a.b").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", "a/b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_round_trip() {
        assert_eq!(
            parse_rfc3339(&store::rfc3339(1_700_000_000)),
            Some(1_700_000_000)
        );
    }
}
