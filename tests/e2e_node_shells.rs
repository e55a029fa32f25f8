//! End to end: node shells through an on-demand, shared nsenter pod.

mod common;

use std::time::Duration;

use common::*;

/// Where node-shell pods live by default: a namespace of their own.
const NODE_SHELLS: &str = "kbastion-node-shells";

fn node_pods(sim: &Sim) -> Vec<String> {
    node_pods_in(sim, NODE_SHELLS)
}

fn node_pods_in(sim: &Sim, namespace: &str) -> Vec<String> {
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &[
            "get",
            "pods",
            "-n",
            namespace,
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
    pod_json_in(sim, NODE_SHELLS, name)
}

fn pod_json_in(sim: &Sim, namespace: &str, name: &str) -> serde_json::Value {
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &["get", "pod", "-n", namespace, name, "-o", "json"],
    );
    serde_json::from_slice(&out.stdout).expect("kubectl prints the pod as JSON")
}

#[test]
fn node_shell_runs_on_the_node_through_one_shared_pod_deleted_after_the_linger() {
    let sim = Sim::start();
    // A linger long enough for the checks between sessions on a loaded
    // machine; the wait for the deletion below allows for it.
    let bastion = Bastion::start(&sim, "[node_shell]\nlinger_secs = 5\n");
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
    // The bastion creates the pod and execs in it as the person: the API
    // server checked alice's own rights.
    let events = sim.api_audit();
    let on_behalf = |verb: &str, uri: &str| {
        events.iter().any(|e| {
            e["verb"] == verb
                && e["requestURI"].as_str().is_some_and(|u| u.starts_with(uri))
                && e["impersonatedUser"]["username"] == "alice"
        })
    };
    let pods = "/api/v1/namespaces/kbastion-node-shells/pods";
    assert!(on_behalf("create", pods), "{events:#?}");
    assert!(
        on_behalf("get", &format!("{pods}/kbastion-node-node-1/exec?")),
        "{events:#?}"
    );
    // A second session within the linger reuses the same pod.
    let out = bastion.ssh("alice@node-1", &["echo again"], b"");
    assert_eq!(text(&out.stdout), "again\n");
    assert_eq!(
        pod_json(&sim, "kbastion-node-node-1")["metadata"]["uid"],
        uid
    );
    assert_eq!(pod["metadata"]["labels"]["kbastion.io/node"], "node-1");
    // Two sessions at once share it too: the second starts while the
    // first is running, and both run in the same pod (same uid).
    let (mut first, mut first_out) = open_session(&bastion, "alice@node-1", "cat");
    converse(&mut first, &mut first_out, "one\n");
    let out = bastion.ssh("alice@node-1", &["echo concurrent"], b"");
    assert_eq!(text(&out.stdout), "concurrent\n");
    converse(&mut first, &mut first_out, "still one\n");
    assert_eq!(
        pod_json(&sim, "kbastion-node-node-1")["metadata"]["uid"],
        uid
    );
    drop(first.stdin.take());
    assert!(wait_exit(&mut first, "the first session", Duration::from_secs(20)).success());
    assert_eq!(node_pods(&sim), ["kbastion-node-node-1"]);
    // Log pulls from the node with scp, both protocols (the simulated
    // node's file system is this machine's).
    let log = sim.dir.path().join("node-syslog");
    std::fs::write(&log, "kernel: hello from node-1\n").unwrap();
    for flags in [&[][..], &["-O"][..]] {
        let local = bastion.dir.path().join("pulled-syslog");
        let mut scp = bastion.ssh_command("scp");
        scp.args(flags)
            .arg(format!("alice@node-1@127.0.0.1:{}", log.display()))
            .arg(&local);
        let out = run_with_input(scp, b"");
        assert!(out.status.success(), "{flags:?}: {}", text(&out.stderr));
        assert_eq!(std::fs::read(&local).unwrap(), std::fs::read(&log).unwrap());
        std::fs::remove_file(&local).unwrap();
    }
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

/// An ssh session with its stdin and stdout piped.
fn open_session(
    bastion: &Bastion,
    login: &str,
    command: &str,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
) {
    let mut ssh = bastion.ssh_command("ssh");
    ssh.arg(format!("{login}@127.0.0.1"))
        .arg(command)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = ssh.spawn().unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    (child, stdout)
}

/// Sends a line to a `cat` session and reads it back.
fn converse(
    child: &mut std::process::Child,
    stdout: &mut std::io::BufReader<std::process::ChildStdout>,
    line: &str,
) {
    use std::io::{BufRead, Write};
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(line.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let mut back = String::new();
    stdout.read_line(&mut back).unwrap();
    assert_eq!(back, line);
}

/// The replicas holding a node-shell pod, from its annotation.
fn holders(sim: &Sim, name: &str) -> usize {
    let pod = pod_json(sim, name);
    pod["metadata"]["annotations"]["kbastion.io/holders"]
        .as_str()
        .and_then(|h| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(h).ok())
        .map_or(0, |h| h.len())
}

#[test]
fn replicas_share_a_pod_and_a_killed_one_leaves_the_others_sessions_working() {
    let sim = Sim::start();
    let config = "[node_shell]\nhold_secs = 3\nlinger_secs = 1\n";
    let doomed = Bastion::start(&sim, config);
    let survivor = Bastion::start(&sim, config);
    let (mut doomed_session, mut doomed_out) = open_session(&doomed, "alice@node-1", "cat");
    converse(&mut doomed_session, &mut doomed_out, "doomed\n");
    let (mut session, mut out) = open_session(&survivor, "alice@node-1", "cat");
    converse(&mut session, &mut out, "ping\n");
    let name = "kbastion-node-node-1";
    assert_eq!(node_pods(&sim), [name]);
    assert_eq!(holders(&sim, name), 2);
    let uid = pod_json(&sim, name)["metadata"]["uid"].clone();
    // SIGKILL one replica: its hold expires and is dropped, the pod stays
    // for the survivor, whose session goes on in the same pod.
    let mut doomed = doomed;
    doomed.process.0.kill().unwrap();
    let _ = doomed_session.kill();
    wait_for(
        "the killed replica's hold to expire",
        Duration::from_secs(20),
        || holders(&sim, name) == 1,
    );
    converse(&mut session, &mut out, "still here\n");
    assert_eq!(pod_json(&sim, name)["metadata"]["uid"], uid);
    // Its last session over, the survivor lets go after the linger.
    drop(session.stdin.take());
    assert!(wait_exit(&mut session, "the session", Duration::from_secs(20)).success());
    wait_for(
        "the pod to be deleted after the linger",
        Duration::from_secs(20),
        || node_pods(&sim).is_empty(),
    );
}

#[test]
fn a_fresh_replica_sweeps_the_pods_of_replicas_that_all_died() {
    let sim = Sim::start();
    let config = "[node_shell]\nhold_secs = 3\nlinger_secs = 60\n";
    let mut crashed = Bastion::start(&sim, config);
    let (mut session, mut out) = open_session(&crashed, "alice@node-1", "cat");
    converse(&mut session, &mut out, "ping\n");
    assert_eq!(node_pods(&sim), ["kbastion-node-node-1"]);
    crashed.process.0.kill().unwrap();
    let _ = session.kill();
    let _fresh = Bastion::start(&sim, config);
    wait_for(
        "the fresh replica to sweep the orphaned pod",
        Duration::from_secs(30),
        || node_pods(&sim).is_empty(),
    );
}

/// In a cluster, every replica holding a node-shell pod owns it through
/// its own Pod (downward API): the pod goes only when all owners are gone.
/// Owners must share the pod's namespace, so this holds where node shells
/// are configured into the bastion's own namespace; in a namespace of
/// their own, expiring holds and the sweeper remove them.
#[test]
fn node_pods_are_owned_by_every_holding_replica_pod() {
    let sim = Sim::start();
    let manifest = sim.dir.path().join("replicas.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kbastion-a\n  namespace: kbastion\nspec:\n  containers:\n  - name: kbastion\n    image: kbastion\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: kbastion-b\n  namespace: kbastion\nspec:\n  containers:\n  - name: kbastion\n    image: kbastion\n",
    )
    .unwrap();
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &["apply", "-f", manifest.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let uid_of = |name: &str| {
        let out = sim.kubectl(
            "kubectl",
            "admin",
            &[
                "get",
                "pod",
                "-n",
                "kbastion",
                name,
                "-o",
                "jsonpath={.metadata.uid}",
            ],
        );
        text(&out.stdout)
    };
    let (uid_a, uid_b) = (uid_of("kbastion-a"), uid_of("kbastion-b"));
    let config = "[node_shell]\nlinger_secs = 600\nnamespace = \"kbastion\"\n";
    let a = Bastion::start_with_env(
        &sim,
        config,
        &[("POD_NAME", "kbastion-a"), ("POD_UID", &uid_a)],
    );
    let b = Bastion::start_with_env(
        &sim,
        config,
        &[("POD_NAME", "kbastion-b"), ("POD_UID", &uid_b)],
    );
    for bastion in [&a, &b] {
        let out = bastion.ssh("alice@node-1", &["echo in"], b"");
        assert_eq!(text(&out.stdout), "in\n", "{}", text(&out.stderr));
    }
    let name = "kbastion-node-node-1";
    let owners = |sim: &Sim| -> Vec<String> {
        let mut uids: Vec<String> =
            pod_json_in(sim, "kbastion", name)["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o["uid"].as_str().map(String::from))
                .collect();
        uids.sort();
        uids
    };
    let mut both = vec![uid_a.clone(), uid_b.clone()];
    both.sort();
    assert_eq!(owners(&sim), both);
    // One replica's Pod goes (a rolling update): the node pod stays.
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &["delete", "pod", "-n", "kbastion", "kbastion-a"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(node_pods_in(&sim, "kbastion"), [name]);
    assert_eq!(owners(&sim), [uid_b]);
    // The last owner goes: the garbage collector takes the node pod.
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &["delete", "pod", "-n", "kbastion", "kbastion-b"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for(
        "the node pod to be collected",
        Duration::from_secs(10),
        || node_pods_in(&sim, "kbastion").is_empty(),
    );
}

/// A node-shell namespace that does not exist is the operator's mistake,
/// not the user's missing target or the user's RBAC: the one line keeps
/// the API's own words, names the namespace, and says what kbastion was
/// doing.
#[test]
fn a_node_shell_namespace_the_bastion_cannot_use_is_named_in_the_error() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "[node_shell]\nnamespace = \"missing-ns\"\n");
    let out = bastion.ssh("alice@node-1", &["true"], b"");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        "kbastion: the Kubernetes API refused the request: cannot create node-shell pod missing-ns/kbastion-node-node-1: namespaces \"missing-ns\" not found\n"
    );
}

/// A pod named, labelled, annotated and pinned like node-1's node shell,
/// but with another image and no privilege, made by someone else: it is
/// refused in one line, never held or exec'd into.
#[test]
fn a_look_alike_node_shell_pod_is_refused_not_adopted() {
    let sim = Sim::start();
    let manifest = sim.dir.path().join("look-alike.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kbastion-node-node-1\n  namespace: kbastion-node-shells\n\
         \x20 labels:\n    app.kubernetes.io/managed-by: kbastion\n    app.kubernetes.io/component: node-shell\n    kbastion.io/node: node-1\n\
         \x20 annotations:\n    kbastion.io/node: node-1\n\
         spec:\n  nodeName: node-1\n  hostPID: true\n  hostNetwork: true\n  hostIPC: true\n  automountServiceAccountToken: false\n\
         \x20 containers:\n  - name: shell\n    image: registry.example/attacker-shell:1.0\n    command: [\"sleep\", \"2147483647\"]\n",
    )
    .unwrap();
    sim.kubectl(
        "kubectl",
        "admin",
        &["apply", "-f", manifest.to_str().unwrap()],
    );
    let bastion = Bastion::start(&sim, "");
    let out = bastion.ssh("alice@node-1", &["echo on the node"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "kbastion: pod kbastion-node-shells/kbastion-node-node-1 looks like node node-1's node-shell pod but is not what kbastion makes (its image is \"registry.example/attacker-shell:1.0\", not \"busybox:1.36\"); refusing it, an administrator should delete it\n"
    );
    assert!(text(&out.stdout).is_empty());
    let pod = pod_json_in(&sim, "kbastion-node-shells", "kbastion-node-node-1");
    assert!(
        pod["metadata"]["annotations"]["kbastion.io/holders"].is_null(),
        "the look-alike was held: {pod}"
    );
    bastion.wait_for_log_line(
        &["a look-alike node-shell pod was refused"],
        Duration::from_secs(5),
    );
}

/// Node-shell pods are created, held and exec'd into as the person: the
/// bastion's own token can no longer create a pod in the node-shell
/// namespace, a person with nodes/proxy but without the node-shell Role is
/// refused in one line, and one with it shares the pod alice's session
/// made, through their own exec.
#[test]
fn node_shells_run_with_the_persons_rights_not_the_bastions() {
    let sim = Sim::start();
    // A stolen bastion token: looks and deletes, never creates.
    let out = sim.kubectl_unchecked(
        "kubectl",
        "system:serviceaccount:kbastion:kbastion",
        &[
            "run",
            "stolen",
            "--image=busybox:1.36",
            "-n",
            "kbastion-node-shells",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot create resource \"pods\""),
        "{}",
        text(&out.stderr)
    );
    let bastion = with_erin_and_frank(&sim);

    let out = bastion.ssh("frank@node-1", &["true"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "kbastion: access denied by Kubernetes RBAC: User \"frank\" may not run node shells: needs create and update on pods and create on pods/exec in namespace kbastion-node-shells (the Role `kbastion rbac` prints for node_shell.groups)\n"
    );
    assert!(node_pods(&sim).is_empty());

    let (mut alice, mut alice_out) = open_session(&bastion, "alice@node-1", "cat");
    converse(&mut alice, &mut alice_out, "alice\n");
    let out = bastion.ssh("erin@node-1", &["echo erin on $(hostname)"], b"");
    assert_eq!(
        text(&out.stdout),
        "erin on node-1\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(node_pods(&sim), ["kbastion-node-node-1"]);
    // As the API server saw it: the pod created as alice, erin's exec as
    // erin; the bastion's own identity wrote nothing there.
    let events = sim.api_audit();
    let in_namespace = |e: &&serde_json::Value| {
        e["requestURI"]
            .as_str()
            .is_some_and(|u| u.starts_with("/api/v1/namespaces/kbastion-node-shells/pods"))
    };
    let as_whom = |verb: &str, tail: &str| -> Vec<String> {
        events
            .iter()
            .filter(in_namespace)
            .filter(|e| e["verb"] == verb)
            .filter(|e| {
                e["responseStatus"]["code"]
                    .as_u64()
                    .is_some_and(|c| c < 300)
            })
            .filter(|e| {
                e["requestURI"]
                    .as_str()
                    .is_some_and(|u| u.split('?').next().unwrap_or_default().ends_with(tail))
            })
            .map(|e| {
                e["impersonatedUser"]["username"]
                    .as_str()
                    .unwrap_or("the bastion itself")
                    .to_string()
            })
            .collect()
    };
    assert_eq!(as_whom("create", "/pods"), ["alice"]);
    // An exec over WebSocket is a GET (create over SPDY).
    let execs = [as_whom("get", "/exec"), as_whom("create", "/exec")].concat();
    assert!(execs.contains(&"erin".to_string()), "{execs:?}");
    assert!(
        !execs.contains(&"the bastion itself".to_string()),
        "{execs:?}"
    );
    assert!(
        !as_whom("update", "kbastion-node-node-1").contains(&"the bastion itself".to_string()),
        "the bastion wrote a hold with its own rights"
    );
    drop(alice.stdin.take());
    assert!(wait_exit(&mut alice, "alice's session", Duration::from_secs(20)).success());
}

/// The ValidatingAdmissionPolicy `kbastion rbac` prints, applied to the
/// simulator (which enforces it with CEL, as the API server does): a
/// person allowed node shells cannot run another image there, nor mount
/// the node, nor change a node-shell pod's spec; kbastion's own node
/// shells keep working, shared by two people.
#[test]
fn the_generated_admission_policy_admits_only_kbastions_node_shells() {
    let sim = Sim::start();
    let config = sim.dir.path().join("rbac-config.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:2222\"\nnamespace = \"kbastion\"\n[node_shell]\ngroups = [\"oncall\"]\n\
         [[users]]\nname = \"erin\"\nkubernetes_groups = [\"oncall\"]\n",
    )
    .unwrap();
    let printed = std::process::Command::new(BIN)
        .args(["rbac", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(printed.status.success(), "{}", text(&printed.stderr));
    let generated = sim.dir.path().join("generated.yaml");
    std::fs::write(&generated, &printed.stdout).unwrap();
    sim.kubectl(
        "kubectl",
        "admin",
        &["apply", "-f", generated.to_str().unwrap()],
    );

    // erin may create pods there (the node-shell Role), but only
    // kbastion's shape.
    let out = sim.kubectl_unchecked(
        "kubectl",
        "erin",
        &[
            "run",
            "evil",
            "--image=registry.example/attacker-shell:1.0",
            "-n",
            "kbastion-node-shells",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ValidatingAdmissionPolicy 'kbastion-node-shells' with binding 'kbastion-node-shells' denied request: only kbastion's node shell runs in this namespace"),
        "{}",
        text(&out.stderr)
    );
    let mounted = sim.dir.path().join("mounted.yaml");
    std::fs::write(
        &mounted,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: mounted\n  namespace: kbastion-node-shells\n\
         \x20 labels:\n    app.kubernetes.io/managed-by: kbastion\n    app.kubernetes.io/component: node-shell\n\
         spec:\n  automountServiceAccountToken: false\n  containers:\n  - name: shell\n    image: busybox:1.36\n    command: [\"sleep\", \"2147483647\"]\n\
         \x20   volumeMounts: [{name: root, mountPath: /host}]\n  volumes: [{name: root, hostPath: {path: /}}]\n",
    )
    .unwrap();
    let out = sim.kubectl_unchecked(
        "kubectl",
        "erin",
        &["apply", "-f", mounted.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("denied request: a node-shell pod mounts no volumes"),
        "{}",
        text(&out.stderr)
    );

    // kbastion's own node shells: created by alice, shared with erin, and
    // their spec cannot be changed, even by someone allowed to update pods.
    let bastion = with_erin_and_frank(&sim);
    let (mut alice, mut alice_out) = open_session(&bastion, "alice@node-1", "cat");
    converse(&mut alice, &mut alice_out, "alice\n");
    let out = bastion.ssh("erin@node-1", &["echo erin on $(hostname)"], b"");
    assert_eq!(
        text(&out.stdout),
        "erin on node-1\n",
        "{}",
        text(&out.stderr)
    );
    // An update (erin's Role has update, as holds need) that changes the spec.
    let mut pod = pod_json_in(&sim, "kbastion-node-shells", "kbastion-node-node-1");
    pod["spec"]["activeDeadlineSeconds"] = serde_json::json!(5);
    let changed = sim.dir.path().join("changed.json");
    std::fs::write(&changed, pod.to_string()).unwrap();
    let out = sim.kubectl_unchecked(
        "kubectl",
        "erin",
        &["replace", "-f", changed.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("denied request: a node-shell pod's spec cannot change"),
        "{}",
        text(&out.stderr)
    );
    converse(&mut alice, &mut alice_out, "still alice\n");
    drop(alice.stdin.take());
    assert!(wait_exit(&mut alice, "alice's session", Duration::from_secs(20)).success());
}

/// A bastion whose people also include erin (group oncall, with the
/// node-shell Role in the test cluster) and frank (group trainee,
/// nodes/proxy only), with the harness's key.
fn with_erin_and_frank(sim: &Sim) -> Bastion {
    let bastion = Bastion::start(
        sim,
        "[[users]]\nname = \"erin\"\nkubernetes_groups = [\"oncall\"]\nauthorized_keys = []\n\
         [[users]]\nname = \"frank\"\nkubernetes_groups = [\"trainee\"]\nauthorized_keys = []\n",
    );
    // The harness authorizes its key for alice, bob and carol; erin and
    // frank get the same key by a reload.
    let config = bastion.dir.path().join("kbastion.toml");
    let written = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        written.replace(
            "authorized_keys = []",
            &format!("authorized_keys = [\"{}\"]", bastion.keys.public),
        ),
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(bastion.process.0.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    bastion.wait_for_log_line(&["configuration reloaded"], Duration::from_secs(10));
    bastion
}
