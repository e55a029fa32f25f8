//! `metav1.Status` answers worded as kube-apiserver words them.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use serde_json::{Value, json};

use super::body::{Body, full};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// `group` and `resource` name what is missing as Kubernetes'
    /// `GroupResource` does: the message says `leases.coordination.k8s.io
    /// "x" not found`, or `pods "x" not found` for the core group.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        ApiError {
            details: Some(details(group, resource, name)),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", qualified(group, resource)),
            )
        }
    }

    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        ApiError {
            details: Some(details(group, resource, name)),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", qualified(group, resource)),
            )
        }
    }

    pub fn conflict(group: &str, resource: &str, name: &str) -> Self {
        ApiError {
            details: Some(details(group, resource, name)),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    qualified(group, resource)
                ),
            )
        }
    }

    pub fn forbidden(message: String) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// A failure injected by the scenario or `/sim/faults`, with the reason
    /// the API server pairs with its code (apimachinery's `reasonForCode`).
    pub fn injected(code: u16) -> Self {
        let reason = match code {
            429 => "TooManyRequests",
            500 => return Self::internal("injected failure"),
            503 => "ServiceUnavailable",
            504 => "Timeout",
            // StatusReasonUnknown.
            _ => "",
        };
        Self::new(code, reason, "injected failure")
    }

    pub fn to_json(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        // `reason` is omitempty: an error that is no API status has none.
        if self.reason.is_empty()
            && let Some(status) = status.as_object_mut()
        {
            status.remove("reason");
        }
        status
    }

    pub fn into_response(self) -> Response<Body> {
        json_response(
            StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &self.to_json(),
        )
    }
}

/// `schema.GroupResource.String()`: `pods`, `leases.coordination.k8s.io`.
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

/// `metav1.StatusDetails` for an object: the group is left out for the
/// core group (omitempty).
fn details(group: &str, resource: &str, name: &str) -> Value {
    let mut details = json!({"name": name, "kind": resource});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    details
}

pub fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("a JSON value serializes");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header("Cache-Control", "no-cache, private")
        .body(full(Bytes::from(body)))
        .expect("static headers are valid")
}

/// The plain-text error a kubelet answers before an upgrade (the API server
/// passes it through), e.g. `container not found ("web")`.
pub fn plain_response(status: StatusCode, text: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(Bytes::from(text.to_string())))
        .expect("static headers are valid")
}

/// The exec result on the error channel: Success, or NonZeroExitCode with
/// the code in `details.causes` (kubelet `remotecommand` v4).
pub fn exec_status(exit_code: i32, argv: &[String]) -> Value {
    if exit_code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {exit_code}",
                argv.join(" ")
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": exit_code.to_string()}]},
        })
    }
}

/// The status when the command could not be started at all (containerd's
/// wording for a missing executable).
pub fn exec_start_failure(program: &str, error: &std::io::Error) -> Value {
    let why = if error.kind() == std::io::ErrorKind::NotFound {
        format!("exec: \"{program}\": executable file not found in $PATH")
    } else {
        format!("exec: \"{program}\": {error}")
    };
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: error executing command in container: failed to exec in container: failed to start exec: OCI runtime exec failed: exec failed: unable to start container process: {why}: unknown"),
        "reason": "InternalError",
        "code": 500,
    })
}
