//! The API server's audit log at level `Metadata` (`--audit-log-path`):
//! one `audit.k8s.io/v1` Event per request, as JSON lines, with who asked
//! (the authenticated user, the impersonated one), with what user agent,
//! what verb on which URI, and the response code. Written at
//! `ResponseComplete`; long-running requests (exec, watch) are written
//! when their answer (the upgrade, the watch's start) is sent.

use std::io::Write;
use std::sync::Mutex;

use http::{Method, Request};
use serde_json::json;

/// What is kept of a request for its audit event.
pub struct Seen {
    method: Method,
    uri: String,
    user_agent: Option<String>,
    token: Option<String>,
    impersonated: Option<String>,
    impersonated_groups: Vec<String>,
}

impl Seen {
    pub fn of<B>(request: &Request<B>) -> Seen {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        Seen {
            method: request.method().clone(),
            uri: request.uri().to_string(),
            user_agent: header("user-agent"),
            token: header("authorization")
                .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string())),
            impersonated: header("impersonate-user"),
            impersonated_groups: request
                .headers()
                .get_all("impersonate-group")
                .iter()
                .filter_map(|v| v.to_str().ok().map(String::from))
                .collect(),
        }
    }
}

pub struct AuditLog(Mutex<std::fs::File>);

impl AuditLog {
    pub fn open(path: &std::path::Path) -> std::io::Result<AuditLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(AuditLog(Mutex::new(file)))
    }

    pub fn record(&self, sim: &super::Sim, seen: &Seen, code: u16) {
        let user = seen.token.as_deref().and_then(|t| sim.authenticate(t));
        let mut event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "stage": "ResponseComplete",
            "requestURI": seen.uri,
            "verb": verb(&seen.method, &seen.uri),
            "user": user.map_or(json!({"username": "system:anonymous", "groups": ["system:unauthenticated"]}), |u| json!({"username": u.name, "groups": u.groups})),
            "userAgent": seen.user_agent,
            "responseStatus": {"metadata": {}, "code": code},
        });
        if let Some(name) = &seen.impersonated {
            event["impersonatedUser"] =
                json!({"username": name, "groups": seen.impersonated_groups});
        }
        let mut file = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = writeln!(file, "{event}") {
            tracing::warn!(%error, "cannot write the audit log");
        }
    }
}

/// The verb the API server's request-info resolver gives a request:
/// resource requests by method and whether they name an object
/// (get/list/watch, create, update, patch, delete/deletecollection);
/// anything else the method in lower case.
fn verb(method: &Method, uri: &str) -> String {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _, rest @ ..] | ["apis", _, _, rest @ ..] if !rest.is_empty() => rest,
        _ => return method.as_str().to_lowercase(),
    };
    let watch = rest.first() == Some(&"watch")
        || query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1");
    let rest = if rest.first() == Some(&"watch") {
        &rest[1..]
    } else {
        rest
    };
    // namespaces/NS/RESOURCE[/NAME…], or the namespace object itself.
    let resource = match rest {
        ["namespaces", _, inner @ ..] if !inner.is_empty() => inner,
        other => other,
    };
    let named = resource.len() >= 2;
    match *method {
        Method::GET if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => return method.as_str().to_lowercase(),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_follow_the_request_info_resolver() {
        let cases = [
            (Method::GET, "/api/v1/namespaces/default/pods", "list"),
            (Method::GET, "/api/v1/namespaces/default/pods/web-0", "get"),
            (Method::GET, "/api/v1/pods?watch=true", "watch"),
            (Method::POST, "/api/v1/namespaces/default/pods", "create"),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods/web-0/exec?command=sh",
                "get",
            ),
            (
                Method::POST,
                "/api/v1/namespaces/default/pods/web-0/exec?command=sh",
                "create",
            ),
            (
                Method::PATCH,
                "/api/v1/namespaces/default/pods/web-0",
                "patch",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/default/pods",
                "deletecollection",
            ),
            (Method::GET, "/api/v1/namespaces/default", "get"),
            (Method::GET, "/version", "get"),
        ];
        for (method, uri, expected) in cases {
            assert_eq!(verb(&method, uri), expected, "{method} {uri}");
        }
    }
}
