//! The resources the simulator serves and the discovery documents that
//! describe them (`/api`, `/api/v1`, `/apis`, `/apis/GROUP/VERSION`).

use serde_json::{Value, json};

#[derive(Debug)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub name: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Create-only review kinds are answered, never stored.
    pub review: bool,
}

const CRUD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub const RESOURCES: &[Resource] = &[
    Resource {
        group: "admissionregistration.k8s.io",
        version: "v1",
        name: "validatingadmissionpolicies",
        kind: "ValidatingAdmissionPolicy",
        namespaced: false,
        short_names: &[],
        review: false,
    },
    Resource {
        group: "admissionregistration.k8s.io",
        version: "v1",
        name: "validatingadmissionpolicybindings",
        kind: "ValidatingAdmissionPolicyBinding",
        namespaced: false,
        short_names: &[],
        review: false,
    },
    Resource {
        group: "",
        version: "v1",
        name: "namespaces",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        review: false,
    },
    Resource {
        group: "",
        version: "v1",
        name: "nodes",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        review: false,
    },
    Resource {
        group: "",
        version: "v1",
        name: "pods",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        review: false,
    },
    Resource {
        group: "",
        version: "v1",
        name: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        review: false,
    },
    Resource {
        group: "",
        version: "v1",
        name: "secrets",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        review: false,
    },
    Resource {
        group: "",
        version: "v1",
        name: "serviceaccounts",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        review: false,
    },
    Resource {
        group: "apps",
        version: "v1",
        name: "deployments",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        review: false,
    },
    Resource {
        group: "apps",
        version: "v1",
        name: "replicasets",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        review: false,
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        name: "leases",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        review: false,
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        name: "roles",
        kind: "Role",
        namespaced: true,
        short_names: &[],
        review: false,
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        name: "rolebindings",
        kind: "RoleBinding",
        namespaced: true,
        short_names: &[],
        review: false,
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        name: "clusterroles",
        kind: "ClusterRole",
        namespaced: false,
        short_names: &[],
        review: false,
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        name: "clusterrolebindings",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short_names: &[],
        review: false,
    },
    Resource {
        group: "authentication.k8s.io",
        version: "v1",
        name: "selfsubjectreviews",
        kind: "SelfSubjectReview",
        namespaced: false,
        short_names: &[],
        review: true,
    },
    Resource {
        group: "authorization.k8s.io",
        version: "v1",
        name: "subjectaccessreviews",
        kind: "SubjectAccessReview",
        namespaced: false,
        short_names: &[],
        review: true,
    },
    Resource {
        group: "authorization.k8s.io",
        version: "v1",
        name: "selfsubjectaccessreviews",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
        short_names: &[],
        review: true,
    },
];

/// Subresources of pods served by the simulator, with the kind and verbs
/// the API server's discovery gives them.
/// The Kubernetes minor version this process simulates (one simulator per
/// process, set once at its start): kinds newer than it are not served,
/// as its API server would not know them.
static MINOR: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Sets the simulated minor version (first call wins).
pub fn set_minor(minor: u32) {
    let _ = MINOR.set(minor);
}

/// The first minor version that serves `resource` at its version.
fn since(resource: &Resource) -> u32 {
    match resource.name {
        // admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy: GA in 1.30.
        "validatingadmissionpolicies" | "validatingadmissionpolicybindings" => 30,
        _ => 0,
    }
}

/// The resources this simulated version serves.
pub fn available() -> impl Iterator<Item = &'static Resource> {
    let minor = MINOR.get().copied().unwrap_or(u32::MAX);
    RESOURCES.iter().filter(move |r| since(r) <= minor)
}

pub const POD_SUBRESOURCES: &[(&str, &str, &[&str])] = &[
    ("pods/attach", "PodAttachOptions", &["create", "get"]),
    (
        "pods/ephemeralcontainers",
        "Pod",
        &["get", "patch", "update"],
    ),
    ("pods/exec", "PodExecOptions", &["create", "get"]),
    ("pods/log", "Pod", &["get"]),
    (
        "pods/portforward",
        "PodPortForwardOptions",
        &["create", "get"],
    ),
    ("pods/status", "Pod", &["get", "patch", "update"]),
];

pub fn find(group: &str, version: &str, name: &str) -> Option<&'static Resource> {
    available().find(|r| r.group == group && r.version == version && r.name == name)
}

pub fn by_kind(kind: &str) -> Option<&'static Resource> {
    available().find(|r| r.kind == kind)
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&str> = available()
        .map(|r| r.group)
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    groups
}

pub fn version_info(minor: u32) -> Value {
    json!({
        "major": "1",
        "minor": minor.to_string(),
        "gitVersion": format!("v1.{minor}.0-kbastion-sim"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    })
}

fn group_json(group: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

pub fn group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups().into_iter().map(group_json).collect::<Vec<_>>(),
    })
}

pub fn group(name: &str) -> Option<Value> {
    groups().contains(&name).then(|| {
        let mut g = group_json(name);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources: Vec<Value> = Vec::new();
    for r in available().filter(|r| r.group == group && r.version == version) {
        let verbs: &[&str] = if r.review { &["create"] } else { CRUD };
        resources.push(json!({
            "name": r.name,
            "singularName": r.kind.to_lowercase(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs,
            "shortNames": r.short_names,
        }));
        if r.name == "deployments" || r.name == "replicasets" {
            resources.push(json!({
                "name": format!("{}/scale", r.name), "singularName": "", "namespaced": true,
                "group": "autoscaling", "version": "v1", "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
            resources.push(json!({
                "name": format!("{}/status", r.name), "singularName": "", "namespaced": true,
                "kind": r.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if r.name == "pods" {
            for (sub, kind, verbs) in POD_SUBRESOURCES {
                resources.push(json!({
                    "name": sub, "singularName": "", "namespaced": true, "kind": kind, "verbs": verbs,
                }));
            }
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// `/openapi/v2`: an empty but well-formed document (no paths, no
/// definitions), in protobuf when asked (kubectl only reads protobuf here)
/// or JSON. The simulator publishes no schemas, so kubectl skips its
/// client-side validation, as it does for kinds it has no schema for; a
/// real API server would publish every schema.
pub fn openapi_v2(
    request: &http::Request<hyper::body::Incoming>,
    minor: u32,
) -> http::Response<super::body::Body> {
    let version = format!("v1.{minor}.0");
    let wants_protobuf = request
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("protobuf"));
    let (content_type, body) = if wants_protobuf {
        // gnostic openapi_v2.Document: swagger = 1, info = 2 {title = 1, version = 2}.
        let field = |number: u8, bytes: &[u8]| -> Vec<u8> {
            let mut out = vec![(number << 3) | 2, bytes.len() as u8];
            out.extend_from_slice(bytes);
            out
        };
        let info = [field(1, b"Kubernetes"), field(2, version.as_bytes())].concat();
        let document = [field(1, b"2.0"), field(2, &info)].concat();
        (
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            document,
        )
    } else {
        let document = json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": version}, "paths": {}, "definitions": {}});
        (
            "application/json",
            serde_json::to_vec(&document).expect("JSON serializes"),
        )
    };
    http::Response::builder()
        .status(http::StatusCode::OK)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(super::body::full(bytes::Bytes::from(body)))
        .expect("static headers are valid")
}
