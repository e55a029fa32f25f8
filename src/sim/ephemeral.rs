//! The `pods/ephemeralcontainers` subresource, as kube-apiserver serves it
//! (`EphemeralContainersREST` with `podEphemeralContainersStrategy`), and
//! the kubelet's start of the containers it adds.
//!
//! GET answers the pod; PATCH (any patch type) and PUT change the pod's
//! `spec.ephemeralContainers` and nothing else (every other change is
//! dropped, as `dropNonEphemeralContainerUpdates` does), after the checks
//! of `validateEphemeralContainers` and `ValidatePodEphemeralContainersUpdate`
//! in `pkg/apis/core/validation`: only additions, names unique among all the
//! pod's containers, `targetContainerName` naming a regular container, none
//! of the fields ephemeral containers may not have. The errors are worded as
//! apimachinery's `field.Error` and `NewInvalid` word them.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::Sim;
use super::api::{Target, apply_patch, get, key, read_json, store_error, with_type};
use super::body::Body;
use super::container::{self, Kind};
use super::rbac::UserInfo;
use super::status::{ApiError, json_response};
use super::store::Key;

/// The container fields an ephemeral container may not set
/// (`allowedEphemeralContainerFields` marks them false), by JSON name.
const FORBIDDEN_FIELDS: &[&str] = &[
    "ports",
    "resources",
    "resizePolicy",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "restartPolicy",
];

pub async fn handle(
    sim: &Arc<Sim>,
    user: &UserInfo,
    target: &Target,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let verb = super::api::authorize_subresource(sim, user, target, request.method())?;
    let old = get(sim, target)?;
    let new = match verb {
        "get" => return Ok(json_response(StatusCode::OK, &old)),
        "patch" => {
            let content_type = request
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = read_json(request).await?;
            apply_patch(sim, target, &content_type, body)?
        }
        _ => {
            let body = read_json(request).await?;
            let name = body
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if name != target.name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({name}) does not match the name on the URL ({})",
                    target.name
                )));
            }
            body
        }
    };
    let updated = update(sim, target, &old, &new)?;
    Ok(json_response(StatusCode::OK, &updated))
}

/// Stores `new`'s ephemeral containers into the pod and starts the added
/// ones.
fn update(sim: &Arc<Sim>, target: &Target, old: &Value, new: &Value) -> Result<Value, ApiError> {
    let mut pod = old.clone();
    let mut added = new["spec"]["ephemeralContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for container in &mut added {
        default_container(container);
    }
    pod["spec"]["ephemeralContainers"] = json!(added);
    if added.is_empty()
        && let Some(spec) = pod["spec"].as_object_mut()
    {
        spec.remove("ephemeralContainers");
    }
    // The request's resourceVersion is its precondition.
    match new.pointer("/metadata/resourceVersion") {
        Some(version) => pod["metadata"]["resourceVersion"] = version.clone(),
        None => {
            if let Some(meta) = pod["metadata"].as_object_mut() {
                meta.remove("resourceVersion");
            }
        }
    }
    let errors = validate(old, &pod);
    if !errors.is_empty() {
        return Err(invalid(&target.name, &errors));
    }
    super::api::admit_update(sim, target, &pod, old)?;
    let updated = sim
        .store
        .update(&key(target), with_type(target.resource, pod))
        .map_err(|e| store_error(e, target))?;
    let existing: Vec<&Value> = old["spec"]["ephemeralContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| &c["name"])
        .collect();
    for container in updated["spec"]["ephemeralContainers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if !existing.contains(&&container["name"]) {
            start(sim.clone(), key(target), container.clone());
        }
    }
    Ok(updated)
}

/// The API server's defaults for an ephemeral container (`SetDefaults_*`):
/// termination message path and policy, and the pull policy by tag.
fn default_container(container: &mut Value) {
    let Some(fields) = container.as_object_mut() else {
        return;
    };
    fields
        .entry("terminationMessagePath")
        .or_insert(json!("/dev/termination-log"));
    fields
        .entry("terminationMessagePolicy")
        .or_insert(json!("File"));
    let image = fields
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default();
    // A tag follows the last ':' after the last '/'; a digest pins it.
    let last = image.rsplit('/').next().unwrap_or(image);
    let tag = if image.contains('@') {
        None
    } else {
        last.split_once(':').map(|(_, tag)| tag)
    };
    let policy = match tag {
        None if !image.contains('@') => "Always",
        Some("latest") => "Always",
        _ => "IfNotPresent",
    };
    fields.entry("imagePullPolicy").or_insert(json!(policy));
}

/// One `field.Error`: its path, its type (as `field.ErrorType` names it),
/// the value shown for it, and a detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
    pub value: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    Duplicate,
    NotFound,
    Forbidden,
}

impl FieldErrorKind {
    fn text(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::NotFound => "Not found",
            FieldErrorKind::Forbidden => "Forbidden",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::NotFound => "FieldValueNotFound",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
        }
    }
}

impl FieldError {
    fn new(field: String, kind: FieldErrorKind, value: Option<&str>, detail: &str) -> Self {
        FieldError {
            field,
            kind,
            value: value.map(|v| format!("{v:?}")),
            detail: detail.to_string(),
        }
    }

    /// `field.Error.ErrorBody()`: the type, the value for the kinds that
    /// show one, then the detail.
    pub fn body(&self) -> String {
        let mut body = self.kind.text().to_string();
        if let Some(value) = &self.value {
            body = format!("{body}: {value}");
        }
        if !self.detail.is_empty() {
            body = format!("{body}: {}", self.detail);
        }
        body
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// `errors.NewInvalid` for a pod: 422 with one cause per field error.
fn invalid(name: &str, errors: &[FieldError]) -> ApiError {
    let listed = match errors {
        [one] => one.to_string(),
        many => format!(
            "[{}]",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let causes: Vec<Value> = errors
        .iter()
        .map(|e| json!({"reason": e.kind.reason(), "message": e.body(), "field": e.field}))
        .collect();
    ApiError {
        details: Some(json!({"name": name, "kind": "Pod", "causes": causes})),
        ..ApiError::new(422, "Invalid", format!("Pod {name:?} is invalid: {listed}"))
    }
}

/// DNS-1123 label (`validation.IsDNS1123Label`), the rule for container
/// names; gives the message the API server adds.
fn dns_label_error(name: &str) -> Option<&'static str> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    (!ok).then_some(
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
    )
}

/// The checks of an ephemeral containers update, in the API server's
/// order: each container of the new list, then what changed from the old.
pub fn validate(old: &Value, new: &Value) -> Vec<FieldError> {
    use FieldErrorKind::*;
    let mut errors = Vec::new();
    let names = |list: &str, pod: &Value| -> Vec<String> {
        pod["spec"][list]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    };
    let others: Vec<String> = [names("containers", new), names("initContainers", new)].concat();
    let mut all = others.clone();
    let ephemeral = new["spec"]["ephemeralContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, container) in ephemeral.iter().enumerate() {
        let path = format!("spec.ephemeralContainers[{i}]");
        let name = container["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            errors.push(FieldError::new(format!("{path}.name"), Required, None, ""));
        } else if let Some(why) = dns_label_error(name) {
            errors.push(FieldError::new(
                format!("{path}.name"),
                Invalid,
                Some(name),
                why,
            ));
        }
        let image = container["image"].as_str().unwrap_or_default();
        if image.is_empty() {
            errors.push(FieldError::new(format!("{path}.image"), Required, None, ""));
        } else if image.trim() != image {
            errors.push(FieldError::new(
                format!("{path}.image"),
                Invalid,
                Some(image),
                "must not have leading or trailing whitespace",
            ));
        }
        if !name.is_empty() {
            if all.iter().any(|n| n == name) {
                errors.push(FieldError::new(
                    format!("{path}.name"),
                    Duplicate,
                    Some(name),
                    "",
                ));
            } else {
                all.push(name.to_string());
            }
        }
        if let Some(target) = container["targetContainerName"]
            .as_str()
            .filter(|t| !t.is_empty())
            && !others.iter().any(|n| n == target)
        {
            errors.push(FieldError::new(
                format!("{path}.targetContainerName"),
                NotFound,
                Some(target),
                "",
            ));
        }
        for field in FORBIDDEN_FIELDS {
            let set = match container.get(*field) {
                None | Some(Value::Null) => false,
                Some(Value::Array(a)) => !a.is_empty(),
                Some(Value::Object(o)) => !o.is_empty(),
                Some(_) => true,
            };
            if set {
                errors.push(FieldError::new(
                    format!("{path}.{field}"),
                    Forbidden,
                    None,
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
        for (m, mount) in container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if mount["subPath"].as_str().is_some_and(|s| !s.is_empty()) {
                errors.push(FieldError::new(
                    format!("{path}.volumeMounts[{m}].subPath"),
                    Forbidden,
                    None,
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
    }
    for existing in old["spec"]["ephemeralContainers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = existing["name"].as_str().unwrap_or_default();
        match ephemeral.iter().find(|c| c["name"] == existing["name"]) {
            None => errors.push(FieldError::new(
                "spec.ephemeralContainers".into(),
                Forbidden,
                None,
                &format!("existing ephemeral containers {name:?} may not be removed\n"),
            )),
            Some(now) if now != existing => errors.push(FieldError::new(
                "spec.ephemeralContainers".into(),
                Forbidden,
                None,
                &format!(
                    "existing ephemeral containers {name:?} may not be changed\n{}",
                    difference(existing, now)
                ),
            )),
            Some(_) => {}
        }
    }
    errors
}

/// The changed fields of a container, one `-`/`+` line pair each, in the
/// spirit of the go-cmp diff the API server appends (its exact layout is
/// go-cmp's own and is not reproduced).
fn difference(old: &Value, new: &Value) -> String {
    let empty = serde_json::Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = String::from("  core.EphemeralContainer{\n");
    for key in keys {
        let (before, after) = (old.get(key), new.get(key));
        if before != after {
            if let Some(before) = before {
                out.push_str(&format!("- \t{key}: {before},\n"));
            }
            if let Some(after) = after {
                out.push_str(&format!("+ \t{key}: {after},\n"));
            }
        }
    }
    out.push_str("  }\n");
    out
}

/// The kubelet's side: once it sees the new container (its pod running on
/// a Ready node), it pulls the image and starts the container, then posts
/// the status: `waiting` while it creates it, `running`, or the pull
/// failure.
fn start(sim: Arc<Sim>, key: Key, spec: Value) {
    tokio::spawn(async move {
        let name = spec["name"].clone();
        let image = spec["image"].as_str().unwrap_or_default().to_string();
        let status = |state: Value| {
            json!({
                "name": name, "image": image, "imageID": "", "ready": false,
                "restartCount": 0, "state": state, "lastState": {},
            })
        };
        let running = sim.store.get(&key).is_some_and(|pod| {
            pod.pointer("/status/phase") == Some(&json!("Running"))
                && pod
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .and_then(|node| super::cluster::node_ready(&sim, node))
                    == Some(true)
        });
        if !running {
            // The kubelet starts nothing in a pod that is not running.
            return;
        }
        let _ = sim.store.modify(&key, |pod| {
            set_ephemeral_status(
                pod,
                status(json!({"waiting": {"reason": "ContainerCreating"}})),
            );
            true
        });
        tokio::time::sleep(Duration::from_millis(sim.scenario.pod_start_delay_ms)).await;
        if sim.scenario.missing_images.contains(&image) {
            let message = format!(
                "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": {image}: not found"
            );
            let _ = sim.store.modify(&key, |pod| {
                set_ephemeral_status(
                    pod,
                    status(json!({"waiting": {"reason": "ErrImagePull", "message": message}})),
                );
                true
            });
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = sim.store.modify(&key, |pod| {
                let message = format!("Back-off pulling image \"{image}\"");
                set_ephemeral_status(
                    pod,
                    status(json!({"waiting": {"reason": "ImagePullBackOff", "message": message}})),
                );
                true
            });
            return;
        }
        let id = format!(
            "containerd://{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let running = container::running_status(&spec, Kind::Ephemeral, &id, 0, None);
        container::run(sim, key, spec, Kind::Ephemeral, id, 0, Some(running));
    });
}

fn set_ephemeral_status(pod: &mut Value, status: Value) {
    let mut statuses: Vec<Value> = pod["status"]["ephemeralContainerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s["name"] != status["name"])
        .collect();
    statuses.push(status);
    pod["status"]["ephemeralContainerStatuses"] = json!(statuses);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ephemeral: Value) -> Value {
        json!({"spec": {"containers": [{"name": "app", "image": "x"}], "ephemeralContainers": ephemeral}})
    }

    #[test]
    fn an_addition_naming_an_existing_target_is_valid() {
        let old = pod(json!([]));
        let new = pod(
            json!([{"name": "debugger", "image": "busybox:1.36", "targetContainerName": "app"}]),
        );
        assert_eq!(validate(&old, &new), vec![]);
    }

    #[test]
    fn errors_are_worded_as_the_api_server_words_them() {
        let old = pod(json!([{"name": "d1", "image": "busybox:1.36"}]));
        let new = pod(json!([
            {"name": "d1", "image": "busybox:1.37"},
            {"name": "app", "image": "busybox", "targetContainerName": "nope", "ports": [{"containerPort": 80}]},
        ]));
        let texts: Vec<String> = validate(&old, &new).iter().map(|e| e.to_string()).collect();
        assert_eq!(
            texts[0],
            "spec.ephemeralContainers[1].name: Duplicate value: \"app\""
        );
        assert_eq!(
            texts[1],
            "spec.ephemeralContainers[1].targetContainerName: Not found: \"nope\""
        );
        assert_eq!(
            texts[2],
            "spec.ephemeralContainers[1].ports: Forbidden: cannot be set for an Ephemeral Container"
        );
        assert!(
            texts[3].starts_with(
                "spec.ephemeralContainers: Forbidden: existing ephemeral containers \"d1\" may not be changed\n"
            ),
            "{}",
            texts[3]
        );
        let removed = validate(&old, &pod(json!([])));
        assert_eq!(
            removed[0].to_string(),
            "spec.ephemeralContainers: Forbidden: existing ephemeral containers \"d1\" may not be removed\n"
        );
    }

    #[test]
    fn pull_policy_defaults_by_tag() {
        for (image, policy) in [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("busybox:1.36", "IfNotPresent"),
            ("registry:5000/busybox", "Always"),
            ("busybox@sha256:abc", "IfNotPresent"),
        ] {
            let mut container = json!({"name": "d", "image": image});
            default_container(&mut container);
            assert_eq!(container["imagePullPolicy"], policy, "{image}");
        }
    }
}
