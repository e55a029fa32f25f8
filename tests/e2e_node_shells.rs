//! End to end: node shells through an on-demand, shared nsenter pod.

mod common;

use std::time::Duration;

use common::*;

fn node_pods(sim: &Sim) -> Vec<String> {
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &[
            "get",
            "pods",
            "-n",
            "kbastion",
            "-l",
            "app.kubernetes.io/component=node-shell",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    text(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn pod_json(sim: &Sim, name: &str) -> serde_json::Value {
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &["get", "pod", "-n", "kbastion", name, "-o", "json"],
    );
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

#[test]
fn node_shell_runs_on_the_node_through_one_shared_pod_deleted_after_the_linger() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "[node_shell]\nlinger_secs = 2\n");
    let out = bastion.ssh("alice@node-1", &["echo $HOSTNAME; exit 4"], b"");
    assert_eq!(text(&out.stdout), "node-1\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(node_pods(&sim), ["kbastion-node-node-1"]);
    let pod = pod_json(&sim, "kbastion-node-node-1");
    let uid = pod["metadata"]["uid"].clone();
    assert_eq!(pod["spec"]["nodeName"], "node-1");
    assert_eq!(pod["spec"]["hostPID"], true);
    assert_eq!(pod["spec"]["hostNetwork"], true);
    assert_eq!(pod["spec"]["hostIPC"], true);
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(pod["spec"]["tolerations"][0]["operator"], "Exists");
    assert_eq!(
        pod["spec"]["containers"][0]["securityContext"]["privileged"],
        true
    );
    assert_eq!(
        pod["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "kbastion"
    );
    // A second session within the linger reuses the same pod.
    let out = bastion.ssh("alice@node-1", &["echo again"], b"");
    assert_eq!(text(&out.stdout), "again\n");
    assert_eq!(
        pod_json(&sim, "kbastion-node-node-1")["metadata"]["uid"],
        uid
    );
    // Two sessions at once share it too.
    let mut first = bastion.ssh_command("ssh");
    first.args(["alice@node-1@127.0.0.1", "sleep 3"]);
    let mut first = first.stdin(std::process::Stdio::null()).spawn().unwrap();
    let out = bastion.ssh("alice@node-1", &["echo concurrent"], b"");
    assert_eq!(text(&out.stdout), "concurrent\n");
    assert!(first.wait().unwrap().success());
    assert_eq!(node_pods(&sim), ["kbastion-node-node-1"]);
    // After the last session and the linger, the pod is gone.
    wait_for(
        "the node-shell pod to be deleted",
        Duration::from_secs(15),
        || node_pods(&sim).is_empty(),
    );
}

#[test]
fn node_shell_failures_are_one_line_and_leave_no_pod() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    let cases = [
        (
            "bob@node-1",
            "kbastion: access denied by Kubernetes RBAC: User \"bob\" may not open a shell on node node-1 (needs create on nodes/proxy)\n",
        ),
        (
            "alice@node-9",
            "kbastion: node node-9 not found; check the name with: kubectl get nodes\n",
        ),
        (
            "alice@edge-1",
            "kbastion: node edge-1 is NotReady (NodeStatusUnknown: Kubelet stopped posting node status.); its kubelet cannot start a shell, pick another node\n",
        ),
    ];
    for (login, expected) in cases {
        let out = bastion.ssh(login, &["true"], b"");
        assert_eq!(text(&out.stderr), expected, "{login}");
        assert_eq!(out.status.code(), Some(1), "{login}");
    }
    assert!(node_pods(&sim).is_empty());
    let broken = Bastion::start(
        &sim,
        "[node_shell]\nimage = \"registry.example/missing:1\"\n",
    );
    let out = broken.ssh("alice@node-1", &["true"], b"");
    let stderr = text(&out.stderr);
    assert!(
        stderr
            == "kbastion: cannot start a shell on node node-1: ErrImagePull for image registry.example/missing:1\n"
            || stderr
                == "kbastion: cannot start a shell on node node-1: ImagePullBackOff for image registry.example/missing:1\n",
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(1));
    wait_for(
        "the failed pod to be cleaned up",
        Duration::from_secs(10),
        || node_pods(&sim).is_empty(),
    );
}

#[test]
fn a_killed_replica_leaves_no_node_pod_for_long_and_replicas_share_pods() {
    let sim = Sim::start();
    let config = "[node_shell]\nhold_secs = 3\nlinger_secs = 1\n";
    let doomed = Bastion::start(&sim, config);
    let survivor = Bastion::start(&sim, config);
    // Both replicas hold the node's single pod at once.
    let mut session = doomed.ssh_command("ssh");
    session.args(["alice@node-1@127.0.0.1", "sleep 60"]);
    let mut session = session
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the node-shell pod", Duration::from_secs(20), || {
        node_pods(&sim).len() == 1
    });
    let out = survivor.ssh("alice@node-1", &["echo shared"], b"");
    assert_eq!(text(&out.stdout), "shared\n");
    assert_eq!(node_pods(&sim).len(), 1);
    // The survivor's hold ends after its linger, the doomed replica's
    // session keeps the pod.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        node_pods(&sim).len(),
        1,
        "the pod must stay while a session holds it"
    );
    // SIGKILL the replica holding the pod: its hold expires and the
    // survivor's sweeper deletes the pod.
    let mut doomed = doomed;
    doomed.process.0.kill().unwrap();
    let _ = session.wait();
    wait_for(
        "the sweeper to delete the orphaned pod",
        Duration::from_secs(20),
        || node_pods(&sim).is_empty(),
    );
}
