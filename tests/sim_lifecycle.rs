//! What the real kubectl sees of a pod's life in the simulator, as on a
//! cluster: signals reach container processes as a runtime delivers them,
//! `kubectl apply` patches strategically, deletion is graceful, the garbage
//! collector removes dependents of absent owners, and an exec to a node
//! whose kubelet is down fails at the dial.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
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
fn kubectl_delete_pod_sends_sigterm_and_waits_out_the_grace_period() {
    let sim = Sim::start();
    let manifest = sim.dir.path().join("pod.json");
    std::fs::write(
        &manifest,
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "graceful", "namespace": "default"},
            "spec": {"terminationGracePeriodSeconds": 3, "containers": [{"name": "main", "image": "busybox"}]}}"#,
    )
    .expect("write manifest");
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &["apply", "-f", manifest.to_str().expect("utf-8 path")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    sim.wait_running("default", "graceful");
    // A process that notes SIGTERM and keeps running: only SIGKILL at the
    // end of the grace period stops it.
    let mut exec = sim
        .kubectl_command("1.33", "admin")
        .args([
            "exec",
            "graceful",
            "--",
            "sh",
            "-c",
            "trap 'echo got-TERM' TERM; echo ready; while :; do sleep 0.2; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl exec");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = exec.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    assert_eq!(
        lines.recv_timeout(Duration::from_secs(20)).ok().as_deref(),
        Some("ready"),
        "the exec did not start"
    );
    let started = Instant::now();
    let mut delete = sim
        .kubectl_command("1.33", "admin")
        .args(["delete", "pod", "graceful"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl delete");
    // While the grace period runs the pod is listed as Terminating.
    wait_for("the pod Terminating", Duration::from_secs(3), || {
        let out = sim.kubectl("kubectl", "admin", &["get", "pod", "graceful"]);
        text(&out.stdout).contains("Terminating")
    });
    let status = wait_exit(&mut delete, "kubectl delete", Duration::from_secs(20));
    let waited = started.elapsed();
    let output = delete.wait_with_output().expect("delete output");
    assert!(
        status.success(),
        "kubectl delete: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert_eq!(text(&output.stdout), "pod \"graceful\" deleted\n");
    assert!(
        waited >= Duration::from_millis(2500),
        "kubectl delete returned after {waited:?}, before the 3 s grace period"
    );
    let exec_status = wait_exit(&mut exec, "kubectl exec", Duration::from_secs(10));
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.iter().any(|l| l == "got-TERM"),
        "the SIGTERM trap did not run: {rest:?}"
    );
    // SIGKILL at the end: 128 + 9.
    assert_eq!(exec_status.code(), Some(137), "kubectl exec: {exec_status}");
    let out = sim.kubectl_unchecked("kubectl", "admin", &["get", "pod", "graceful"]);
    assert_eq!(
        text(&out.stderr),
        "Error from server (NotFound): pods \"graceful\" not found\n"
    );
}

#[test]
fn dependents_created_with_an_absent_owner_are_collected() {
    let sim = Sim::start();
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &["get", "pod", "solo", "-o", "jsonpath={.metadata.uid}"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let solo_uid = text(&out.stdout);
    let manifest = sim.dir.path().join("dependents.json");
    let owner = |name: &str, uid: &str| serde_json::json!({"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid});
    let lease = |name: &str, owners: Vec<serde_json::Value>| {
        serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "default", "ownerReferences": owners}})
    };
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        // Only an owner that never existed: collected.
        lease("orphaned", vec![owner("ghost", "00000000-0000-4000-8000-000000000000")]),
        // An owner of the right name with another uid is absent too.
        lease("stale", vec![owner("solo", "00000000-0000-4000-8000-000000000001")]),
        // One owner present: kept, without the reference to the absent one.
        lease("kept", vec![owner("solo", &solo_uid), owner("ghost", "00000000-0000-4000-8000-000000000000")]),
    ]});
    std::fs::write(&manifest, list.to_string()).expect("write manifest");
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &["create", "-f", manifest.to_str().expect("utf-8 path")],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    wait_for(
        "the garbage collector to delete the leases of absent owners",
        Duration::from_secs(10),
        || {
            let out = sim.kubectl("kubectl", "admin", &["get", "leases", "-o", "name"]);
            out.status.success() && text(&out.stdout) == "lease.coordination.k8s.io/kept\n"
        },
    );
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &[
            "get",
            "lease",
            "kept",
            "-o",
            "jsonpath={.metadata.ownerReferences[*].name}",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "solo");
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
