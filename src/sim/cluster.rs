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
        let ready = if node.ready {
            json!({"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"})
        } else {
            json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."})
        };
        let object = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node.name, "labels": labels},
            "spec": {"taints": taints},
            "status": {
                "conditions": [ready],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": node.name}],
                "nodeInfo": {"kubeletVersion": format!("v1.{}.0", sim.minor), "containerRuntimeVersion": "containerd://1.7.0", "operatingSystem": "linux", "architecture": "amd64"},
            },
        });
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
        "rules": [{"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]}],
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

fn create_raw(sim: &Sim, key: Key, object: Value) -> Result<(), LoadError> {
    let described = format!("{} {}/{}", key.resource, key.namespace, key.name);
    sim.store
        .create(key, object)
        .map(|_| ())
        .map_err(|e| LoadError::Invalid(format!("{described}: {e}")))
}

fn node_ready(sim: &Sim, node: &str) -> Option<bool> {
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

/// The scheduler's choice: a Ready node whose NoSchedule taints the pod
/// tolerates.
fn schedule(sim: &Sim, pod: &Value) -> Option<String> {
    let (nodes, _) = sim.store.list("nodes", None);
    nodes.iter().find_map(|node| {
        let name = node.pointer("/metadata/name")?.as_str()?;
        let taints = node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let schedulable = taints
            .iter()
            .filter(|t| t["effect"] == "NoSchedule")
            .all(|t| tolerates(pod, t));
        (node_ready(sim, name)? && schedulable).then(|| name.to_string())
    })
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
            if let Some(node) = schedule(&sim, &pod) {
                let _ = sim.store.modify(&key, |p| {
                    p["spec"]["nodeName"] = json!(node);
                    set_condition(p, "PodScheduled", "True", None, None);
                    true
                });
                break node;
            }
            let total = sim.store.list("nodes", None).0.len();
            let _ = sim.store.modify(&key, |p| {
                if p.pointer("/status/conditions/0/reason") == Some(&json!("Unschedulable")) {
                    return false;
                }
                let message = format!("0/{total} nodes are available: {total} node(s) were not ready or had untolerated taints.");
                set_condition(p, "PodScheduled", "False", Some("Unschedulable"), Some(&message));
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
                        json!({"name": c["name"], "image": c["image"], "ready": false, "restartCount": 0, "started": false, "state": {"waiting": waiting}})
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
    });
}

/// Whether the owner an ownerReference names still exists (same kind,
/// name and uid; namespaced owners live in the dependent's namespace).
fn owner_exists(sim: &Sim, namespace: &str, owner: &Value) -> bool {
    let Some(resource) = resources::RESOURCES
        .iter()
        .find(|r| Some(r.kind) == owner["kind"].as_str() && !r.review)
    else {
        return false;
    };
    let namespace = if resource.namespaced { namespace } else { "" };
    let name = owner["name"].as_str().unwrap_or_default();
    sim.store
        .get(&Key::new(resource.name, namespace, name))
        .is_some_and(|o| o.pointer("/metadata/uid") == Some(&owner["uid"]))
}

/// Deletes an object and what depends on it: a pod's processes, a
/// namespace's contents, and every object whose ownerReferences name it
/// (background propagation by the garbage collector).
pub fn delete(sim: &Sim, key: &Key) -> Result<Value, StoreError> {
    let deleted = sim.store.delete(key)?;
    if key.resource == "pods" {
        sim.runtime.kill_pod(&key.namespace, &key.name);
    }
    if key.resource == "namespaces" {
        for resource in resources::RESOURCES.iter().filter(|r| r.namespaced) {
            for object in sim.store.list(resource.name, Some(&key.name)).0 {
                if let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str) {
                    let _ = delete(sim, &Key::new(resource.name, &key.name, name));
                }
            }
        }
    }
    if let Some(uid) = deleted.pointer("/metadata/uid").and_then(Value::as_str) {
        for resource in resources::RESOURCES {
            for object in sim.store.list(resource.name, None).0 {
                let refs = object
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if !refs.iter().any(|r| r["uid"] == uid) {
                    continue;
                }
                let name = object
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let namespace = object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let key = Key::new(resource.name, namespace, name);
                // As the garbage collector: a dependent goes when none of
                // its owners is left; with an owner still there, only the
                // dangling reference is removed.
                let remaining: Vec<Value> = refs
                    .into_iter()
                    .filter(|r| r["uid"] != uid && owner_exists(sim, namespace, r))
                    .collect();
                if remaining.is_empty() {
                    let _ = delete(sim, &key);
                } else {
                    let mut updated = object.clone();
                    if let Some(meta) = updated.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.insert("ownerReferences".into(), Value::Array(remaining));
                        meta.remove("resourceVersion");
                    }
                    let _ = sim.store.update(&key, updated);
                }
            }
        }
    }
    Ok(deleted)
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
