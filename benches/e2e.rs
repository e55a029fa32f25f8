//! End-to-end benchmark: kbastion side by side with direct exec (kubectl
//! against the same `kbastion sim`), the do-it-yourself bastion (OpenSSH
//! sshd with a ForceCommand running `kubectl exec`) and the OpenSSH ceiling
//! (sshd running the command locally), all in one run so the ratios hold
//! on a noisy machine.
//!
//!     cargo bench --bench e2e
//!
//! Needs `openssh-server` (for /usr/sbin/sshd) and python3. Sizes:
//! KB_BENCH_BYTES (default 1 GiB), KB_BENCH_SESSIONS (default 1000),
//! KB_BENCH_ROUNDS (keystrokes, default 2000), KB_BENCH_SETUPS (default 50).
//! Prints a table and writes target/bench/e2e.json.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An OpenSSH sshd on a loopback port with its own config and host key.
struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    _process: Process,
}

impl Sshd {
    fn start(keys: &Keys, force_command: Option<&str>) -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host_key = dir.path().join("host");
        assert!(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&host_key)
                .status()
                .unwrap()
                .success()
        );
        std::fs::write(
            dir.path().join("authorized_keys"),
            format!("{}\n", keys.public),
        )
        .unwrap();
        let mut config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile {dir}/sshd.pid\nAuthorizedKeysFile {dir}/authorized_keys\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel ERROR\n\
             MaxStartups 4000\nPerSourceMaxStartups none\nMaxSessions 4000\nUseDNS no\n",
            host = host_key.display(),
            dir = dir.path().display()
        );
        if let Some(command) = force_command {
            config.push_str(&format!("ForceCommand {command}\n"));
        }
        // sshd insists on its privilege-separation directory (made by the
        // package's service unit, which a bench machine may not have run).
        let _ = std::fs::create_dir_all("/run/sshd");
        let config_path = dir.path().join("sshd_config");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config_path)
            .stderr(Stdio::null())
            .spawn()
            .expect("/usr/sbin/sshd (apt-get install openssh-server)");
        wait_for("sshd to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Sshd {
            dir,
            port,
            _process: Process(child),
        }
    }

    fn ssh(&self, keys: &Keys) -> Command {
        let mut command = Command::new("ssh");
        command
            .args([
                "-F",
                "/dev/null",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.dir.path().join("known_hosts").display()
            ))
            .arg("-i")
            .arg(&keys.identity)
            .args(["-p", &self.port.to_string()]);
        command
    }
}

/// One way to reach the container: a program and arguments before the
/// remote command, and whether it is an SSH path (cipher applies).
struct Path_ {
    name: &'static str,
    prefix: Vec<String>,
    ssh: bool,
}

impl Path_ {
    fn command(&self, cipher: Option<&str>, tty: bool, remote: &str) -> Command {
        let mut command = Command::new(&self.prefix[0]);
        let mut args = self.prefix[1..].to_vec();
        if self.ssh {
            if let Some(cipher) = cipher {
                args.insert(0, format!("Ciphers={cipher}"));
                args.insert(0, "-o".into());
            }
            if tty {
                args.insert(0, "-tt".into());
            }
            args.push(remote.to_string());
        } else {
            // kubectl exec: flags go before the pod name.
            let pod_at = args
                .iter()
                .position(|a| a == "web-0")
                .expect("pod in the kubectl prefix");
            args.insert(pod_at, if tty { "-it".into() } else { "-i".into() });
            args.extend(["--".into(), "sh".into(), "-c".into(), remote.into()]);
        }
        command.args(args);
        command
    }
}

fn ssh_prefix(base: Command, destination: &str) -> Vec<String> {
    std::iter::once(base.get_program().to_string_lossy().into_owned())
        .chain(base.get_args().map(|a| a.to_string_lossy().into_owned()))
        .chain(std::iter::once(destination.to_string()))
        .collect()
}

fn pid_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1]
}

#[derive(serde::Serialize)]
struct Row {
    metric: String,
    path: String,
    value: f64,
    unit: String,
}

fn main() {
    let bytes = env_number("KB_BENCH_BYTES", 1 << 30);
    let sessions = env_number("KB_BENCH_SESSIONS", 1000) as usize;
    let rounds = env_number("KB_BENCH_ROUNDS", 2000);
    let setups = env_number("KB_BENCH_SETUPS", 50) as usize;
    let mut rows: Vec<Row> = Vec::new();
    let mut record = |metric: &str, path: &str, value: f64, unit: &str| {
        println!("{metric:<44} {path:<14} {value:>12.2} {unit}");
        rows.push(Row {
            metric: metric.into(),
            path: path.into(),
            value,
            unit: unit.into(),
        });
    };

    let sim = Sim::start();
    let bastion = Bastion::start(
        &sim,
        "[limits]\nmax_connections_per_source = 5000\nmax_unauthenticated_connections = 5000\nmax_sessions_per_user = 5000\nconnections_per_second_per_source = 100000\nconnection_burst_per_source = 100000\n[timeouts]\nidle_secs = 0\n",
    );
    let kubectl = vec![
        "kubectl".to_string(),
        "--kubeconfig".into(),
        sim.kubeconfig.display().to_string(),
        "--context".into(),
        "admin".into(),
        "exec".into(),
        "web-0".into(),
        "-c".into(),
        "app".into(),
    ];
    let diy_script = bastion.dir.path().join("diy.sh");
    std::fs::write(&diy_script, format!(
        "#!/bin/sh\ntty=\"\"; [ -n \"$SSH_TTY\" ] && tty=\"-t\"\nexec kubectl --kubeconfig {} --context admin exec -i $tty web-0 -c app -- sh -c \"${{SSH_ORIGINAL_COMMAND:-exec sh -l}}\"\n",
        sim.kubeconfig.display()
    )).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&diy_script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let diy = Sshd::start(&bastion.keys, Some(&diy_script.display().to_string()));
    let ceiling = Sshd::start(&bastion.keys, None);
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let paths = [
        Path_ {
            name: "kbastion",
            prefix: ssh_prefix(bastion.ssh_command("ssh"), "alice@default/web-0@127.0.0.1"),
            ssh: true,
        },
        Path_ {
            name: "direct-exec",
            prefix: kubectl.clone(),
            ssh: false,
        },
        Path_ {
            name: "diy-bastion",
            prefix: ssh_prefix(diy.ssh(&bastion.keys), &format!("{user}@127.0.0.1")),
            ssh: true,
        },
        Path_ {
            name: "openssh-local",
            prefix: ssh_prefix(ceiling.ssh(&bastion.keys), &format!("{user}@127.0.0.1")),
            ssh: true,
        },
    ];
    let bastion_pid = bastion.process.0.id();
    let gib = bytes as f64 / (1u64 << 30) as f64;
    println!(
        "kbastion end-to-end benchmark: {} MiB per transfer\n",
        bytes >> 20
    );

    // Throughput, both ways, per cipher.
    for cipher in ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"] {
        let short = cipher.split(['-', '@']).next().unwrap_or(cipher);
        for path in &paths {
            if !path.ssh && cipher.starts_with("chacha") {
                continue; // direct exec has no SSH cipher: measured once.
            }
            let cpu_before = pid_cpu_seconds(bastion_pid);
            let start = Instant::now();
            let status = path
                .command(Some(cipher), false, &format!("head -c {bytes} /dev/zero"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            let elapsed = start.elapsed().as_secs_f64();
            assert!(status.success(), "{} download failed", path.name);
            record(
                &format!("download MB/s ({short})"),
                path.name,
                bytes as f64 / 1e6 / elapsed,
                "MB/s",
            );
            if path.name == "kbastion" {
                record(
                    &format!("kbastion CPU s per GiB down ({short})"),
                    path.name,
                    (pid_cpu_seconds(bastion_pid) - cpu_before) / gib,
                    "s/GiB",
                );
            }
            let mut source = Command::new("head")
                .args(["-c", &bytes.to_string(), "/dev/zero"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let stdin = source.stdout.take().unwrap();
            let start = Instant::now();
            let status = path
                .command(Some(cipher), false, "cat > /dev/null")
                .stdin(stdin)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            let elapsed = start.elapsed().as_secs_f64();
            let _ = source.wait();
            assert!(status.success(), "{} upload failed", path.name);
            record(
                &format!("upload MB/s ({short})"),
                path.name,
                bytes as f64 / 1e6 / elapsed,
                "MB/s",
            );
        }
    }

    // A slow consumer: a target that takes 1 MiB every 100 ms (10 MB/s)
    // from an upload of 64 MiB (capped by KB_BENCH_BYTES). Delivered rate
    // and kbastion's RSS growth while it runs (the sender must be slowed
    // by its window, never buffered in kbastion, never cut off).
    {
        let slow_bytes = bytes.min(64 << 20);
        const SLOW_READER: &str = "while :; do head -c 1048576 > /tmp/kb-slow.$$ || exit 1; [ -s /tmp/kb-slow.$$ ] || break; sleep 0.1; done; rm -f /tmp/kb-slow.$$";
        let before = rss_kib(bastion_pid);
        let mut peak = before;
        let mut source = Command::new("head")
            .args(["-c", &slow_bytes.to_string(), "/dev/zero"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = source.stdout.take().unwrap();
        let start = Instant::now();
        let mut client = paths[0]
            .command(None, false, SLOW_READER)
            .stdin(stdin)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let status = loop {
            if let Some(status) = client.try_wait().unwrap() {
                break status;
            }
            peak = peak.max(rss_kib(bastion_pid));
            std::thread::sleep(Duration::from_millis(100));
        };
        let elapsed = start.elapsed().as_secs_f64();
        let _ = source.wait();
        assert!(status.success(), "the slow consumer's upload failed");
        record(
            "slow consumer MB/s (target takes 10 MB/s)",
            "kbastion",
            slow_bytes as f64 / 1e6 / elapsed,
            "MB/s",
        );
        record(
            "slow consumer: kbastion RSS growth",
            "kbastion",
            (peak.saturating_sub(before)) as f64 / 1024.0,
            "MiB",
        );
    }

    // File downloads of a 256 MiB file (capped by KB_BENCH_BYTES): SFTP
    // through the target's sftp-server and through kbastion's own, legacy
    // scp (kbastion's own), against `cat` of the same file through
    // kbastion and straight through kubectl exec.
    {
        let file_bytes = bytes.min(256 << 20);
        let container = sim.dir.path().join("state/pods/default/web-0/app");
        std::fs::create_dir_all(&container).unwrap();
        let mut file = std::fs::File::create(container.join("bench.bin")).unwrap();
        std::io::copy(
            &mut std::io::Read::take(std::fs::File::open("/dev/urandom").unwrap(), file_bytes),
            &mut file,
        )
        .unwrap();
        drop(file);
        let builtin = Bastion::start(&sim, "[files]\nsftp = \"builtin\"\n");
        let remote = "alice@default+web-0@127.0.0.1:bench.bin";
        let scp = |bastion: &Bastion, flags: &[&str]| {
            let mut command = bastion.ssh_command("scp");
            command
                .args(["-q"])
                .args(flags)
                .arg(remote)
                .arg("/dev/null");
            command
        };
        let mut cat = bastion.ssh_command("ssh");
        cat.arg("alice@default/web-0@127.0.0.1")
            .arg("cat bench.bin");
        let mut direct = Command::new(&kubectl[0]);
        direct.args(&kubectl[1..]).args(["--", "cat", "bench.bin"]);
        for (label, path, mut command) in [
            ("file download MB/s: ssh cat", "kbastion", cat),
            ("file download MB/s: ssh cat", "direct-exec", direct),
            (
                "file download MB/s: sftp (target sftp-server)",
                "kbastion",
                scp(&bastion, &[]),
            ),
            (
                "file download MB/s: sftp (kbastion's own)",
                "kbastion",
                scp(&builtin, &[]),
            ),
            (
                "file download MB/s: scp -O (kbastion's own)",
                "kbastion",
                scp(&bastion, &["-O"]),
            ),
        ] {
            let start = Instant::now();
            let status = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            let elapsed = start.elapsed().as_secs_f64();
            assert!(status.success(), "{label} through {path} failed");
            record(label, path, file_bytes as f64 / 1e6 / elapsed, "MB/s");
        }
    }

    // Keystroke latency through a pty: one byte to `cat` and back.
    let driver = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/keystroke.py");
    for path in paths.iter().take(3) {
        let command = path.command(None, true, "stty raw -echo; echo READY; exec cat");
        let out = Command::new("python3")
            .arg(&driver)
            .arg(rounds.to_string())
            .arg(command.get_program())
            .args(command.get_args())
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}: {}", path.name, text(&out.stderr)));
        record(
            "keystroke round trip p50 (us)",
            path.name,
            json["p50_us"].as_f64().unwrap_or(0.0),
            "us",
        );
        record(
            "keystroke round trip p99 (us)",
            path.name,
            json["p99_us"].as_f64().unwrap_or(0.0),
            "us",
        );
    }

    // Session set-up: `ssh ... true`.
    for path in paths.iter().take(3) {
        let mut samples: Vec<f64> = (0..setups)
            .map(|_| {
                let start = Instant::now();
                let status = path
                    .command(None, false, "true")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success());
                start.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        record(
            "session set-up p50 (ms)",
            path.name,
            percentile(&mut samples, 0.5),
            "ms",
        );
        record(
            "session set-up p95 (ms)",
            path.name,
            percentile(&mut samples, 0.95),
            "ms",
        );
    }
    // Node shells, warm pod (the pod stays for the linger between runs).
    let node = Path_ {
        name: "kbastion-node",
        prefix: ssh_prefix(bastion.ssh_command("ssh"), "alice@node-1@127.0.0.1"),
        ssh: true,
    };
    let start = Instant::now();
    assert!(
        node.command(None, false, "true")
            .stdin(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    record(
        "node shell set-up, cold pod (ms)",
        node.name,
        start.elapsed().as_secs_f64() * 1000.0,
        "ms",
    );
    let mut warm: Vec<f64> = (0..setups.min(20))
        .map(|_| {
            let start = Instant::now();
            assert!(
                node.command(None, false, "true")
                    .stdin(Stdio::null())
                    .status()
                    .unwrap()
                    .success()
            );
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    record(
        "node shell set-up p50, warm pod (ms)",
        node.name,
        percentile(&mut warm, 0.5),
        "ms",
    );

    // Many idle interactive sessions. OpenSSH forks two processes per
    // session and opens them slowly: it is measured on at most this many,
    // and the figures are per session, so they compare.
    const OPENSSH_SESSIONS: usize = 200;
    for path in [&paths[0], &paths[3]] {
        let sessions = if path.name == "kbastion" {
            sessions
        } else {
            sessions.min(OPENSSH_SESSIONS)
        };
        let measure = |pids: &dyn Fn() -> Vec<u32>| pids().into_iter().map(rss_kib).sum::<u64>();
        let sshd_pids = || -> Vec<u32> {
            let out = Command::new("pgrep")
                .args(["-f", "sshd: "])
                .output()
                .unwrap();
            text(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        };
        let server_pids: Box<dyn Fn() -> Vec<u32>> = if path.name == "kbastion" {
            Box::new(move || vec![bastion_pid])
        } else {
            Box::new(sshd_pids)
        };
        let before = measure(&*server_pids);
        let start = Instant::now();
        let mut clients = Vec::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for _ in 0..sessions {
            let mut child = path
                .command(None, true, "echo up; exec sh")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut stdout = child.stdout.take().unwrap();
            let ready = ready_tx.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 256];
                let mut seen = Vec::new();
                while let Ok(n) = stdout.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buffer[..n]);
                    if seen.windows(2).any(|w| w == b"up") {
                        let _ = ready.send(());
                        break;
                    }
                }
                // Keep reading so the session never blocks on output.
                while let Ok(n) = stdout.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                }
            });
            clients.push(Process(child));
        }
        for _ in 0..sessions {
            ready_rx
                .recv_timeout(Duration::from_secs(300))
                .expect("a session did not open");
        }
        let open_time = start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(2));
        let after = measure(&*server_pids);
        let cpu_before = pid_cpu_seconds(bastion_pid);
        std::thread::sleep(Duration::from_secs(5));
        let idle_cpu = (pid_cpu_seconds(bastion_pid) - cpu_before) / 5.0 * 100.0;
        record("idle sessions held", path.name, sessions as f64, "");
        record(
            "time to open one of them (ms, all at once)",
            path.name,
            open_time * 1000.0 / sessions as f64,
            "ms",
        );
        record(
            "server RSS per idle session (KiB)",
            path.name,
            after.saturating_sub(before) as f64 / sessions as f64,
            "KiB",
        );
        if path.name == "kbastion" {
            record(
                "kbastion CPU while idle (% of a core)",
                path.name,
                idle_cpu,
                "%",
            );
        }
        drop(clients);
    }

    // The kubectl door beside direct access to the same API server.
    for (metric, path, value, unit) in kubectl_door(&sim, bytes.min(256 << 20), setups.max(50)) {
        record(&metric, path, value, unit);
    }

    side_by_side(&rows);

    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    let json = serde_json::json!({"bytes": bytes, "sessions": sessions, "rounds": rounds, "results": rows});
    std::fs::write(
        out_dir.join("e2e.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    println!("\nwritten: target/bench/e2e.json");
}

/// The kubectl door against direct access: an API GET's latency (one
/// curl making `requests` requests on one connection, p50 of all but the
/// first) and exec throughput with kubectl 1.33 (WebSocket), each way.
/// The credential is minted once with `ssh ... kube-credential`: the
/// plugin's ssh is not counted.
fn kubectl_door(
    sim: &Sim,
    bytes: u64,
    requests: usize,
) -> Vec<(String, &'static str, f64, &'static str)> {
    let dir = tempfile::tempdir().unwrap();
    let pair = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let certificate = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&certificate, pair.cert.pem()).unwrap();
    std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
    let port = free_port();
    let server = format!("https://127.0.0.1:{port}");
    let door = Bastion::start(
        sim,
        &format!(
            "[timeouts]\nidle_secs = 0\n[kube_proxy]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{server}\"\ncertificate = \"{}\"\nkey = \"{}\"\n",
            certificate.display(),
            key.display()
        ),
    );
    let minted = door.ssh("alice", &["kube-credential"], b"");
    assert!(
        minted.status.success(),
        "kube-credential: {}",
        text(&minted.stderr)
    );
    let minted: serde_json::Value = serde_json::from_slice(&minted.stdout).unwrap();
    let token = minted["status"]["token"].as_str().unwrap().to_string();
    let direct_server = format!("https://{}", sim.address);
    let kubeconfig = |name: &str, server: &str, token: &str| {
        let path = dir.path().join(name);
        let config = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": true}}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "c",
        });
        std::fs::write(&path, config.to_string()).unwrap();
        path
    };
    let through = kubeconfig("door", &server, &token);
    let direct = kubeconfig("direct", &direct_server, "alice-token");
    let mut out = Vec::new();
    for (path, base, token, config) in [
        ("kbastion", server.as_str(), token.as_str(), &through),
        (
            "direct-exec",
            direct_server.as_str(),
            "alice-token",
            &direct,
        ),
    ] {
        let url = format!("{base}/api/v1/namespaces/default/pods/web-0");
        let mut curl = Command::new("curl");
        curl.args(["-sk", "--http1.1", "-w", "%{time_total}\\n"])
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"));
        for _ in 0..requests {
            curl.args(["-o", "/dev/null"]).arg(&url);
        }
        let answer = curl.output().unwrap();
        let mut times: Vec<f64> = text(&answer.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| l.trim().parse::<f64>().ok())
            .map(|s| s * 1000.0)
            .collect();
        assert!(
            times.len() + 1 >= requests,
            "{path}: curl made {} requests: {}{}",
            times.len(),
            text(&answer.stdout),
            text(&answer.stderr)
        );
        out.push((
            "kubectl door: API GET p50 (ms)".to_string(),
            path,
            percentile(&mut times, 0.5),
            "ms",
        ));
        let kubectl = |args: &[&str]| {
            let mut command = Command::new("kubectl");
            command
                .arg("--kubeconfig")
                .arg(config)
                .args(["exec", "-i", "web-0", "-c", "app", "--"])
                .args(args);
            command
        };
        let start = Instant::now();
        let status = kubectl(&["head", "-c", &bytes.to_string(), "/dev/zero"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{path}: exec download");
        out.push((
            "kubectl door: exec download MB/s".to_string(),
            path,
            bytes as f64 / 1e6 / start.elapsed().as_secs_f64(),
            "MB/s",
        ));
        let mut source = Command::new("head")
            .args(["-c", &bytes.to_string(), "/dev/zero"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = source.stdout.take().unwrap();
        let start = Instant::now();
        let status = kubectl(&["sh", "-c", "cat > /dev/null"])
            .stdin(stdin)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        let _ = source.wait();
        assert!(status.success(), "{path}: exec upload");
        out.push((
            "kubectl door: exec upload MB/s".to_string(),
            path,
            bytes as f64 / 1e6 / start.elapsed().as_secs_f64(),
            "MB/s",
        ));
    }
    out
}

/// The figures again, one line per metric with every path side by side
/// and kbastion's ratio to each other path measured in this run.
fn side_by_side(rows: &[Row]) {
    let names = ["kbastion", "direct-exec", "diy-bastion", "openssh-local"];
    let mut metrics: Vec<&str> = Vec::new();
    for row in rows {
        if !metrics.contains(&row.metric.as_str()) {
            metrics.push(&row.metric);
        }
    }
    println!(
        "\n{:<44} {:>12} {:>12} {:>12} {:>13}  ratios (kbastion / other)",
        "metric", names[0], names[1], names[2], names[3]
    );
    for metric in metrics {
        let value = |path: &str| {
            rows.iter()
                .find(|r| r.metric == metric && r.path == path)
                .map(|r| r.value)
        };
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        // Node-shell figures are kbastion's own, recorded under their path.
        let ours = value(names[0]).or_else(|| value("kbastion-node"));
        let ratios: Vec<String> = names[1..]
            .iter()
            .filter_map(|other| {
                let theirs = value(other)?;
                let ours = ours?;
                (theirs != 0.0).then(|| format!("{other} {:.2}x", ours / theirs))
            })
            .collect();
        println!(
            "{metric:<44} {:>12} {:>12} {:>12} {:>13}  {}",
            cell(ours),
            cell(value(names[1])),
            cell(value(names[2])),
            cell(value(names[3])),
            ratios.join(", ")
        );
    }
}
