//! The simulator's fault injection, seen by the real clients: failing
//! requests, cut watches and streams, a stopped API server.

mod common;

use std::io::{BufReader, Read, Write};
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// Starts `kubectl exec` of `version` into `solo` running `sleep MARKER`
/// after printing `started`, and returns it once the line has arrived.
fn open_exec(sim: &Sim, version: &str, seconds: u32) -> (Process, std::process::ChildStderr) {
    let mut child = sim
        .kubectl_command(version, "admin")
        .args(["exec", "solo", "--", "sh", "-c"])
        // The marker appears only in the simulated process's command
        // line, not in kubectl's (which holds the unexpanded arithmetic).
        .arg(format!("echo started; exec sleep $((20000 + {seconds}))"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl exec");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let child = Process(child);
    // A stream that never starts fails the test instead of hanging it.
    let (line, _) = read_line_within(
        BufReader::new(stdout),
        &format!("kubectl {version} exec"),
        Duration::from_secs(30),
    );
    assert_eq!(line, "started\n", "kubectl {version}");
    (child, stderr)
}

/// `kubectl port-forward` of pod `solo`'s `pod_port`, listening: the
/// process (stderr piped) and its local port.
fn open_port_forward(sim: &Sim, version: &str, pod_port: u16) -> (Process, u16) {
    let local = free_port();
    let forwarder = Process(
        sim.kubectl_command(version, "admin")
            .args(["port-forward", "--address", "127.0.0.1", "solo"])
            .arg(format!("{local}:{pod_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kubectl port-forward"),
    );
    wait_for(
        "kubectl port-forward to listen",
        Duration::from_secs(20),
        || std::net::TcpStream::connect(("127.0.0.1", local)).is_ok(),
    );
    (forwarder, local)
}

fn read_all(mut stderr: std::process::ChildStderr) -> String {
    let mut all = String::new();
    let _ = stderr.read_to_string(&mut all);
    all
}

/// Deletes a pod when dropped, also when the test fails: that ends the
/// processes the simulator started for it, which would outlive it.
struct DeleteOnDrop<'a>(&'a Sim, &'static str);

impl Drop for DeleteOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kubectl_unchecked(
            "kubectl",
            "admin",
            &["delete", "pod", self.1, "--wait=false"],
        );
    }
}

#[test]
fn a_cut_ends_an_open_kubectl_exec_without_a_status_and_the_process_lives_on() {
    let sim = Sim::start();
    let solo = DeleteOnDrop(&sim, "solo");
    // 1.33 speaks WebSocket (v5.channel.k8s.io), 1.27 SPDY.
    for (version, seconds) in [("1.33", 1), ("1.27", 2)] {
        let (mut exec, stderr) = open_exec(&sim, version, seconds);
        let marker = format!("sleep {}", 20000 + seconds);
        sim.admin("/sim/cut", "{}");
        let status = wait_exit(
            &mut exec.0,
            &format!("kubectl {version} exec to end at the cut"),
            Duration::from_secs(10),
        );
        let stderr = read_all(stderr);
        if version == "1.33" {
            // The connection dropped: no close frame, no status.
            assert_eq!(status.code(), Some(1), "{stderr}");
            assert!(
                stderr.ends_with(
                    "error: error reading from error stream: next reader: websocket: close 1006 (abnormal closure): unexpected EOF\n"
                ),
                "{stderr}"
            );
        } else {
            // kubectl over SPDY takes a connection that ends without a
            // status as the end of the command: exit 0, nothing said. (A
            // Success status would read the same to kubectl; the process
            // still running below is what shows no status was due.)
            assert_eq!(status.code(), Some(0), "kubectl {version}: {stderr}");
            assert_eq!(stderr, "", "kubectl {version}");
        }
        // The kubelet's process does not learn of the API server's loss.
        assert!(
            process_running(&marker),
            "kubectl {version}: a cut must not end the process"
        );
    }
    drop(solo);
    wait_for("the processes to end", Duration::from_secs(10), || {
        !process_running("sleep 2000[12]")
    });
}

/// Opens a connection through a forwarder on `local` and checks one round
/// trip.
fn connect_and_echo(local: u16, what: &str) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", local)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(b"before the cut").expect("write");
    let mut echoed = [0u8; 14];
    stream
        .read_exact(&mut echoed)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(&echoed, b"before the cut");
    stream
}

#[test]
fn a_cut_ends_an_open_kubectl_port_forward_and_its_connections() {
    let sim = Sim::start();
    let pod_port = echo_server();
    // 1.27 speaks SPDY, 1.33 SPDY tunnelled in WebSocket.
    for version in ["1.27", "1.33"] {
        let (mut forwarder, local) = open_port_forward(&sim, version, pod_port);
        let mut stream = connect_and_echo(local, &format!("kubectl {version}"));
        sim.admin("/sim/cut", "{}");
        // The forwarded connection ends with the stream...
        let mut rest = Vec::new();
        let ended = stream.read_to_end(&mut rest);
        assert!(
            matches!(ended, Ok(0))
                || ended.is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
            "kubectl {version}: the forwarded connection must end at the cut"
        );
        // ...and kubectl notices it lost the pod.
        let status = wait_exit(
            &mut forwarder.0,
            &format!("kubectl {version} port-forward to end at the cut"),
            Duration::from_secs(10),
        );
        let stderr = read_all(forwarder.0.stderr.take().expect("stderr"));
        assert_eq!(status.code(), Some(1), "kubectl {version}: {stderr}");
        assert!(
            stderr.ends_with("error: lost connection to pod\n"),
            "kubectl {version}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_ends_a_plain_websocket_port_forward() {
    use k8s_openapi::api::core::v1::Pod;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = Sim::start();
    let pod_port = echo_server();
    let pods: kube::Api<Pod> = kube::Api::namespaced(sim.kube_client("admin").await, "default");
    let mut forwarder = pods
        .portforward("solo", &[pod_port])
        .await
        .expect("portforward");
    let mut stream = forwarder.take_stream(pod_port).expect("stream");
    stream.write_all(b"ping").await.expect("write");
    let mut echoed = [0u8; 4];
    stream.read_exact(&mut echoed).await.expect("echo");
    assert_eq!(&echoed, b"ping");
    tokio::task::block_in_place(|| sim.admin("/sim/cut", "{}"));
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("the forwarded stream must end at the cut");
    assert!(matches!(ended, Ok(0) | Err(_)), "{ended:?} {rest:?}");
    // kube-rs reports a connection that ended without a close frame.
    let joined = tokio::time::timeout(Duration::from_secs(10), forwarder.join())
        .await
        .expect("the forwarder must end at the cut");
    assert!(joined.is_err(), "{joined:?}");
}

#[test]
fn a_cut_drops_open_watches_mid_stream() {
    let sim = Sim::start();
    let events = sim.dir.path().join("watch.json");
    // curl exits 18 (partial file) when a chunked body ends without its
    // last chunk, 0 when the server ends the watch cleanly.
    let mut watch = Process(
        std::process::Command::new("curl")
            .args(["-skN", "-H", "Authorization: Bearer admin-token", "-o"])
            .arg(&events)
            .arg(format!(
                "https://{}/api/v1/namespaces/default/pods?watch=1",
                sim.address
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("curl"),
    );
    wait_for(
        "the watch to list the existing pods",
        Duration::from_secs(10),
        || std::fs::read_to_string(&events).is_ok_and(|e| e.contains(r#""name":"web-0""#)),
    );
    sim.admin("/sim/cut", "{}");
    let status = wait_exit(&mut watch.0, "the watch to be cut", Duration::from_secs(10));
    assert_eq!(status.code(), Some(18));
}

#[test]
fn stopping_the_api_drops_open_streams_and_keeps_the_state() {
    let sim = Sim::start();
    let solo = DeleteOnDrop(&sim, "solo");
    let lease = r#"{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "kept", "namespace": "default"}, "spec": {"holderIdentity": "before-the-stop"}}"#;
    let out = sim.kubectl_version("1.33", "admin", &["apply", "-f", "-"], lease.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (mut exec, exec_stderr) = open_exec(&sim, "1.33", 3);
    let pod_port = echo_server();
    let (mut forwarder, local) = open_port_forward(&sim, "1.27", pod_port);
    let mut stream = connect_and_echo(local, "kubectl 1.27");

    sim.admin("/sim/stop", r#"{"seconds": 3}"#);
    wait_for("the API to stop", Duration::from_secs(5), || {
        std::net::TcpStream::connect(&sim.address).is_err()
    });
    let status = wait_exit(&mut exec.0, "the exec to end", Duration::from_secs(10));
    let stderr = read_all(exec_stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.ends_with(
            "error: error reading from error stream: next reader: websocket: close 1006 (abnormal closure): unexpected EOF\n"
        ),
        "{stderr}"
    );
    let mut rest = Vec::new();
    assert!(
        !matches!(stream.read_to_end(&mut rest), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the forwarded connection must end with the API"
    );
    let status = wait_exit(
        &mut forwarder.0,
        "the port-forward to end",
        Duration::from_secs(10),
    );
    let stderr = read_all(forwarder.0.stderr.take().expect("stderr"));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.ends_with("error: lost connection to pod\n"),
        "{stderr}"
    );

    // The API comes back with its state; the kubelet's process ran on.
    wait_for("the API to serve again", Duration::from_secs(20), || {
        sim.kubectl_unchecked("kubectl", "admin", &["get", "--raw", "/version"])
            .status
            .success()
    });
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &[
            "get",
            "lease",
            "kept",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    );
    assert_eq!(
        text(&out.stdout),
        "before-the-stop",
        "{}",
        text(&out.stderr)
    );
    assert!(process_running("sleep 20003"));
    drop(solo);
    wait_for("the process to end", Duration::from_secs(10), || {
        !process_running("sleep 20003")
    });
}

#[test]
fn injected_failures_reach_kubectl_as_the_api_server_words_them() {
    let sim = Sim::start();
    let cache = sim.dir.path().join("kubectl-cache");
    let cache = cache.to_str().expect("UTF-8 path");
    let get = |version: &str, args: &[&str]| {
        let out = sim.kubectl_version(
            version,
            "admin",
            &[&["--cache-dir", cache], args].concat(),
            b"",
        );
        (out.status.code(), text(&out.stderr))
    };
    // Discovery is cached first, as in a client that already worked with
    // this cluster: what follows is the request's own error.
    for version in VERSIONS {
        assert_eq!(get(version, &["get", "pods"]), (Some(0), String::new()));
    }
    for (fault, line) in [
        (
            r#"{"fail_status": 503}"#,
            "Error from server (ServiceUnavailable): injected failure\n",
        ),
        (
            r#"{"fail_status": 500}"#,
            "Error from server (InternalError): Internal error occurred: injected failure\n",
        ),
    ] {
        sim.admin("/sim/faults", fault);
        for version in VERSIONS {
            for args in [&["get", "pods"][..], &["exec", "solo", "--", "true"]] {
                assert_eq!(
                    get(version, args),
                    (Some(1), line.to_string()),
                    "kubectl {version} {args:?} with {fault}"
                );
            }
        }
    }
    // Without a discovery cache, kubectl fails at discovery already.
    let empty_cache = sim.dir.path().join("empty-cache");
    let out = sim.kubectl_unchecked(
        "kubectl",
        "admin",
        &[
            "--cache-dir",
            empty_cache.to_str().expect("UTF-8 path"),
            "get",
            "pods",
        ],
    );
    assert!(
        text(&out.stderr)
            .ends_with("Error from server (InternalError): an error on the server (\"unknown\") has prevented the request from succeeding\n"),
        "{}",
        text(&out.stderr)
    );
    // Clearing the faults heals the API.
    sim.admin("/sim/faults", "{}");
    assert_eq!(get("1.33", &["get", "pods"]), (Some(0), String::new()));
}
