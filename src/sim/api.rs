//! The REST side of the simulated API server: authentication,
//! impersonation, authorization, discovery, CRUD with optimistic
//! concurrency, patches, selectors, watches, tables and access reviews.
//! Streaming subresources (`pods/exec`, `pods/portforward`) are handed to
//! `sim::exec` and `sim::portforward` after the pod has been looked up.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::Sim;
use super::body::{Body, full, streamed};
use super::rbac::{self, Attributes, UserInfo};
use super::resources::{self, Resource};
use super::selector::Selector;
use super::status::{ApiError, json_response};
use super::store::{Key, StoreError};

/// The API server refuses request bodies above 3 MiB.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// What a request addresses, parsed from its path.
#[derive(Debug, Clone)]
pub struct Target {
    pub resource: &'static Resource,
    pub namespace: String,
    pub name: String,
    pub subresource: String,
}

pub async fn handle(sim: Arc<Sim>, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let seen = sim
        .audit_log
        .as_ref()
        .map(|_| super::audit_log::Seen::of(&request));
    let response = match handle_request(&sim, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    if let (Some(log), Some(seen)) = (&sim.audit_log, &seen) {
        log.record(&sim, seen, response.status().as_u16());
    }
    tracing::debug!(%method, %path, status = response.status().as_u16(), "api request");
    response
}

fn query_params(request: &Request<Incoming>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Bearer-token authentication, then impersonation (`Impersonate-User`,
/// `Impersonate-Group`), which the caller must be allowed to `impersonate`.
fn identify(sim: &Sim, request: &Request<Incoming>) -> Result<UserInfo, ApiError> {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(ApiError::unauthorized)?;
    let caller = sim
        .authenticate(token.trim())
        .ok_or_else(ApiError::unauthorized)?;
    let Some(user) = request
        .headers()
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
    else {
        if request.headers().contains_key("impersonate-group") {
            return Err(ApiError::internal(
                "requested [{Kind:Group ...}] without impersonating a user",
            ));
        }
        return Ok(caller);
    };
    let check = |resource: &str, name: &str| -> Result<(), ApiError> {
        let attrs = Attributes::new("impersonate", "", resource, "", name);
        if rbac::allowed(&sim.store, &caller, &attrs) {
            Ok(())
        } else {
            Err(ApiError::forbidden(attrs.forbidden_message(&caller)))
        }
    };
    check("users", user)?;
    let mut groups = Vec::new();
    for group in request.headers().get_all("impersonate-group") {
        let group = group
            .to_str()
            .map_err(|_| ApiError::bad_request("invalid Impersonate-Group header"))?;
        check("groups", group)?;
        groups.push(group.to_string());
    }
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    Ok(UserInfo {
        name: user.to_string(),
        groups,
    })
}

async fn handle_request(
    sim: &Arc<Sim>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().to_string();
    if matches!(path.as_str(), "/healthz" | "/livez" | "/readyz") {
        return Ok(super::status::plain_response(StatusCode::OK, "ok"));
    }
    let faults = sim.faults();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let user = identify(sim, &request)?;
    if let Some(admin) = path.strip_prefix("/sim/") {
        return admin_request(sim, &user, admin, request).await;
    }
    if let Some(code) = faults.fail_status {
        return Err(ApiError::injected(code));
    }
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segments.as_slice() {
        ["openapi", "v2"] => return Ok(super::resources::openapi_v2(&request, sim.minor)),
        ["version"] => {
            return Ok(json_response(
                StatusCode::OK,
                &resources::version_info(sim.minor),
            ));
        }
        ["api"] => return Ok(json_response(StatusCode::OK, &resources::core_versions())),
        ["apis"] => return Ok(json_response(StatusCode::OK, &resources::group_list())),
        ["apis", group] => {
            return resources::group(group)
                .map(|g| json_response(StatusCode::OK, &g))
                .ok_or_else(|| {
                    ApiError::new(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    )
                });
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
    };
    if rest.is_empty() {
        return resources::resource_list(group, version)
            .map(|l| json_response(StatusCode::OK, &l))
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )
            });
    }
    let target = parse_target(group, version, rest)?;
    match target.subresource.as_str() {
        "exec" if target.resource.name == "pods" => {
            return super::exec::handle(sim.clone(), &user, &target, request).await;
        }
        "portforward" if target.resource.name == "pods" => {
            return super::portforward::handle(sim.clone(), &user, &target, request).await;
        }
        "attach" if target.resource.name == "pods" => {
            return super::attach::handle(sim.clone(), &user, &target, request).await;
        }
        "log" if target.resource.name == "pods" => {
            return super::logs::handle(sim.clone(), &user, &target, request).await;
        }
        "ephemeralcontainers" if target.resource.name == "pods" => {
            return super::ephemeral::handle(sim, &user, &target, request).await;
        }
        "scale" if matches!(target.resource.name, "deployments" | "replicasets") => {
            return scale(sim, &user, &target, request).await;
        }
        "" | "status" => {}
        other => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({other})"),
            ));
        }
    }
    let params = query_params(&request);
    let verb = match (request.method(), target.name.is_empty()) {
        (&Method::GET, true)
            if param(&params, "watch").is_some_and(|w| w == "true" || w == "1") =>
        {
            "watch"
        }
        (&Method::GET, true) => "list",
        (&Method::GET, false) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "deletecollection",
        (&Method::DELETE, false) => "delete",
        _ => {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            ));
        }
    };
    let attributes = Attributes {
        verb: verb.into(),
        api_group: group.into(),
        resource: target.resource.name.into(),
        subresource: target.subresource.clone(),
        namespace: target.namespace.clone(),
        name: target.name.clone(),
    };
    if !rbac::allowed(&sim.store, &user, &attributes) {
        return Err(ApiError::forbidden(attributes.forbidden_message(&user)));
    }
    if target.resource.name == "selfsubjectreviews" {
        // Nothing in the request matters (`kubectl auth whoami` sends an
        // empty review, in protobuf): the answer is who is asking, after
        // impersonation, as the API server's `selfsubjectreview` REST.
        return Ok(self_subject_review(target.resource, &user));
    }
    if target.resource.review {
        let protobuf = request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| {
                v.as_bytes()
                    .starts_with(b"application/vnd.kubernetes.protobuf")
            });
        let body = if protobuf {
            let bytes = read_body(request).await?;
            super::protobuf::decode_review(&bytes)
                .map_err(|e| ApiError::new(415, "UnsupportedMediaType", e.to_string()))?
        } else {
            read_json(request).await?
        };
        return access_review(sim, &user, &target, body);
    }
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    match verb {
        "list" => list(sim, &target, &params, accept.contains("as=Table")),
        "watch" => watch(sim, &target, &params),
        "get" => {
            let object = get(sim, &target)?;
            if accept.contains("as=Table") {
                Ok(json_response(
                    StatusCode::OK,
                    &table(
                        target.resource,
                        &[object],
                        &sim.store.revision().to_string(),
                    ),
                ))
            } else {
                Ok(json_response(StatusCode::OK, &object))
            }
        }
        "create" => {
            let body = read_json(request).await?;
            let created = create(sim, &target, body)?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        "update" => {
            let mut body = with_type(target.resource, read_json(request).await?);
            normalize(target.resource, &mut body)?;
            let current = get(sim, &target)?;
            track_generation(&current, &mut body);
            admit_update(sim, &target, &body, &current)?;
            let key = key(&target);
            let updated = sim
                .store
                .update(&key, body)
                .map_err(|e| store_error(e, &target))?;
            super::cluster::collect_if_dangling(sim, &key);
            Ok(json_response(StatusCode::OK, &updated))
        }
        "patch" => {
            if content_type.starts_with("application/apply-patch") {
                // Never accepted silently: the simulator keeps no field
                // managers, so an apply it pretended to do would differ
                // from a cluster's.
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    "server-side apply is not served by kbastion's simulator (it keeps no managedFields); use client-side kubectl apply",
                ));
            }
            let body = read_json(request).await?;
            let patched = patch(sim, &target, &content_type, body)?;
            super::cluster::collect_if_dangling(sim, &key(&target));
            Ok(json_response(StatusCode::OK, &patched))
        }
        "delete" => {
            // DeleteOptions may carry preconditions (uid, resourceVersion).
            let options = read_body(request).await?;
            let mut options: Value = serde_json::from_slice(&options).unwrap_or(json!({}));
            // DeleteOptions may come as query parameters too.
            if let Some(policy) = param(&params, "propagationPolicy")
                && let Some(options) = options.as_object_mut()
            {
                options.insert("propagationPolicy".into(), json!(policy));
            }
            let current = get(sim, &target)?;
            for field in ["uid", "resourceVersion"] {
                let actual = current
                    .pointer(&format!("/metadata/{field}"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if let Some(wanted) = options
                    .pointer(&format!("/preconditions/{field}"))
                    .and_then(Value::as_str)
                    && actual != wanted
                {
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {} \"{}\": Precondition failed: {field} in precondition: {wanted}, {field} in object meta: {actual}",
                            super::status::qualified(target.resource.group, target.resource.name),
                            target.name
                        ),
                    ));
                }
            }
            let propagation = super::cluster::Propagation::from_options(&options);
            let grace = options["gracePeriodSeconds"]
                .as_i64()
                .or_else(|| param(&params, "gracePeriodSeconds").and_then(|g| g.parse().ok()));
            let deleted = super::cluster::delete(sim, &key(&target), propagation, grace)
                .map_err(|e| store_error(e, &target))?;
            Ok(json_response(StatusCode::OK, &deleted))
        }
        _ => {
            let (items, _) = sim
                .store
                .list(target.resource.name, namespace_filter(&target));
            let selector = selectors(&params)?;
            for item in items
                .iter()
                .filter(|i| selector.0.matches_labels(i) && selector.1.matches_fields(i))
            {
                let name = item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let namespace = item
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let _ = super::cluster::delete(
                    sim,
                    &Key::new(target.resource.name, namespace, name),
                    super::cluster::Propagation::Cascade,
                    None,
                );
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            ))
        }
    }
}

fn parse_target(group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, resource, rest @ ..]
            if resources::find(group, version, resource).is_some_and(|r| r.namespaced) =>
        {
            (namespace.to_string(), [&[*resource][..], rest].concat())
        }
        _ => (String::new(), rest.to_vec()),
    };
    let resource = resources::find(group, version, rest[0]).ok_or_else(not_found)?;
    let (name, subresource) = match &rest[1..] {
        [] => (String::new(), String::new()),
        [name] => (name.to_string(), String::new()),
        [name, sub] => (name.to_string(), sub.to_string()),
        _ => return Err(not_found()),
    };
    Ok(Target {
        resource,
        namespace,
        name,
        subresource,
    })
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(request.into_body(), MAX_BODY);
    Ok(limited
        .collect()
        .await
        .map_err(|e| ApiError::new(413, "RequestEntityTooLarge", format!("request body: {e}")))?
        .to_bytes())
}

pub async fn read_json(request: Request<Incoming>) -> Result<Value, ApiError> {
    // A real API server reads protobuf too (kubectl's typed commands such
    // as `create configmap` send it); this one says so instead of
    // misreading it.
    let protobuf = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes()
                .starts_with(b"application/vnd.kubernetes.protobuf")
        });
    if protobuf {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "kbastion's simulator reads JSON request bodies only (protobuf only for access reviews): pipe the object through kubectl apply -f, e.g. kubectl create ... --dry-run=client -o yaml | kubectl apply -f -",
        ));
    }
    let bytes = read_body(request).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request was in an unknown format: {e}"
        ))
    })
}

pub fn key(target: &Target) -> Key {
    Key::new(target.resource.name, &target.namespace, &target.name)
}

fn namespace_filter(target: &Target) -> Option<&str> {
    (!target.namespace.is_empty()).then_some(target.namespace.as_str())
}

pub fn store_error(error: StoreError, target: &Target) -> ApiError {
    match error {
        StoreError::NotFound => {
            ApiError::not_found(target.resource.group, target.resource.name, &target.name)
        }
        StoreError::AlreadyExists => {
            ApiError::already_exists(target.resource.group, target.resource.name, &target.name)
        }
        StoreError::Conflict => {
            ApiError::conflict(target.resource.group, target.resource.name, &target.name)
        }
        StoreError::Gone(rv) => {
            ApiError::new(410, "Expired", format!("too old resource version: {rv}"))
        }
    }
}

pub fn get(sim: &Sim, target: &Target) -> Result<Value, ApiError> {
    sim.store.get(&key(target)).ok_or_else(|| {
        ApiError::not_found(target.resource.group, target.resource.name, &target.name)
    })
}

pub fn with_type(resource: &Resource, mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), json!(resource.api_version()));
        map.insert("kind".into(), json!(resource.kind));
    }
    object
}

fn selectors(params: &[(String, String)]) -> Result<(Selector, Selector), ApiError> {
    let labels = Selector::parse(param(params, "labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = Selector::parse(param(params, "fieldSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
    Ok((labels, fields))
}

fn list(
    sim: &Sim,
    target: &Target,
    params: &[(String, String)],
    as_table: bool,
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(params)?;
    let (items, revision) = sim
        .store
        .list(target.resource.name, namespace_filter(target));
    let selected = !labels.is_empty() || !fields.is_empty();
    let items: Vec<Value> = items
        .into_iter()
        .filter(|i| labels.matches_labels(i) && fields.matches_fields(i))
        .collect();
    let (items, page) = paginate(items, params, revision, selected)?;
    let revision = revision.to_string();
    if as_table {
        let mut table = table(target.resource, &items, &revision);
        page.annotate(&mut table["metadata"]);
        return Ok(json_response(StatusCode::OK, &table));
    }
    let mut metadata = json!({"resourceVersion": revision});
    page.annotate(&mut metadata);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", target.resource.kind),
            "apiVersion": target.resource.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    ))
}

/// What a paged list says about the rest: the `continue` token and, when
/// no selector filtered the list, how many items remain (as the API
/// server's `remainingItemCount`).
#[derive(Default)]
struct Page {
    next: Option<String>,
    remaining: Option<usize>,
}

impl Page {
    fn annotate(&self, metadata: &mut Value) {
        if let Some(next) = &self.next {
            metadata["continue"] = json!(next);
            if let Some(remaining) = self.remaining {
                metadata["remainingItemCount"] = json!(remaining);
            }
        }
    }
}

/// `limit` and `continue` as the API server pages a list: items in key
/// order (namespace, then name), at most `limit` of them, and a token to
/// go on from after the last one. The token is the API server's own shape
/// (base64 JSON of `v`, `rv` and `start`). Unlike etcd, the store keeps no
/// old revisions: a continued list reads the objects as they are now,
/// after the token's key.
fn paginate(
    mut items: Vec<Value>,
    params: &[(String, String)],
    revision: u64,
    selected: bool,
) -> Result<(Vec<Value>, Page), ApiError> {
    use base64::Engine;
    let key = |v: &Value| {
        format!(
            "{}/{}",
            v.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(""),
            v.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
        )
    };
    items.sort_by_key(|v| key(v));
    let expired = || {
        ApiError::bad_request(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".to_string(),
        )
    };
    if let Some(token) = param(params, "continue").filter(|t| !t.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .ok_or_else(|| ApiError::bad_request(format!("continue key is not valid: {token}")))?;
        let start = decoded["start"].as_str().ok_or_else(expired)?.to_string();
        items.retain(|v| key(v) >= start);
    }
    let limit = param(params, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let Some(limit) = limit.filter(|l| items.len() > *l) else {
        return Ok((items, Page::default()));
    };
    let rest = items.split_off(limit);
    let last = items.last().map(&key).unwrap_or_default();
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": format!("{last}\u{0}")});
    let next = base64::engine::general_purpose::STANDARD.encode(token.to_string());
    Ok((
        items,
        Page {
            next: Some(next),
            remaining: (!selected).then_some(rest.len()),
        },
    ))
}

fn watch(
    sim: &Arc<Sim>,
    target: &Target,
    params: &[(String, String)],
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(params)?;
    let since = param(params, "resourceVersion").unwrap_or("");
    let (initial, since) = match since {
        "" | "0" => {
            let (items, revision) = sim
                .store
                .list(target.resource.name, namespace_filter(target));
            (items, revision)
        }
        rv => (
            Vec::new(),
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let (missed, mut live) = sim.store.watch(since).map_err(|e| store_error(e, target))?;
    let timeout = param(params, "timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let target = target.clone();
    let matches = move |key: &Key, object: &Value| {
        key.resource == target.resource.name
            && (target.namespace.is_empty() || key.namespace == target.namespace)
            && labels.matches_labels(object)
            && fields.matches_fields(object)
    };
    // Watch events are small; 64 pending lines is plenty before the client
    // must read, and bounds a stalled watcher's cost.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(64);
    let cut = sim.cut_signal();
    let body_cut = cut.clone();
    tokio::spawn(async move {
        let line = |kind: &str, object: &Value| {
            let mut line = serde_json::to_vec(&json!({"type": kind, "object": object}))
                .expect("a JSON value serializes");
            line.push(b'\n');
            Bytes::from(line)
        };
        for object in initial {
            if sender.send(line("ADDED", &object)).await.is_err() {
                return;
            }
        }
        for event in missed {
            if matches(&event.key, &event.object)
                && sender
                    .send(line(event.kind.as_str(), &event.object))
                    .await
                    .is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = cut.cancelled() => return,
                _ = sender.closed() => return,
                event = live.recv() => match event {
                    Ok(event) if event.resource_version > since => {
                        if matches(&event.key, &event.object) && sender.send(line(event.kind.as_str(), &event.object)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // A watcher too slow for the broadcast buffer is ended,
                    // as the API server ends a watch that falls behind.
                    Err(_) => return,
                },
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(streamed(receiver, body_cut))
        .expect("static headers are valid"))
}

/// Creates an object the way the API server does: namespace checks,
/// `generateName`, defaulting, then the kind's own follow-up (a pod gets
/// scheduled and started by `sim::cluster`).
pub fn create(sim: &Arc<Sim>, target: &Target, body: Value) -> Result<Value, ApiError> {
    let mut object = with_type(target.resource, body);
    let body_namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    if target.resource.namespaced {
        if !body_namespace.is_empty() && body_namespace != target.namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if sim
            .store
            .get(&Key::new("namespaces", "", &target.namespace))
            .is_none()
        {
            return Err(ApiError::not_found("", "namespaces", &target.namespace));
        }
    }
    let mut name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        let prefix = object
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if prefix.is_empty() {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!(
                    "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                    target.resource.kind
                ),
            ));
        }
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let suffix: String = (0..5)
            .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
            .collect();
        name = format!("{prefix}{suffix}");
    }
    if let Err(why) = crate::sim::cluster::validate_name(&name) {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": {why}",
                target.resource.kind
            ),
        ));
    }
    normalize(target.resource, &mut object)?;
    if matches!(target.resource.name, "deployments" | "replicasets") {
        object["metadata"]["generation"] = json!(1);
    }
    if target.resource.name == "pods" {
        super::cluster::default_pod(&mut object).map_err(|why| {
            ApiError::new(422, "Invalid", format!("Pod \"{name}\" is invalid: {why}"))
        })?;
    }
    super::admission::validate(
        sim,
        &super::admission::Request {
            operation: "CREATE",
            resource: target.resource,
            subresource: "",
            namespace: &target.namespace,
            name: &name,
            object: &object,
            old: None,
        },
    )?;
    let key = Key::new(target.resource.name, &target.namespace, &name);
    let created = sim.store.create(key.clone(), object).map_err(|e| {
        store_error(
            e,
            &Target {
                name: name.clone(),
                ..target.clone()
            },
        )
    })?;
    if target.resource.name == "pods" {
        super::cluster::start_pod(sim.clone(), key.clone());
    }
    super::cluster::collect_if_dangling(sim, &key);
    Ok(created)
}

/// Validating admission of an update of `target` from `current` to `object`.
pub fn admit_update(
    sim: &Sim,
    target: &Target,
    object: &Value,
    current: &Value,
) -> Result<(), ApiError> {
    super::admission::validate(
        sim,
        &super::admission::Request {
            operation: "UPDATE",
            resource: target.resource,
            subresource: &target.subresource,
            namespace: &target.namespace,
            name: &target.name,
            object,
            old: Some(current),
        },
    )
}

/// What the API server does to an object of some kinds on every write: a
/// Secret's `stringData` is merged into `data` (base64) and dropped, and
/// its `type` defaults to `Opaque`.
fn normalize(resource: &Resource, object: &mut Value) -> Result<(), ApiError> {
    if resource.name != "secrets" {
        return Ok(());
    }
    use base64::Engine;
    let Some(secret) = object.as_object_mut() else {
        return Ok(());
    };
    if let Some(plain) = secret.remove("stringData") {
        let Some(plain) = plain.as_object() else {
            return Err(ApiError::bad_request(
                "Secret in version \"v1\" cannot be handled as a Secret: stringData must be an object of strings",
            ));
        };
        let data = secret
            .entry("data")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("Secret: data must be an object"))?;
        for (key, value) in plain {
            let text = value.as_str().unwrap_or_default();
            data.insert(
                key.clone(),
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
    if secret
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        secret.insert("type".into(), json!("Opaque"));
    }
    Ok(())
}

/// `metadata.generation` of the kinds that have one here (Deployments,
/// ReplicaSets): it goes up by one when the spec changes, as the API
/// server's strategies do; anything else keeps it.
fn track_generation(current: &Value, object: &mut Value) {
    let Some(generation) = current
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
    else {
        return;
    };
    let next = if current.get("spec") == object.get("spec") {
        generation
    } else {
        generation + 1
    };
    object["metadata"]["generation"] = json!(next);
}

/// Authorizes a read, replace or patch of `target`'s subresource (`scale`,
/// `ephemeralcontainers`) as the API server does; returns the verb.
pub fn authorize_subresource(
    sim: &Sim,
    user: &UserInfo,
    target: &Target,
    method: &Method,
) -> Result<&'static str, ApiError> {
    let verb = match *method {
        Method::GET => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        _ => {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            ));
        }
    };
    let attributes = Attributes {
        verb: verb.into(),
        api_group: target.resource.group.into(),
        resource: target.resource.name.into(),
        subresource: target.subresource.clone(),
        namespace: target.namespace.clone(),
        name: target.name.clone(),
    };
    if !rbac::allowed(&sim.store, user, &attributes) {
        return Err(ApiError::forbidden(attributes.forbidden_message(user)));
    }
    Ok(verb)
}

/// A Deployment or ReplicaSet as its `scale` subresource shows it
/// (autoscaling/v1 Scale).
fn as_scale(object: &Value) -> Value {
    let selector = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "uid": object["metadata"]["uid"],
            "resourceVersion": object["metadata"]["resourceVersion"],
            "creationTimestamp": object["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// The `scale` subresource of Deployments and ReplicaSets, as `kubectl
/// scale` reads, updates and patches it.
async fn scale(
    sim: &Arc<Sim>,
    user: &UserInfo,
    target: &Target,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let verb = authorize_subresource(sim, user, target, request.method())?;
    let current = get(sim, target)?;
    if verb == "get" {
        return Ok(json_response(StatusCode::OK, &as_scale(&current)));
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = read_json(request).await?;
    let mut scale = as_scale(&current);
    match verb {
        "update" => scale = body,
        _ if content_type.starts_with("application/json-patch+json") => {
            let patch: json_patch::Patch =
                serde_json::from_value(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            json_patch::patch(&mut scale, &patch)
                .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
        }
        _ => json_patch::merge(&mut scale, &body),
    }
    let Some(wanted) = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|n| *n >= 0)
    else {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "Scale.autoscaling \"{}\" is invalid: spec.replicas: Invalid value: must be greater than or equal to 0",
                target.name
            ),
        ));
    };
    let mut object = current.clone();
    object["spec"]["replicas"] = json!(wanted);
    track_generation(&current, &mut object);
    let updated = sim
        .store
        .update(&key(target), object)
        .map_err(|e| store_error(e, target))?;
    Ok(json_response(StatusCode::OK, &as_scale(&updated)))
}

fn patch(sim: &Sim, target: &Target, content_type: &str, body: Value) -> Result<Value, ApiError> {
    let key = key(target);
    let mut patched = with_type(
        target.resource,
        apply_patch(sim, target, content_type, body)?,
    );
    normalize(target.resource, &mut patched)?;
    let current = get(sim, target)?;
    track_generation(&current, &mut patched);
    admit_update(sim, target, &patched, &current)?;
    sim.store
        .update(&key, patched)
        .map_err(|e| store_error(e, target))
}

/// The object as a patch request would leave it (not stored): the patch
/// applied to the current object; a `resourceVersion` left in it is the
/// patch's precondition.
pub fn apply_patch(
    sim: &Sim,
    target: &Target,
    content_type: &str,
    body: Value,
) -> Result<Value, ApiError> {
    let current = get(sim, target)?;
    let mut patched = current.clone();
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/json-patch+json" => {
            let operations: json_patch::Patch = serde_json::from_value(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut patched, &operations).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
        "application/merge-patch+json" => {
            json_patch::merge(&mut patched, &body);
        }
        "application/strategic-merge-patch+json" => {
            super::strategic::apply(target.resource.kind, &mut patched, &body)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
                ),
            ));
        }
    }
    // A patch carrying a resourceVersion is a precondition; without one it
    // applies to whatever is current.
    let wanted = patched.pointer("/metadata/resourceVersion").cloned();
    if wanted == current.pointer("/metadata/resourceVersion").cloned()
        && let Some(meta) = patched.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.remove("resourceVersion");
    }
    Ok(patched)
}

/// The answer to a SelfSubjectReview (authentication.k8s.io/v1, GA in
/// 1.28): the requesting user's attributes.
fn self_subject_review(resource: &Resource, user: &UserInfo) -> Response<Body> {
    let review = with_type(
        resource,
        json!({
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": {"username": user.name, "groups": user.groups}},
        }),
    );
    json_response(StatusCode::CREATED, &review)
}

fn access_review(
    sim: &Sim,
    user: &UserInfo,
    target: &Target,
    mut review: Value,
) -> Result<Response<Body>, ApiError> {
    let spec = review.get("spec").cloned().unwrap_or(json!({}));
    let subject = if target.resource.name == "selfsubjectaccessreviews" {
        user.clone()
    } else {
        let name = spec["user"].as_str().unwrap_or_default().to_string();
        let groups = spec["groups"]
            .as_array()
            .map(|g| {
                g.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        UserInfo { name, groups }
    };
    let allowed = if let Some(attrs) = spec.get("resourceAttributes").filter(|a| a.is_object()) {
        let field = |name: &str| attrs[name].as_str().unwrap_or("").to_string();
        let attributes = Attributes {
            verb: field("verb"),
            api_group: field("group"),
            resource: field("resource"),
            subresource: field("subresource"),
            namespace: field("namespace"),
            name: field("name"),
        };
        rbac::allowed(&sim.store, &subject, &attributes)
    } else if let Some(attrs) = spec.get("nonResourceAttributes") {
        let path = attrs["path"].as_str().unwrap_or("");
        matches!(
            path,
            "/api" | "/apis" | "/version" | "/healthz" | "/livez" | "/readyz"
        ) || path.starts_with("/api/")
            || path.starts_with("/apis/")
    } else {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "{} is invalid: spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
                target.resource.kind
            ),
        ));
    };
    review = with_type(target.resource, review);
    review["status"] = if allowed {
        json!({"allowed": true, "reason": "allowed by the RBAC policy"})
    } else {
        json!({"allowed": false})
    };
    Ok(json_response(StatusCode::CREATED, &review))
}

/// Computes a table row's cells from an object.
type RowCells = Box<dyn Fn(&Value) -> Vec<Value>>;

/// A `meta.k8s.io/v1` Table, as `kubectl get` asks for: the columns of the
/// API server's own printers for pods, nodes and namespaces.
fn table(resource: &Resource, items: &[Value], revision: &str) -> Value {
    let text = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let column = |name: &str| json!({"name": name, "type": "string", "format": if name == "Name" {"name"} else {""}, "description": "", "priority": 0});
    let (columns, cells): (Vec<&str>, RowCells) = match resource.name {
        "pods" => (
            vec!["Name", "Ready", "Status", "Restarts", "Age"],
            Box::new(move |p: &Value| {
                let statuses = p
                    .pointer("/status/containerStatuses")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let total = p
                    .pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                let ready = statuses
                    .iter()
                    .filter(|s| s["ready"] == json!(true))
                    .count();
                let waiting = statuses.iter().find_map(|s| {
                    s.pointer("/state/waiting/reason")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
                // The printer shows a pod being deleted as Terminating.
                let status = if p.pointer("/metadata/deletionTimestamp").is_some() {
                    "Terminating".to_string()
                } else {
                    waiting.unwrap_or_else(|| text(p, "/status/phase"))
                };
                vec![
                    json!(text(p, "/metadata/name")),
                    json!(format!("{ready}/{total}")),
                    json!(status),
                    json!(0),
                    json!(age(&text(p, "/metadata/creationTimestamp"))),
                ]
            }),
        ),
        "nodes" => (
            vec!["Name", "Status", "Roles", "Age", "Version"],
            Box::new(move |n: &Value| {
                let ready = n
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                vec![
                    json!(text(n, "/metadata/name")),
                    json!(if ready { "Ready" } else { "NotReady" }),
                    json!("<none>"),
                    json!(age(&text(n, "/metadata/creationTimestamp"))),
                    json!(text(n, "/status/nodeInfo/kubeletVersion")),
                ]
            }),
        ),
        "configmaps" | "secrets" => {
            let secrets = resource.name == "secrets";
            let mut columns = vec!["Name", "Data", "Age"];
            if secrets {
                columns.insert(1, "Type");
            }
            (
                columns,
                Box::new(move |o: &Value| {
                    let count = |field: &str| o[field].as_object().map_or(0, |m| m.len());
                    let mut cells = vec![
                        json!(text(o, "/metadata/name")),
                        json!(count("data") + count("binaryData")),
                        json!(age(&text(o, "/metadata/creationTimestamp"))),
                    ];
                    if secrets {
                        cells.insert(1, json!(text(o, "/type")));
                    }
                    cells
                }),
            )
        }
        "deployments" => (
            vec!["Name", "Ready", "Up-to-date", "Available", "Age"],
            Box::new(move |d: &Value| {
                let count = |p: &str| d.pointer(p).and_then(Value::as_i64).unwrap_or(0);
                let wanted = d
                    .pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                vec![
                    json!(text(d, "/metadata/name")),
                    json!(format!("{}/{wanted}", count("/status/readyReplicas"))),
                    json!(count("/status/updatedReplicas")),
                    json!(count("/status/availableReplicas")),
                    json!(age(&text(d, "/metadata/creationTimestamp"))),
                ]
            }),
        ),
        "replicasets" => (
            vec!["Name", "Desired", "Current", "Ready", "Age"],
            Box::new(move |r: &Value| {
                let count = |p: &str| r.pointer(p).and_then(Value::as_i64).unwrap_or(0);
                vec![
                    json!(text(r, "/metadata/name")),
                    json!(
                        r.pointer("/spec/replicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(1)
                    ),
                    json!(count("/status/replicas")),
                    json!(count("/status/readyReplicas")),
                    json!(age(&text(r, "/metadata/creationTimestamp"))),
                ]
            }),
        ),
        "serviceaccounts" => (
            vec!["Name", "Secrets", "Age"],
            Box::new(move |o: &Value| {
                vec![
                    json!(text(o, "/metadata/name")),
                    json!(o["secrets"].as_array().map_or(0, Vec::len)),
                    json!(age(&text(o, "/metadata/creationTimestamp"))),
                ]
            }),
        ),
        "namespaces" => (
            vec!["Name", "Status", "Age"],
            Box::new(move |n: &Value| {
                vec![
                    json!(text(n, "/metadata/name")),
                    json!("Active"),
                    json!(age(&text(n, "/metadata/creationTimestamp"))),
                ]
            }),
        ),
        _ => (
            vec!["Name", "Age"],
            Box::new(move |o: &Value| {
                vec![
                    json!(text(o, "/metadata/name")),
                    json!(age(&text(o, "/metadata/creationTimestamp"))),
                ]
            }),
        ),
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            json!({
                "cells": cells(item),
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": item.get("metadata").cloned().unwrap_or(json!({}))},
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": revision},
        "columnDefinitions": columns.into_iter().map(column).collect::<Vec<_>>(),
        "rows": rows,
    })
}

/// `kubectl`'s short age ("5s", "3m", "2h", "4d") from an RFC 3339 time.
fn age(timestamp: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let then = super::cluster::parse_rfc3339(timestamp).unwrap_or(now);
    let secs = now.saturating_sub(then);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

async fn admin_request(
    sim: &Arc<Sim>,
    user: &UserInfo,
    path: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if !user.groups.iter().any(|g| g == "system:masters") {
        return Err(ApiError::forbidden(format!(
            "User \"{}\" cannot use the simulator's admin endpoint",
            user.name
        )));
    }
    match (request.method(), path) {
        (&Method::POST, "faults") => {
            let body = read_json(request).await?;
            let faults: super::scenario::Faults = serde_json::from_value(body)
                .map_err(|e| ApiError::bad_request(format!("faults: {e}")))?;
            faults.check().map_err(ApiError::bad_request)?;
            *sim.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults;
            Ok(json_response(StatusCode::OK, &json!({"status": "Success"})))
        }
        (&Method::POST, "stop") => {
            let body = read_json(request).await?;
            let seconds = body["seconds"]
                .as_f64()
                .filter(|s| *s >= 0.0 && *s <= 3600.0)
                .ok_or_else(|| {
                    ApiError::bad_request("stop: {\"seconds\": N} with 0 <= N <= 3600")
                })?;
            let sim = sim.clone();
            // Answer first, then stop: the caller learns it worked. A dying
            // API server takes its upgraded streams with it: they are
            // connections of their own that the listener no longer tracks,
            // so they are cut explicitly.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = sim.stop.send(Duration::from_secs_f64(seconds));
                sim.cut();
            });
            Ok(json_response(StatusCode::OK, &json!({"status": "Success"})))
        }
        (&Method::POST, "cut") => {
            sim.cut();
            Ok(json_response(StatusCode::OK, &json!({"status": "Success"})))
        }
        _ => Ok(full_not_found()),
    }
}

fn full_not_found() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(full(Bytes::from_static(b"404 page not found\n")))
        .expect("static headers are valid")
}
