//! RBAC authorization as kube-apiserver's RBAC authorizer decides it, over
//! the Role/ClusterRole/RoleBinding/ClusterRoleBinding objects in the store.
//!
//! Pure decision logic plus the wording of the API server's refusals; the
//! HTTP layer decides which attributes a request has.

use serde_json::Value;

use super::store::Store;

/// The identity a request is made as (after impersonation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

/// What a request wants to do, as the API server's RequestInfo describes it.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

impl Attributes {
    pub fn new(verb: &str, api_group: &str, resource: &str, namespace: &str, name: &str) -> Self {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        Attributes {
            verb: verb.into(),
            api_group: api_group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    fn full_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The API server's Forbidden message (apiserver `forbiddenMessage`).
    pub fn forbidden_message(&self, user: &UserInfo) -> String {
        let resource = self.full_resource();
        let scope = if self.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{}\"", self.namespace)
        };
        let subject = if self.name.is_empty() {
            self.resource.clone()
        } else {
            format!("{} \"{}\"", self.resource, self.name)
        };
        format!(
            "{subject} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
            user.name, self.verb, self.api_group
        )
    }
}

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn rule_allows(rule: &Value, attrs: &Attributes) -> bool {
    let verb_ok = strings(&rule["verbs"]).any(|v| v == "*" || v == attrs.verb);
    let group_ok = strings(&rule["apiGroups"]).any(|g| g == "*" || g == attrs.api_group);
    let full = attrs.full_resource();
    let resource_ok = strings(&rule["resources"]).any(|r| {
        r == "*"
            || r == full
            || (attrs.subresource.is_empty() && r == attrs.resource)
            || r.strip_prefix("*/")
                .is_some_and(|sub| sub == attrs.subresource)
    });
    let names: Vec<&str> = strings(&rule["resourceNames"]).collect();
    let name_ok = names.is_empty() || names.contains(&attrs.name.as_str());
    verb_ok && group_ok && resource_ok && name_ok
}

fn subject_matches(subject: &Value, user: &UserInfo, binding_namespace: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str() {
        Some("User") => name == user.name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let namespace = subject["namespace"].as_str().unwrap_or(binding_namespace);
            user.name == format!("system:serviceaccount:{namespace}:{name}")
        }
        _ => false,
    }
}

/// Whether RBAC allows `user` to do `attrs`.
pub fn allowed(store: &Store, user: &UserInfo, attrs: &Attributes) -> bool {
    if user.groups.iter().any(|g| g == "system:masters") {
        return true;
    }
    let role_rules = |kind: &str, namespace: &str, name: &str| -> Vec<Value> {
        let (resource, ns) = if kind == "ClusterRole" {
            ("clusterroles", "")
        } else {
            ("roles", namespace)
        };
        store
            .get(&super::store::Key::new(resource, ns, name))
            .and_then(|role| role["rules"].as_array().cloned())
            .unwrap_or_default()
    };
    let binding_allows = |binding: &Value, namespace: &str| -> bool {
        let bound = binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| subject_matches(s, user, namespace));
        bound && {
            let kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
            let name = binding["roleRef"]["name"].as_str().unwrap_or_default();
            role_rules(kind, namespace, name)
                .iter()
                .any(|rule| rule_allows(rule, attrs))
        }
    };
    let (cluster_bindings, _) = store.list("clusterrolebindings", None);
    if cluster_bindings.iter().any(|b| binding_allows(b, "")) {
        return true;
    }
    if attrs.namespace.is_empty() {
        return false;
    }
    let (bindings, _) = store.list("rolebindings", Some(&attrs.namespace));
    bindings.iter().any(|b| binding_allows(b, &attrs.namespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::store::Key;
    use serde_json::json;

    fn store() -> Store {
        let s = Store::new();
        s.create(
            Key::new("roles", "default", "exec"),
            json!({"rules": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]}),
        )
        .unwrap();
        s.create(
            Key::new("rolebindings", "default", "bob-exec"),
            json!({"roleRef": {"kind": "Role", "name": "exec"},
                   "subjects": [{"kind": "User", "name": "bob"}]}),
        )
        .unwrap();
        s
    }

    #[test]
    fn subresource_rules_match_exactly() {
        let s = store();
        let bob = UserInfo {
            name: "bob".into(),
            groups: vec![],
        };
        assert!(allowed(
            &s,
            &bob,
            &Attributes::new("create", "", "pods/exec", "default", "web-0")
        ));
        assert!(!allowed(
            &s,
            &bob,
            &Attributes::new("get", "", "pods/exec", "default", "web-0")
        ));
        assert!(!allowed(
            &s,
            &bob,
            &Attributes::new("create", "", "pods", "default", "")
        ));
        assert!(!allowed(
            &s,
            &bob,
            &Attributes::new("create", "", "pods/exec", "prod", "web-0")
        ));
    }

    #[test]
    fn forbidden_message_matches_api_server() {
        let bob = UserInfo {
            name: "bob".into(),
            groups: vec![],
        };
        let attrs = Attributes::new("create", "", "pods/exec", "prod", "web-0");
        assert_eq!(
            attrs.forbidden_message(&bob),
            "pods \"web-0\" is forbidden: User \"bob\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"prod\""
        );
        let list = Attributes::new("list", "", "nodes", "", "");
        assert_eq!(
            list.forbidden_message(&bob),
            "nodes is forbidden: User \"bob\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        );
    }
}
