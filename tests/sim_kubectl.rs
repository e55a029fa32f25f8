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
    let out = sim.kubectl("kubectl", "admin", &["get", "pod", "-n", "prod", "api-1"]);
    assert_eq!(
        text(&out.stderr),
        "Error from server (NotFound): pods \"api-1\" not found\n"
    );
    let mut seen = String::new();
    let mut stdout = watch.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buffer = [0u8; 256];
        let mut all = String::new();
        while !all.contains("pod/api-1") {
            match stdout.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => all.push_str(&String::from_utf8_lossy(&buffer[..n])),
            }
        }
        all
    });
    wait_for(
        "the watch to report the pod",
        Duration::from_secs(10),
        || reader.is_finished(),
    );
    seen.push_str(&reader.join().unwrap());
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen.contains("pod/api-1"), "{seen}");
}

#[test]
fn kubectl_auth_can_i_follows_rbac_and_impersonation() {
    let sim = Sim::start();
    let ask = |context: &str, args: &[&str]| {
        text(
            &sim.kubectl("kubectl", context, &[&["auth", "can-i"], args].concat())
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
    let out = sim.kubectl(
        "kubectl",
        "bob",
        &["get", "pods", "-n", "default", "--as", "alice"],
    );
    assert_eq!(
        text(&out.stderr),
        "Error from server (Forbidden): users \"alice\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope\n"
    );
}

#[test]
fn errors_read_as_a_real_cluster_makes_kubectl_print_them() {
    let sim = Sim::start();
    for version in ["1.27", "1.33"] {
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
        ];
        for (context, args, expected) in cases {
            let out = kubectl_with_input(&sim, version, context, args, b"");
            assert_eq!(text(&out.stderr), *expected, "kubectl {version} {args:?}");
            assert_eq!(out.status.code(), Some(1));
        }
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
            "env -u TMUX {} --kubeconfig {} --context admin exec -it web-0 -- sh",
            kubectl_path(version),
            sim.kubeconfig.display()
        );
        let tmux = Tmux::start(&command, 100, 30);
        tmux.send(&["stty size", "Enter"]);
        tmux.wait_for_text("30 100");
        tmux.resize(120, 40);
        tmux.send(&["clear; stty size", "Enter"]);
        tmux.wait_for_text("40 120");
        tmux.send(&["exit", "Enter"]);
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
    // The stream is gone; containerd keeps the process. Give the simulator
    // the time a real kubelet would need to notice, then check.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        process_running(marker),
        "the simulator must not kill a process whose client went away"
    );
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
