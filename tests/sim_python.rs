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

#[test]
fn python_client_lists_nodes_pods_and_rbac_with_model_validation() {
    let sim = Sim::start();
    // `broken` waits in ImagePullBackOff and `stuck` on a NotReady node:
    // statuses of every shape are read.
    sim.wait_image_pull_backoff();
    let seen = script_json(&sim, "list_with_models.py");
    assert_eq!(
        seen["nodes"],
        serde_json::json!(["edge-1", "node-1", "node.1"])
    );
    let pods = seen["pods"].as_array().expect("pods");
    for pod in [
        "default/web-0",
        "default/broken",
        "default/stuck",
        "prod/db-0",
    ] {
        assert!(pods.iter().any(|p| p == pod), "{pod} not listed: {seen}");
    }
    assert_eq!(seen["selfsubjectaccessreview"], true, "{seen}");
    assert_eq!(seen["subjectaccessreview"], false, "{seen}");
}

/// Every kind served, as listed, read and watched, plus reviews, created
/// and deleted objects and the Status of failures, against the schema of
/// the scenario's version: the oldest and the newest kubectl we test.
#[test]
fn every_served_kind_matches_the_openapi_schema_of_its_version() {
    for version in ["1.27", "1.33"] {
        let sim = Sim::start_version(version);
        sim.wait_image_pull_backoff();
        let out = run_script(&sim, "validate_schema.py", Duration::from_secs(120));
        assert!(
            out.status.success(),
            "{version}: objects that fail the schema:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let last = text(&out.stdout);
        let summary: serde_json::Value =
            serde_json::from_str(last.lines().last().unwrap_or_default()).expect("summary");
        assert_eq!(summary["version"], version, "{summary}");
        for kind in [
            "Pod",
            "Node",
            "Namespace",
            "Role",
            "RoleBinding",
            "ClusterRole",
            "ClusterRoleBinding",
            "SelfSubjectAccessReview",
            "SubjectAccessReview",
            "Status",
            "WatchEvent",
        ] {
            assert!(
                summary["checked"][kind].as_u64().unwrap_or(0) > 0,
                "{version}: no {kind} was checked: {summary}"
            );
        }
    }
}
