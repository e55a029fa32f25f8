//! End to end: authorization through the cluster, the audit log, session
//! recordings and authentication-failure delays.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn exec_permission_follows_the_cluster_version() {
    // carol has only `create` on pods/exec: kube-rs execs over WebSocket,
    // which clusters up to 1.34 authorize as `get`.
    let old = Sim::start_version("1.33");
    let bastion = Bastion::start(&old, "");
    let out = bastion.ssh("carol@default/web-0", &["true"], b"");
    assert_eq!(
        text(&out.stderr),
        "kbastion: access denied by Kubernetes RBAC: User \"carol\" may not get pods/exec \"web-0\" in namespace \"default\"\n"
    );
    assert_eq!(out.status.code(), Some(1));
    let new = Sim::start_version("1.35");
    let bastion = Bastion::start(&new, "");
    let out = bastion.ssh("carol@default/web-0", &["echo served"], b"");
    assert_eq!(text(&out.stdout), "served\n", "{}", text(&out.stderr));
}

fn audit_events(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn the_audit_log_records_attempts_sessions_and_refusals_without_secrets() {
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let bastion = Bastion::start(&sim, &format!("[audit]\nfile = \"{}\"\n", audit.display()));
    let out = bastion.ssh(
        "alice@default/web-0",
        &["head -c 1000 /dev/zero; exit 2"],
        b"abc",
    );
    assert_eq!(out.status.code(), Some(2));
    let _ = bastion.ssh("alice@default/missing", &["true"], b"");
    let stranger = Keys::new();
    let mut command = bastion.client_command("ssh", "ERROR", &stranger.identity);
    command.arg("alice@default/web-0@127.0.0.1").arg("true");
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(255));
    let mut events = Vec::new();
    wait_for("the audit events", Duration::from_secs(10), || {
        events = audit_events(&audit);
        events
            .iter()
            .filter(|e| e["event"] == "session_end")
            .count()
            == 1
            && events.iter().any(|e| e["event"] == "refusal")
    });
    let end = events.iter().find(|e| e["event"] == "session_end").unwrap();
    assert_eq!(end["person"], "alice");
    assert_eq!(end["target"], "default/web-0");
    assert_eq!(end["kind"], "exec");
    assert_eq!(end["command"], "head -c 1000 /dev/zero; exit 2");
    assert_eq!(end["exit_status"], 2);
    assert_eq!(end["bytes_out"], 1000);
    assert_eq!(end["bytes_in"], 3);
    let start = events
        .iter()
        .find(|e| e["event"] == "session_start")
        .unwrap();
    assert_eq!(start["kubernetes_user"], "alice");
    assert_eq!(start["session"], end["session"]);
    let refusal = events.iter().find(|e| e["event"] == "refusal").unwrap();
    assert!(
        refusal["reason"]
            .as_str()
            .unwrap()
            .contains("pod default/missing not found")
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "auth" && e["success"] == true)
    );
    let failed = events
        .iter()
        .find(|e| e["event"] == "auth" && e["success"] == false)
        .expect("a failed attempt");
    assert!(
        failed["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:")
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    let key_material = stranger.public.split_whitespace().nth(1).unwrap();
    assert!(
        !text.contains(key_material)
            && !text.contains(bastion.keys.public.split_whitespace().nth(1).unwrap())
    );
}

#[test]
fn interactive_sessions_are_recorded_in_asciicast_v2() {
    use std::os::unix::fs::PermissionsExt;
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let recordings = dir.path().join("recordings");
    let bastion = Bastion::start(
        &sim,
        &format!("[audit]\nrecordings_dir = \"{}\"\n", recordings.display()),
    );
    let mut command = bastion.ssh_command("ssh");
    command.arg("-tt").arg("alice@default/web-0@127.0.0.1");
    let line: Vec<String> = std::iter::once(command.get_program().to_string_lossy().into_owned())
        .chain(
            command
                .get_args()
                .map(|a| format!("'{}'", a.to_string_lossy())),
        )
        .collect();
    let tmux = Tmux::start(
        &format!("env -u TMUX TERM=xterm {}", line.join(" ")),
        90,
        25,
    );
    tmux.send(&["echo recorded-$((6*7))", "Enter"]);
    tmux.wait_for_text("recorded-42");
    tmux.resize(100, 30);
    tmux.send(&["exit", "Enter"]);
    let mut cast = None;
    // Written as the session goes: the resize may land after the output.
    wait_for(
        "the recording to hold the output and the resize",
        Duration::from_secs(10),
        || {
            cast = std::fs::read_dir(&recordings)
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| e.ok())
                .map(|e| e.path());
            cast.as_ref().is_some_and(|p| {
                let written = std::fs::read_to_string(p).unwrap_or_default();
                written.contains("recorded-42") && written.contains("\"100x30\"")
            })
        },
    );
    let cast = cast.unwrap();
    assert_eq!(
        std::fs::metadata(&cast).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let content = std::fs::read_to_string(&cast).unwrap();
    let mut lines = content.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], 90);
    assert_eq!(header["height"], 25);
    let events: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        events
            .iter()
            .all(|e| e[0].is_f64() && (e[1] == "o" || e[1] == "r")),
        "input is not recorded by default"
    );
    assert!(events.iter().any(|e| e[1] == "r" && e[2] == "100x30"));
    // The real player replays what the user saw (it wants a terminal:
    // `script` gives it one).
    let replay = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("asciinema cat {}", cast.display()),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script and asciinema (apt-get install asciinema)");
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    assert!(
        text(&replay.stdout).contains("recorded-42"),
        "{}",
        text(&replay.stdout)
    );
}

#[test]
fn repeated_authentication_failures_are_slowed_down() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    let stranger = Keys::new();
    let attempt = || {
        let mut command = bastion.client_command("ssh", "ERROR", &stranger.identity);
        command.arg("alice@default/web-0@127.0.0.1").arg("true");
        let start = Instant::now();
        let out = run_with_input(command, b"");
        assert_eq!(out.status.code(), Some(255));
        start.elapsed()
    };
    // The first three failures from a source are free (a client offering
    // a few keys); from the fourth on, 250 ms doubling.
    let first = attempt();
    for _ in 0..5 {
        let _ = attempt();
    }
    let seventh = attempt();
    // The seventh failure owes 250 ms doubled three times (2 s), which
    // overlaps the 300 ms every rejection takes anyway.
    assert!(
        seventh >= first + Duration::from_millis(1500),
        "first {first:?}, seventh {seventh:?}"
    );
    // The right key still gets in (a success clears the record).
    let out = bastion.ssh("alice@default/web-0", &["echo in"], b"");
    assert_eq!(text(&out.stdout), "in\n");
}

/// 50 wrong keys from one source slow that source down, while the right
/// key from another source still gets in at once.
#[test]
fn a_guessing_source_is_slowed_and_others_are_not() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "[limits]\nauth_failure_delay_ms = 50\n");
    let stranger = Keys::new();
    let attempt = |source: &str, identity: &std::path::Path| {
        let mut command = bastion.client_command("ssh", "ERROR", identity);
        command
            .args(["-b", source])
            .arg("alice@default/web-0@127.0.0.1")
            .arg("echo in");
        let start = Instant::now();
        let out = run_with_input(command, b"");
        (out, start.elapsed())
    };
    std::thread::scope(|scope| {
        for _ in 0..10 {
            scope.spawn(|| {
                for _ in 0..5 {
                    let (out, _) = attempt("127.0.0.1", &stranger.identity);
                    assert_eq!(out.status.code(), Some(255));
                }
            });
        }
    });
    let (out, slowed) = attempt("127.0.0.1", &stranger.identity);
    assert_eq!(out.status.code(), Some(255));
    // Past the grace and five more failures, each owes 32 × 50 ms.
    assert!(slowed >= Duration::from_millis(1600), "{slowed:?}");
    let (out, quick) = attempt("127.0.0.2", &bastion.keys.identity);
    assert_eq!(text(&out.stdout), "in\n", "{}", text(&out.stderr));
    assert!(quick < Duration::from_millis(1500), "{quick:?}");
}

/// Signs `keys`' public key with the CA at `ca`, returning the identity to
/// use (ssh picks up `id-cert.pub` next to `id`).
fn sign(ca: &std::path::Path, keys: &Keys, principals: &str, validity: &str, options: &[&str]) {
    let mut command = std::process::Command::new("ssh-keygen");
    command
        .args(["-q", "-s"])
        .arg(ca)
        .args(["-I", "test-cert", "-n", principals, "-V", validity]);
    for option in options {
        command.args(["-O", option]);
    }
    let status = command
        .arg(keys.identity.with_extension("pub"))
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn openssh_user_certificates_from_the_configured_ca_are_accepted_with_their_limits() {
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let (ca, rogue) = (dir.path().join("ca"), dir.path().join("rogue"));
    for key in [&ca, &rogue] {
        assert!(
            std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(key)
                .status()
                .unwrap()
                .success()
        );
    }
    let ca_public = std::fs::read_to_string(ca.with_extension("pub")).unwrap();
    // Short failure delays: this test fails on purpose, many times.
    let bastion = Bastion::start(
        &sim,
        &format!(
            "user_ca_keys = [\"{}\"]\n[limits]\nauth_failure_delay_ms = 10\n",
            ca_public.trim()
        ),
    );
    let attempt = |keys: &Keys, command: &str| {
        let mut ssh = bastion.client_command("ssh", "ERROR", &keys.identity);
        ssh.arg("alice@default/web-0@127.0.0.1").arg(command);
        run_with_input(ssh, b"")
    };
    // force-command replaces what the client asks for.
    let keys = Keys::new();
    sign(&ca, &keys, "alice", "+1h", &["force-command=echo forced"]);
    let out = attempt(&keys, "echo asked");
    assert_eq!(text(&out.stdout), "forced\n", "{}", text(&out.stderr));
    // Accepted ones first: failures slow down later attempts for alice.
    let cases: &[(&std::path::Path, &str, &str, &[&str], bool)] = &[
        (&ca, "alice", "+1h", &[], true),
        (&ca, "alice", "+1h", &["source-address=127.0.0.0/8"], true),
        (&ca, "bob,carol", "+1h", &[], false),
        (&ca, "alice", "-2h:-1h", &[], false),
        (&rogue, "alice", "+1h", &[], false),
        (&ca, "alice", "+1h", &["source-address=10.9.9.9/32"], false),
    ];
    for (signer, principals, validity, options, accepted) in cases {
        let keys = Keys::new();
        sign(signer, &keys, principals, validity, options);
        let out = attempt(&keys, "echo in");
        let case = format!("{principals} {validity} {options:?}: {}", text(&out.stderr));
        if *accepted {
            assert_eq!(out.status.code(), Some(0), "{case}");
            assert_eq!(text(&out.stdout), "in\n", "{case}");
        } else {
            // Refused at authentication, not a crash (which is 255 too).
            assert_eq!(out.status.code(), Some(255), "{case}");
            assert!(text(&out.stderr).contains("Permission denied"), "{case}");
        }
    }
    // The bastion that refused is still up and lets a good certificate in.
    let keys = Keys::new();
    sign(&ca, &keys, "alice", "+1h", &[]);
    let out = attempt(&keys, "echo still in");
    assert_eq!(text(&out.stdout), "still in\n", "{}", text(&out.stderr));
}

#[test]
fn a_person_limited_by_from_is_refused_elsewhere() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    let config = bastion.dir.path().join("kbastion.toml");
    let text_before = std::fs::read_to_string(&config).unwrap();
    // bob may only come from 10.0.0.0/8; the test connects from 127.0.0.1.
    std::fs::write(
        &config,
        text_before.replace(
            "name = \"bob\"\n",
            "name = \"bob\"\nfrom = [\"10.0.0.0/8\"]\n",
        ),
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(bastion.process.0.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_for("the reload", Duration::from_secs(10), || {
        std::fs::read_to_string(&bastion.log)
            .unwrap_or_default()
            .contains("configuration reloaded")
    });
    let out = bastion.ssh("bob@default/web-0", &["true"], b"");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        bastion
            .ssh("alice@default/web-0", &["echo ok"], b"")
            .status
            .code(),
        Some(0)
    );
}

/// A connection that never sends its SSH version line is closed when the
/// login time is up, not held for the idle timeout.
#[test]
fn a_silent_connection_is_closed_at_the_login_timeout() {
    use std::io::Read;
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "[timeouts]\nlogin_secs = 1\n");
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", bastion.port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let start = Instant::now();
    let mut received = Vec::new();
    // The server's version line, then EOF when it gives up on us.
    let _ = socket.read_to_end(&mut received);
    assert!(
        text(&received).starts_with("SSH-2.0-kbastion"),
        "{received:?}"
    );
    // Closed at the login timeout: not before (a bastion that drops every
    // connection), not long after.
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
    // And the listener still serves a normal login.
    let out = bastion.ssh("alice@default/web-0", &["echo ok"], b"");
    assert_eq!(text(&out.stdout), "ok\n", "{}", text(&out.stderr));
}

/// A login name carrying shell syntax is refused from the name alone: with
/// the cluster API gone, the answer is still the name's error (any API
/// call would have been reported as unreachable), and no session starts.
#[test]
fn shell_syntax_in_a_login_name_is_refused_before_any_api_call() {
    let mut sim = Sim::start();
    let bastion = Bastion::start(
        &sim,
        "[audit]\nfile = \"audit.jsonl\"\n[timeouts]\napi_secs = 2\n",
    );
    sim.process.0.kill().unwrap();
    let _ = sim.process.0.wait();
    // OpenSSH itself refuses to send `;`, `$`, backquotes, quotes, braces
    // and commas in a user name; these it sends.
    for (login, part) in [
        ("alice@default/web-0*", "pod \"web-0*\""),
        ("alice@default/../web-0", "pod \"..\""),
        ("alice@default+web-0+~root", "container \"~root\""),
        ("alice@défault/web-0", "namespace \"défault\""),
    ] {
        let out = bastion.ssh(login, &["true"], b"");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{login}: {stderr}");
        assert!(
            stderr.starts_with(&format!("kbastion: {part} is not a valid Kubernetes name"))
                && stderr.lines().count() == 1,
            "{login}: {stderr}"
        );
    }
    let events = audit_events(&bastion.dir.path().join("audit.jsonl"));
    assert!(events.iter().all(|e| e["event"] != "session_start"));
    assert_eq!(events.iter().filter(|e| e["event"] == "refusal").count(), 4);
}

/// A flood of connections that never log in is capped (the excess is
/// dropped at once) and costs little memory, while a logged-in user's
/// session keeps answering at once.
#[test]
fn a_connection_flood_is_capped_and_does_not_slow_logged_in_users() {
    use std::io::{BufRead, Write};
    let sim = Sim::start();
    let bastion = Bastion::start(
        &sim,
        "[limits]\nmax_connections_per_source = 5000\nmax_unauthenticated_connections = 100\n",
    );
    let mut ssh = bastion.ssh_command("ssh");
    ssh.arg("alice@default/web-0@127.0.0.1")
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut session = ssh.spawn().unwrap();
    let mut stdin = session.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(session.stdout.take().unwrap());
    let mut round_trip = |n: usize| {
        let start = Instant::now();
        writeln!(stdin, "ping {n}").unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, format!("ping {n}\n"));
        start.elapsed()
    };
    round_trip(0);
    let pid = bastion.process.0.id();
    let before = rss_kib(pid);
    // 1,000 connections that send a version line and then nothing.
    let flood: Vec<std::net::TcpStream> = (0..1000)
        .filter_map(|_| {
            let mut socket = std::net::TcpStream::connect(("127.0.0.1", bastion.port)).ok()?;
            let _ = socket.write_all(b"SSH-2.0-flood\r\n");
            Some(socket)
        })
        .collect();
    // Those over the cap are closed by the bastion right away.
    let mut closed = 0;
    for mut socket in flood.iter() {
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut buffer = [0u8; 4096];
        loop {
            match std::io::Read::read(&mut socket, &mut buffer) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(_) => continue,
                // Closed with our line unread: a reset.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    closed += 1;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    assert!(closed >= 850, "only {closed} of 1000 were refused");
    let slowest = (1..=20).map(&mut round_trip).max().unwrap();
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    drop(flood);
    drop(stdin);
    assert!(wait_exit(&mut session, "the session", Duration::from_secs(20)).success());
}
