//! ValidatingAdmissionPolicy (`admissionregistration.k8s.io/v1`), enforced
//! as the API server does after defaulting and before storage: for every
//! binding whose policy's `matchConstraints` and whose own
//! `matchResources` match the request, and whose `validationActions`
//! include `Deny`, each validation's CEL expression is evaluated with
//! `object`, `oldObject` and `request`; the first that is false (or fails,
//! under `failurePolicy: Fail`) refuses the request with its message, in
//! the API server's words.

use serde_json::{Value, json};

use super::Sim;
use super::resources::Resource;
use super::status::ApiError;
use super::store::Key;

/// What is being admitted.
pub struct Request<'a> {
    /// `CREATE` or `UPDATE`.
    pub operation: &'static str,
    pub resource: &'a Resource,
    /// `""`, or `ephemeralcontainers`, `status`...
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub object: &'a Value,
    pub old: Option<&'a Value>,
}

/// Refuses `request` if a bound policy denies it.
pub fn validate(sim: &Sim, request: &Request<'_>) -> Result<(), ApiError> {
    let (bindings, _) = sim.store.list("validatingadmissionpolicybindings", None);
    for binding in &bindings {
        let Some(policy_name) = binding.pointer("/spec/policyName").and_then(Value::as_str) else {
            continue;
        };
        let denies = binding
            .pointer("/spec/validationActions")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "Deny"));
        if !denies {
            continue;
        }
        let Some(policy) = sim
            .store
            .get(&Key::new("validatingadmissionpolicies", "", policy_name))
        else {
            continue;
        };
        let constraints = policy.pointer("/spec/matchConstraints");
        if !constraints.is_some_and(|c| rules_match(c, request))
            || !selectors_match(sim, constraints, request)
            || !selectors_match(sim, binding.pointer("/spec/matchResources"), request)
        {
            continue;
        }
        let binding_name = binding
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(message) = first_failure(&policy, request) {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!(
                    "{} \"{}\" is forbidden: ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}' denied request: {message}",
                    request.resource.name, request.name
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `resourceRules` name the request's group, version, operation
/// and resource (`pods`, or `pods/ephemeralcontainers` for a subresource).
fn rules_match(constraints: &Value, request: &Request<'_>) -> bool {
    let resource = if request.subresource.is_empty() {
        request.resource.name.to_string()
    } else {
        format!("{}/{}", request.resource.name, request.subresource)
    };
    let has = |list: Option<&Value>, wanted: &str| {
        list.and_then(Value::as_array)
            .is_some_and(|items| items.iter().any(|v| v == "*" || v == wanted))
    };
    constraints
        .get("resourceRules")
        .and_then(Value::as_array)
        .is_some_and(|rules| {
            rules.iter().any(|rule| {
                has(rule.get("apiGroups"), request.resource.group)
                    && has(rule.get("apiVersions"), request.resource.version)
                    && has(rule.get("operations"), request.operation)
                    && has(rule.get("resources"), &resource)
            })
        })
}

/// Whether a `namespaceSelector`'s `matchLabels` (the only form modelled)
/// match the request's namespace's labels.
fn selectors_match(sim: &Sim, matcher: Option<&Value>, request: &Request<'_>) -> bool {
    let Some(wanted) = matcher
        .and_then(|m| m.pointer("/namespaceSelector/matchLabels"))
        .and_then(Value::as_object)
    else {
        return true;
    };
    let namespace = sim
        .store
        .get(&Key::new("namespaces", "", request.namespace))
        .unwrap_or_default();
    wanted.iter().all(|(key, value)| {
        namespace.pointer(&format!(
            "/metadata/labels/{}",
            key.replace('~', "~0").replace('/', "~1")
        )) == Some(value)
    })
}

/// The message of the first validation the request fails.
fn first_failure(policy: &Value, request: &Request<'_>) -> Option<String> {
    let fail_closed = policy
        .pointer("/spec/failurePolicy")
        .and_then(Value::as_str)
        != Some("Ignore");
    let mut context = cel::Context::default();
    let variables = [
        ("object", request.object.clone()),
        ("oldObject", request.old.cloned().unwrap_or(Value::Null)),
        (
            "request",
            json!({
                "operation": request.operation,
                "namespace": request.namespace,
                "name": request.name,
                "subResource": request.subresource,
                "resource": {"group": request.resource.group, "version": request.resource.version, "resource": request.resource.name},
            }),
        ),
    ];
    for (name, value) in variables {
        match cel::to_value(value) {
            Ok(value) => context.add_variable_from_value(name, value),
            Err(error) => return Some(format!("cannot evaluate the policy: {error}")),
        }
    }
    for validation in policy
        .pointer("/spec/validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let expression = validation
            .get("expression")
            .and_then(Value::as_str)
            .unwrap_or("");
        let message = || {
            validation
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("failed expression: {expression}"))
        };
        let outcome = cel::Program::compile(expression)
            .map_err(|e| e.to_string())
            .and_then(|program| program.execute(&context).map_err(|e| e.to_string()));
        match outcome {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => return Some(message()),
            Ok(other) => {
                return Some(format!(
                    "expression '{expression}' resulted in a {other:?}, not a bool"
                ));
            }
            Err(error) if fail_closed => {
                return Some(format!(
                    "expression '{expression}' resulted in error: {error}"
                ));
            }
            Err(_) => {}
        }
    }
    None
}
