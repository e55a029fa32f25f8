//! `pods/log`, as the API server checks it (`LogREST`, `LogLocation`) and
//! the kubelet serves it (`validateContainerLogStatus`, `ReadLogs`) from the
//! CRI log files `sim::container` writes: `container`, `follow`,
//! `previous`, `sinceSeconds`, `sinceTime`, `timestamps`, `tailLines` and
//! `limitBytes`, with their errors worded as the real ones.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::Sim;
use super::api::{Target, param};
use super::body::{Body, streamed};
use super::container::log_path;
use super::exec::{choose_container, container_status};
use super::rbac::{self, Attributes, UserInfo};
use super::status::ApiError;

/// How often a follower looks for new output (the kubelet is woken by
/// fsnotify; a short poll keeps the same latency for a person).
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The options of a `PodLogOptions` query.
#[derive(Debug, Default, Clone)]
pub struct Options {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
    /// Lines older than this (seconds since the epoch, with fraction) are
    /// left out.
    pub since: Option<f64>,
}

fn flag(params: &[(String, String)], name: &str) -> bool {
    param(params, name).is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

fn number(params: &[(String, String)], name: &str) -> Result<Option<i64>, ApiError> {
    param(params, name)
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("strconv.ParseInt: parsing {v:?}: invalid syntax"))
            })
        })
        .transpose()
}

/// Parses and validates the query as `ValidatePodLogOptions` does.
fn options(params: &[(String, String)], pod: &str) -> Result<Options, ApiError> {
    let tail_lines = number(params, "tailLines")?;
    let limit_bytes = number(params, "limitBytes")?;
    let since_seconds = number(params, "sinceSeconds")?;
    let since_time = param(params, "sinceTime")
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9)
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "parsing time {t:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse {t:?} as \"2006\""
                    ))
                })
        })
        .transpose()?;
    let mut errors = Vec::new();
    if let Some(tail) = tail_lines.filter(|t| *t < 0) {
        errors.push(format!(
            "tailLines: Invalid value: {tail}: must be greater than or equal to 0"
        ));
    }
    if let Some(limit) = limit_bytes.filter(|l| *l < 1) {
        errors.push(format!(
            "limitBytes: Invalid value: {limit}: must be greater than 0"
        ));
    }
    match (since_seconds, since_time) {
        (Some(_), Some(_)) => errors.push(
            "<nil>: Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
                .into(),
        ),
        (Some(seconds), None) if seconds < 1 => errors.push(format!(
            "sinceSeconds: Invalid value: {seconds}: must be greater than 0"
        )),
        _ => {}
    }
    if !errors.is_empty() {
        let listed = if errors.len() == 1 {
            errors.remove(0)
        } else {
            format!("[{}]", errors.join(", "))
        };
        return Err(ApiError::new(
            422,
            "Invalid",
            format!("PodLogOptions {pod:?} is invalid: {listed}"),
        ));
    }
    let now = chrono::Utc::now();
    let now = now.timestamp() as f64 + f64::from(now.timestamp_subsec_nanos()) / 1e9;
    Ok(Options {
        follow: flag(params, "follow"),
        previous: flag(params, "previous"),
        timestamps: flag(params, "timestamps"),
        tail_lines,
        limit_bytes,
        since: since_time.or(since_seconds.map(|s| now - s as f64)),
    })
}

pub async fn handle(
    sim: Arc<Sim>,
    user: &UserInfo,
    target: &Target,
    request: http::Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if request.method() != http::Method::GET {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ));
    }
    let attributes = Attributes {
        verb: "get".into(),
        api_group: String::new(),
        resource: "pods".into(),
        subresource: "log".into(),
        namespace: target.namespace.clone(),
        name: target.name.clone(),
    };
    if !rbac::allowed(&sim.store, user, &attributes) {
        return Err(ApiError::forbidden(attributes.forbidden_message(user)));
    }
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let options = options(&params, &target.name)?;
    let pod = super::api::get(&sim, target)?;
    let container = choose_container(&pod, param(&params, "container"), &target.name)?;
    let text = |body: &'static [u8]| {
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(super::body::full(Bytes::from_static(body)))
            .expect("static headers are valid")
    };
    // A pod with no node has no kubelet to ask: the API server answers an
    // empty log.
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() {
        return Ok(text(b""));
    }
    if super::cluster::node_ready(&sim, node) != Some(true) {
        return Err(ApiError::new(
            500,
            "",
            format!(
                "Get \"https://{}:{}/containerLogs/{}/{}/{container}\": dial tcp {}:{}: connect: connection refused",
                super::cluster::NODE_ADDRESS,
                super::cluster::KUBELET_PORT,
                target.namespace,
                target.name,
                super::cluster::NODE_ADDRESS,
                super::cluster::KUBELET_PORT
            ),
        ));
    }
    let instance = instance(&pod, &container, &target.name, options.previous)
        .map_err(ApiError::bad_request)?;
    let path = log_path(&sim, &pod, &container, instance.number);
    let (sender, receiver) = mpsc::channel::<Bytes>(16);
    let cut = sim.cut_signal();
    let follow = options.follow && instance.running;
    let key = super::api::key(target);
    tokio::spawn(async move {
        let still_running = || {
            sim.store.get(&key).is_some_and(|pod| {
                container_status(&pod, &container).is_some_and(|s| {
                    s["containerID"] == json!(instance.container_id)
                        && s.pointer("/state/running").is_some()
                })
            })
        };
        serve(path, options, follow, still_running, sender).await;
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(streamed(receiver, cut))
        .expect("static headers are valid"))
}

/// Which instance of a container a log request reads.
struct Instance {
    number: u64,
    container_id: String,
    running: bool,
}

/// The kubelet's `validateContainerLogStatus`: which instance's log to
/// read, or why there is none (its words).
fn instance(
    pod: &Value,
    container: &str,
    pod_name: &str,
    previous: bool,
) -> Result<Instance, String> {
    let Some(status) = container_status(pod, container) else {
        return Err(format!(
            "container {container:?} in pod {pod_name:?} is not available"
        ));
    };
    let restarts = status["restartCount"].as_u64().unwrap_or(0);
    let id = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let last = status.pointer("/lastState/terminated");
    let last_id = last.map(|t| id(&t["containerID"])).unwrap_or_default();
    // The previous instance is the one before the current count (the count
    // went up when it ended).
    let previous_instance = || Instance {
        number: restarts.saturating_sub(1),
        container_id: last_id.clone(),
        running: false,
    };
    let state = &status["state"];
    if previous {
        if last_id.is_empty() {
            return Err(format!(
                "previous terminated container {container:?} in pod {pod_name:?} not found"
            ));
        }
        return Ok(previous_instance());
    }
    if state.get("running").is_some() {
        return Ok(Instance {
            number: restarts,
            container_id: id(&status["containerID"]),
            running: true,
        });
    }
    if let Some(terminated) = state.get("terminated") {
        let terminated_id = id(&terminated["containerID"]);
        if !terminated_id.is_empty() {
            return Ok(Instance {
                number: restarts,
                container_id: terminated_id,
                running: false,
            });
        }
        if !last_id.is_empty() {
            return Ok(previous_instance());
        }
        return Err(format!(
            "container {container:?} in pod {pod_name:?} is terminated"
        ));
    }
    if last.is_some() {
        if last_id.is_empty() {
            return Err(format!(
                "container {container:?} in pod {pod_name:?} is terminated"
            ));
        }
        return Ok(previous_instance());
    }
    if let Some(waiting) = state.get("waiting") {
        return Err(match waiting["reason"].as_str().unwrap_or_default() {
            "ErrImagePull" => format!(
                "container {container:?} in pod {pod_name:?} is waiting to start: image can't be pulled"
            ),
            "ImagePullBackOff" => format!(
                "container {container:?} in pod {pod_name:?} is waiting to start: trying and failing to pull image"
            ),
            reason => {
                format!("container {container:?} in pod {pod_name:?} is waiting to start: {reason}")
            }
        });
    }
    Err(format!(
        "container {container:?} in pod {pod_name:?} is waiting to start - no logs yet"
    ))
}

/// One line of a CRI log file.
struct Line<'a> {
    time: &'a str,
    seconds: f64,
    content: &'a [u8],
}

/// Parses `TIME STREAM TAG CONTENT\n`; a partial (`P`) line's content
/// has no newline of its own.
fn parse(line: &[u8]) -> Option<Line<'_>> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(fields.next()?).ok()?;
    let _stream = fields.next()?;
    let tag = fields.next()?;
    let mut content = fields.next()?;
    if tag == b"P" {
        content = content.strip_suffix(b"\n").unwrap_or(content);
    }
    let parsed = chrono::DateTime::parse_from_rfc3339(time).ok()?;
    let seconds = parsed.timestamp() as f64 + f64::from(parsed.timestamp_subsec_nanos()) / 1e9;
    Some(Line {
        time,
        seconds,
        content,
    })
}

/// Streams the log at `path` into `sender`: the tail, then (following)
/// every new line until the instance stops running.
async fn serve(
    path: PathBuf,
    options: Options,
    follow: bool,
    still_running: impl Fn() -> bool,
    sender: mpsc::Sender<Bytes>,
) {
    // A container that never wrote has no file yet.
    let mut file = tokio::fs::File::open(&path).await.ok();
    let mut pending: Vec<u8> = Vec::new();
    let mut first = true;
    let mut budget = options.limit_bytes.map(|l| l as u64);
    loop {
        if file.is_none() {
            file = tokio::fs::File::open(&path).await.ok();
        }
        if let Some(file) = file.as_mut() {
            let mut chunk = Vec::new();
            if file.read_to_end(&mut chunk).await.is_err() {
                return;
            }
            pending.extend_from_slice(&chunk);
        }
        let complete = match pending.iter().rposition(|b| *b == b'\n') {
            Some(last) => pending.drain(..=last).collect::<Vec<u8>>(),
            None => Vec::new(),
        };
        let mut lines: Vec<Line> = complete
            .split_inclusive(|b| *b == b'\n')
            .filter_map(parse)
            .collect();
        if first {
            // `tailLines` counts from the end of what is there now.
            if let Some(tail) = options.tail_lines {
                let keep = (tail.max(0) as usize).min(lines.len());
                lines.drain(..lines.len() - keep);
            }
            first = false;
        }
        let mut out = Vec::new();
        for line in lines {
            if options.since.is_some_and(|since| line.seconds < since) {
                continue;
            }
            if options.timestamps {
                out.extend_from_slice(line.time.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(line.content);
        }
        if let Some(left) = budget.as_mut() {
            let take = (*left).min(out.len() as u64) as usize;
            out.truncate(take);
            *left -= take as u64;
        }
        if !out.is_empty() && sender.send(Bytes::from(out)).await.is_err() {
            return;
        }
        if budget == Some(0) || !follow {
            return;
        }
        if !still_running() {
            // One last read for what it wrote before it ended.
            if let Some(file) = file.as_mut() {
                let mut chunk = Vec::new();
                if file.read_to_end(&mut chunk).await.is_ok() && !chunk.is_empty() {
                    pending.extend_from_slice(&chunk);
                    continue;
                }
            }
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = sender.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: Value) -> Value {
        json!({"status": {"containerStatuses": [status]}})
    }

    #[test]
    fn errors_are_the_kubelets() {
        let waiting =
            pod(json!({"name": "app", "state": {"waiting": {"reason": "ImagePullBackOff"}}}));
        assert_eq!(
            instance(&waiting, "app", "web-0", false).err().unwrap(),
            "container \"app\" in pod \"web-0\" is waiting to start: trying and failing to pull image"
        );
        let running = pod(
            json!({"name": "app", "restartCount": 0, "containerID": "containerd://1", "state": {"running": {}}, "lastState": {}}),
        );
        assert_eq!(
            instance(&running, "app", "web-0", true).err().unwrap(),
            "previous terminated container \"app\" in pod \"web-0\" not found"
        );
        let restarted = pod(
            json!({"name": "app", "restartCount": 2, "containerID": "containerd://3", "state": {"running": {}}, "lastState": {"terminated": {"containerID": "containerd://2"}}}),
        );
        assert_eq!(
            instance(&restarted, "app", "web-0", true).unwrap().number,
            1
        );
        assert_eq!(
            instance(&restarted, "app", "web-0", false).unwrap().number,
            2
        );
    }

    #[test]
    fn cri_lines_parse_with_partial_ones_joined() {
        let line = parse(b"2026-11-26T03:04:05.000000001Z stdout F hello\n").unwrap();
        assert_eq!(line.content, b"hello\n");
        assert_eq!(line.time, "2026-11-26T03:04:05.000000001Z");
        let partial = parse(b"2026-11-26T03:04:05.000000001Z stdout P tail\n").unwrap();
        assert_eq!(partial.content, b"tail");
    }
}
