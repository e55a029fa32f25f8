//! The simulator against the real kubectl binaries of every minor version
//! from 1.27 to 1.33 (SPDY, WebSocket and tunnelled transports) and
//! against kube-rs.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn kubectl_with_input(
    sim: &Sim,
    version: &str,
    context: &str,
    args: &[&str],
    input: &[u8],
) -> std::process::Output {
    let mut command = Command::new(kubectl_path(version));
    command
        .arg("--kubeconfig")
        .arg(&sim.kubeconfig)
        .arg("--context")
        .arg(context)
        .args(args);
    run_with_input(command, input)
}

#[test]
fn every_kubectl_version_execs_with_stdin_and_exit_code() {
    let sim = Sim::start();
    for version in VERSIONS {
        let out = kubectl_with_input(
            &sim,
            version,
            "admin",
            &[
                "exec",
                "-i",
                "web-0",
                "--",
                "sh",
                "-c",
                "cat; echo $ROLE; exit 7",
            ],
            b"hello\n",
        );
        assert_eq!(
            text(&out.stdout),
            "hello\napp\n",
            "kubectl {version}: {}",
            text(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(7),
            "kubectl {version}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn every_kubectl_version_port_forwards_both_ways() {
    let sim = Sim::start();
    let pod_port = echo_server();
    for version in VERSIONS {
        let local = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(kubectl_path(version))
            .arg("--kubeconfig")
            .arg(&sim.kubeconfig)
            .args([
                "--context",
                "admin",
                "port-forward",
                "--address",
                "127.0.0.1",
                "web-0",
                &format!("{local}:{pod_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let _forwarder = Process(child);
        wait_for(
            "kubectl port-forward to listen",
            Duration::from_secs(20),
            || std::net::TcpStream::connect(("127.0.0.1", local)).is_ok(),
        );
        for round in 0..3 {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", local)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let message = format!("round {round} through kubectl {version}");
            stream.write_all(message.as_bytes()).unwrap();
            let mut echoed = vec![0u8; message.len()];
            stream
                .read_exact(&mut echoed)
                .unwrap_or_else(|e| panic!("kubectl {version}: {e}"));
            assert_eq!(text(&echoed), message);
        }
    }
}

#[test]
fn kubectl_gets_applies_watches_and_deletes() {
    let sim = Sim::start();
    let out = sim.kubectl("kubectl", "admin", &["get", "nodes"]);
    let nodes = text(&out.stdout);
    assert!(
        nodes.contains("node-1   Ready") && nodes.contains("edge-1   NotReady"),
        "{nodes}"
    );
    let out = sim.kubectl("kubectl", "admin", &["get", "namespaces", "-o", "name"]);
    assert!(text(&out.stdout).contains("namespace/prod"));
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&sim.kubeconfig)
        .args([
            "--context",
            "admin",
            "get",
            "pods",
            "-n",
            "prod",
            "-w",
            "-o",
            "name",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Every line the watch prints, as it prints it.
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<String>();
    let watched = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(watched)
            .lines()
            .map_while(Result::ok)
        {
            if seen_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The initial list (prod's db-0) shows the watch is live: the pod
    // applied next can only reach it as a watch event.
    assert_eq!(
        seen_rx.recv_timeout(Duration::from_secs(10)).as_deref(),
        Ok("pod/db-0")
    );
    let manifest = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "api-1", "namespace": "prod", "labels": {"app": "api"}}, "spec": {"containers": [{"name": "api", "image": "busybox:1.36"}]}}"#;
    let mut apply = Command::new("kubectl");
    apply
        .arg("--kubeconfig")
        .arg(&sim.kubeconfig)
        .args(["--context", "admin", "apply", "-f", "-"]);
    let out = run_with_input(apply, manifest.as_bytes());
    assert_eq!(
        text(&out.stdout),
        "pod/api-1 created\n",
        "{}",
        text(&out.stderr)
    );
    sim.wait_running("prod", "api-1");
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &[
            "get",
            "pods",
            "-n",
            "prod",
            "-l",
            "app=api",
            "--field-selector",
            "spec.nodeName=node-1",
            "-o",
            "name",
        ],
    );
    assert_eq!(text(&out.stdout), "pod/api-1\n");
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &["delete", "pod", "-n", "prod", "api-1"],
    );
    assert_eq!(
        text(&out.stdout),
        "pod \"api-1\" deleted\n",
        "{}",
        text(&out.stderr)
    );
    let out = sim.kubectl_unchecked("kubectl", "admin", &["get", "pod", "-n", "prod", "api-1"]);
    assert_eq!(
        text(&out.stderr),
        "Error from server (NotFound): pods \"api-1\" not found\n"
    );
    // The new pod arrived as an event (added, then its updates).
    assert_eq!(
        seen_rx.recv_timeout(Duration::from_secs(10)).as_deref(),
        Ok("pod/api-1")
    );
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn kubectl_auth_can_i_follows_rbac_and_impersonation() {
    let sim = Sim::start();
    let ask = |context: &str, args: &[&str]| {
        text(
            &sim.kubectl_unchecked("kubectl", context, &[&["auth", "can-i"], args].concat())
                .stdout,
        )
    };
    assert_eq!(
        ask(
            "bob",
            &["create", "pods", "--subresource=exec", "-n", "default"]
        ),
        "yes\n"
    );
    assert_eq!(
        ask(
            "bob",
            &["create", "pods", "--subresource=exec", "-n", "prod"]
        ),
        "no\n"
    );
    assert_eq!(
        ask(
            "admin",
            &[
                "create",
                "pods",
                "--subresource=exec",
                "-n",
                "prod",
                "--as",
                "bob"
            ]
        ),
        "no\n"
    );
    assert_eq!(
        ask(
            "admin",
            &[
                "create",
                "nodes",
                "--subresource=proxy",
                "--as",
                "someone",
                "--as-group",
                "platform"
            ]
        ),
        "yes\n"
    );
    let out = sim.kubectl_unchecked(
        "kubectl",
        "bob",
        &["get", "pods", "-n", "default", "--as", "alice"],
    );
    assert_eq!(
        text(&out.stderr),
        "Error from server (Forbidden): users \"alice\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope\n"
    );
}

/// Applies a JSON manifest with kubectl and checks it was created.
fn apply(sim: &Sim, manifest: &str) {
    let out = sim.kubectl_version("1.33", "admin", &["apply", "-f", "-"], manifest.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A pod whose nodeSelector no node matches: the scheduler leaves it
/// Pending without a node.
const UNSCHEDULABLE: &str = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nowhere", "namespace": "default"}, "spec": {"nodeSelector": {"disk": "none"}, "containers": [{"name": "main", "image": "busybox:1.36"}]}}"#;

/// Two containers and no default-container annotation.
const PAIR: &str = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pair", "namespace": "default"}, "spec": {"containers": [{"name": "a", "image": "busybox:1.36"}, {"name": "b", "image": "busybox:1.36"}]}}"#;

#[test]
fn errors_read_as_a_real_cluster_makes_kubectl_print_them() {
    let sim = Sim::start();
    apply(&sim, UNSCHEDULABLE);
    wait_for(
        "the scheduler to give up on the pod",
        Duration::from_secs(10),
        || {
            let out = sim.kubectl(
                "kubectl",
                "admin",
                &[
                    "get",
                    "pod",
                    "nowhere",
                    "-o",
                    "jsonpath={.status.conditions[0].message}",
                ],
            );
            text(&out.stdout)
                == "0/3 nodes are available: 1 node(s) were not ready or had untolerated taints, 2 node(s) didn't match Pod's node affinity/selector."
        },
    );
    for version in VERSIONS {
        let cases: &[(&str, &[&str], &str)] = &[
            (
                "dave",
                &["exec", "web-0", "--", "true"],
                "Error from server (Forbidden): pods \"web-0\" is forbidden: User \"dave\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"default\"\n",
            ),
            (
                "admin",
                &["exec", "nope", "--", "true"],
                "Error from server (NotFound): pods \"nope\" not found\n",
            ),
            (
                "admin",
                &["exec", "web-0", "-c", "nope", "--", "true"],
                "Error from server (BadRequest): container nope is not valid for pod web-0\n",
            ),
            (
                "admin",
                &["exec", "nowhere", "--", "true"],
                "Error from server (BadRequest): pod nowhere does not have a host assigned\n",
            ),
            // `broken` is on a Ready node, its image cannot be pulled: the
            // kubelet answers, the container is not running.
            (
                "admin",
                &["exec", "broken", "--", "true"],
                "error: unable to upgrade connection: container not found (\"main\")\n",
            ),
            (
                "admin",
                &["exec", "done", "--", "true"],
                "error: cannot exec into a container in a completed pod; current phase is Succeeded\n",
            ),
        ];
        for (context, args, expected) in cases {
            let out = sim.kubectl_version(version, context, args, b"");
            assert_eq!(text(&out.stderr), *expected, "kubectl {version} {args:?}");
            assert_eq!(out.status.code(), Some(1), "kubectl {version} {args:?}");
        }
    }
}

/// The status code and `Status` message of an exec request that names no
/// container, sent over `transport` ("websocket" or "spdy") with curl.
fn exec_without_container(sim: &Sim, pod: &str, transport: &str) -> (String, serde_json::Value) {
    let mut command = Command::new("curl");
    command.args([
        "-sk",
        "--http1.1",
        "-w",
        "\n%{http_code}",
        "-H",
        "Authorization: Bearer admin-token",
        "-H",
        "Connection: Upgrade",
    ]);
    if transport == "spdy" {
        command.args([
            "-X",
            "POST",
            "-H",
            "Upgrade: SPDY/3.1",
            "-H",
            "X-Stream-Protocol-Version: v4.channel.k8s.io",
        ]);
    } else {
        command.args([
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "-H",
            "Sec-WebSocket-Protocol: v5.channel.k8s.io",
        ]);
    }
    let out = command
        .arg(format!(
            "https://{}/api/v1/namespaces/default/pods/{pod}/exec?command=true&stdout=true",
            sim.address
        ))
        .output()
        .expect("curl");
    let answer = text(&out.stdout);
    let (body, code) = answer.rsplit_once('\n').expect("status code line");
    (
        code.to_string(),
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

#[test]
fn several_containers_and_none_named_is_refused_by_the_server_and_defaulted_by_kubectl() {
    let sim = Sim::start();
    apply(&sim, PAIR);
    sim.wait_running("default", "pair");
    // The API server refuses, on either transport, before any upgrade.
    for transport in ["websocket", "spdy"] {
        let (code, status) = exec_without_container(&sim, "pair", transport);
        assert_eq!(code, "400", "{transport}: {status}");
        assert_eq!(status["reason"], "BadRequest", "{transport}");
        assert_eq!(
            status["message"],
            "a container name must be specified for pod pair, choose one of: [a b]",
            "{transport}"
        );
    }
    // kubectl names the first container itself and says so.
    for version in VERSIONS {
        let out = sim.kubectl_version(version, "admin", &["exec", "pair", "--", "pwd"], b"");
        assert_eq!(
            text(&out.stderr),
            "Defaulted container \"a\" out of: a, b\n",
            "kubectl {version}"
        );
        assert!(
            text(&out.stdout).ends_with("/pods/default/pair/a\n"),
            "kubectl {version}: {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn kubectl_patch_merges_json_patches_and_stale_updates_conflict() {
    let sim = Sim::start();
    let patch = |kind: &str, patch: &str| {
        let out = sim.kubectl_unchecked(
            "kubectl",
            "admin",
            &["patch", "pod", "solo", "--type", kind, "-p", patch],
        );
        (text(&out.stdout), text(&out.stderr))
    };
    let labels = || {
        text(
            &sim.kubectl(
                "kubectl",
                "admin",
                &["get", "pod", "solo", "-o", "jsonpath={.metadata.labels}"],
            )
            .stdout,
        )
    };
    let merge = r#"{"metadata": {"labels": {"tier": "web"}}}"#;
    assert_eq!(
        patch("merge", merge),
        ("pod/solo patched\n".into(), "".into())
    );
    // Nothing changes: the server keeps the resourceVersion.
    assert_eq!(
        patch("merge", merge),
        ("pod/solo patched (no change)\n".into(), "".into())
    );
    let json = r#"[{"op": "add", "path": "/metadata/labels/track", "value": "stable"}, {"op": "remove", "path": "/metadata/labels/tier"}]"#;
    assert_eq!(
        patch("json", json),
        ("pod/solo patched\n".into(), "".into())
    );
    assert_eq!(labels(), r#"{"track":"stable"}"#);

    // An update from a stale read is refused, by PUT and by a patch that
    // carries the old resourceVersion.
    let stale = text(
        &sim.kubectl("kubectl", "admin", &["get", "pod", "solo", "-o", "json"])
            .stdout,
    );
    let stale_version = serde_json::from_str::<serde_json::Value>(&stale).expect("pod JSON")
        ["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .to_string();
    let out = sim.kubectl("kubectl", "admin", &["label", "pod", "solo", "moved=on"]);
    assert_eq!(
        text(&out.stdout),
        "pod/solo labeled\n",
        "{}",
        text(&out.stderr)
    );
    let conflict = "Operation cannot be fulfilled on pods \"solo\": the object has been modified; please apply your changes to the latest version and try again";
    let out = sim.kubectl_version("1.33", "admin", &["replace", "-f", "-"], stale.as_bytes());
    assert_eq!(
        text(&out.stderr),
        format!("Error from server (Conflict): error when replacing \"STDIN\": {conflict}\n")
    );
    assert_eq!(out.status.code(), Some(1));
    let (stdout, stderr) = patch(
        "merge",
        &format!(
            r#"{{"metadata": {{"resourceVersion": "{stale_version}", "labels": {{"late": "yes"}}}}}}"#
        ),
    );
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        format!("Error from server (Conflict): {conflict}\n")
    );
    assert_eq!(labels(), r#"{"moved":"on","track":"stable"}"#);
}

/// The uid of an object, read with kubectl.
fn uid(sim: &Sim, kind: &str, name: &str) -> String {
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &[
            "get",
            kind,
            name,
            "-n",
            "prod",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// A Lease in `prod` owned by the given pods (name, uid).
fn owned_lease(name: &str, owners: &[(&str, &str)]) -> String {
    let references: Vec<serde_json::Value> = owners
        .iter()
        .map(|(owner, uid)| {
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "name": owner, "uid": uid})
        })
        .collect();
    serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "prod", "ownerReferences": references},
        "spec": {"holderIdentity": name},
    })
    .to_string()
}

fn owner_names(sim: &Sim, lease: &str) -> String {
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &[
            "get",
            "lease",
            lease,
            "-n",
            "prod",
            "-o",
            "jsonpath={.metadata.ownerReferences[*].name}",
        ],
    );
    assert!(out.status.success(), "{lease}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn deleting_an_owner_garbage_collects_its_dependents() {
    let sim = Sim::start();
    for pod in ["owner", "keeper", "parent"] {
        apply(
            &sim,
            &format!(
                r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{pod}", "namespace": "prod"}}, "spec": {{"containers": [{{"name": "main", "image": "busybox:1.36"}}]}}}}"#
            ),
        );
    }
    let (owner, keeper, parent) = (
        uid(&sim, "pod", "owner"),
        uid(&sim, "pod", "keeper"),
        uid(&sim, "pod", "parent"),
    );
    apply(&sim, &owned_lease("dependent", &[("owner", &owner)]));
    apply(
        &sim,
        &owned_lease("shared", &[("owner", &owner), ("keeper", &keeper)]),
    );
    apply(&sim, &owned_lease("orphan", &[("parent", &parent)]));

    // Background propagation (kubectl's default).
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &["delete", "pod", "owner", "-n", "prod"],
    );
    assert_eq!(
        text(&out.stdout),
        "pod \"owner\" deleted\n",
        "{}",
        text(&out.stderr)
    );
    wait_for(
        "the garbage collector to delete the dependent",
        Duration::from_secs(10),
        || {
            text(
                &sim.kubectl_unchecked(
                    "kubectl",
                    "admin",
                    &["get", "lease", "dependent", "-n", "prod"],
                )
                .stderr,
            ) == "Error from server (NotFound): leases.coordination.k8s.io \"dependent\" not found\n"
        },
    );
    // An object with another owner still present stays, without the
    // reference to the deleted one.
    assert_eq!(owner_names(&sim, "shared"), "keeper");

    // Orphan propagation keeps the dependents and drops their reference.
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &["delete", "pod", "parent", "-n", "prod", "--cascade=orphan"],
    );
    assert_eq!(
        text(&out.stdout),
        "pod \"parent\" deleted\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(owner_names(&sim, "orphan"), "");
}

#[test]
fn every_kubectl_version_gets_applies_and_deletes() {
    let sim = Sim::start();
    for version in VERSIONS {
        let name = format!("apply-{}", version.replace('.', "-"));
        let manifest = |tier: &str| {
            format!(
                r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "namespace": "prod", "labels": {{"tier": "{tier}"}}}}, "spec": {{"containers": [{{"name": "main", "image": "busybox:1.36"}}]}}}}"#
            )
        };
        let kubectl = |args: &[&str], input: &str| {
            let out = sim.kubectl_version(version, "admin", args, input.as_bytes());
            (text(&out.stdout), text(&out.stderr))
        };
        let apply = ["apply", "-f", "-"];
        let created = kubectl(&apply, &manifest("web"));
        assert_eq!(
            created,
            (format!("pod/{name} created\n"), "".into()),
            "kubectl {version}"
        );
        let configured = kubectl(&apply, &manifest("api"));
        assert_eq!(
            configured,
            (format!("pod/{name} configured\n"), "".into()),
            "kubectl {version}"
        );
        let unchanged = kubectl(&apply, &manifest("api"));
        assert_eq!(
            unchanged,
            (format!("pod/{name} unchanged\n"), "".into()),
            "kubectl {version}"
        );
        let (table, stderr) = kubectl(&["get", "pods", "-n", "prod", &name], "");
        let header = table.lines().next().unwrap_or_default();
        assert!(
            header
                .split_whitespace()
                .eq(["NAME", "READY", "STATUS", "RESTARTS", "AGE"]),
            "kubectl {version}: {table}{stderr}"
        );
        assert!(
            table
                .lines()
                .nth(1)
                .unwrap_or_default()
                .starts_with(&format!("{name} ")),
            "kubectl {version}: {table}"
        );
        let (labels, stderr) = kubectl(
            &[
                "get",
                "pod",
                "-n",
                "prod",
                &name,
                "-o",
                "jsonpath={.metadata.labels.tier}",
            ],
            "",
        );
        assert_eq!(labels, "api", "kubectl {version}: {stderr}");
        let deleted = kubectl(&["delete", "pod", "-n", "prod", &name], "");
        assert_eq!(
            deleted,
            (format!("pod \"{name}\" deleted\n"), "".into()),
            "kubectl {version}"
        );
        let (_, stderr) = kubectl(&["get", "pod", "-n", "prod", &name], "");
        assert_eq!(
            stderr,
            format!("Error from server (NotFound): pods \"{name}\" not found\n"),
            "kubectl {version}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_only_exec_is_refused_over_websocket_before_1_35_and_served_over_spdy() {
    use kube::api::{Api, AttachParams};
    use tokio::io::AsyncReadExt;
    for (version, websocket_allowed) in [("1.33", false), ("1.35", true)] {
        let sim = Sim::start_version(version);
        let options = kube::config::KubeConfigOptions {
            context: Some("carol".into()),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&sim.kubeconfig).unwrap(),
            &options,
        )
        .await
        .unwrap();
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
        let result = pods
            .exec(
                "web-0",
                ["echo", "via-websocket"],
                &AttachParams::default().container("app").stderr(false),
            )
            .await;
        match (result, websocket_allowed) {
            (Ok(mut process), true) => {
                let mut out = String::new();
                process
                    .stdout()
                    .unwrap()
                    .read_to_string(&mut out)
                    .await
                    .unwrap();
                assert_eq!(out, "via-websocket\n");
            }
            (Err(kube::Error::Api(status)), false) => {
                assert_eq!(status.code, 403);
                assert_eq!(
                    status.message,
                    "pods \"web-0\" is forbidden: User \"carol\" cannot get resource \"pods/exec\" in API group \"\" in the namespace \"default\""
                );
            }
            (other, _) => panic!("{version}: unexpected {:?}", other.err()),
        }
        // kubectl 1.33 falls back to SPDY, authorized as `create`.
        let sim_ref = &sim;
        let out = tokio::task::block_in_place(|| {
            kubectl_with_input(
                sim_ref,
                "1.33",
                "carol",
                &["exec", "web-0", "--", "echo", "served"],
                b"",
            )
        });
        assert_eq!(
            text(&out.stdout),
            "served\n",
            "{version}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn kubectl_exec_tty_follows_resizes() {
    let sim = Sim::start();
    for version in ["1.27", "1.33"] {
        let command = format!(
            "env -u TMUX {} --kubeconfig {} --context admin exec -it web-0 -- sh; echo kubectl-exit-$?; sleep 60",
            kubectl_path(version),
            sim.kubeconfig.display()
        );
        let tmux = Tmux::start(&command, 100, 30);
        // Keys are typed once the remote shell has drawn its prompt (root's
        // `# `, trimmed by tmux).
        tmux.wait_for_line_start("#");
        tmux.wait_for_the_remote_size(100, 30);
        tmux.resize_and_wait_for_the_remote(120, 40);
        tmux.send(&["exit 4", "Enter"]);
        tmux.wait_for_line_start("kubectl-exit-4");
    }
}

#[test]
fn a_killed_client_does_not_end_the_process_but_deleting_the_pod_does() {
    let sim = Sim::start();
    // The marker appears only in the simulated process's command line, not
    // in kubectl's (which holds the unexpanded arithmetic).
    let marker = "sleep 10009";
    let mut client = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&sim.kubeconfig)
        .args([
            "--context",
            "admin",
            "exec",
            "solo",
            "--",
            "sh",
            "-c",
            "sleep $((10000 + 9))",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the process to start", Duration::from_secs(20), || {
        process_running(marker)
    });
    client.kill().unwrap();
    client.wait().unwrap();
    // The stream is gone; containerd keeps the process: it is still there
    // at every look over 4 s, long after the simulator saw the connection
    // end.
    let killed = std::time::Instant::now();
    for look in 1..=8 {
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            process_running(marker),
            "the simulator must not kill a process whose client went away: gone at look {look}, {:?} after the kill",
            killed.elapsed()
        );
    }
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &["delete", "pod", "solo", "--wait=false"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for(
        "deleting the pod to end its processes",
        Duration::from_secs(10),
        || !process_running(marker),
    );
}

/// `kubectl auth whoami` (SelfSubjectReview, GA in
/// `authentication.k8s.io/v1` since 1.28): who the server takes the
/// caller for, after impersonation, as every authenticated user may ask.
#[test]
fn kubectl_auth_whoami_names_the_caller_and_the_impersonated_user() {
    let sim = Sim::start();
    for version in ["1.28", "1.33"] {
        let binary = format!("kubectl.{version}");
        let out = sim.kubectl(&binary, "bob", &["auth", "whoami", "-o", "json"]);
        let review: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("kubectl {version}: {e}: {}", text(&out.stdout)));
        assert_eq!(review["kind"], "SelfSubjectReview", "{review}");
        assert_eq!(review["apiVersion"], "authentication.k8s.io/v1");
        assert_eq!(review["status"]["userInfo"]["username"], "bob", "{review}");
        let groups = review["status"]["userInfo"]["groups"].to_string();
        assert!(groups.contains("system:authenticated"), "{groups}");
    }
    let out = sim.kubectl(
        "kubectl.1.33",
        "admin",
        &["auth", "whoami", "--as", "carol", "--as-group", "viewers"],
    );
    let table = text(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().eq(["Username", "carol"])),
        "{table}"
    );
    assert!(table.contains("viewers"), "{table}");
}

/// Everyday objects through kubectl 1.27 and 1.33: `apply` creates, then
/// configures a ConfigMap and a Secret (whose `stringData` the server
/// stores base64 in `data`), `get` prints the server's columns, `delete`
/// removes them.
#[test]
fn kubectl_applies_gets_and_deletes_configmaps_secrets_and_serviceaccounts() {
    use base64::Engine;
    let sim = Sim::start();
    for version in ["1.27", "1.33"] {
        let binary = format!("kubectl.{version}");
        let name = format!("settings-{}", version.replace('.', "-"));
        let manifest = |level: &str| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  level: {level}\n  mode: fast\n---\n\
                 apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\nstringData:\n  password: s3cr3t-{level}\n---\n\
                 apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: default\n"
            )
        };
        let out = kubectl_with_input(
            &sim,
            version,
            "admin",
            &["apply", "-f", "-"],
            manifest("info").as_bytes(),
        );
        assert!(
            out.status.success(),
            "kubectl {version}: {}",
            text(&out.stderr)
        );
        assert_eq!(
            text(&out.stdout),
            format!(
                "configmap/{name} created\nsecret/{name} created\nserviceaccount/{name} created\n"
            ),
            "kubectl {version}"
        );
        let out = kubectl_with_input(
            &sim,
            version,
            "admin",
            &["apply", "-f", "-"],
            manifest("debug").as_bytes(),
        );
        assert!(
            out.status.success(),
            "kubectl {version}: {}",
            text(&out.stderr)
        );
        assert_eq!(
            text(&out.stdout),
            format!(
                "configmap/{name} configured\nsecret/{name} configured\nserviceaccount/{name} unchanged\n"
            ),
            "kubectl {version}"
        );
        let level = sim.kubectl(
            &binary,
            "admin",
            &["get", "cm", &name, "-o", "jsonpath={.data.level}"],
        );
        assert_eq!(text(&level.stdout), "debug", "kubectl {version}");
        let secret = sim.kubectl(&binary, "admin", &["get", "secret", &name, "-o", "json"]);
        let secret: serde_json::Value = serde_json::from_slice(&secret.stdout).unwrap();
        assert_eq!(secret["type"], "Opaque");
        assert!(secret.get("stringData").is_none(), "{secret}");
        let password = base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["password"].as_str().unwrap_or_default())
            .unwrap();
        assert_eq!(password, b"s3cr3t-debug");
        let table = text(
            &sim.kubectl(&binary, "admin", &["get", "cm,secret,sa"])
                .stdout,
        );
        let row = |prefix: &str| {
            table
                .lines()
                .find(|l| l.starts_with(prefix))
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .unwrap_or_else(|| panic!("kubectl {version}: no {prefix} in\n{table}"))
        };
        assert_eq!(row(&format!("configmap/{name} "))[1], "2", "{table}");
        assert_eq!(
            row(&format!("secret/{name} "))[1..3],
            ["Opaque", "1"],
            "{table}"
        );
        assert!(table.contains("NAME") && table.contains("DATA"), "{table}");
        // Server-side apply is refused in one line, never half done.
        let out = kubectl_with_input(
            &sim,
            version,
            "admin",
            &["apply", "--server-side", "-f", "-"],
            manifest("warn").as_bytes(),
        );
        assert!(!out.status.success(), "kubectl {version}");
        assert!(
            text(&out.stderr).contains(
                "server-side apply is not served by kbastion's simulator (it keeps no managedFields); use client-side kubectl apply"
            ),
            "kubectl {version}: {}",
            text(&out.stderr)
        );
        let out = sim.kubectl(&binary, "admin", &["delete", "cm,secret,sa", &name]);
        assert!(
            text(&out.stdout).contains(&format!("configmap \"{name}\" deleted")),
            "{}",
            text(&out.stdout)
        );
        let gone = sim.kubectl_unchecked(&binary, "admin", &["get", "cm", &name]);
        assert_eq!(
            text(&gone.stderr).trim(),
            format!("Error from server (NotFound): configmaps \"{name}\" not found")
        );
    }
}

/// A Deployment through kubectl 1.27 and 1.33: `rollout status` ends when
/// its pods run, `scale --replicas=3` makes three, `rollout restart`
/// replaces them through a new ReplicaSet, and deleting the Deployment
/// leaves no ReplicaSet or pod behind.
#[test]
fn kubectl_rolls_out_scales_restarts_and_deletes_a_deployment() {
    let sim = Sim::start();
    for version in ["1.27", "1.33"] {
        let binary = format!("kubectl.{version}");
        let name = format!("shop-{}", version.replace('.', "-"));
        let manifest = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{app: {name}}}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: app\n        image: nginx:1.27\n"
        );
        let out = kubectl_with_input(
            &sim,
            version,
            "admin",
            &["apply", "-f", "-"],
            manifest.as_bytes(),
        );
        assert!(
            out.status.success(),
            "kubectl {version}: {}",
            text(&out.stderr)
        );
        let deployment = format!("deploy/{name}");
        let rollout = |what: &str| {
            let out = sim.kubectl(
                &binary,
                "admin",
                &["rollout", "status", &deployment, "--timeout=60s"],
            );
            assert!(
                text(&out.stdout)
                    .ends_with(&format!("deployment \"{name}\" successfully rolled out\n")),
                "kubectl {version} {what}: {}",
                text(&out.stdout)
            );
        };
        let running = || {
            let selector = format!("app={name}");
            let out = sim.kubectl(
                &binary,
                "admin",
                &[
                    "get",
                    "pods",
                    "-l",
                    &selector,
                    "--field-selector=status.phase=Running",
                    "-o",
                    "name",
                ],
            );
            text(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        rollout("after apply");
        assert_eq!(running().len(), 2, "kubectl {version}");
        sim.kubectl(&binary, "admin", &["scale", &deployment, "--replicas=3"]);
        rollout("after scale");
        let before = running();
        assert_eq!(before.len(), 3, "kubectl {version}: {before:?}");
        let table = text(&sim.kubectl(&binary, "admin", &["get", &deployment]).stdout);
        assert!(
            table.lines().any(|l| l.split_whitespace().take(4).eq([
                name.as_str(),
                "3/3",
                "3",
                "3"
            ])),
            "{table}"
        );
        sim.kubectl(&binary, "admin", &["rollout", "restart", &deployment]);
        rollout("after restart");
        wait_for("the old pods to go", Duration::from_secs(30), || {
            let now = running();
            now.len() == 3 && now.iter().all(|p| !before.contains(p))
        });
        sim.kubectl(&binary, "admin", &["delete", &deployment]);
        let selector = format!("app={name}");
        wait_for(
            "the ReplicaSets and pods to go",
            Duration::from_secs(30),
            || {
                let out = sim.kubectl(
                    &binary,
                    "admin",
                    &["get", "rs,pods", "-l", &selector, "-o", "name"],
                );
                text(&out.stdout).trim().is_empty()
            },
        );
    }
}

/// Containers look like containers: each pod has its own host name (its
/// UTS namespace, named after the pod), and an exec into a container of
/// a described image (distroless) runs inside it, in its root file system
/// and PID namespace, not as one of this machine's processes.
#[test]
fn a_pod_has_its_own_host_name_and_an_exec_runs_inside_an_isolated_container() {
    let sim = Sim::start();
    sim.wait_running("default", "web-0");
    let out = sim.kubectl("kubectl", "admin", &["exec", "web-0", "--", "hostname"]);
    assert_eq!(text(&out.stdout), "web-0\n");
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &["exec", "web-0", "-c", "sidecar", "--", "uname", "-n"],
    );
    assert_eq!(text(&out.stdout), "web-0\n");

    sim.wait_running("default", "api-0");
    let mut exec = Command::new(kubectl_path("1.33"));
    exec.arg("--kubeconfig")
        .arg(&sim.kubeconfig)
        .args([
            "--context",
            "admin",
            "exec",
            "api-0",
            "--",
            "sleep",
            "10993",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _exec = Process(exec.spawn().unwrap());
    let mut pid = None;
    wait_for("the exec'd sleep 10993", Duration::from_secs(20), || {
        pid = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c == b"sleep\x0010993\x00")
                    && std::fs::read_link(format!("/proc/{p}/root")).is_ok_and(|r| {
                        r.starts_with(sim.dir.path()) || r == std::path::Path::new("/")
                    })
            });
        pid.is_some()
    });
    let pid = pid.unwrap();
    let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
    let container = sim.dir.path().join("state/pods/default/api-0/app");
    assert_eq!(root, container.canonicalize().unwrap(), "the exec's root");
    let own_pid_ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    let host_pid_ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    assert_ne!(own_pid_ns, host_pid_ns, "the exec's PID namespace");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let inner: Vec<&str> = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .map(|l| l.split_whitespace().skip(1).collect())
        .unwrap_or_default();
    assert_eq!(
        inner.len(),
        2,
        "a PID inside the container's namespace: {status}"
    );
    assert_ne!(inner[1], "1", "not the container's PID 1: {status}");
}

/// Lists page as the API server pages them: `limit` gives at most that
/// many items, in key order, with a `continue` token and the count that
/// remains; kubectl's chunked lists (`--chunk-size`) follow the tokens to
/// the same answer as one whole list.
#[test]
fn lists_page_with_limit_and_continue_as_the_api_server_does() {
    let sim = Sim::start();
    sim.wait_running("default", "web-0");
    let whole = sim.kubectl(
        "kubectl",
        "admin",
        &["get", "pods", "-A", "-o", "name", "--chunk-size=0"],
    );
    let chunked = sim.kubectl(
        "kubectl",
        "admin",
        &["get", "pods", "-A", "-o", "name", "--chunk-size=2"],
    );
    assert_eq!(text(&chunked.stdout), text(&whole.stdout));
    let total = text(&whole.stdout).lines().count();
    assert!(total > 4, "{total} pods");
    let first = sim.kubectl(
        "kubectl",
        "admin",
        &["get", "--raw", "/api/v1/pods?limit=2"],
    );
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["metadata"]["remainingItemCount"], total - 2);
    let token = first["metadata"]["continue"].as_str().unwrap();
    let rest = sim.kubectl(
        "kubectl",
        "admin",
        &[
            "get",
            "--raw",
            &format!("/api/v1/pods?limit=500&continue={token}"),
        ],
    );
    let rest: serde_json::Value = serde_json::from_slice(&rest.stdout).unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), total - 2);
    assert!(
        rest["metadata"].get("continue").is_none(),
        "{}",
        rest["metadata"]
    );
    let bad = sim.kubectl_unchecked(
        "kubectl",
        "admin",
        &["get", "--raw", "/api/v1/pods?limit=2&continue=garbage"],
    );
    assert!(!bad.status.success());
}
