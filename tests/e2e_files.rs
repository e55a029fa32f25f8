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

/// Every file and directory under `root`, relative, with a hash for files.
fn tree_listing(root: &std::path::Path) -> Vec<(String, String)> {
    let mut listing = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(root).unwrap().display().to_string();
            if path.is_dir() {
                listing.push((name, "dir".into()));
                pending.push(path);
            } else {
                listing.push((name, sha256(&path)));
            }
        }
    }
    listing.sort();
    listing
}

/// A tree with nested directories, an empty file, an empty directory and
/// names with spaces.
fn sample_tree(root: &std::path::Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    random_file(&root.join("a.txt"), 1000, 2);
    random_file(&root.join("sub/b.bin"), 300_000, 3);
    random_file(&root.join("sub/deeper/with space.log"), 4097, 4);
    std::fs::write(root.join("empty"), b"").unwrap();
}

/// scp in SFTP mode through the target's sftp-server and through
/// kbastion's own SFTP server, and legacy scp (always kbastion's own):
/// 100 MiB both ways and trees both ways, byte-exact.
#[test]
fn scp_both_modes_copies_files_and_trees_byte_exact() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    let builtin = Bastion::start(&sim, "[files]\nsftp = \"builtin\"\n");
    let local = bastion.dir.path();
    random_file(&local.join("big.bin"), 100 * 1024 * 1024 + 17, 1);
    sample_tree(&local.join("tree"));
    let container = container_dir(&sim, "web-0", "app");
    for (mode, bastion, flags) in [
        ("target-sftp", &bastion, &[][..]),
        ("builtin-sftp", &builtin, &[][..]),
        ("legacy", &bastion, &["-O"][..]),
    ] {
        let remote = format!("alice@default+web-0@127.0.0.1:{mode}.bin");
        let mut up = bastion.ssh_command("scp");
        up.args(flags).arg(local.join("big.bin")).arg(&remote);
        let out = run_with_input(up, b"");
        assert!(out.status.success(), "{mode} upload: {}", text(&out.stderr));
        assert_eq!(
            sha256(&container.join(format!("{mode}.bin"))),
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
        assert!(out.status.success(), "{mode} -r up: {}", text(&out.stderr));
        let copied = container_dir(&sim, "web-0", "sidecar").join(format!("{mode}-tree"));
        assert_eq!(
            tree_listing(&copied),
            tree_listing(&local.join("tree")),
            "{mode} -r up"
        );
        let mut back = bastion.ssh_command("scp");
        back.args(flags)
            .arg("-r")
            .arg(format!("alice@default+web-0+sidecar@127.0.0.1:{mode}-tree"))
            .arg(local.join(format!("{mode}-tree-back")));
        let out = run_with_input(back, b"");
        assert!(
            out.status.success(),
            "{mode} -r down: {}",
            text(&out.stderr)
        );
        assert_eq!(
            tree_listing(&local.join(format!("{mode}-tree-back"))),
            tree_listing(&local.join("tree")),
            "{mode} -r down"
        );
    }
}

/// Legacy scp's remote paths are expanded by the target's shell, and its
/// errors read as scp's own.
#[test]
fn legacy_scp_expands_globs_and_reports_missing_files() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    let container = container_dir(&sim, "web-0", "app");
    std::fs::create_dir_all(container.join("logs")).unwrap();
    std::fs::write(container.join("logs/one.log"), b"one\n").unwrap();
    std::fs::write(container.join("logs/two.log"), b"two\n").unwrap();
    let local = bastion.dir.path().join("pulled");
    std::fs::create_dir_all(&local).unwrap();
    let mut pull = bastion.ssh_command("scp");
    pull.args(["-O", "-p"])
        .arg("alice@default+web-0@127.0.0.1:logs/*.log")
        .arg(&local);
    let out = run_with_input(pull, b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(local.join("one.log")).unwrap(), b"one\n");
    assert_eq!(std::fs::read(local.join("two.log")).unwrap(), b"two\n");
    let mut missing = bastion.ssh_command("scp");
    missing
        .arg("-O")
        .arg("alice@default+web-0@127.0.0.1:logs/nope.log")
        .arg(&local);
    let out = run_with_input(missing, b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "scp: logs/nope.log: No such file or directory"
    );
}

/// Every operation OpenSSH's sftp uses, in batch mode, against the
/// target's sftp-server and kbastion's own.
#[test]
fn sftp_batch_operations_work() {
    let sim = Sim::start();
    let target = Bastion::start(&sim, "[files]\nsftp = \"target\"\n");
    let builtin = Bastion::start(&sim, "[files]\nsftp = \"builtin\"\n");
    let container = container_dir(&sim, "web-0", "app");
    std::fs::create_dir_all(&container).unwrap();
    for (mode, bastion) in [("target", &target), ("builtin", &builtin)] {
        let local = bastion.dir.path();
        random_file(&local.join("f.bin"), 123_456, 4);
        let log = container.join(format!("{mode}-app.log"));
        std::fs::write(&log, b"first line\n").unwrap();
        let batch = local.join("batch");
        let script = format!(
            "mkdir {mode}\n\
             put -p {f} {mode}/f.bin\n\
             rename {mode}/f.bin {mode}/g.bin\n\
             chmod 600 {mode}/g.bin\n\
             ln -s g.bin {mode}/link\n\
             ls -l {mode}\n\
             get -p {mode}/g.bin {g}\n\
             get {mode}-app.log {first}\n\
             !echo second line >> {log}\n\
             get {mode}-app.log {second}\n\
             rm {mode}/link\n\
             rm {mode}/g.bin\n\
             rmdir {mode}\n",
            f = local.join("f.bin").display(),
            g = local.join("g.bin").display(),
            first = local.join("first.log").display(),
            second = local.join("second.log").display(),
            log = log.display(),
        );
        std::fs::write(&batch, script).unwrap();
        std::fs::set_permissions(
            local.join("f.bin"),
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )
        .unwrap();
        let mut sftp = bastion.ssh_command("sftp");
        sftp.arg("-b")
            .arg(&batch)
            .arg("alice@default+web-0@127.0.0.1");
        let out = run_with_input(sftp, b"");
        let listing = text(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {listing}{}",
            text(&out.stderr)
        );
        // `ls -l` shows the mode set by chmod and the symlink.
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with("-rw-------") && l.ends_with("g.bin")),
            "{mode}: {listing}"
        );
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with('l') && l.ends_with("link")),
            "{mode}: {listing}"
        );
        assert_eq!(
            sha256(&local.join("g.bin")),
            sha256(&local.join("f.bin")),
            "{mode}"
        );
        // `put -p` and `get -p` kept the modification time (SFTP v3
        // carries whole seconds).
        let mtime = |p: &std::path::Path| {
            let modified = std::fs::metadata(p).unwrap().modified().unwrap();
            modified
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        assert_eq!(
            mtime(&local.join("g.bin")),
            mtime(&local.join("f.bin")),
            "{mode}"
        );
        assert_eq!(
            std::fs::read(local.join("first.log")).unwrap(),
            b"first line\n"
        );
        assert_eq!(
            std::fs::read(local.join("second.log")).unwrap(),
            b"first line\nsecond line\n",
            "{mode}: a growing file is read to its new end"
        );
        assert!(!container.join(mode).exists(), "{mode}");
        // Errors carry the client's own wording.
        let mut missing = bastion.ssh_command("sftp");
        missing
            .arg("alice@default+web-0@127.0.0.1:nope.txt")
            .arg(local);
        let out = run_with_input(missing, b"");
        assert_ne!(out.status.code(), Some(0), "{mode}");
        assert!(
            text(&out.stderr).contains("not found"),
            "{mode}: {}",
            text(&out.stderr)
        );
    }
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
