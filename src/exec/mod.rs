//! The one way kbastion starts a process in a target: the command line
//! (the target's prefix, the session marker, `sh -c`), the exec request
//! with its bounded pipes, the exit status read from the final `Status`,
//! and the clean-up exec that ends what a session left running.
//!
//! Sessions (`bridge`) and the file services (`remote_fs`) both start
//! their execs here.

pub mod process;
pub mod stream;

pub use stream::{StartError, Streams, attach_params};

use std::future::Future;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;

use crate::pods::ExecTarget;
use crate::session::environment::{ClientEnv, UTF8_FALLBACK};

/// Each exec pipe buffers at most this much between the client and the
/// API connection: enough for full-speed bulk transfers, small enough
/// that a stalled client costs little.
pub const PIPE_BUFFER: usize = 256 * 1024;

/// The environment variable that marks every process of a session, so the
/// bastion can find and end them when the client vanishes.
const SESSION_MARKER: &str = "KBASTION_SESSION";

/// The shell: bash where the container has it, else sh, as a login shell.
const SHELL_SCRIPT: &str = "if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l";

/// The SFTP subsystem: the target's own `sftp-server`, wherever its
/// distribution puts it, speaking SFTP over the session's stdin/stdout.
pub const SFTP_SERVER: &str = "for p in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/lib/ssh/sftp-server /usr/libexec/sftp-server /usr/lib/sftp-server; do [ -x \"$p\" ] && exec \"$p\"; done; command -v sftp-server >/dev/null 2>&1 && exec sftp-server; echo 'kbastion: this target has no sftp-server; set files.sftp = \"auto\" in the bastion config' >&2; exit 127";

/// Succeeds where `SFTP_SERVER` would find a server (the same places).
pub const SFTP_SERVER_FOUND: &str = "for p in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/lib/ssh/sftp-server /usr/libexec/sftp-server /usr/lib/sftp-server; do [ -x \"$p\" ] && exit 0; done; command -v sftp-server";

/// What the user reads when an exec's stream ends with no final status.
pub const LOST: &str =
    "the exec stream ended without an exit status (the connection to the Kubernetes API was lost)";

/// TERM reaches a shell word only after this check.
fn sanitize_term(term: &str) -> &str {
    let ok = !term.is_empty()
        && term.len() <= 64
        && term
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'));
    if ok { term } else { "xterm" }
}

/// A session's command line: the target's prefix (nsenter for node
/// shells), then `env` to mark the session and set TERM and the client's
/// variables (each one argument), then `sh -c` with the script (the
/// user's command as one argument, never re-split or quoted; None for the
/// login shell). A client that wants UTF-8 gets a UTF-8 character set
/// even where the target lacks its locale (`UTF8_FALLBACK`, run first,
/// with the script passed on as an argument).
pub fn session_argv(
    prefix: &[String],
    session_id: &str,
    term: Option<&str>,
    script: Option<&str>,
    env: &ClientEnv,
) -> Vec<String> {
    let mut argv: Vec<String> = prefix.to_vec();
    argv.push("env".into());
    argv.push(format!("{SESSION_MARKER}={session_id}"));
    if let Some(term) = term {
        argv.push(format!("TERM={}", sanitize_term(term)));
    }
    argv.extend(env.assignments());
    let script = script.unwrap_or(SHELL_SCRIPT);
    if env.wants_utf8() {
        let checked = format!("{UTF8_FALLBACK}exec sh -c \"$1\"");
        argv.extend([
            "sh".into(),
            "-c".into(),
            checked,
            "sh".into(),
            script.into(),
        ]);
    } else {
        argv.extend(["sh", "-c", script].map(String::from));
    }
    argv
}

/// `script_argv` with the process marked as `marker`'s (the session
/// marker), so that `end_session_processes(marker)` can end it and what
/// it started: for the file services' long-lived readers and writers,
/// which the kubelet leaves running when their stream is dropped.
pub fn marked_script_argv(
    prefix: &[String],
    marker: &str,
    script: &str,
    args: &[&str],
) -> Vec<String> {
    let mut argv = prefix.to_vec();
    argv.extend(["env".to_string(), format!("{SESSION_MARKER}={marker}")]);
    argv.extend(script_argv(&[], script, args));
    argv
}

/// `sh -c SCRIPT sh ARGS…` after the target's prefix: arguments stay
/// separate words, never pasted into the script.
pub fn script_argv(prefix: &[String], script: &str, args: &[&str]) -> Vec<String> {
    let mut argv = prefix.to_vec();
    argv.extend(["sh", "-c", script, "sh"].map(String::from));
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

/// For an exec that failed because the container has no `sh` (the
/// runtime's "executable file not found" for it): where a shell is to be
/// had instead, a debug container beside it; else nothing.
pub fn no_shell_hint(message: &str, target: &ExecTarget) -> String {
    let no_shell = message.contains("exec: \"sh\": executable file not found")
        || message.contains("exec: \"env\": executable file not found");
    if !no_shell || !target.prefix.is_empty() {
        return String::new();
    }
    format!(
        "; this container has no shell: use USER@{}/{}/{}.debug for a shell in a debug container beside it",
        target.namespace, target.pod, target.container
    )
}

/// How an exec ended, from its final `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited(u32),
    /// A status that is no exit (the command could not run): its message.
    Failed(String),
    /// No status came: the stream to the API server was lost.
    Lost,
}

/// Waits for an exec's final status (`process::Process::take_status`).
pub async fn ended(status: Option<impl Future<Output = Option<Status>>>) -> Ended {
    let Some(status) = status else {
        return Ended::Lost;
    };
    match status.await.as_ref().map(exit_code) {
        Some(Ok(code)) => Ended::Exited(code),
        Some(Err(message)) => Ended::Failed(message),
        None => Ended::Lost,
    }
}

/// The exit code in an exec Status: 0 on Success, the `ExitCode` cause on
/// NonZeroExitCode, Err with the message for anything else.
pub fn exit_code(status: &Status) -> Result<u32, String> {
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    if status.reason.as_deref() == Some("NonZeroExitCode") {
        let code = status
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.reason.as_deref() == Some("ExitCode"))
            .and_then(|c| c.message.as_deref())
            .and_then(|m| m.parse::<u32>().ok());
        if let Some(code) = code {
            return Ok(code);
        }
    }
    Err(status
        .message
        .clone()
        .unwrap_or_else(|| "the command failed without a message".into()))
}

/// The script that ends every process carrying the session's marker:
/// SIGHUP (what sshd's hang-up would send), then SIGKILL for what is left.
/// Where `grep` reads NUL-separated records (GNU grep, recent busybox),
/// one `grep` reads every process's environment; elsewhere a loop does,
/// two processes per process (slow where many processes are visible: a
/// node shell sees the whole node).
pub fn cleanup_script(session_id: &str) -> String {
    let marker = format!("{SESSION_MARKER}={session_id}");
    format!(
        "pids=''; \
         if printf 'a\\0' | grep -qz a 2>/dev/null; then \
           for f in $(grep -lxzF '{marker}' /proc/[0-9]*/environ 2>/dev/null); do \
             p=${{f#/proc/}}; pids=\"$pids ${{p%/environ}}\"; \
           done; \
         else \
           for p in /proc/[0-9]*; do \
             if {{ tr '\\0' '\\n' < \"$p/environ\"; }} 2>/dev/null | grep -qx '{marker}'; then pids=\"$pids ${{p#/proc/}}\"; fi; \
           done; \
         fi; \
         [ -z \"$pids\" ] && exit 0; kill -HUP $pids 2>/dev/null; sleep 1; kill -KILL $pids 2>/dev/null; exit 0"
    )
}

/// Ends what a vanished client's (or a stopped) session left running,
/// with a second exec into the same container (the kubelet does not:
/// containerd keeps the process alive, tty or not). Bounded, so a session
/// task never hangs on it.
pub async fn end_session_processes(target: &ExecTarget, session_id: &str, api_wait: Duration) {
    let argv = script_argv(&target.prefix, &cleanup_script(session_id), &[]);
    let streams = Streams {
        stdin: false,
        tty: false,
    };
    match process::spawn(target, argv, streams, api_wait).await {
        Ok(mut process) => {
            // Its output is drained: one task fills both pipes, and an
            // unread one stalls the exec.
            let drains: Vec<_> = [process.stdout(), process.stderr()]
                .into_iter()
                .flatten()
                .map(|mut pipe| {
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await;
                    })
                })
                .collect();
            if let Some(status) = process.take_status() {
                let _ = tokio::time::timeout(api_wait + Duration::from_secs(5), status).await;
            }
            drains.iter().for_each(|drain| drain.abort());
        }
        Err(error) => {
            tracing::warn!(pod = %target.pod, %error, "could not end the processes of an ended session")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    #[test]
    fn client_variables_are_arguments_and_utf8_is_checked_in_the_target() {
        let mut env = ClientEnv::default();
        env.accept(&["LANG".into()], "LANG", "en_US.UTF-8 $(id)")
            .unwrap();
        let argv = session_argv(&[], "abc", None, Some("echo hi"), &env);
        assert_eq!(
            argv,
            [
                "env",
                "KBASTION_SESSION=abc",
                "LANG=en_US.UTF-8 $(id)",
                "sh",
                "-c",
                &format!("{UTF8_FALLBACK}exec sh -c \"$1\""),
                "sh",
                "echo hi"
            ]
        );
    }

    #[test]
    fn commands_are_one_argument_and_term_is_checked() {
        let argv = session_argv(
            &[],
            "abc",
            Some("xterm'; rm -rf /"),
            Some("echo 'a b'; exit 3"),
            &ClientEnv::default(),
        );
        assert_eq!(
            argv,
            [
                "env",
                "KBASTION_SESSION=abc",
                "TERM=xterm",
                "sh",
                "-c",
                "echo 'a b'; exit 3"
            ]
        );
        assert_eq!(
            script_argv(&["nsenter".into()], "cat \"$1\"", &["a b"]),
            ["nsenter", "sh", "-c", "cat \"$1\"", "sh", "a b"]
        );
    }

    #[test]
    fn exit_codes_come_from_the_status() {
        let success = Status {
            status: Some("Success".into()),
            ..Default::default()
        };
        assert_eq!(exit_code(&success), Ok(0));
        let failed = Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("7".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(exit_code(&failed), Ok(7));
        let internal = Status {
            status: Some("Failure".into()),
            reason: Some("InternalError".into()),
            message: Some("no sh".into()),
            ..Default::default()
        };
        assert_eq!(exit_code(&internal), Err("no sh".into()));
    }
}
