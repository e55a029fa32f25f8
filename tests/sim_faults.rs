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

/// What a SPDY exec client (`v4.channel.k8s.io`, as kubectl 1.27 speaks
/// it) received until its connection ended.
#[derive(Debug)]
struct SpdyExec {
    stdout: Vec<u8>,
    /// The error stream's bytes: the `Status` the kubelet writes when the
    /// process ends, nothing when the stream ended without one.
    status: Vec<u8>,
}

/// A TLS connection to the simulator that trusts the kubeconfig's CA.
async fn connect_tls(sim: &Sim) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use base64::Engine;
    use rustls::pki_types::pem::PemObject;
    let kubeconfig: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sim.kubeconfig).expect("kubeconfig"))
            .expect("kubeconfig is JSON");
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(
            kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]
                .as_str()
                .expect("certificate-authority-data"),
        )
        .expect("base64 CA");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(&ca_pem).expect("CA PEM"))
        .expect("CA certificate");
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(&sim.address)
        .await
        .expect("connect to the simulator");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").expect("server name"),
            tcp,
        )
        .await
        .expect("TLS handshake with the simulator")
}

/// Runs `sh -c SCRIPT` in pod `solo` over SPDY as kubectl 1.27 does
/// (stdout and error streams), the frames read by the simulator's own
/// SPDY codec. Once stdout has shown `started\n`, `after_started` runs
/// (a cut, or nothing); then everything is read until the connection ends.
async fn spdy_exec(sim: &Sim, script: &str, after_started: impl FnOnce()) -> SpdyExec {
    use kbastion::sim::spdy::{Frame, HeaderCompressor, HeaderDecompressor, Headers};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let tls = connect_tls(sim).await;
    let mut connection = tokio::io::BufReader::new(tls);
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("command", "sh")
        .append_pair("command", "-c")
        .append_pair("command", script)
        .append_pair("stdout", "true")
        .finish();
    let request = format!(
        "POST /api/v1/namespaces/default/pods/solo/exec?{query} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer admin-token\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n",
        sim.address
    );
    connection
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .expect("send the exec request");
    let mut head = String::new();
    loop {
        let mut line = String::new();
        connection
            .read_line(&mut line)
            .await
            .expect("response head");
        assert!(!line.is_empty(), "the connection ended in the head: {head}");
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let mut compressor = HeaderCompressor::default();
    let mut decompressor = HeaderDecompressor::default();
    const ERROR: u32 = 1;
    const STDOUT: u32 = 3;
    for (stream_id, kind) in [(ERROR, "error"), (STDOUT, "stdout")] {
        let frame = Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            fin: false,
            headers: Headers(vec![("streamtype".into(), kind.into())]),
        };
        let bytes = kbastion::sim::spdy::encode(&frame, &mut compressor).expect("encode");
        connection
            .get_mut()
            .write_all(&bytes)
            .await
            .expect("open a stream");
    }
    let mut exec = SpdyExec {
        stdout: Vec::new(),
        status: Vec::new(),
    };
    let mut after_started = Some(after_started);
    loop {
        let frame = tokio::time::timeout(
            Duration::from_secs(20),
            kbastion::sim::spdy::read_frame(&mut connection, &mut decompressor),
        )
        .await
        .unwrap_or_else(|_| panic!("the SPDY connection neither ended nor spoke: {exec:?}"));
        match frame {
            // The end of the connection, clean or not.
            Ok(None) | Err(_) => return exec,
            Ok(Some(Frame::Data {
                stream_id, data, ..
            })) => {
                if stream_id == ERROR {
                    exec.status.extend_from_slice(&data);
                } else if stream_id == STDOUT {
                    exec.stdout.extend_from_slice(&data);
                    if exec.stdout.ends_with(b"started\n")
                        && let Some(run) = after_started.take()
                    {
                        tokio::task::block_in_place(run);
                    }
                }
            }
            Ok(Some(_)) => {}
        }
    }
}

/// The SPDY observer sees the status a finished command's stream carries,
/// so that its "no status" after a cut below means something.
#[tokio::test(flavor = "multi_thread")]
async fn a_spdy_exec_that_ends_carries_its_status_and_a_cut_one_none() {
    let sim = Sim::start();
    let solo = DeleteOnDrop(&sim, "solo");
    let ended = spdy_exec(&sim, "echo started; exit 0", || {}).await;
    assert_eq!(text(&ended.stdout), "started\n");
    assert_eq!(text(&ended.status), r#"{"metadata":{},"status":"Success"}"#);
    let failed = spdy_exec(&sim, "echo started; exit 3", || {}).await;
    assert_eq!(text(&failed.stdout), "started\n");
    let status: serde_json::Value =
        serde_json::from_slice(&failed.status).expect("a Status on the error stream");
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");
    // A cut while the process runs: the stream ends with no status at all
    // (a Success written at the cut would read as the command's success
    // to kubectl 1.27, which says nothing either way).
    let cut = spdy_exec(&sim, "echo started; exec sleep $((20000 + 4))", || {
        sim.admin("/sim/cut", "{}")
    })
    .await;
    assert_eq!(text(&cut.stdout), "started\n");
    assert_eq!(text(&cut.status), "", "the error stream after a cut");
    assert!(
        process_running("sleep 20004"),
        "a cut must not end the process"
    );
    drop(solo);
    wait_for("the process to end", Duration::from_secs(10), || {
        !process_running("sleep 20004")
    });
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
            // status as the end of the command: exit 0, nothing said. A
            // Success status would read the same to kubectl (client-go's
            // v4 error decoder takes no bytes and Success alike), so
            // a_spdy_exec_that_ends_carries_its_status_and_a_cut_one_none
            // reads the error stream itself.
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
