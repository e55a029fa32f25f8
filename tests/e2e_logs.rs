//! `USER@NAMESPACE/POD/CONTAINER.logs` with the real OpenSSH client: the
//! container's log as `kubectl logs` prints it against the same simulator,
//! followed until Ctrl-C, options as kubectl names them, and one-line
//! refusals. OpenSSH reads options after the destination too, so log
//! options follow a `--`: `ssh alice@ns/pod/app.logs@bastion -- --tail=5`.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn logs_print_what_kubectl_logs_prints_with_the_same_options() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    sim.wait_crasher_restarted();
    // The previous instance's log is fixed: byte for byte what kubectl
    // prints.
    let kubectl = sim.kubectl("kubectl", "alice", &["logs", "crasher", "--previous"]);
    let out = bastion.ssh("alice@default/crasher/app.logs", &["--", "--previous"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "started\nto-stderr\n");
    assert_eq!(out.stdout, kubectl.stdout);
    // The logger writes on (a line every 200 ms), so what kubectl prints
    // of the whole timestamped log before and after a bastion session
    // brackets what the bastion could print: with --tail=2 the last two
    // lines, byte for byte, of kubectl's output at some moment between.
    let timestamped = || {
        let out = sim.kubectl("kubectl", "alice", &["logs", "logger", "--timestamps"]);
        text(&out.stdout)
            .lines()
            .map(|l| format!("{l}\n"))
            .collect::<Vec<String>>()
    };
    wait_for("five lines logged", Duration::from_secs(10), || {
        timestamped().len() >= 5
    });
    let before = timestamped().len();
    let out = bastion.ssh(
        "alice@default+logger+app.logs",
        &["--", "--tail=2", "--timestamps", "--no-follow"],
        b"",
    );
    let after = timestamped();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        (before..=after.len()).any(|end| printed == after[end - 2..end].concat()),
        "--tail=2 --timestamps printed {printed:?}, not kubectl's last two lines at a moment \
         between {before} and {} lines: {:?}",
        after.len(),
        &after[before - 2..]
    );
    // --since-time, a quarter into the second of the third line: kubectl
    // sends it in whole seconds (metav1.Time), so it prints from the first
    // line of that second; --limit-bytes fixes the extent, so the bastion
    // must print the same bytes. (A time in the second half of a second
    // differs today: kube-core 5 rounds sinceTime to the nearest second
    // where kubectl truncates it.)
    let from = format!("{}.250000000Z", &after[2][..19]);
    let first = after
        .iter()
        .find(|l| l[..19] >= from[..19])
        .expect("a line of that second");
    let options = [
        format!("--since-time={from}"),
        "--timestamps".to_string(),
        "--limit-bytes=150".to_string(),
    ];
    let kubectl = sim.kubectl(
        "kubectl",
        "alice",
        &[
            &["logs", "logger"][..],
            &options.iter().map(String::as_str).collect::<Vec<_>>(),
        ]
        .concat(),
    );
    assert_eq!(
        text(&kubectl.stdout).len(),
        150,
        "{}",
        text(&kubectl.stdout)
    );
    assert!(
        text(&kubectl.stdout).starts_with(first.as_str()),
        "{}",
        text(&kubectl.stdout)
    );
    let out = bastion.ssh(
        "alice@default/logger/app.logs",
        &[
            &["--"][..],
            &options.iter().map(String::as_str).collect::<Vec<_>>(),
        ]
        .concat(),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), text(&kubectl.stdout), "{options:?}");
    // --since: only the last second's lines (five a second are written):
    // a run of kubectl's lines that ends with the last one at a moment
    // between the counts before and after.
    std::thread::sleep(Duration::from_secs(2));
    let before = timestamped().len();
    let out = bastion.ssh(
        "alice@default/logger/.logs",
        &["--", "--since=1s", "--no-follow", "--timestamps"],
        b"",
    );
    let after = timestamped();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let count = printed.lines().count();
    assert!((3..=7).contains(&count), "{count}: {printed}");
    assert!(
        (before..=after.len()).any(|end| printed == after[end - count..end].concat()),
        "--since=1s printed {printed:?}, not kubectl's last lines at a moment between {before} and {} lines",
        after.len()
    );
    // A followed log that ends (here at --limit-bytes) ends the session
    // with exit status 0, with kubectl's bytes.
    let kubectl = sim.kubectl("kubectl", "alice", &["logs", "logger", "--limit-bytes=100"]);
    let out = bastion.ssh(
        "alice@default/logger/app.logs",
        &["--", "--limit-bytes=100"],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 100);
    assert!(text(&out.stdout).starts_with("line 1\nline 2\n"));
    assert_eq!(text(&out.stdout), text(&kubectl.stdout));
}

#[test]
fn logs_follow_new_lines_until_ctrl_c() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    sim.wait_running("default", "logger");
    let mut command = bastion.ssh_command("ssh");
    command
        .arg("-tt")
        .arg("alice@default/logger/app.logs@127.0.0.1");
    let tmux = Tmux::start(&tmux_line(&command), 100, 30);
    tmux.wait_for_text("line 3");
    // Lines keep coming while the session follows.
    let seen = |screen: &str| {
        screen
            .lines()
            .filter_map(|l| l.trim().strip_prefix("line ")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    };
    let before = seen(&tmux.screen());
    wait_for("newer lines", Duration::from_secs(10), || {
        seen(&tmux.screen()) >= before + 3
    });
    tmux.send(&["C-c"]);
    tmux.wait_for_text("ssh exited with 130");
    let after = seen(&tmux.screen());
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(seen(&tmux.screen()), after, "lines after Ctrl-C");
}

#[test]
fn logs_refusals_are_one_line() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    sim.wait_running("default", "logger");
    for (login, args, message) in [
        (
            "bob@default/logger/app.logs",
            &[][..],
            "kbastion: access denied by Kubernetes RBAC: User \"bob\" may not get pods/log \"logger\" in namespace \"default\"\n",
        ),
        (
            "alice@default/logger/app.logs",
            &["cat", "/etc/passwd"][..],
            "kbastion: \"cat\" is not a log option; a log session takes --follow, --no-follow, --previous, --timestamps, --tail=N, --since=DURATION, --since-time=RFC3339, --limit-bytes=N\n",
        ),
        (
            "alice@default/logger/app.logs",
            &["--", "--previous"][..],
            "kbastion: previous terminated container \"app\" in pod \"logger\" not found\n",
        ),
        (
            "alice@default/logger/nope.logs",
            &[][..],
            "kbastion: container nope not found in pod default/logger; it has: app\n",
        ),
    ] {
        let out = bastion.ssh(login, args, b"");
        assert_eq!(out.status.code(), Some(1), "{login} {args:?}");
        assert_eq!(text(&out.stderr), message, "{login} {args:?}");
        assert!(out.stdout.is_empty(), "{login} {args:?}");
    }
    // A log carries no connections.
    let mut command = bastion.ssh_command_logging("ssh", "INFO");
    command.args([
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-W",
        "localhost:80",
        "alice@default/logger/app.logs@127.0.0.1",
    ]);
    let out = run_with_input(command, b"");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr)
            .contains("default/logger/app.logs is a container's log and carries no connections"),
        "{}",
        text(&out.stderr)
    );
}

/// A log as files: `current` and `previous` in a read-only directory,
/// copied with scp (SFTP and legacy) and sftp, byte for byte what
/// `kubectl logs` prints against the same simulator.
#[test]
fn logs_copy_as_files_with_scp_and_sftp_byte_exact() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    sim.wait_running("default", "logger");
    sim.wait_crasher_restarted();
    let dir = tempfile::tempdir().expect("temp dir");
    let previous = sim.kubectl("kubectl", "alice", &["logs", "crasher", "--previous"]);
    assert_eq!(text(&previous.stdout), "started\nto-stderr\n");
    // The previous instance's log, fixed: scp (SFTP), scp -O and sftp.
    for (name, legacy) in [("sftp-mode", false), ("legacy", true)] {
        let local = dir.path().join(name);
        let mut scp = bastion.ssh_command("scp");
        if legacy {
            scp.arg("-O");
        }
        scp.arg("alice@default+crasher+app.logs@127.0.0.1:previous")
            .arg(&local);
        let out = run_with_input(scp, b"");
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        assert_eq!(
            std::fs::read(&local).expect("copied"),
            previous.stdout,
            "{name}"
        );
    }
    // The current log of a container that writes on: what scp copied is
    // the start of what kubectl prints a moment later, whole lines.
    let local = dir.path().join("current");
    let mut scp = bastion.ssh_command("scp");
    scp.arg("alice@default+logger+app.logs@127.0.0.1:current")
        .arg(&local);
    let out = run_with_input(scp, b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let copied = std::fs::read(&local).expect("copied");
    assert!(copied.starts_with(b"line 1\nline 2\n"), "{}", text(&copied));
    assert!(copied.ends_with(b"\n"));
    // Byte for byte what kubectl prints of the same extent.
    let limit = format!("--limit-bytes={}", copied.len());
    let same = sim
        .kubectl("kubectl", "alice", &["logs", "logger", &limit])
        .stdout;
    assert_eq!(text(&same), text(&copied));
    // sftp: the directory, a download, and no change.
    let sftp_batch = |batch: &str| {
        let mut sftp = bastion.ssh_command("sftp");
        sftp.args(["-b", "-", "alice@default+crasher+app.logs@127.0.0.1"]);
        run_with_input(sftp, batch.as_bytes())
    };
    let out = sftp_batch(&format!(
        "ls -1\nget previous {}\n",
        dir.path().join("via-sftp").display()
    ));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("\ncurrent\nprevious\n"), "{stdout}");
    assert_eq!(
        std::fs::read(dir.path().join("via-sftp")).expect("copied"),
        previous.stdout
    );
    // Each change is refused on its own, in sftp's words for a refusal
    // (a batch stops at its first failing command, exit status 1).
    for (command, refusal) in [
        (
            "put /etc/hostname notes",
            "dest open \"/notes\": Permission denied\r\n",
        ),
        (
            "rm current",
            "remote delete /current: Permission denied\r\n",
        ),
        (
            "rename current renamed",
            "remote rename \"/current\" to \"/renamed\": Permission denied\r\n",
        ),
        ("mkdir new", "remote mkdir \"/new\": Permission denied\r\n"),
    ] {
        let out = sftp_batch(&format!("{command}\n"));
        assert_eq!(
            (out.status.code(), text(&out.stderr)),
            (Some(1), refusal.to_string()),
            "{command}"
        );
    }
    // Nothing changed.
    let out = sftp_batch("ls -1\n");
    assert_eq!(text(&out.stdout), "sftp> ls -1\ncurrent\nprevious\n");
    // scp -O into a log: refused in its one line.
    let mut scp = bastion.ssh_command("scp");
    scp.args(["-O", "/etc/hostname"])
        .arg("alice@default+crasher+app.logs@127.0.0.1:notes");
    let out = run_with_input(scp, b"");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains(
            "notes: read-only: a container's log is the files current and previous, to read"
        ),
        "{}",
        text(&out.stderr)
    );
    // bob, without pods/log: refused before anything is read.
    let mut scp = bastion.ssh_command("scp");
    scp.arg("bob@default+logger+app.logs@127.0.0.1:current")
        .arg(dir.path().join("bob"));
    let out = run_with_input(scp, b"");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("User \"bob\" may not get pods/log \"logger\""),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("bob").exists());
}

/// A log session follows the session rules as every other: a log with
/// nothing new for the idle timeout is closed with the one-line reason
/// (web-0's container prints nothing), while a busy one is not.
#[test]
fn a_quiet_log_is_closed_at_the_idle_timeout() {
    let sim = Sim::start();
    let audit = sim.dir.path().join("bastion-audit.jsonl");
    let bastion = Bastion::start(
        &sim,
        &format!(
            "[timeouts]\nidle_secs = 2\n[audit]\nfile = \"{}\"\n",
            audit.display()
        ),
    );
    let mut ssh = bastion.ssh_command("ssh");
    ssh.arg("alice@default/web-0/app.logs@127.0.0.1");
    let started = std::time::Instant::now();
    let out = run_with_input_within(ssh, b"", Duration::from_secs(60));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "ended after {:?}",
        started.elapsed()
    );
    assert_eq!(
        text(&out.stderr),
        "kbastion: the session was idle for 2 s and has been closed\n"
    );
    assert_ne!(out.status.code(), Some(0));
    // Audited as what it was: a log, ended by the idle timeout.
    let mut end = serde_json::Value::Null;
    wait_for("the session's end", Duration::from_secs(10), || {
        end = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"] == "session_end")
            .unwrap_or_default();
        !end.is_null()
    });
    assert_eq!(end["kind"], "logs", "{end}");
    assert_eq!(end["reason"], "idle timeout", "{end}");
}
