//! Strategic merge patch (`application/strategic-merge-patch+json`), as
//! apimachinery's `strategicpatch` applies it to the kinds the simulator
//! serves, for what `kubectl apply`, `kubectl patch` and `kubectl edit`
//! send.
//!
//! Lists with a patch merge key (`patchMergeKey`/`patchStrategy:"merge"` in
//! the Go types, e.g. containers by `name`) are merged element by element;
//! every other list is replaced, as in a JSON merge patch. Directives:
//! `$patch: replace|delete` (maps and list elements),
//! `$setElementOrder/<list>`, `$deleteFromPrimitiveList/<list>` and
//! `$retainKeys`. No directive is ever stored.
//!
//! Not covered: the Go code's placement of server-only list elements among
//! ordered ones (they go after the ordered elements here), and kinds the
//! simulator does not serve.

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error("invalid strategic merge patch: {0}")]
    Invalid(String),
}

/// How a list at some path merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    /// Elements are maps matched by this key.
    MergeKey(&'static str),
    /// A list of scalars merged as a set (`finalizers`).
    Primitive,
}

/// The merge keys of the Go types' `patchMergeKey` tags, by field path
/// (array levels do not add a segment). Pod specs first, then what every
/// kind's metadata and some statuses have.
fn list_strategy(kind: &str, path: &[&str]) -> Option<ListStrategy> {
    use ListStrategy::{MergeKey, Primitive};
    let container_lists = ["containers", "initContainers", "ephemeralContainers"];
    match (kind, path) {
        (_, ["metadata", "finalizers"]) => Some(Primitive),
        (_, ["metadata", "ownerReferences"]) => Some(MergeKey("uid")),
        ("Pod", ["spec", list]) if container_lists.contains(list) => Some(MergeKey("name")),
        ("Pod", ["spec", list, field]) if container_lists.contains(list) => match *field {
            "env" => Some(MergeKey("name")),
            "ports" => Some(MergeKey("containerPort")),
            "volumeMounts" => Some(MergeKey("mountPath")),
            "volumeDevices" => Some(MergeKey("devicePath")),
            _ => None,
        },
        (
            "Pod",
            [
                "spec",
                "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates",
            ],
        ) => Some(MergeKey("name")),
        ("Pod", ["spec", "hostAliases"]) => Some(MergeKey("ip")),
        ("Pod", ["spec", "topologySpreadConstraints"]) => Some(MergeKey("topologyKey")),
        ("Pod", ["status", "conditions"]) => Some(MergeKey("type")),
        ("Node", ["status", "conditions"]) => Some(MergeKey("type")),
        ("Node", ["status", "addresses"]) => Some(MergeKey("type")),
        _ => None,
    }
}

const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies `patch` to `original` (an object of `kind`).
pub fn apply(kind: &str, original: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let patch = patch
        .as_object()
        .ok_or_else(|| PatchError::Invalid("a patch must be a JSON object".into()))?;
    if !original.is_object() {
        *original = Value::Object(Map::new());
    }
    let target = original.as_object_mut().expect("made an object above");
    merge_map(kind, &mut Vec::new(), target, patch)
}

fn merge_map<'a>(
    kind: &str,
    path: &mut Vec<&'a str>,
    original: &mut Map<String, Value>,
    patch: &'a Map<String, Value>,
) -> Result<(), PatchError> {
    match patch.get("$patch").map(|p| p.as_str()) {
        None => {}
        Some(Some("replace")) => {
            *original = strip(patch);
            return Ok(());
        }
        // `$patch: delete` on a map is handled by its parent; at the top it
        // empties the object.
        Some(Some("delete")) => {
            original.clear();
            return Ok(());
        }
        Some(other) => {
            return Err(PatchError::Invalid(format!(
                "unknown patch type {other:?} in map"
            )));
        }
    }
    for (field, value) in patch {
        if field.starts_with('$') {
            continue;
        }
        path.push(field);
        let result = merge_field(kind, path, original, field, value);
        path.pop();
        result?;
    }
    for (field, value) in patch {
        if let Some(list) = field.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let doomed = value
                .as_array()
                .ok_or_else(|| PatchError::Invalid(format!("{field} must be a list")))?;
            if let Some(Value::Array(items)) = original.get_mut(list) {
                items.retain(|item| !doomed.contains(item));
            }
        }
    }
    for (field, value) in patch {
        if let Some(list) = field.strip_prefix(SET_ELEMENT_ORDER) {
            let order = value
                .as_array()
                .ok_or_else(|| PatchError::Invalid(format!("{field} must be a list")))?;
            path.push(list);
            let strategy = list_strategy(kind, path);
            path.pop();
            if let Some(Value::Array(items)) = original.get_mut(list) {
                reorder(items, order, strategy);
            }
        }
    }
    if let Some(retain) = patch.get("$retainKeys") {
        let keys = retain
            .as_array()
            .ok_or_else(|| PatchError::Invalid("$retainKeys must be a list".into()))?;
        original.retain(|k, _| keys.iter().any(|key| key == k));
    }
    Ok(())
}

fn merge_field<'a>(
    kind: &str,
    path: &mut Vec<&'a str>,
    original: &mut Map<String, Value>,
    field: &str,
    value: &'a Value,
) -> Result<(), PatchError> {
    match value {
        Value::Null => {
            original.remove(field);
        }
        Value::Object(patch) if patch.get("$patch") == Some(&Value::from("delete")) => {
            original.remove(field);
        }
        Value::Object(patch) => match original.get_mut(field) {
            Some(Value::Object(existing)) => merge_map(kind, path, existing, patch)?,
            _ => {
                let mut fresh = Map::new();
                merge_map(kind, path, &mut fresh, patch)?;
                original.insert(field.to_string(), Value::Object(fresh));
            }
        },
        Value::Array(patch) => {
            let merged = match (list_strategy(kind, path), original.remove(field)) {
                (Some(strategy), Some(Value::Array(existing))) => {
                    merge_list(kind, path, existing, patch, strategy)?
                }
                (Some(strategy), _) => merge_list(kind, path, Vec::new(), patch, strategy)?,
                (None, _) => patch.iter().map(strip_value).collect(),
            };
            original.insert(field.to_string(), Value::Array(merged));
        }
        scalar => {
            original.insert(field.to_string(), scalar.clone());
        }
    }
    Ok(())
}

fn merge_list<'a>(
    kind: &str,
    path: &mut Vec<&'a str>,
    mut original: Vec<Value>,
    patch: &'a [Value],
    strategy: ListStrategy,
) -> Result<Vec<Value>, PatchError> {
    let replace = patch
        .iter()
        .any(|item| item.get("$patch") == Some(&Value::from("replace")));
    if replace {
        return Ok(patch
            .iter()
            .filter(|item| item.get("$patch").is_none())
            .map(strip_value)
            .collect());
    }
    let key = match strategy {
        ListStrategy::Primitive => {
            for item in patch {
                if !original.contains(item) {
                    original.push(item.clone());
                }
            }
            return Ok(original);
        }
        ListStrategy::MergeKey(key) => key,
    };
    for item in patch {
        let element = item.as_object().ok_or_else(|| {
            PatchError::Invalid(format!("{}: list elements must be maps", path.join(".")))
        })?;
        let wanted = element.get(key).ok_or_else(|| {
            PatchError::Invalid(format!(
                "{}: map: {item} does not contain declared merge key: {key}",
                path.join(".")
            ))
        })?;
        let position = original.iter().position(|o| o.get(key) == Some(wanted));
        match (element.get("$patch").and_then(Value::as_str), position) {
            (Some("delete"), Some(position)) => {
                original.remove(position);
            }
            (Some("delete"), None) => {}
            (_, Some(position)) => {
                if let Value::Object(existing) = &mut original[position] {
                    merge_map(kind, path, existing, element)?;
                }
            }
            (_, None) => {
                let mut fresh = Map::new();
                merge_map(kind, path, &mut fresh, element)?;
                original.push(Value::Object(fresh));
            }
        }
    }
    Ok(original)
}

/// Orders `items` as `order` lists them (by merge key, or by value for
/// scalars); items the order does not name keep their relative order after
/// the named ones.
fn reorder(items: &mut [Value], order: &[Value], strategy: Option<ListStrategy>) {
    let identity = |item: &Value| -> Value {
        match strategy {
            Some(ListStrategy::MergeKey(key)) => item.get(key).cloned().unwrap_or(Value::Null),
            _ => item.clone(),
        }
    };
    let rank = |item: &Value| {
        let id = identity(item);
        order
            .iter()
            .position(|o| match strategy {
                Some(ListStrategy::MergeKey(key)) => o.get(key) == Some(&id),
                _ => *o == id,
            })
            .unwrap_or(usize::MAX)
    };
    // A stable sort keeps unnamed items in their order, after the others.
    items.sort_by_key(|item| rank(item));
}

/// A patch value with every directive removed, for storing as is.
fn strip_value(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(strip(map)),
        Value::Array(items) => Value::Array(items.iter().map(strip_value).collect()),
        other => other.clone(),
    }
}

fn strip(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), strip_value(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(kind: &str, original: Value, patch: Value) -> Value {
        let mut object = original;
        apply(kind, &mut object, &patch).expect("patch applies");
        object
    }

    fn pod() -> Value {
        json!({"metadata": {"name": "web", "finalizers": ["a", "b"]}, "spec": {"containers": [
            {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "side", "image": "side:1"},
        ]}})
    }

    #[test]
    fn kubectl_apply_of_a_changed_image_merges_by_name_and_stores_no_directive() {
        // What kubectl apply sends when one container's image changed.
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "side"}],
            "containers": [{"name": "side", "image": "side:2"}],
        }});
        let pod = patched("Pod", pod(), patch);
        assert_eq!(pod["spec"]["containers"][1]["image"], "side:2");
        assert_eq!(pod["spec"]["containers"][0]["env"][1]["value"], "2");
        assert!(!pod.to_string().contains('$'), "{pod}");
    }

    #[test]
    fn set_element_order_reorders_and_new_elements_are_added() {
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "new"}, {"name": "side"}, {"name": "app"}],
            "containers": [{"name": "new", "image": "new:1"}],
        }});
        let pod = patched("Pod", pod(), patch);
        let names: Vec<&str> = pod["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["new", "side", "app"]);
    }

    #[test]
    fn patch_delete_removes_an_element_and_nested_lists_merge_by_their_own_key() {
        let patch = json!({"spec": {"containers": [
            {"name": "side", "$patch": "delete"},
            {"name": "app", "env": [{"name": "A", "$patch": "delete"}, {"name": "C", "value": "3"}]},
        ]}});
        let pod = patched("Pod", pod(), patch);
        assert_eq!(
            pod["spec"]["containers"],
            json!([{"name": "app", "image": "app:1", "env": [{"name": "B", "value": "2"}, {"name": "C", "value": "3"}]}])
        );
    }

    #[test]
    fn patch_replace_replaces_a_list_and_a_map() {
        let patch = json!({"metadata": {"labels": {"$patch": "replace", "x": "1"}}, "spec": {"containers": [
            {"$patch": "replace"}, {"name": "only", "image": "only:1"},
        ]}});
        let mut original = pod();
        original["metadata"]["labels"] = json!({"old": "1"});
        let pod = patched("Pod", original, patch);
        assert_eq!(pod["metadata"]["labels"], json!({"x": "1"}));
        assert_eq!(
            pod["spec"]["containers"],
            json!([{"name": "only", "image": "only:1"}])
        );
    }

    #[test]
    fn primitive_lists_merge_as_sets_and_delete_from_primitive_list_removes() {
        let patch = json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]}});
        let pod = patched("Pod", pod(), patch);
        assert_eq!(pod["metadata"]["finalizers"], json!(["b", "c"]));
    }

    #[test]
    fn lists_without_a_merge_key_are_replaced_and_null_removes_a_field() {
        let original =
            json!({"metadata": {"name": "r", "labels": {"a": "1"}}, "rules": [{"verbs": ["get"]}]});
        let patch = json!({"metadata": {"labels": {"a": null}}, "rules": [{"verbs": ["list"]}]});
        let role = patched("Role", original, patch);
        assert_eq!(role["rules"], json!([{"verbs": ["list"]}]));
        assert_eq!(role["metadata"]["labels"], json!({}));
    }

    #[test]
    fn retain_keys_drops_the_fields_it_does_not_name() {
        let original = json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}});
        let patch = json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/x"}}]}});
        let pod = patched("Pod", original, patch);
        assert_eq!(
            pod["spec"]["volumes"],
            json!([{"name": "v", "hostPath": {"path": "/x"}}])
        );
    }

    #[test]
    fn an_element_without_its_merge_key_is_refused() {
        let mut object = pod();
        let error = apply(
            "Pod",
            &mut object,
            &json!({"spec": {"containers": [{"image": "x"}]}}),
        )
        .unwrap_err();
        assert!(error.to_string().contains("merge key: name"), "{error}");
    }
}
