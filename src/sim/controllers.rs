//! The controller manager's Deployment and ReplicaSet controllers, as far
//! as `kubectl rollout status`, `scale`, `rollout restart` and `delete`
//! need them: a Deployment owns one ReplicaSet per pod template (named by
//! its `pod-template-hash`), a ReplicaSet keeps `spec.replicas` pods from
//! its template, and both report status the way kubectl reads it.
//! Owner references tie them together, so deleting a Deployment takes its
//! ReplicaSets and pods with it (`cluster::delete`'s garbage collection).
//!
//! A rollout replaces the old ReplicaSet's pods once the new one's are
//! ready (like a RollingUpdate with full surge), which is all the
//! strategies kubectl can tell apart from the outside.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::Sim;
use super::store::Key;

/// How often the controllers look at every Deployment and ReplicaSet.
const RESYNC: Duration = Duration::from_millis(200);

/// Runs the controllers until the simulator stops.
pub fn start(sim: Arc<Sim>) {
    let mut stop = sim.stop.subscribe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RESYNC);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.recv() => return,
            }
            reconcile_deployments(&sim);
            reconcile_replica_sets(&sim);
        }
    });
}

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn replicas(object: &Value) -> i64 {
    object
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// Whether `object` is controlled by the owner with `uid`.
fn owned_by(object: &Value, uid: &str) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r["uid"] == uid && r["controller"] == true)
        })
}

fn controller_reference(owner: &Value, api_version: &str, kind: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": text(owner, "/metadata/name"),
        "uid": text(owner, "/metadata/uid"),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The `pod-template-hash` of a template: stable for equal templates (FNV-1a
/// over its JSON, whose maps serde_json keeps sorted), spelt with the
/// alphabet Kubernetes uses for generated names.
pub fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in template.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (0..10)
        .map(|i| ALPHABET[((hash >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> Value {
    let now = super::store::now_rfc3339();
    json!({
        "type": kind,
        "status": if status { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    })
}

/// Writes `status` if it differs from the stored one (conditions compared
/// without their times), so an idle cluster sends no watch events.
fn set_status(sim: &Sim, key: &Key, status: Value) {
    let strip = |status: &Value| {
        let mut status = status.clone();
        if let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in conditions {
                if let Some(c) = c.as_object_mut() {
                    c.remove("lastUpdateTime");
                    c.remove("lastTransitionTime");
                }
            }
        }
        status
    };
    let _ = sim.store.modify(key, |object| {
        if strip(&object["status"]) == strip(&status) {
            return false;
        }
        object["status"] = status;
        true
    });
}

fn reconcile_deployments(sim: &Arc<Sim>) {
    let (deployments, _) = sim.store.list("deployments", None);
    if deployments.is_empty() {
        return;
    }
    let (sets, _) = sim.store.list("replicasets", None);
    for deployment in deployments {
        if deployment.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let namespace = text(&deployment, "/metadata/namespace").to_string();
        let name = text(&deployment, "/metadata/name").to_string();
        let uid = text(&deployment, "/metadata/uid").to_string();
        let wanted = replicas(&deployment);
        let mut template = deployment
            .pointer("/spec/template")
            .cloned()
            .unwrap_or(json!({}));
        let hash = template_hash(&template);
        template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
        let new_name = format!("{name}-{hash}");
        let owned: Vec<&Value> = sets
            .iter()
            .filter(|s| text(s, "/metadata/namespace") == namespace && owned_by(s, &uid))
            .collect();
        let new_set = owned
            .iter()
            .find(|s| text(s, "/metadata/name") == new_name)
            .copied();
        let revision = owned.len() + usize::from(new_set.is_none());
        match new_set {
            None => {
                let mut selector = deployment
                    .pointer("/spec/selector")
                    .cloned()
                    .unwrap_or(json!({}));
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let set = json!({
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {
                        "name": new_name,
                        "namespace": namespace,
                        "labels": template["metadata"]["labels"],
                        "annotations": {
                            "deployment.kubernetes.io/desired-replicas": wanted.to_string(),
                            "deployment.kubernetes.io/revision": revision.to_string(),
                        },
                        "ownerReferences": [controller_reference(&deployment, "apps/v1", "Deployment")],
                        "generation": 1,
                    },
                    "spec": {"replicas": wanted, "selector": selector, "template": template},
                    "status": {"replicas": 0},
                });
                let _ = sim
                    .store
                    .create(Key::new("replicasets", &namespace, &new_name), set);
            }
            Some(set) if replicas(set) != wanted => {
                let _ = sim
                    .store
                    .modify(&Key::new("replicasets", &namespace, &new_name), |set| {
                        set["spec"]["replicas"] = json!(wanted);
                        let generation = set
                            .pointer("/metadata/generation")
                            .and_then(Value::as_i64)
                            .unwrap_or(1);
                        set["metadata"]["generation"] = json!(generation + 1);
                        true
                    });
            }
            Some(_) => {}
        }
        let ready_of = |s: &Value, field: &str| {
            s.pointer(&format!("/status/{field}"))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        let new_ready = new_set.map_or(0, |s| ready_of(s, "readyReplicas"));
        // The old ReplicaSets give their pods up once the new one's are
        // all ready.
        if new_ready >= wanted {
            for old in owned
                .iter()
                .filter(|s| text(s, "/metadata/name") != new_name)
            {
                if replicas(old) != 0 {
                    let key = Key::new("replicasets", &namespace, text(old, "/metadata/name"));
                    let _ = sim.store.modify(&key, |set| {
                        set["spec"]["replicas"] = json!(0);
                        true
                    });
                }
            }
        }
        let total: i64 = owned.iter().map(|s| ready_of(s, "replicas")).sum();
        let ready: i64 = owned.iter().map(|s| ready_of(s, "readyReplicas")).sum();
        let updated = new_set.map_or(0, |s| ready_of(s, "replicas"));
        let complete = updated == wanted && total == wanted && new_ready == wanted;
        let mut status = json!({
            "observedGeneration": deployment.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [
                condition(
                    "Available",
                    ready >= wanted,
                    if ready >= wanted { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                    if ready >= wanted { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
                ),
                condition(
                    "Progressing",
                    true,
                    if complete { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
                    &if complete {
                        format!("ReplicaSet \"{new_name}\" has successfully progressed.")
                    } else {
                        format!("ReplicaSet \"{new_name}\" is progressing.")
                    },
                ),
            ],
        });
        if wanted > ready {
            status["unavailableReplicas"] = json!(wanted - ready);
        }
        set_status(sim, &Key::new("deployments", &namespace, &name), status);
    }
}

fn reconcile_replica_sets(sim: &Arc<Sim>) {
    let (sets, _) = sim.store.list("replicasets", None);
    if sets.is_empty() {
        // Most clusters here have none: no need to copy every pod.
        return;
    }
    let (pods, _) = sim.store.list("pods", None);
    for set in sets {
        if set.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let namespace = text(&set, "/metadata/namespace").to_string();
        let name = text(&set, "/metadata/name").to_string();
        let uid = text(&set, "/metadata/uid").to_string();
        let wanted = replicas(&set).max(0) as usize;
        // Pods on their way out no longer count, as for the real
        // controller.
        let mine: Vec<&Value> = pods
            .iter()
            .filter(|p| {
                text(p, "/metadata/namespace") == namespace
                    && owned_by(p, &uid)
                    && p.pointer("/metadata/deletionTimestamp").is_none()
            })
            .collect();
        if mine.len() < wanted {
            let template = set.pointer("/spec/template").cloned().unwrap_or(json!({}));
            for _ in mine.len()..wanted {
                let mut pod = json!({
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "generateName": format!("{name}-"),
                        "namespace": namespace,
                        "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
                        "ownerReferences": [controller_reference(&set, "apps/v1", "ReplicaSet")],
                    },
                    "spec": template.get("spec").cloned().unwrap_or(json!({})),
                });
                if let Some(annotations) = template.pointer("/metadata/annotations") {
                    pod["metadata"]["annotations"] = annotations.clone();
                }
                let Some(resource) = super::resources::find("", "v1", "pods") else {
                    return;
                };
                let target = super::api::Target {
                    resource,
                    namespace: namespace.clone(),
                    name: String::new(),
                    subresource: String::new(),
                };
                if let Err(error) = super::api::create(sim, &target, pod) {
                    tracing::warn!(replicaset = %name, %namespace, error = %error.message, "the ReplicaSet cannot create its pod");
                    break;
                }
            }
        } else if mine.len() > wanted {
            // The newest go first.
            let mut surplus = mine.clone();
            surplus.sort_by_key(|p| {
                std::cmp::Reverse(text(p, "/metadata/creationTimestamp").to_string())
            });
            for pod in surplus.into_iter().take(mine.len() - wanted) {
                let key = Key::new("pods", &namespace, text(pod, "/metadata/name"));
                let _ =
                    super::cluster::delete(sim, &key, super::cluster::Propagation::Cascade, None);
            }
        }
        let ready = mine
            .iter()
            .filter(|p| {
                p.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            })
            .count();
        let status = json!({
            "replicas": mine.len(),
            "fullyLabeledReplicas": mine.len(),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": set.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1),
        });
        set_status(sim, &Key::new("replicasets", &namespace, &name), status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_templates_hash_alike_and_changed_ones_do_not() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}});
        let mut b = a.clone();
        assert_eq!(template_hash(&a), template_hash(&b));
        b["metadata"]["annotations"] =
            json!({"kubectl.kubernetes.io/restartedAt": "2026-12-02T00:00:00Z"});
        assert_ne!(template_hash(&a), template_hash(&b));
        assert_eq!(template_hash(&a).len(), 10);
    }
}
