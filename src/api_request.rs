//! What an API request asks, as the API server's audit log names it:
//! verb, API group, resource, subresource, namespace and name, read from
//! the method, the path and the `watch` parameter.

use serde::Serialize;

/// A request's place in the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RequestInfo {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; for paths outside the resources, the method in
    /// lower case.
    pub verb: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subresource: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The path, for requests outside the resources (`/version`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
}

impl RequestInfo {
    /// Reads `method`, `path` and `query` (without the `?`).
    pub fn of(method: &http::Method, path: &str, query: &str) -> RequestInfo {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let rest = match segments.as_slice() {
            ["api", _version, rest @ ..] => Some(("", rest)),
            ["apis", group, _version, rest @ ..] => Some((*group, rest)),
            _ => None,
        };
        let Some((group, mut rest)) = rest.filter(|(_, rest)| !rest.is_empty()) else {
            return RequestInfo {
                verb: method.as_str().to_ascii_lowercase(),
                path: path.to_string(),
                ..Default::default()
            };
        };
        let mut info = RequestInfo {
            group: group.to_string(),
            ..Default::default()
        };
        // `namespaces/NS/RESOURCE...`; `namespaces/NS` alone is the
        // namespace itself.
        if rest.len() >= 3 && rest[0] == "namespaces" {
            info.namespace = rest[1].to_string();
            rest = &rest[2..];
        } else if rest.len() == 2 && rest[0] == "namespaces" {
            info.namespace = rest[1].to_string();
        }
        info.resource = rest[0].to_string();
        if let Some(name) = rest.get(1) {
            info.name = name.to_string();
        }
        if let Some(sub) = rest.get(2) {
            info.subresource = sub.to_string();
        }
        let watching = query
            .split('&')
            .any(|pair| matches!(pair, "watch=true" | "watch=1" | "watch=True"));
        info.verb = match *method {
            http::Method::GET | http::Method::HEAD if watching => "watch",
            http::Method::GET | http::Method::HEAD if info.name.is_empty() => "list",
            http::Method::GET | http::Method::HEAD => "get",
            http::Method::POST => "create",
            http::Method::PUT => "update",
            http::Method::PATCH => "patch",
            http::Method::DELETE if info.name.is_empty() => "deletecollection",
            http::Method::DELETE => "delete",
            _ => "unknown",
        }
        .to_string();
        info
    }

    /// Whether it opens a stream to a container or its ports: `exec`,
    /// `attach` or `portforward` on a pod.
    pub fn is_pod_stream(&self) -> bool {
        self.group.is_empty()
            && self.resource == "pods"
            && matches!(self.subresource.as_str(), "exec" | "attach" | "portforward")
    }

    /// The object as people name it: `NS/RESOURCE/NAME[/SUB]`.
    pub fn object(&self) -> String {
        if !self.path.is_empty() {
            return self.path.clone();
        }
        let mut out = String::new();
        for part in [
            &self.namespace,
            &self.resource,
            &self.name,
            &self.subresource,
        ] {
            if part.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push('/');
            }
            out.push_str(part);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn of(method: Method, path: &str, query: &str) -> RequestInfo {
        RequestInfo::of(&method, path, query)
    }

    #[test]
    fn reads_the_verb_and_the_object_as_the_api_server_does() {
        let list = of(Method::GET, "/api/v1/pods", "limit=500");
        assert_eq!(
            (list.verb.as_str(), list.resource.as_str()),
            ("list", "pods")
        );
        let watch = of(
            Method::GET,
            "/api/v1/namespaces/shop/pods",
            "watch=true&rv=1",
        );
        assert_eq!(
            (watch.verb.as_str(), watch.namespace.as_str()),
            ("watch", "shop")
        );
        let get = of(
            Method::GET,
            "/apis/apps/v1/namespaces/shop/deployments/web",
            "",
        );
        assert_eq!(
            (get.verb.as_str(), get.group.as_str(), get.name.as_str()),
            ("get", "apps", "web")
        );
        let exec = of(
            Method::POST,
            "/api/v1/namespaces/shop/pods/web-0/exec",
            "command=ls",
        );
        assert_eq!(exec.verb, "create");
        assert!(exec.is_pod_stream());
        assert_eq!(exec.object(), "shop/pods/web-0/exec");
        let namespace = of(Method::DELETE, "/api/v1/namespaces/shop", "");
        assert_eq!(
            (
                namespace.verb.as_str(),
                namespace.resource.as_str(),
                namespace.namespace.as_str()
            ),
            ("delete", "namespaces", "shop")
        );
        assert_eq!(
            of(Method::DELETE, "/api/v1/namespaces/shop/pods", "").verb,
            "deletecollection"
        );
        let version = of(Method::GET, "/version", "");
        assert_eq!(
            (version.verb.as_str(), version.path.as_str()),
            ("get", "/version")
        );
        assert_eq!(of(Method::GET, "/apis", "").path, "/apis");
        assert!(
            !of(
                Method::GET,
                "/apis/apps/v1/namespaces/a/deployments/b/exec",
                ""
            )
            .is_pod_stream()
        );
    }
}
