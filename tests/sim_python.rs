//! The simulator against an independent client: the official Kubernetes
//! Python client (`kubernetes` on PyPI, installed by `.ci/run` in
//! `.ci/venv`), and the Kubernetes OpenAPI schemas that
//! `kubernetes-validate` ships. The scripts are in `tests/python/`.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

/// The venv's Python; a missing venv fails the test with what to run.
fn python() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: these tests need the official Python client. Run \
         `python3 -m venv .ci/venv && .ci/venv/bin/pip install 'kubernetes==37.*' kubernetes-validate` \
         (as .ci/run does)",
        path.display()
    );
    path
}

/// Runs `tests/python/<script>` with the simulator's kubeconfig, killed
/// after `timeout`.
fn run_script(sim: &Sim, script: &str, timeout: Duration) -> Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let mut child = Command::new(python())
        .arg(&script)
        .arg(&sim.kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start python");
    wait_exit(&mut child, &script.display().to_string(), timeout);
    child.wait_with_output().expect("python output")
}

/// The script's last stdout line as JSON, after checking it exited 0.
fn script_json(sim: &Sim, script: &str) -> serde_json::Value {
    let out = run_script(sim, script, Duration::from_secs(60));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{script} printed {stdout:?}: {e}"))
}

#[test]
fn python_exec_stdin_in_text_frames_reaches_cat_and_exit_code_returns() {
    let sim = Sim::start();
    let result = script_json(&sim, "exec_text_stdin.py");
    assert_eq!(result["protocol"], "v5.channel.k8s.io", "{result}");
    assert_eq!(result["open"], false, "the exec never ended: {result}");
    assert_eq!(result["stdout"], "abc\nread-done\n", "{result}");
    assert_eq!(result["code"], 3, "{result}");
}

#[test]
fn python_tty_resize_on_channel_4_reaches_the_terminal() {
    let sim = Sim::start();
    let result = script_json(&sim, "exec_tty_resize.py");
    assert_eq!(result["open"], false, "the exec never ended: {result}");
    let stdout = result["stdout"].as_str().unwrap_or_default();
    assert!(
        stdout.contains("37 100"),
        "stty did not see the resize: {result}"
    );
    assert_eq!(result["code"], 0, "{result}");
}
