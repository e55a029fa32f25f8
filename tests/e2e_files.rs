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
/// 100 MiB both ways and trees both ways, byte-exact. Each SFTP mode is
/// forced (`auto` could silently pick the other).
#[test]
fn scp_both_modes_copies_files_and_trees_byte_exact() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    let target = Bastion::start(&sim, "[files]\nsftp = \"target\"\n");
    let builtin = Bastion::start(&sim, "[files]\nsftp = \"builtin\"\n");
    let local = bastion.dir.path();
    random_file(&local.join("big.bin"), 100 * 1024 * 1024 + 17, 1);
    sample_tree(&local.join("tree"));
    let container = container_dir(&sim, "web-0", "app");
    for (mode, bastion, flags) in [
        ("target-sftp", &target, &[][..]),
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

/// The PIDs of the `sftp-server` processes working in `dir` (a
/// container's directory in the simulator): which server answers an SFTP
/// session, seen from the machine's process table.
fn sftp_servers_in(dir: &std::path::Path) -> Vec<u32> {
    let dir = dir.canonicalize().expect("container directory");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"));
            exe.is_ok_and(|e| e.file_name().is_some_and(|n| n == "sftp-server"))
                && cwd.is_ok_and(|c| c == dir)
        })
        .collect()
}

/// Opens an sftp session (commands on stdin), waits until it answers
/// `pwd`, and gives the sftp-server processes working in `dir` while the
/// session is open; then ends the session and checks it ended cleanly.
fn sftp_servers_during_a_session(bastion: &Bastion, dir: &std::path::Path) -> Vec<u32> {
    use std::io::BufReader;
    let mut sftp = bastion.ssh_command("sftp");
    sftp.args(["-b", "-", "alice@default+web-0@127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = sftp.spawn().expect("sftp");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"pwd\n").expect("write to sftp");
    let mut reader: Box<dyn std::io::BufRead + Send> =
        Box::new(BufReader::new(child.stdout.take().expect("stdout")));
    loop {
        let (line, rest) =
            read_line_within(reader, "sftp's answer to pwd", Duration::from_secs(30));
        assert!(!line.is_empty(), "sftp ended before answering pwd");
        reader = rest;
        if line.starts_with("Remote working directory: ") {
            break;
        }
    }
    let servers = sftp_servers_in(dir);
    drop(stdin);
    let out = wait_output(child, "sftp -b -", Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    servers
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
        // Which server answers: with `sftp = "target"` the container's
        // own sftp-server runs in its directory while a session is open;
        // with kbastion's own, none does.
        let servers = sftp_servers_during_a_session(bastion, &container);
        assert_eq!(
            servers.len(),
            usize::from(mode == "target"),
            "{mode}: sftp-server processes in the container: {servers:?}"
        );
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
        // The file's own message, naming the path in the container's
        // working directory (not, say, a pod that was not found).
        assert_eq!(
            (out.status.code(), text(&out.stderr)),
            (
                Some(1),
                format!(
                    "Connected to 127.0.0.1.\nFile \"{}/nope.txt\" not found.\r\n",
                    container.display()
                )
            ),
            "{mode}"
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
    // A foreign host is refused through -L and through -D alike, each
    // with its reason in the client's log.
    let refusals = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("administratively prohibited: kbastion forwards only to the target itself")
            .count()
    };
    assert_eq!(refusals(), 0);
    let out = curl(&[&format!("http://127.0.0.1:{refused}/")]);
    assert!(!out.status.success());
    wait_for(
        "the -L refusal to be reported",
        Duration::from_secs(10),
        || refusals() == 1,
    );
    let out = curl(&[
        "--socks5-hostname",
        &format!("127.0.0.1:{socks}"),
        "http://example.com/",
    ]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(out.stdout.is_empty());
    wait_for(
        "the -D refusal to be reported",
        Duration::from_secs(10),
        || refusals() == 2,
    );
}

/// A server standing for a pod's (or node's) port: `GET` sends `payload`
/// and closes, `PUT <len>` stores what follows in `sink` and answers `OK`,
/// `ECHO` echoes until the client goes.
fn file_server(payload: std::path::PathBuf, sink: std::path::PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (payload, sink) = (payload.clone(), sink.clone());
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                let mut line = String::new();
                std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["GET"] => {
                        let mut file = std::fs::File::open(&payload).unwrap();
                        std::io::copy(&mut file, &mut stream).unwrap();
                    }
                    ["PUT", len] => {
                        let len: u64 = len.parse().unwrap();
                        let mut file = std::fs::File::create(&sink).unwrap();
                        std::io::copy(&mut (&mut reader).take(len), &mut file).unwrap();
                        stream.write_all(b"OK\n").unwrap();
                    }
                    _ => {
                        let _ = std::io::copy(&mut reader, &mut stream);
                    }
                }
            });
        }
    });
    port
}

/// `ssh -L` to a pod's port and to a node's port carries 100 MiB each way
/// byte-exact, and 50 connections at once over one SSH connection.
#[test]
fn local_forwarding_carries_bulk_data_and_many_connections_to_pods_and_nodes() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    let dir = bastion.dir.path();
    random_file(&dir.join("payload.bin"), 100 * 1024 * 1024, 7);
    let server = file_server(dir.join("payload.bin"), dir.join("received.bin"));
    for target in ["default/web-0", "node-1"] {
        let local = free_port();
        let mut command = bastion.ssh_command_logging("ssh", "VERBOSE");
        command
            .args(["-N", "-o", "ExitOnForwardFailure=yes"])
            .args(["-L", &format!("{local}:localhost:{server}")])
            .arg(format!("alice@{target}@127.0.0.1"));
        let ssh_log = dir.join(format!("ssh-{}.log", target.replace('/', "-")));
        let _client = Process(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&ssh_log).unwrap())
                .spawn()
                .unwrap(),
        );
        wait_for("the forwarded port", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", local)).is_ok()
        });
        let connect = || std::net::TcpStream::connect(("127.0.0.1", local)).unwrap();
        // Down: the whole file, until the server closes.
        let mut down = connect();
        down.write_all(b"GET\n").unwrap();
        let mut file = std::fs::File::create(dir.join("downloaded.bin")).unwrap();
        std::io::copy(&mut down, &mut file).unwrap();
        assert_eq!(
            sha256(&dir.join("downloaded.bin")),
            sha256(&dir.join("payload.bin")),
            "{target} down"
        );
        // Up: the whole file, then the server's answer (Kubernetes
        // port-forward has no half-close, so the client does not shut down).
        let mut up = connect();
        up.write_all(format!("PUT {}\n", 100 * 1024 * 1024).as_bytes())
            .unwrap();
        std::io::copy(
            &mut std::fs::File::open(dir.join("payload.bin")).unwrap(),
            &mut up,
        )
        .unwrap();
        let mut answer = [0u8; 3];
        up.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"OK\n");
        assert_eq!(
            sha256(&dir.join("received.bin")),
            sha256(&dir.join("payload.bin")),
            "{target} up"
        );
        // 50 at once, each closed cleanly on both ends.
        std::thread::scope(|scope| {
            for i in 0..50u32 {
                let ssh_log = &ssh_log;
                scope.spawn(move || {
                    let mut stream = connect();
                    stream.write_all(b"ECHO\n").unwrap();
                    let data: Vec<u8> = (0..65_536u32).map(|j| (i ^ j) as u8).collect();
                    stream.write_all(&data).unwrap();
                    let mut back = vec![0u8; data.len()];
                    if let Err(e) = stream.read_exact(&mut back) {
                        // The client's log says why a channel was refused.
                        let ssh_log = std::fs::read_to_string(ssh_log).unwrap_or_default();
                        let failures: Vec<&str> = ssh_log
                            .lines()
                            .filter(|l| l.contains("open failed"))
                            .collect();
                        panic!("{target}: connection {i}: {e}; {failures:?}");
                    }
                    assert!(back == data, "{target}: connection {i} echoed other bytes");
                });
            }
        });
    }
}

/// What VS Code Remote-SSH does: a bash script piped into `ssh … bash`
/// starts a server in the target, then `ssh -L` reaches it.
#[test]
fn an_ide_style_script_starts_a_server_reached_through_local_forwarding() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    let port = free_port();
    let script = format!(
        "set -e\nmkdir -p ide-server && cd ide-server\necho hello-ide > index.html\n\
         nohup python3 -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1 &\n\
         echo $! > server.pid\necho \"listening on {port}\"\n"
    );
    let out = bastion.ssh("alice@default/web-0", &["bash"], script.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("listening on {port}\n"));
    let local = free_port();
    let mut command = bastion.ssh_command("ssh");
    command
        .args(["-N", "-o", "ExitOnForwardFailure=yes"])
        .args(["-L", &format!("{local}:127.0.0.1:{port}")])
        .arg("alice@default/web-0@127.0.0.1");
    let _client = Process(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut page = String::new();
    wait_for("the IDE server through -L", Duration::from_secs(30), || {
        let out = curl(&[&format!("http://127.0.0.1:{local}/index.html")]);
        page = text(&out.stdout);
        page == "hello-ide\n"
    });
    let out = bastion.ssh(
        "alice@default/web-0",
        &["kill $(cat ide-server/server.pid)"],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `-R` and `-A` are refused, each with its reason on stderr.
#[test]
fn remote_and_agent_forwarding_are_refused_with_their_reasons() {
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
    let mut command = bastion.ssh_command("ssh");
    command
        .args(["-R", "0:localhost:22"])
        .arg("alice@default/web-0@127.0.0.1")
        .arg("true");
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("kbastion: remote forwarding of ")
            && text(&out.stderr)
                .contains("(-R) refused: kbastion does not listen on behalf of clients"),
        "{}",
        text(&out.stderr)
    );
    // ssh only asks for agent forwarding when it has an agent.
    let agent = Command::new("ssh-agent").arg("-s").output().unwrap();
    let socket = text(&agent.stdout)
        .split(';')
        .find_map(|part| part.trim().strip_prefix("SSH_AUTH_SOCK=").map(String::from))
        .unwrap();
    let pid = text(&agent.stdout)
        .split(';')
        .find_map(|part| part.trim().strip_prefix("SSH_AGENT_PID=").map(String::from))
        .unwrap();
    let mut command = bastion.ssh_command("ssh");
    command
        .env("SSH_AUTH_SOCK", &socket)
        .arg("-A")
        .arg("alice@default/web-0@127.0.0.1")
        .arg("echo ran; echo \"agent: ${SSH_AUTH_SOCK:-none}\"");
    let out = run_with_input(command, b"");
    let _ = Command::new("kill").arg(&pid).status();
    assert_eq!(text(&out.stdout), "ran\nagent: none\n");
    assert_eq!(
        text(&out.stderr),
        "kbastion: agent forwarding (-A) is refused: kbastion never lets your keys reach the cluster\n"
    );
}

/// 64 MiB uploads into a target that takes them slowly (a FIFO drained
/// 1 MiB every 100 ms, far past the old 16 MiB ending) arrive byte-exact
/// with each of `scp` (SFTP), `scp -O` and `sftp`, through kbastion's own
/// servers: the sender is slowed by its window, never cut off. (The
/// target's sftp-server writes at offsets, which a FIFO refuses, as it
/// would behind any sshd; its channel is the same exec session as a
/// command's, tested above.)
#[test]
fn uploads_into_a_slow_target_arrive_whole_with_scp_scp_o_and_sftp() {
    const SIZE: usize = 64 << 20;
    let sim = Sim::start();
    let builtin = Bastion::start(&sim, "[files]\nsftp = \"builtin\"\nscp = \"builtin\"\n");
    let local = builtin.dir.path().join("upload.bin");
    random_file(&local, SIZE, 23);
    let expected = sha256(&local);
    sim.wait_running("default", "web-0");
    let container = container_dir(&sim, "web-0", "app");
    std::fs::create_dir_all(&container).unwrap();
    for (mode, bastion) in [("scp", &builtin), ("scp-O", &builtin), ("sftp", &builtin)] {
        let fifo = container.join(format!("slow-{mode}.fifo"));
        let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        // The slow reader: 1 MiB, then 100 ms, until the whole file. A
        // writer may open the file once before it writes (kbastion's scp
        // truncates first, as `: > file`): the FIFO is opened again at
        // each end until all of it came.
        let reader = Command::new("python3")
            .arg("-c")
            .arg(
                "import hashlib, sys, time\n\
                 path, size = sys.argv[1], int(sys.argv[2])\n\
                 digest, got = hashlib.sha256(), 0\n\
                 while got < size:\n\
                 \x20   with open(path, 'rb', buffering=0) as fifo:\n\
                 \x20       while got < size:\n\
                 \x20           block = fifo.read(min(1 << 20, size - got))\n\
                 \x20           if not block: break\n\
                 \x20           digest.update(block); got += len(block)\n\
                 \x20           time.sleep(0.1 * len(block) / (1 << 20))\n\
                 print(digest.hexdigest() + '  -')\n",
            )
            .arg(&fifo)
            .arg(SIZE.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let remote = format!("slow-{mode}.fifo");
        let out = match mode {
            "sftp" => {
                let mut sftp = bastion.ssh_command("sftp");
                sftp.args(["-b", "-", "alice@default+web-0@127.0.0.1"]);
                run_with_input(
                    sftp,
                    format!("put {} {remote}\n", local.display()).as_bytes(),
                )
            }
            _ => {
                let mut scp = bastion.ssh_command("scp");
                if mode == "scp-O" {
                    scp.arg("-O");
                }
                scp.arg(&local)
                    .arg(format!("alice@default+web-0@127.0.0.1:{remote}"));
                run_with_input(scp, b"")
            }
        };
        assert!(out.status.success(), "{mode}: {}", text(&out.stderr));
        let read = wait_output(reader, "the slow reader", Duration::from_secs(60));
        assert_eq!(
            text(&read.stdout),
            format!("{expected}  -\n"),
            "{mode}: {}",
            text(&out.stderr)
        );
    }
}

/// kbastion's own SFTP server keeps reading requests while replies wait
/// for the client's window: a download with 32 MiB of reads in flight
/// (`sftp -R 1024`, 32 KiB each: 32 MiB) finishes byte-exact, as OpenSSH's
/// sftp-server's does, and leaves no reader running in the container.
#[test]
fn a_deeply_pipelined_sftp_download_finishes_byte_exact() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "[files]\nsftp = \"builtin\"\n");
    let container = container_dir(&sim, "web-0", "app");
    std::fs::create_dir_all(&container).unwrap();
    random_file(&container.join("deep.bin"), 24 << 20, 9);
    let local = bastion.dir.path().join("deep.bin");
    let mut sftp = bastion.ssh_command("sftp");
    sftp.args(["-R", "1024", "-B", "32768", "-b", "-"])
        .arg("alice@default/web-0@127.0.0.1");
    let out = run_with_input_within(
        sftp,
        format!("get deep.bin {}\n", local.display()).as_bytes(),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(sha256(&local), sha256(&container.join("deep.bin")));
}

/// A Python script for asyncssh, connected as alice to `default/web-0`
/// through the bastion (port and key are its arguments) with an SFTP
/// client `sftp`; `body` runs inside, indented by 12 spaces.
fn asyncssh_sftp(body: &str) -> String {
    format!(
        "import asyncio, sys, warnings\n\
warnings.simplefilter(\"ignore\")\n\
import asyncssh\n\
port, key = sys.argv[1:3]\n\
async def main():\n\
\x20   async with asyncssh.connect(\"127.0.0.1\", port=int(port), username=\"alice@default/web-0\",\n\
\x20                               known_hosts=None, client_keys=[key], agent_path=None) as conn:\n\
\x20       async with conn.start_sftp_client() as sftp:\n\
{body}\n\
asyncio.run(main())\n"
    )
}

/// A file handle closed before its end leaves nothing running in the
/// container: kbastion's SFTP server reads a file through a long-lived
/// `tail`, which the kubelet would keep when its stream is dropped (one on
/// `/dev/zero` would run forever), so it is ended.
#[test]
fn a_handle_closed_early_leaves_no_reader_in_the_container() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "[files]\nsftp = \"builtin\"\n");
    let script = asyncssh_sftp(
        r#"
            handle = await sftp.open("/dev/zero", "rb")
            data = await handle.read(1 << 20, 0)
            print("read", len(data), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            await handle.close()
            print("closed", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
"#,
    );
    let mut client = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script.as_str(), &bastion.port.to_string()])
        .arg(&bastion.keys.identity)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "read 1048576\n");
    let _client = Process(client);
    // (A pattern for pgrep: the `+` of `tail -c +1` is a regex operator.)
    let reader = "tail -c .1 -- /dev/zero";
    wait_running_then_gone(reader, Duration::from_secs(20), || {
        std::io::Write::write_all(&mut stdin, b"close\n").unwrap();
        line.clear();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert_eq!(line, "closed\n");
    });
}

/// A file opened to read and write (as sshfs and editors open files) can
/// be read through kbastion's own SFTP server, and a read sees what was
/// written before it.
#[test]
fn a_file_opened_read_write_reads_back_what_was_written() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "[files]\nsftp = \"builtin\"\n");
    let container = container_dir(&sim, "web-0", "app");
    std::fs::create_dir_all(&container).unwrap();
    let script = asyncssh_sftp(
        r#"
            async with sftp.open("rw.txt", "w+b") as handle:
                await handle.write(b"hello world", 0)
                print(await handle.read(5, 6), flush=True)
                await handle.write(b"HELLO", 0)
                print(await handle.read(11, 0), flush=True)
                print(await handle.read(11, 11), flush=True)
"#,
    );
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script.as_str(), &bastion.port.to_string()])
        .arg(&bastion.keys.identity)
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        "b'world'\nb'HELLO world'\nb''\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read(container.join("rw.txt")).unwrap(),
        b"HELLO world"
    );
}

/// kbastion's own SFTP server answers the OpenSSH extensions editors and
/// sshfs rely on: `rename` over an existing file (posix-rename, how an
/// editor saves atomically), `ln` (hardlink), `df` (statvfs), and the
/// limits and fsync requests.
#[test]
fn the_builtin_sftp_server_answers_openssh_extensions() {
    use std::os::unix::fs::MetadataExt;
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "[files]\nsftp = \"builtin\"\n");
    let container = container_dir(&sim, "web-0", "app");
    std::fs::create_dir_all(&container).unwrap();
    std::fs::write(container.join("old.txt"), b"the old text\n").unwrap();
    let local = bastion.dir.path().join("new.txt");
    std::fs::write(&local, b"the new text\n").unwrap();
    let batch = format!(
        "put {} saving.tmp\nrename saving.tmp old.txt\nln old.txt linked.txt\ndf -h .\n",
        local.display()
    );
    let mut sftp = bastion.ssh_command("sftp");
    sftp.args(["-b", "-", "alice@default/web-0@127.0.0.1"]);
    let out = run_with_input(sftp, batch.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(container.join("old.txt")).unwrap(),
        b"the new text\n"
    );
    assert!(!container.join("saving.tmp").exists());
    assert_eq!(
        std::fs::metadata(container.join("linked.txt"))
            .unwrap()
            .ino(),
        std::fs::metadata(container.join("old.txt")).unwrap().ino()
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["Size", "Used", "Avail", "(root)", "%Capacity"]),
        "{stdout}"
    );
}

/// Files that pass through kbastion's own SFTP server are audited one by
/// one at their handle's close: the path, the direction and the bytes,
/// under the session's id.
#[test]
fn the_builtin_sftp_server_audits_each_file_with_its_direction_and_bytes() {
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let bastion = Bastion::start(
        &sim,
        &format!(
            "[files]\nsftp = \"builtin\"\n[audit]\nfile = \"{}\"\n",
            audit.display()
        ),
    );
    let container = container_dir(&sim, "web-0", "app");
    std::fs::create_dir_all(&container).unwrap();
    random_file(&container.join("down.bin"), 123_456, 7);
    let local = bastion.dir.path();
    random_file(&local.join("up.bin"), 300_000, 8);
    let batch = format!(
        "put {} up.bin\nget down.bin {}\n",
        local.join("up.bin").display(),
        local.join("got.bin").display()
    );
    let mut sftp = bastion.ssh_command("sftp");
    sftp.args(["-b", "-", "alice@default/web-0@127.0.0.1"]);
    let out = run_with_input(sftp, batch.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let mut files = Vec::new();
    wait_for(
        "two file events in the audit log",
        Duration::from_secs(10),
        || {
            files = events()
                .into_iter()
                .filter(|e| e["event"] == "file")
                .collect();
            files.len() >= 2
        },
    );
    let seen: Vec<(String, String, u64)> = files
        .iter()
        .map(|e| {
            let path = e["path"].as_str().unwrap_or_default();
            let name = path.rsplit('/').next().unwrap_or_default().to_string();
            (
                name,
                e["direction"].as_str().unwrap_or_default().to_string(),
                e["bytes"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("up.bin".to_string(), "write".to_string(), 300_000),
            ("down.bin".to_string(), "read".to_string(), 123_456),
        ]
    );
    let session = files[0]["session"].as_str().unwrap().to_string();
    assert!(
        events().iter().any(|e| e["event"] == "session_start"
            && e["session"] == session.as_str()
            && e["kind"] == "sftp"),
        "the file events name the SFTP session"
    );
    assert_eq!(files[1]["session"], session.as_str());
    assert_eq!(files[0]["person"], "alice");
}
