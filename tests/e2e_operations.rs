//! End to end: running kbastion for real: check-config, metrics and health,
//! graceful shutdown on SIGTERM, reload on SIGHUP.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn http_get(port: u16, path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let text = text(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_string(), body.to_string())
}

#[test]
fn check_config_accepts_the_shipped_configs_and_names_bad_keys() {
    for path in [
        "config/kbastion.example.toml",
        "config/demo.toml",
        "deploy/kbastion.toml",
    ] {
        let out = Command::new(BIN)
            .args(["check-config", "--config", path])
            .output()
            .unwrap();
        assert!(out.status.success(), "{path}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("listen = "), "{path}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:2222\"\n[timeouts]\nidle = 5\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("kbastion: config ")
            && stderr.contains("idle")
            && stderr.lines().count() == 1,
        "{stderr}"
    );
}

#[test]
fn metrics_and_health_endpoints_report_sessions() {
    let sim = Sim::start();
    let port = free_port();
    let bastion = Bastion::start(&sim, &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    assert_eq!(http_get(port, "/healthz"), ("200".into(), "ok\n".into()));
    wait_for("readiness", Duration::from_secs(20), || {
        http_get(port, "/readyz").0 == "200"
    });
    let out = bastion.ssh("alice@default/web-0", &["head -c 12345 /dev/zero"], b"");
    assert!(out.status.success());
    let _ = bastion.ssh("alice@default/web-0", &["exit 3"], b"");
    let mut metrics = String::new();
    wait_for("the session metrics", Duration::from_secs(10), || {
        metrics = http_get(port, "/metrics").1;
        metrics.contains("kbastion_sessions_ended_total{outcome=\"nonzero_exit\"} 1")
    });
    assert!(
        metrics.contains("kbastion_sessions_started_total{kind=\"exec\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kbastion_sessions_active{kind=\"exec\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kbastion_bytes_total{direction=\"out\"} 12345"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kbastion_session_setup_seconds_count 2"),
        "{metrics}"
    );
}

#[test]
fn sigterm_tells_users_drains_and_exits_zero() {
    let sim = Sim::start();
    let mut bastion = Bastion::start(&sim, "[shutdown]\ndrain_secs = 30\n");
    let mut command = bastion.ssh_command("ssh");
    command.arg("-tt").arg("alice@default/web-0@127.0.0.1");
    let line: Vec<String> = std::iter::once(command.get_program().to_string_lossy().into_owned())
        .chain(
            command
                .get_args()
                .map(|a| format!("'{}'", a.to_string_lossy())),
        )
        .collect();
    let tmux = Tmux::start(&format!("env -u TMUX {}", line.join(" ")), 100, 30);
    tmux.send(&["echo ready-$((1+1))", "Enter"]);
    tmux.wait_for_text("ready-2");
    let pid = bastion.process.0.id() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    tmux.wait_for_text(
        "kbastion: the bastion is restarting; this session ends in 30 s. Reconnect to continue.",
    );
    // New connections are no longer accepted.
    wait_for("the listener to close", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", bastion.port)).is_err()
    });
    tmux.send(&["exit", "Enter"]);
    assert_eq!(bastion.exit_code(Duration::from_secs(20)), Some(0));
}

/// A session still open when the drain time is over is ended, with what
/// it started in the target, and the bastion exits 0.
#[test]
fn sessions_left_at_the_drain_deadline_are_ended_with_their_processes() {
    let sim = Sim::start();
    let mut bastion = Bastion::start(&sim, "[shutdown]\ndrain_secs = 2\n");
    let mut command = bastion.ssh_command("ssh");
    command
        .arg("alice@default/web-0@127.0.0.1")
        // Only the remote sleep's command line carries the marker.
        .arg("echo started; sleep $((10000 + 19))")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut client = command.spawn().unwrap();
    let stdout = std::io::BufReader::new(client.stdout.take().unwrap());
    let (line, _stdout) = read_line_within(stdout, "the session", Duration::from_secs(20));
    assert_eq!(line, "started\n");
    assert!(process_running("sleep 10019"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(bastion.process.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = wait_output(client, "the drained session", Duration::from_secs(30));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("kbastion: the bastion is restarting; this session ends in 2 s.")
            && stderr.contains("kbastion: the bastion is restarting: this session has ended."),
        "{stderr}"
    );
    assert_eq!(bastion.exit_code(Duration::from_secs(30)), Some(0));
    assert!(!process_running("sleep 10019"));
}

#[test]
fn sighup_reloads_keys_and_refuses_a_bad_config() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    let config_path = bastion.dir.path().join("kbastion.toml");
    let original = std::fs::read_to_string(&config_path).unwrap();
    let newcomer = Keys::new();
    let login = |identity: &std::path::Path| {
        let mut command = bastion.client_command("ssh", "ERROR", identity);
        command.arg("alice@default/web-0@127.0.0.1").arg("echo in");
        run_with_input(command, b"").status.code()
    };
    assert_eq!(login(&newcomer.identity), Some(255));
    // Add the new key for alice and reload.
    let updated = original.replacen(
        "authorized_keys = [",
        &format!("authorized_keys = [\"{}\", ", newcomer.public),
        1,
    );
    std::fs::write(&config_path, updated).unwrap();
    let pid = nix::unistd::Pid::from_raw(bastion.process.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for("the new key to work", Duration::from_secs(10), || {
        login(&newcomer.identity) == Some(0)
    });
    // A broken config is refused; the running one stays.
    std::fs::write(&config_path, "listen = nonsense").unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for("the refusal in the log", Duration::from_secs(10), || {
        std::fs::read_to_string(&bastion.log)
            .unwrap_or_default()
            .contains("configuration reload refused")
    });
    assert_eq!(login(&newcomer.identity), Some(0));
    assert_eq!(login(&bastion.keys.identity), Some(0));
}

/// The host key a server presents, as `ssh-keyscan` prints it.
fn host_key(port: u16) -> String {
    let out = Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &port.to_string(), "127.0.0.1"])
        .output()
        .unwrap();
    text(&out.stdout)
        .lines()
        .find(|l| !l.starts_with('#'))
        .and_then(|l| l.split_once(' ').map(|(_, key)| key.to_string()))
        .unwrap_or_default()
}

/// Two replicas behind one address act as one bastion: one host key, one
/// shared node-shell pod, and each replica's metrics count its own
/// sessions while they run and after.
#[test]
fn two_replicas_share_host_key_and_node_pod_and_report_their_sessions() {
    let sim = Sim::start();
    let keys = tempfile::tempdir().unwrap();
    let key_path = keys.path().join("ssh_host_ed25519_key");
    let ports = [free_port(), free_port()];
    let replicas: Vec<Bastion> = ports
        .iter()
        .map(|port| {
            Bastion::start(
                &sim,
                &format!(
                    "host_keys = [\"{}\"]\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n[node_shell]\nlinger_secs = 1\n",
                    key_path.display()
                ),
            )
        })
        .collect();
    let first_key = host_key(replicas[0].port);
    assert!(first_key.starts_with("ssh-ed25519 "), "{first_key}");
    assert_eq!(host_key(replicas[1].port), first_key);
    let sessions: Vec<_> = replicas
        .iter()
        .map(|replica| {
            let mut ssh = replica.ssh_command("ssh");
            ssh.arg("alice@node-1@127.0.0.1")
                .arg("echo open; cat")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped());
            let mut child = ssh.spawn().unwrap();
            let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            let (line, _) = read_line_within(stdout, "the node session", Duration::from_secs(30));
            assert_eq!(line, "open\n");
            child
        })
        .collect();
    let pods = sim.kubectl(
        "kubectl",
        "admin",
        &["get", "pods", "-n", "kbastion-node-shells", "-o", "name"],
    );
    assert_eq!(text(&pods.stdout), "pod/kbastion-node-node-1\n");
    for port in ports {
        let metrics = http_get(port, "/metrics").1;
        for line in [
            "kbastion_sessions_active{kind=\"exec\"} 1",
            "kbastion_node_shell_pods_held 1",
        ] {
            assert!(metrics.contains(line), "{port} lacks {line}: {metrics}");
        }
    }
    // One replica created the pod, the other joined it.
    let created: u64 = ports
        .iter()
        .map(|port| {
            let metrics = http_get(*port, "/metrics").1;
            metrics
                .lines()
                .find_map(|l| l.strip_prefix("kbastion_node_shell_pods_created_total "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(created, 1);
    for mut session in sessions {
        drop(session.stdin.take());
        assert!(wait_exit(&mut session, "the node session", Duration::from_secs(20)).success());
    }
    for port in ports {
        let mut metrics = String::new();
        wait_for("the session to end", Duration::from_secs(10), || {
            metrics = http_get(port, "/metrics").1;
            metrics.contains("kbastion_sessions_active{kind=\"exec\"} 0")
        });
        assert!(
            metrics.contains("kbastion_sessions_ended_total{outcome=\"success\"} 1"),
            "{metrics}"
        );
    }
}

/// `kbastion demo` on free ports with `home` as its user's home and its
/// state in `state`; its stdout is piped.
fn start_demo(home: &std::path::Path, state: &std::path::Path) -> Process {
    Process(
        Command::new(BIN)
            .args([
                "demo",
                "--listen",
                "127.0.0.1:0",
                "--web-listen",
                "127.0.0.1:0",
                "--kube-listen",
                "127.0.0.1:0",
            ])
            .arg("--state-dir")
            .arg(state)
            .env("HOME", home)
            .env_remove("XDG_STATE_HOME")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// What a newcomer does: `kbastion demo` with no SSH key of their own,
/// then the printed command gets a shell in the container; Ctrl-C stops
/// the demo and its simulator.
#[test]
fn the_demo_prints_commands_that_work_and_stops_on_ctrl_c() {
    use std::io::BufRead;
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("state");
    let mut demo = start_demo(home.path(), &state);
    let stdout = std::io::BufReader::new(demo.0.stdout.take().unwrap());
    let (printed_tx, printed_rx) = std::sync::mpsc::channel();
    // Read everything the demo prints, as a terminal would.
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            for label in [
                "A shell in a container:",
                "No shell in the image:",
                "Audit log (JSON lines):",
                "Replay the newest one:",
                "Sign in as alice:",
            ] {
                if let Some(value) = line.trim().strip_prefix(label) {
                    let _ = printed_tx.send((label, value.trim().to_string()));
                }
            }
            // The kubectl door's two commands.
            if line.contains(" kubeconfig > ") {
                let _ = printed_tx.send(("kubeconfig", line.trim().to_string()));
            }
            if line.trim().starts_with("kubectl --kubeconfig") && line.contains("alice.kubeconfig")
            {
                let _ = printed_tx.send(("kubectl", line.trim().to_string()));
            }
        }
    });
    let mut printed = std::collections::HashMap::new();
    while printed.len() < 7 {
        let (label, value) = printed_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the demo prints its commands and where its audit trail goes");
        printed.insert(label, value);
    }
    // A printed command, with options that keep the test off the
    // machine's own SSH setup, running `remote`.
    let run = |printed: &str, remote: &str| {
        let mut words = printed.split_whitespace();
        assert_eq!(words.next(), Some("ssh"));
        let mut ssh = Command::new("ssh");
        ssh.args(["-F", "/dev/null", "-o", "BatchMode=yes"])
            .args(["-o", "StrictHostKeyChecking=accept-new"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                home.path().join("known_hosts").display()
            ))
            .args(words)
            .arg(remote);
        run_with_input(ssh, b"")
    };
    let shell = printed["A shell in a container:"].clone();
    let out = run(&shell, "echo $HOSTNAME");
    assert_eq!(
        text(&out.stdout),
        "web-0\n",
        "{shell}: {}",
        text(&out.stderr)
    );
    // The distroless pod's debug container.
    let debug = printed["No shell in the image:"].clone();
    let out = run(
        &debug,
        "echo root=$TARGET_ROOT; cat $TARGET_ROOT/etc/app/config.yaml",
    );
    assert_eq!(
        text(&out.stdout),
        "root=/proc/1/root\nlisten: 8080\nlog_level: info\n",
        "{debug}: {}",
        text(&out.stderr)
    );
    assert!(
        shell.contains(&format!("-i {}", state.display())),
        "{shell}"
    );
    // The session is in the audit log the demo named, in its state dir.
    let audit = std::path::PathBuf::from(&printed["Audit log (JSON lines):"]);
    assert_eq!(audit, state.join("audit.jsonl"));
    wait_for(
        "the session in the demo's audit log",
        Duration::from_secs(10),
        || {
            let events = std::fs::read_to_string(&audit).unwrap_or_default();
            events.contains(r#""event":"session_end""#)
                && events.contains(r#""target":"default/web-0""#)
        },
    );
    assert!(
        printed["Replay the newest one:"].starts_with("asciinema play "),
        "{:?}",
        printed["Replay the newest one:"]
    );
    // The web terminal's sign-in link works (once).
    let link = printed["Sign in as alice:"]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let origin = link.split("/login/").next().unwrap_or_default();
    // The link's page, then its button (a same-origin POST), as a browser.
    let curl = |link: &str, post: bool| {
        let mut curl = Command::new("curl");
        curl.arg("-sk");
        if post {
            curl.args(["-X", "POST", "-H", &format!("Origin: {origin}")]);
        }
        curl.args([
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            link,
        ]);
        text(&run_with_input(curl, b"").stdout)
    };
    assert_eq!(curl(&link, false), "200 ", "{link}");
    assert_eq!(curl(&link, true), format!("303 {origin}/"), "{link}");
    assert_eq!(curl(&link, false), "410 ", "{link}");
    // kubectl as alice through the door, as printed: the kubeconfig from
    // ssh, then kubectl, whose ssh finds the demo's key in an agent (as
    // the demo says) and the host key where the person's ssh keeps it.
    let (get_config, into) = printed["kubeconfig"]
        .split_once(" > ")
        .expect("the kubeconfig line writes a file");
    let out = run(get_config.trim_end_matches(" kubeconfig"), "kubeconfig");
    assert!(out.status.success(), "{get_config}: {}", text(&out.stderr));
    std::fs::write(into.trim(), &out.stdout).unwrap();
    let agent = home.path().join("agent.sock");
    let _agent = Process(
        Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&agent)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the agent's socket", Duration::from_secs(10), || {
        agent.exists()
    });
    let identity = shell
        .split_whitespace()
        .skip_while(|w| *w != "-i")
        .nth(1)
        .expect("the demo's key")
        .to_string();
    let add = Command::new("ssh-add")
        .arg(&identity)
        .env("SSH_AUTH_SOCK", &agent)
        .output()
        .unwrap();
    assert!(add.status.success(), "ssh-add: {}", text(&add.stderr));
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        bin.join("ssh"),
        format!(
            "#!/bin/sh\nexec /usr/bin/ssh -F /dev/null -o BatchMode=yes -o UserKnownHostsFile={} \"$@\"\n",
            home.path().join("known_hosts").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("ssh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut words = printed["kubectl"].split_whitespace();
    let mut kubectl = Command::new(words.next().unwrap());
    kubectl.args(words).env("SSH_AUTH_SOCK", &agent).env(
        "PATH",
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    let out = run_with_input(kubectl, b"");
    assert!(
        out.status.success() && text(&out.stdout).contains("web-0"),
        "{}: {}",
        printed["kubectl"],
        text(&out.stderr)
    );
    let simulator = state.join("cluster").display().to_string();
    assert!(process_running(&simulator), "the demo's simulator runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let mut status = None;
    wait_for("the demo to stop", Duration::from_secs(20), || {
        status = demo.0.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(0));
    wait_for("the simulator to stop", Duration::from_secs(10), || {
        !process_running(&simulator)
    });
}

/// An `sftp` client on kbastion's own SFTP server, its commands fed from a
/// pipe kept open: a session that sits there until it is ended.
fn idle_sftp(bastion: &Bastion) -> (std::process::Child, std::process::ChildStdin) {
    let mut sftp = bastion.ssh_command("sftp");
    sftp.args(["-b", "-", "alice@default+web-0@127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = sftp.spawn().expect("sftp");
    let mut stdin = child.stdin.take().expect("stdin");
    use std::io::Write;
    writeln!(stdin, "pwd").expect("sftp command");
    (child, stdin)
}

/// Sends `sftp -b -` one more command and the end of its input.
fn next_command_and_end(mut stdin: std::process::ChildStdin) {
    use std::io::Write;
    let _ = writeln!(stdin, "ls");
}

/// kbastion's own SFTP server and legacy scp follow the same rules as a
/// shell: the idle timeout ends an idle `sftp` with its one line; after
/// SIGTERM an `sftp` session and a running `scp -O` download are told, and
/// ended at the drain deadline; the bastion then exits 0.
#[test]
fn built_in_sftp_and_scp_honour_the_idle_timeout_and_the_drain() {
    let sim = Sim::start();
    let idle = Bastion::start(
        &sim,
        "[files]\nsftp = \"builtin\"\n[timeouts]\nidle_secs = 2\n",
    );
    let start = std::time::Instant::now();
    let (client, stdin) = idle_sftp(&idle);
    wait_for("the idle timeout", Duration::from_secs(20), || {
        std::fs::read_to_string(&idle.log).is_ok_and(|l| l.contains("\"reason\":\"idle timeout\""))
    });
    // sftp -b notices the closed connection at its next command.
    next_command_and_end(stdin);
    let out = wait_output(client, "the idle sftp", Duration::from_secs(20));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("kbastion: the session was idle for 2 s and has been closed\n"),
        "{stderr}"
    );
    assert!(text(&out.stdout).contains("Remote working directory"));
    assert!(!out.status.success());
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    let mut bastion = Bastion::start(
        &sim,
        "[files]\nsftp = \"builtin\"\n[shutdown]\ndrain_secs = 2\n",
    );
    let (sftp, sftp_stdin) = idle_sftp(&bastion);
    // A download slowed to 16 kbit/s: 2 MiB would take over 15 minutes.
    // (The container's $HOME in the simulator; the sftp session made it.)
    let home = sim.dir.path().join("state/pods/default/web-0/app");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("slow.bin"), vec![7u8; 2 << 20]).unwrap();
    let mut scp = bastion.ssh_command("scp");
    scp.args(["-O", "-l", "16", "alice@default+web-0@127.0.0.1:slow.bin"])
        .arg(bastion.dir.path().join("slow.bin"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut scp = Process(scp.spawn().expect("scp -O"));
    // scp's stderr as it comes: its own end waits for what the 16 kbit/s
    // limit has yet to read, long after the session ended.
    let scp_stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let mut pipe = scp.0.stderr.take().expect("stderr");
        let scp_stderr = scp_stderr.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 1024];
            while let Ok(n @ 1..) = std::io::Read::read(&mut pipe, &mut buffer) {
                scp_stderr
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
    }
    // Both sessions are running before the signal.
    bastion.wait_for_log_line(
        &["\"session started\"", "\"kind\":\"Sftp\""],
        Duration::from_secs(20),
    );
    wait_for("the download to start", Duration::from_secs(20), || {
        std::fs::metadata(bastion.dir.path().join("slow.bin")).is_ok_and(|m| m.len() > 0)
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(bastion.process.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopped = || {
        std::fs::read_to_string(&bastion.log)
            .unwrap_or_default()
            .matches("\"reason\":\"bastion stopped\"")
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stopped() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the drain deadline did not end both sessions: {}",
            std::fs::read_to_string(&bastion.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let told = |stderr: &str| {
        stderr.contains("kbastion: the bastion is restarting; this session ends in 2 s.")
            && stderr.contains("kbastion: the bastion is restarting: this session has ended.")
    };
    next_command_and_end(sftp_stdin);
    let out = wait_output(sftp, "sftp", Duration::from_secs(20));
    assert!(told(&text(&out.stderr)), "sftp: {}", text(&out.stderr));
    assert!(!out.status.success());
    wait_for("scp -O to show both lines", Duration::from_secs(10), || {
        told(&scp_stderr.lock().unwrap())
    });
    let _ = scp.0.kill();
    assert_eq!(bastion.exit_code(Duration::from_secs(20)), Some(0));
}

/// A forwarded connection that carries nothing for the idle timeout is
/// closed, as an idle shell is, and the audit says why.
#[test]
fn an_idle_forward_is_closed_at_the_idle_timeout() {
    use std::io::{Read, Write};
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "[timeouts]\nidle_secs = 2\n");
    let pod_port = echo_server();
    let local = free_port();
    let mut ssh = bastion.ssh_command("ssh");
    ssh.args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
        .arg(format!("{local}:localhost:{pod_port}"))
        .arg("alice@default/web-0@127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _client = Process(ssh.spawn().expect("ssh -L"));
    wait_for("the forwarded port", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", local)).is_ok()
    });
    // (The probes above were forwards too: this is the one watched.)
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", local)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(b"ping").unwrap();
    let mut echoed = [0u8; 4];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"ping");
    let idle_from = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let closed_after = idle_from.elapsed();
    assert!(rest.is_empty());
    assert!(
        closed_after >= Duration::from_secs(2) && closed_after < Duration::from_secs(10),
        "closed after {closed_after:?}"
    );
    bastion.wait_for_log_line(
        &[
            "\"session ended\"",
            "Forward {",
            "\"reason\":\"idle timeout\"",
        ],
        Duration::from_secs(10),
    );
}

/// The audit trail is never dropped and stays in order: when its writer is
/// behind (here a FIFO whose reader stops reading), new sessions are
/// refused with one line (`fail_closed`), and once the writer catches up
/// every event arrives, in order, and sessions start again.
#[test]
fn a_stalled_audit_writer_holds_new_sessions_and_loses_nothing() {
    use std::io::Read;
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    // The auditor: opens the FIFO, shrinks it to one page, then reads only
    // when told to.
    let (read_tx, read_rx) = std::sync::mpsc::channel::<()>();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::open(&fifo).unwrap();
            nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
            read_rx.recv().unwrap();
            let mut all = String::new();
            file.read_to_string(&mut all).unwrap();
            all
        })
    };
    let mut bastion = Bastion::start(
        &sim,
        &format!(
            "[audit]\nfile = \"{}\"\nqueue_bytes = 2048\nfail_closed = true\n",
            fifo.display()
        ),
    );
    let mut started = 0;
    let refused = loop {
        let out = bastion.ssh("alice@default/web-0", &["echo in"], b"");
        if text(&out.stdout) == "in\n" {
            started += 1;
            assert!(started < 50, "the audit writer never fell behind");
            continue;
        }
        break out;
    };
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.starts_with("kbastion: the audit log is ")
            && stderr.ends_with(
                "bytes behind (limit 2048) and the bastion is set to fail closed; try again later\n"
            ),
        "{stderr}"
    );
    // The auditor reads again: the writer catches up, sessions start.
    read_tx.send(()).unwrap();
    wait_for("sessions to start again", Duration::from_secs(20), || {
        text(&bastion.ssh("alice@default/web-0", &["echo in"], b"").stdout) == "in\n"
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(bastion.process.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(bastion.exit_code(Duration::from_secs(20)), Some(0));
    let events: Vec<serde_json::Value> = reader
        .join()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event a line"))
        .collect();
    // Every session that ran is there, start before end, none lost.
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    let starts = kinds.iter().filter(|k| **k == "session_start").count();
    let ends = kinds.iter().filter(|k| **k == "session_end").count();
    assert_eq!(starts, started + 1, "{kinds:?}");
    assert_eq!(ends, started + 1, "{kinds:?}");
    assert!(kinds.contains(&"refusal"), "{kinds:?}");
    let mut open = std::collections::HashSet::new();
    for event in &events {
        match event["event"].as_str() {
            Some("session_start") => assert!(open.insert(event["session"].clone())),
            Some("session_end") => assert!(open.remove(&event["session"]), "end before start"),
            _ => {}
        }
    }
}

/// The process ids under `pid` (children, their children, …).
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut parents = vec![pid];
    while let Some(parent) = parents.pop() {
        // Each thread's children are listed apart.
        let threads = std::fs::read_dir(format!("/proc/{parent}/task"))
            .into_iter()
            .flatten()
            .flatten();
        for thread in threads {
            let children =
                std::fs::read_to_string(thread.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                parents.push(child);
            }
        }
    }
    found
}

/// `kill -9` of the demo (a closed terminal, a script's hard stop): its
/// simulator and every container process of it go too, and its API port
/// is free again within 5 s.
#[test]
fn a_killed_demo_leaves_no_simulator_or_container_behind() {
    use std::io::BufRead;
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("state");
    let mut demo = start_demo(home.path(), &state);
    let stdout = std::io::BufReader::new(demo.0.stdout.take().unwrap());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if line.contains("A shell in a container:") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the demo starts");
    let kubeconfig: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("kubeconfig")).unwrap()).unwrap();
    let server = kubeconfig["clusters"][0]["cluster"]["server"]
        .as_str()
        .and_then(|url| url.strip_prefix("https://"))
        .expect("the simulator's address in the demo's kubeconfig")
        .to_string();
    // The simulator, and containers of its pods (they start as the
    // simulated kubelets get to them).
    let mut left = Vec::new();
    wait_for(
        "the demo's simulator and its containers",
        Duration::from_secs(30),
        || {
            left = descendants(demo.0.id());
            left.len() >= 3
        },
    );
    demo.0.kill().unwrap();
    demo.0.wait().unwrap();
    wait_for(
        "the demo's simulator and containers to go",
        Duration::from_secs(5),
        || {
            // Gone, or a zombie waiting for whoever adopted it.
            left.iter().all(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
                    stat.rsplit(')')
                        .next()
                        .is_some_and(|s| s.trim_start().starts_with('Z'))
                })
            })
        },
    );
    assert!(
        std::net::TcpStream::connect(server.as_str()).is_err(),
        "the simulator's port {server} still answers"
    );
}

/// `ssh PERSON@bastion sessions` lists one's own live sessions (id,
/// target, kind, door, start, bytes) and nobody else's; the metrics
/// listener lists everyone's as JSON; an ended session leaves both; a
/// command the bastion does not know is refused in one line.
#[test]
fn sessions_are_listed_to_their_person_and_to_operators_and_leave_when_they_end() {
    let sim = Sim::start();
    let port = free_port();
    let bastion = Bastion::start(&sim, &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let spawn = |login: &str, command: &str| {
        let mut ssh = bastion.ssh_command("ssh");
        ssh.args([&format!("{login}@127.0.0.1"), command])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Process(ssh.spawn().unwrap())
    };
    let alice_client = spawn(
        "alice@default/web-0",
        "head -c 100000 /dev/zero; exec sleep 10421",
    );
    let bob_client = spawn("bob@default/web-0/sidecar", "exec sleep 10422");
    let mut listing = String::new();
    wait_for(
        "alice's session to be listed with the 100000 bytes it sent",
        Duration::from_secs(20),
        || {
            let out = bastion.ssh("alice", &["sessions"], b"");
            listing = text(&out.stdout);
            out.status.success() && listing.contains("97.7 KiB")
        },
    );
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one header and alice's one session:\n{listing}"
    );
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "TARGET", "KIND", "DOOR", "STARTED", "IN", "OUT"],
        "{listing}"
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0].len(), 12, "a 12-character id: {listing}");
    assert_eq!(&row[1..4], ["default/web-0", "exec", "ssh"], "{listing}");
    assert!(
        row[4].ends_with('Z') && row[4].starts_with("20"),
        "{listing}"
    );
    assert_eq!(&row[5..], ["0", "B", "97.7", "KiB"], "{listing}");
    assert!(
        !listing.contains("sidecar"),
        "bob's session is not alice's: {listing}"
    );

    let (code, body) = http_get(port, "/sessions");
    assert_eq!(code, "200", "{body}");
    let all: Vec<serde_json::Value> = serde_json::from_str(&body).expect("JSON");
    let mut people: Vec<(&str, &str)> = all
        .iter()
        .map(|s| (s["person"].as_str().unwrap(), s["target"].as_str().unwrap()))
        .collect();
    people.sort();
    assert_eq!(
        people,
        [("alice", "default/web-0"), ("bob", "default/web-0/sidecar")],
        "{body}"
    );
    let alice = all.iter().find(|s| s["person"] == "alice").unwrap();
    assert!(
        alice["id"].as_str().unwrap().starts_with(row[0]),
        "the same id: {body}"
    );
    assert_eq!(alice["bytes_out"], 100000, "{body}");
    assert_eq!(alice["transport"], "ssh", "{body}");

    drop(alice_client);
    drop(bob_client);
    wait_for(
        "both sessions to leave the registry",
        Duration::from_secs(20),
        || http_get(port, "/sessions").1.trim() == "[]",
    );
    let out = bastion.ssh("alice", &["sessions"], b"");
    assert_eq!(text(&out.stdout), "no open sessions\n");
    assert_eq!(out.status.code(), Some(0));

    let out = bastion.ssh("alice", &["frobnicate"], b"");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("kbastion: no target given; log in as "),
        "{stderr}"
    );
    assert!(
        stderr.lines().any(|l| l
            == "\"frobnicate\" is not a command of this bastion; it knows `web` (a one-time sign-in link for the web terminal), `sessions` (your open sessions on this bastion), `kubeconfig` (a kubeconfig for kubectl through this bastion, as you), `kube-credential` (the short-lived credential kubectl asks that kubeconfig's ssh for), `certificate` (after a provider sign-in, an SSH certificate for the key on stdin)"),
        "{stderr}"
    );
}
