//! `USER@NAMESPACE/POD/CONTAINER.logs`: a container's log, as `kubectl
//! logs` shows it, through `pods/log` as the person (their RBAC's `get` on
//! `pods/log` decides, asked first with a SubjectAccessReview for a clear
//! refusal).
//!
//! A shell follows the log until Ctrl-C; a command picks options the way
//! kubectl names them (`--since=1h`, `--since-time=…`, `--timestamps`,
//! `--previous`, `--tail=200`, `--limit-bytes=…`, `--no-follow`); anything
//! else is refused in one line. This module must not run anything in the
//! container: the log is the kubelet's, not a file inside it.

use std::time::Duration;

use futures::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::LogParams;
use tokio::io::AsyncWriteExt;

use crate::authz::Permission;
use crate::bastion::Shared;
use crate::cluster::Identity;
use crate::log_files::{LogSource, log_error};
use crate::pods::{TargetError, api_error, bounded, pick_container};
use crate::session::Requested;
use crate::session::control::{Outcome, Report};
use crate::session::io::{ClientEvent, ClientInput, ClientOutput};

/// The options of a log session, as `kubectl logs` takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub since_seconds: Option<i64>,
    pub since_time: Option<jiff::Timestamp>,
    pub limit_bytes: Option<i64>,
}

impl Default for LogOptions {
    /// Follow from the start, as a person at a log wants it.
    fn default() -> Self {
        LogOptions {
            follow: true,
            previous: false,
            timestamps: false,
            tail_lines: None,
            since_seconds: None,
            since_time: None,
            limit_bytes: None,
        }
    }
}

/// The options a log session takes, for the refusal line.
const KNOWN: &str = "--follow, --no-follow, --previous, --timestamps, --tail=N, --since=DURATION, --since-time=RFC3339, --limit-bytes=N";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("{0:?} is not a log option; a log session takes {KNOWN}")]
    Unknown(String),
    #[error("{option}: {value:?} is not {wanted}")]
    BadValue {
        option: &'static str,
        value: String,
        wanted: &'static str,
    },
    #[error("--since and --since-time exclude each other; give one")]
    BothSince,
}

/// Parses a command line of kubectl-style log options.
pub fn parse_options(command: &str) -> Result<LogOptions, OptionsError> {
    let mut options = LogOptions::default();
    for word in command.split_whitespace() {
        let (name, value) = match word.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (word, None),
        };
        let flag = |name: &'static str| -> Result<bool, OptionsError> {
            match value {
                None | Some("true") => Ok(true),
                Some("false") => Ok(false),
                Some(other) => Err(OptionsError::BadValue {
                    option: name,
                    value: other.into(),
                    wanted: "true or false",
                }),
            }
        };
        let number = |name: &'static str, min: i64| -> Result<i64, OptionsError> {
            value
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|n| *n >= min)
                .ok_or_else(|| OptionsError::BadValue {
                    option: name,
                    value: value.unwrap_or_default().into(),
                    wanted: if min == 0 {
                        "a number of 0 or more"
                    } else {
                        "a number of 1 or more"
                    },
                })
        };
        match name {
            "-f" | "--follow" => options.follow = flag("--follow")?,
            "--no-follow" => options.follow = !flag("--no-follow")?,
            "-p" | "--previous" => options.previous = flag("--previous")?,
            "--timestamps" => options.timestamps = flag("--timestamps")?,
            // kubectl's -1 means "all lines".
            "--tail" if value == Some("-1") => options.tail_lines = None,
            "--tail" => options.tail_lines = Some(number("--tail", 0)?),
            "--limit-bytes" => options.limit_bytes = Some(number("--limit-bytes", 1)?),
            "--since" => {
                let text = value.unwrap_or_default();
                let seconds = parse_duration(text).ok_or_else(|| OptionsError::BadValue {
                    option: "--since",
                    value: text.into(),
                    wanted: "a duration such as 30s, 5m or 1h30m",
                })?;
                options.since_seconds = Some(seconds);
            }
            "--since-time" => {
                let text = value.unwrap_or_default();
                let time = text
                    .parse::<jiff::Timestamp>()
                    .map_err(|_| OptionsError::BadValue {
                        option: "--since-time",
                        value: text.into(),
                        wanted: "an RFC 3339 time such as 2026-01-02T15:04:05Z",
                    })?;
                // kubectl sends whole seconds, cut down (metav1.Time is
                // RFC 3339 in seconds); kube rounds to the nearest, which
                // in a second's later half would skip that second's lines.
                let whole = jiff::Timestamp::from_second(time.as_second()).map_err(|_| {
                    OptionsError::BadValue {
                        option: "--since-time",
                        value: text.into(),
                        wanted: "an RFC 3339 time such as 2026-01-02T15:04:05Z",
                    }
                })?;
                options.since_time = Some(whole);
            }
            _ => return Err(OptionsError::Unknown(word.into())),
        }
    }
    if options.since_seconds.is_some() && options.since_time.is_some() {
        return Err(OptionsError::BothSince);
    }
    Ok(options)
}

/// A Go duration (`1h30m`, `90s`, `1.5h`, `250ms`) in whole seconds,
/// rounded up as kubectl rounds `--since`; None if it is not one or is not
/// positive.
pub fn parse_duration(text: &str) -> Option<i64> {
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    (total > 0.0 && total < 1e12).then(|| total.ceil() as i64)
}

/// A log session ready to run: the person may read this container's log.
pub struct LogSession {
    source: LogSource,
    params: LogParams,
}

/// Checks that the person may read the log of the container (kubectl's
/// default-container choice when none is named): the pod and container
/// exist, and their `get` on `pods/log`.
pub async fn authorize(
    shared: &Shared,
    identity: &Identity,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
) -> Result<LogSource, TargetError> {
    let wait = shared.config.timeouts.api();
    let client = shared
        .cluster
        .as_user(identity)
        .map_err(|e| TargetError::Api(e.to_string()))?;
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let found = bounded(wait, pods.get(pod)).await?.map_err(|e| {
        api_error(e, || TargetError::PodNotFound {
            namespace: namespace.into(),
            pod: pod.into(),
        })
    })?;
    let container =
        pick_container(&found, container).map_err(|available| TargetError::ContainerNotFound {
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.unwrap_or_default().into(),
            available: available.join(", "),
        })?;
    let permission = Permission {
        verb: "get",
        resource: "pods",
        subresource: "log",
        namespace: Some(namespace),
        name: Some(pod),
    };
    crate::authz::require(&shared.cluster.own(), identity, &permission, wait).await?;
    Ok(LogSource {
        pods,
        pod: pod.into(),
        container,
    })
}

/// A log session that follows the log from its start, as a shell does.
pub fn follow(source: LogSource) -> LogSession {
    session(source, LogOptions::default())
}

/// The options a shell (none: follow) or a command (kubectl's log
/// options) gives a log session; checked before the session is admitted.
pub fn options(requested: &Requested) -> Result<LogOptions, String> {
    match requested {
        Requested::Shell => Ok(LogOptions::default()),
        Requested::Exec(command) => parse_options(command).map_err(|e| e.to_string()),
        // Served as files (`LogFiles`), not as a stream.
        Requested::Sftp => Err("SFTP on a log is served by kbastion's own SFTP server".into()),
    }
}

/// A log session of `source` with `options`.
pub fn session(source: LogSource, options: LogOptions) -> LogSession {
    LogSession {
        params: LogParams {
            container: Some(source.container.clone()),
            follow: options.follow,
            limit_bytes: options.limit_bytes,
            previous: options.previous,
            since_seconds: options.since_seconds,
            since_time: options.since_time,
            tail_lines: options.tail_lines,
            timestamps: options.timestamps,
            ..LogParams::default()
        },
        source,
    }
}

/// Ctrl-C as a terminal sends it.
const INTERRUPT: u8 = 0x03;

/// The exit status after Ctrl-C, as a shell reports a command ended by
/// SIGINT.
const INTERRUPTED: u32 = 130;

impl LogSession {
    /// Runs the session under its rules (idle, drain, revocation) as any
    /// other kind, to its report.
    pub async fn serve(
        self,
        input: impl ClientInput,
        output: &impl ClientOutput,
        tty: bool,
        context: &crate::bridge::SessionContext,
    ) -> Report {
        let activity = context.traffic.clone();
        let work = self.run(input, output, tty, context.api_wait, &activity);
        match crate::session::control::supervise(
            &context.control,
            &activity,
            output,
            crate::session::control::Tell::Client { tty },
            work,
        )
        .await
        {
            Ok(report) => report,
            Err(interrupted) => Report {
                outcome: Outcome::of(interrupted),
                bytes_in: 0,
                bytes_out: activity
                    .bytes_out
                    .load(std::sync::atomic::Ordering::Relaxed),
            },
        }
    }

    /// Streams the log to the client until it ends (no follow, or the
    /// container stopped), the person presses Ctrl-C (exit 130) or leaves.
    /// With a terminal, line ends become CRLF, as a pty would make them.
    async fn run(
        self,
        mut input: impl ClientInput,
        output: &impl ClientOutput,
        tty: bool,
        api_wait: Duration,
        activity: &crate::session::control::Activity,
    ) -> Report {
        let mut bytes_out = 0u64;
        let stream = match bounded(
            api_wait,
            self.source.pods.log_stream(&self.source.pod, &self.params),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return failed(output, &log_error(error), tty).await,
            Err(timeout) => return failed(output, &timeout.to_string(), tty).await,
        };
        let mut stream = Box::pin(stream);
        // Counted, so that the session's idle rule sees a log that flows.
        let mut stdout = crate::session::control::Counted::new(output.stdout(), activity);
        let mut input_open = true;
        // One API chunk at a time; the client's window paces the reads.
        let mut buffer = vec![0u8; 32 * 1024];
        let outcome = loop {
            tokio::select! {
                read = stream.read(&mut buffer) => match read {
                    Ok(0) => break Outcome::Exited(0),
                    Ok(n) => {
                        let chunk = &buffer[..n];
                        let bytes = if tty { crlf(chunk) } else { chunk.to_vec() };
                        bytes_out += bytes.len() as u64;
                        if stdout.write_all(&bytes).await.is_err() {
                            break Outcome::ClientGone;
                        }
                    }
                    Err(error) => {
                        break Outcome::Failed(format!("the log stream broke: {error}"));
                    }
                },
                event = input.next(), if input_open => match event {
                    ClientEvent::Data(data) if tty && data.contains(&INTERRUPT) => {
                        break Outcome::Exited(INTERRUPTED);
                    }
                    ClientEvent::Data(_) | ClientEvent::Resize { .. } => {}
                    // A client with nothing to send keeps reading.
                    ClientEvent::Eof => input_open = false,
                    ClientEvent::Gone => break Outcome::ClientGone,
                },
            }
        };
        let _ = stdout.flush().await;
        match &outcome {
            Outcome::Exited(code) => output.finish(*code).await,
            Outcome::Failed(why) => {
                output.tell(why, tty).await;
                output.finish(1).await;
            }
            _ => output.close().await,
        }
        Report {
            outcome,
            bytes_in: 0,
            bytes_out,
        }
    }
}

/// Line ends as a terminal needs them in raw mode: LF becomes CRLF (a
/// CR already before it stays single).
fn crlf(chunk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() + chunk.len() / 16);
    for (i, byte) in chunk.iter().enumerate() {
        if *byte == b'\n' && (i == 0 || chunk[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(*byte);
    }
    out
}

async fn failed(output: &impl ClientOutput, why: &str, tty: bool) -> Report {
    output.tell(why, tty).await;
    output.finish(1).await;
    Report {
        outcome: Outcome::Failed(why.to_string()),
        bytes_in: 0,
        bytes_out: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_style_options_parse_and_others_are_refused() {
        let options = parse_options("--since=1h --timestamps --tail=200 --no-follow").unwrap();
        assert_eq!(
            options,
            LogOptions {
                follow: false,
                timestamps: true,
                tail_lines: Some(200),
                since_seconds: Some(3600),
                ..LogOptions::default()
            }
        );
        assert!(parse_options("--previous").unwrap().previous);
        assert!(parse_options("").unwrap().follow);
        assert_eq!(
            parse_options("--since-time=2026-01-02T15:04:05Z")
                .unwrap()
                .since_time,
            Some("2026-01-02T15:04:05Z".parse().unwrap())
        );
        // Cut down to the second, as kubectl sends it, never rounded up.
        assert_eq!(
            parse_options("--since-time=2026-01-02T15:04:05.75Z")
                .unwrap()
                .since_time,
            Some("2026-01-02T15:04:05Z".parse().unwrap())
        );
        assert_eq!(
            parse_options("cat /etc/passwd").unwrap_err().to_string(),
            format!("\"cat\" is not a log option; a log session takes {KNOWN}")
        );
        assert_eq!(
            parse_options("--tail=-5").unwrap_err().to_string(),
            "--tail: \"-5\" is not a number of 0 or more"
        );
        assert_eq!(
            parse_options("--since=1h --since-time=2026-01-02T15:04:05Z")
                .unwrap_err()
                .to_string(),
            "--since and --since-time exclude each other; give one"
        );
    }

    #[test]
    fn durations_are_gos_rounded_up_to_seconds() {
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("1.5h"), Some(5400));
        assert_eq!(parse_duration("250ms"), Some(1));
        assert_eq!(parse_duration("10s"), Some(10));
        for bad in ["", "10", "1d", "h", "-1s", "0s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
