//! End to end: scp (SFTP and legacy), sftp, rsync and port forwarding with
//! the real OpenSSH tools.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn random_file(path: &std::path::Path, size: usize, seed: u32) {
    let data: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(path, data).unwrap();
}

/// The container's working directory in the simulator (its $HOME).
fn container_dir(sim: &Sim, pod: &str, container: &str) -> std::path::PathBuf {
    sim.dir
        .path()
        .join("state/pods/default")
        .join(pod)
        .join(container)
}

#[test]
fn scp_both_modes_copies_files_and_trees_byte_exact() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    let local = bastion.dir.path();
    random_file(&local.join("big.bin"), 20 * 1024 * 1024 + 17, 1);
    std::fs::create_dir_all(local.join("tree/sub")).unwrap();
    random_file(&local.join("tree/a.txt"), 1000, 2);
    random_file(&local.join("tree/sub/b.bin"), 300_000, 3);
    for (mode, flags) in [("sftp", &[][..]), ("legacy", &["-O"][..])] {
        let remote = format!("alice@default+web-0@127.0.0.1:{mode}.bin");
        let mut up = bastion.ssh_command("scp");
        up.args(flags).arg(local.join("big.bin")).arg(&remote);
        let out = run_with_input(up, b"");
        assert!(out.status.success(), "{mode} upload: {}", text(&out.stderr));
        assert_eq!(
            sha256(&container_dir(&sim, "web-0", "app").join(format!("{mode}.bin"))),
            sha256(&local.join("big.bin")),
            "{mode} upload"
        );
        let mut down = bastion.ssh_command("scp");
        down.args(flags)
            .arg(&remote)
            .arg(local.join(format!("{mode}-back.bin")));
        let out = run_with_input(down, b"");
        assert!(
            out.status.success(),
            "{mode} download: {}",
            text(&out.stderr)
        );
        assert_eq!(
            sha256(&local.join(format!("{mode}-back.bin"))),
            sha256(&local.join("big.bin")),
            "{mode} download"
        );
        let mut tree = bastion.ssh_command("scp");
        tree.args(flags)
            .arg("-r")
            .arg(local.join("tree"))
            .arg(format!("alice@default+web-0+sidecar@127.0.0.1:{mode}-tree"));
        let out = run_with_input(tree, b"");
        assert!(out.status.success(), "{mode} -r: {}", text(&out.stderr));
        let copied = container_dir(&sim, "web-0", "sidecar").join(format!("{mode}-tree"));
        assert_eq!(
            sha256(&copied.join("sub/b.bin")),
            sha256(&local.join("tree/sub/b.bin")),
            "{mode} -r"
        );
        assert_eq!(
            sha256(&copied.join("a.txt")),
            sha256(&local.join("tree/a.txt")),
            "{mode} -r"
        );
    }
}

#[test]
fn sftp_batch_operations_work() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    let local = bastion.dir.path();
    random_file(&local.join("f.bin"), 123_456, 4);
    let batch = local.join("batch");
    std::fs::write(&batch, format!("mkdir logs\nput {} logs/f.bin\nrename logs/f.bin logs/g.bin\nls -l logs\nget logs/g.bin {}\nrm logs/g.bin\nrmdir logs\n", local.join("f.bin").display(), local.join("g.bin").display())).unwrap();
    let mut sftp = bastion.ssh_command("sftp");
    sftp.arg("-b")
        .arg(&batch)
        .arg("alice@default+web-0@127.0.0.1");
    let out = run_with_input(sftp, b"");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("g.bin"));
    assert_eq!(sha256(&local.join("g.bin")), sha256(&local.join("f.bin")));
    assert!(!container_dir(&sim, "web-0", "app").join("logs").exists());
}

#[test]
fn rsync_over_ssh_syncs_a_tree() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    let local = bastion.dir.path();
    std::fs::create_dir_all(local.join("src/deep")).unwrap();
    random_file(&local.join("src/one"), 50_000, 5);
    random_file(&local.join("src/deep/two"), 2_000_000, 6);
    let ssh = bastion.ssh_command("ssh");
    let rsh: Vec<String> = std::iter::once("ssh".to_string())
        .chain(ssh.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect();
    let out = Command::new("rsync")
        .args(["-a", "-e", &rsh.join(" ")])
        .arg(format!("{}/", local.join("src").display()))
        .arg("alice@default+web-0@127.0.0.1:dst/")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dst = container_dir(&sim, "web-0", "app").join("dst");
    assert_eq!(
        sha256(&dst.join("deep/two")),
        sha256(&local.join("src/deep/two"))
    );
    assert_eq!(sha256(&dst.join("one")), sha256(&local.join("src/one")));
}

/// A tiny HTTP server standing for a pod's port (pods share the loopback).
fn http_server(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let _ = write!(
                    stream,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn local_and_dynamic_forwarding_reach_the_pod_and_nothing_else() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    let pod_port = http_server("hello-from-pod");
    let (local, refused, socks) = (free_port(), free_port(), free_port());
    let mut command = bastion.ssh_command_logging("ssh", "INFO");
    command
        .args(["-N", "-o", "ExitOnForwardFailure=yes"])
        .args(["-L", &format!("{local}:localhost:{pod_port}")])
        .args(["-L", &format!("{refused}:example.com:80")])
        .args(["-D", &socks.to_string()])
        .arg("alice@default/web-0@127.0.0.1");
    let log = bastion.dir.path().join("ssh-forward.log");
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _client = Process(child);
    wait_for("the forwarded port", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", local)).is_ok()
    });
    // Many connections over the one SSH connection, each closed cleanly.
    let handles: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || curl(&[&format!("http://127.0.0.1:{local}/")])))
        .collect();
    for handle in handles {
        assert_eq!(text(&handle.join().unwrap().stdout), "hello-from-pod");
    }
    let out = curl(&[
        "--socks5-hostname",
        &format!("127.0.0.1:{socks}"),
        &format!("http://localhost:{pod_port}/"),
    ]);
    assert_eq!(text(&out.stdout), "hello-from-pod");
    let out = curl(&[&format!("http://127.0.0.1:{refused}/")]);
    assert!(!out.status.success());
    wait_for(
        "the refusal to be reported",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log).unwrap_or_default().contains(
                "administratively prohibited: kbastion forwards only to the target itself",
            )
        },
    );
}

#[test]
fn remote_forwarding_is_refused_with_a_message() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    let mut command = bastion.ssh_command("ssh");
    command
        .args(["-o", "ExitOnForwardFailure=yes", "-R", "0:localhost:22"])
        .arg("alice@default/web-0@127.0.0.1")
        .arg("true");
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("remote port forwarding failed"),
        "{}",
        text(&out.stderr)
    );
}
