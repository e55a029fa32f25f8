//! What the real kubectl sees of a pod's life in the simulator, as on a
//! cluster: signals reach container processes as a runtime delivers them,
//! `kubectl apply` patches strategically, and an exec to a node whose
//! kubelet is down fails at the dial.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn ctrl_c_interrupts_sleep_in_kubectl_exec_it_with_the_simulator_started_by_a_script() {
    let scripted = ScriptedSim::start("1.33");
    // The premise: a background job of a non-interactive shell ignores
    // SIGINT (2) and SIGQUIT (3).
    let ignored = scripted.ignored_signals();
    assert_eq!(
        ignored & 0b110,
        0b110,
        "the simulator should inherit SIGINT and SIGQUIT ignored (SigIgn {ignored:x})"
    );
    let sim = &scripted.sim;
    let kubectl = format!(
        "env -u TMUX {} --kubeconfig {} --context admin exec -it solo -- sh -c 'echo sleep-started; sleep 60; echo sleep-ended-$?'; echo kubectl-exit-$?; sleep 60",
        kubectl_path("1.33"),
        sim.kubeconfig.display()
    );
    let tmux = Tmux::start(&kubectl, 100, 30);
    tmux.wait_for_text("sleep-started");
    // Give `sleep` a moment to start after the echo.
    std::thread::sleep(Duration::from_millis(300));
    let interrupted = Instant::now();
    tmux.send(&["C-c"]);
    // SIGINT ends `sleep` and the non-interactive `sh` around it: the
    // command terminates with 128 + 2.
    tmux.wait_for_text("kubectl-exit-130");
    assert!(
        interrupted.elapsed() < Duration::from_secs(15),
        "Ctrl-C took {:?}",
        interrupted.elapsed()
    );
    assert!(!tmux.screen().contains("sleep-ended"), "{}", tmux.screen());
}

const POD_V1: &str = r#"{
  "apiVersion": "v1", "kind": "Pod",
  "metadata": {"name": "patched", "namespace": "default"},
  "spec": {"containers": [
    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
    {"name": "side", "image": "side:1"}
  ]}
}"#;

#[test]
fn kubectl_apply_of_a_changed_container_list_merges_by_name_and_stores_no_directive() {
    let sim = Sim::start();
    let manifest = sim.dir.path().join("pod.json");
    for (step, image) in [("create", "side:1"), ("change", "side:2")] {
        std::fs::write(&manifest, POD_V1.replace("side:1", image)).expect("write manifest");
        let out = sim.kubectl(
            "kubectl",
            "admin",
            &["apply", "-f", manifest.to_str().expect("utf-8 path")],
        );
        assert!(
            out.status.success(),
            "{step}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    let out = sim.kubectl("kubectl", "admin", &["get", "pod", "patched", "-o", "yaml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    assert!(
        !yaml.contains("$setElementOrder") && !yaml.contains("$patch"),
        "a patch directive was stored:\n{yaml}"
    );
    let out = sim.kubectl("kubectl", "admin", &["get", "pod", "patched", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pod: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pod JSON");
    assert_eq!(
        pod["spec"]["containers"],
        serde_json::json!([
            {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "side", "image": "side:2"}
        ]),
        "the containers after apply"
    );
}

#[test]
fn every_kubectl_version_exec_to_a_not_ready_node_fails_dialing_the_kubelet() {
    let sim = Sim::start();
    for version in VERSIONS {
        let out = sim.kubectl_version(version, "admin", &["exec", "stuck", "--", "true"], b"");
        assert_eq!(
            text(&out.stderr),
            "Error from server: error dialing backend: dial tcp 127.0.0.1:10250: connect: connection refused\n",
            "kubectl {version}"
        );
        assert_eq!(out.status.code(), Some(1), "kubectl {version}");
    }
}
