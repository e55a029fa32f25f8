//! `USER@NAMESPACE/POD/CONTAINER.debug` with the real OpenSSH client: a
//! shell and commands in a debug container beside a container without a
//! shell, its reuse, the RBAC refusal before anything is added, and the
//! hint a plain session into such a container gives.

mod common;

use std::time::Duration;

use common::*;

/// The pod's ephemeral containers' names.
fn ephemeral_names(sim: &Sim, pod: &str) -> Vec<String> {
    let out = sim.kubectl(
        "kubectl",
        "admin",
        &[
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={range .spec.ephemeralContainers[*]}{.name}{\"\\n\"}{end}",
        ],
    );
    text(&out.stdout).lines().map(String::from).collect()
}

#[test]
fn a_plain_session_into_a_shell_less_container_points_at_debug() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    sim.wait_running("default", "api-0");
    let out = bastion.ssh("alice@default/api-0", &["true"], b"");
    assert_eq!(out.status.code(), Some(126));
    assert_eq!(
        text(&out.stderr),
        "kbastion: the command could not run: Internal error occurred: error executing command in container: failed to exec in container: failed to start exec: OCI runtime exec failed: exec failed: unable to start container process: exec: \"env\": executable file not found in $PATH: unknown; this container has no shell: use USER@default/api-0/app.debug for a shell in a debug container beside it\n"
    );
}

#[test]
fn a_debug_shell_has_a_terminal_resizes_and_reports_exit() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    sim.wait_running("default", "api-0");
    let mut command = bastion.ssh_command("ssh");
    command
        .arg("-tt")
        .arg("alice@default/api-0/app.debug@127.0.0.1");
    let tmux = Tmux::start(&tmux_line(&command), 100, 30);
    let name = ephemeral_name_when_added(&sim);
    // The note is one line; at 100 columns the screen wraps it.
    tmux.wait_for_text(&format!(
        "kbastion: debug container {name} beside app; its files are under $TARGET_ROOT ("
    ));
    tmux.wait_for_text("/proc/1/root)");
    tmux.send(&["PS1='prompt> '", "Enter"]);
    tmux.wait_for_line_start("prompt>");
    tmux.wait_for_the_remote_size(100, 30);
    tmux.resize_and_wait_for_the_remote(120, 40);
    tmux.send(&["echo root=$TARGET_ROOT", "Enter"]);
    tmux.wait_for_text("root=/proc/1/root");
    tmux.send(&["exit 3", "Enter"]);
    tmux.wait_for_text("ssh exited with 3");
}

/// Waits for the one ephemeral container of api-0 and gives its name.
fn ephemeral_name_when_added(sim: &Sim) -> String {
    let mut names = Vec::new();
    wait_for("the debug container", Duration::from_secs(20), || {
        names = ephemeral_names(sim, "api-0");
        !names.is_empty()
    });
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with("kbastion-debug-app-"), "{names:?}");
    names.remove(0)
}

#[test]
fn sessions_at_once_and_later_share_one_debug_container() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    sim.wait_running("default", "api-0");
    let outputs: Vec<std::process::Output> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..2)
            .map(|i| {
                let bastion = &bastion;
                scope.spawn(move || {
                    bastion.ssh(
                        "alice@default+api-0+app.debug",
                        &[&format!("echo session-{i}; exit {}", 4 + i)],
                        b"",
                    )
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("ssh thread"))
            .collect()
    });
    for (i, out) in outputs.iter().enumerate() {
        assert_eq!(
            text(&out.stdout),
            format!("session-{i}\n"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(4 + i as i32));
    }
    let first = ephemeral_names(&sim, "api-0");
    assert_eq!(first.len(), 1, "{first:?}");
    let out = bastion.ssh("alice@default/api-0/.debug", &["echo again"], b"");
    assert_eq!(text(&out.stdout), "again\n", "{}", text(&out.stderr));
    assert_eq!(ephemeral_names(&sim, "api-0"), first);
}

#[test]
fn debug_without_the_right_to_add_containers_is_refused_before_anything_is_added() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    sim.wait_running("default", "api-0");
    let out = bastion.ssh("bob@default/api-0/app.debug", &["true"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "kbastion: access denied by Kubernetes RBAC: User \"bob\" may not patch pods/ephemeralcontainers \"api-0\" in namespace \"default\"\n"
    );
    assert!(ephemeral_names(&sim, "api-0").is_empty());
}

/// The target's own files from a `.debug` session: under `$TARGET_ROOT`
/// in a shell, and what SFTP, scp and `scp -O` act on, both ways, byte
/// for byte (the distroless container's root is its own, as the
/// simulator isolates containers of described images).
#[test]
fn the_targets_files_are_reached_from_debug_with_a_shell_scp_and_sftp() {
    let sim = Sim::start();
    let bastion = Bastion::start(&sim, "");
    sim.wait_running("default", "api-0");
    let config = "listen: 8080\nlog_level: info\n";
    let out = bastion.ssh(
        "alice@default/api-0/app.debug",
        &["ls $TARGET_ROOT/ $TARGET_ROOT/etc/app; cat $TARGET_ROOT/etc/app/config.yaml"],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    assert!(
        listing.starts_with("/proc/1/root/:\netc\nlib"),
        "not the target's root: {listing}"
    );
    assert!(listing.contains("usr\n"), "{listing}");
    assert!(
        listing.ends_with(&format!("/proc/1/root/etc/app:\nconfig.yaml\n{config}")),
        "{listing}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let remote = "alice@default+api-0+app.debug@127.0.0.1";
    // Downloads: scp (SFTP), scp -O.
    for (name, legacy) in [("sftp-mode", false), ("legacy", true)] {
        let local = dir.path().join(name);
        let mut scp = bastion.ssh_command("scp");
        if legacy {
            scp.arg("-O");
        }
        scp.arg(format!("{remote}:/etc/app/config.yaml"))
            .arg(&local);
        let out = run_with_input(scp, b"");
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        assert_eq!(
            std::fs::read_to_string(&local).expect("copied"),
            config,
            "{name}"
        );
    }
    // Uploads: scp, scp -O and sftp put, each a different 1 MiB + odd.
    let mut expected = Vec::new();
    for (i, how) in ["scp", "scp-O", "sftp"].iter().enumerate() {
        let local = dir.path().join(format!("{how}.bin"));
        let data: Vec<u8> = (0..(1 << 20) + 7 * (i as u32 + 1))
            .map(|n| (n.wrapping_mul(2654435761).wrapping_add(i as u32) >> 11) as u8)
            .collect();
        std::fs::write(&local, &data).expect("write");
        let destination = format!("/etc/app/{how}.bin");
        let out = match *how {
            "sftp" => {
                let mut sftp = bastion.ssh_command("sftp");
                sftp.args(["-b", "-", remote]);
                let batch = format!("put {} {destination}\nls -l /etc/app\n", local.display());
                run_with_input(sftp, batch.as_bytes())
            }
            _ => {
                let mut scp = bastion.ssh_command("scp");
                if *how == "scp-O" {
                    scp.arg("-O");
                }
                scp.arg(&local).arg(format!("{remote}:{destination}"));
                run_with_input(scp, b"")
            }
        };
        assert_eq!(out.status.code(), Some(0), "{how}: {}", text(&out.stderr));
        expected.push(format!("{}  /proc/1/root{destination}", sha256(&local)));
    }
    // In the target's root, as the debug container sees it.
    let out = bastion.ssh(
        "alice@default/api-0/app.debug",
        &["cd / && sha256sum /proc/1/root/etc/app/scp.bin /proc/1/root/etc/app/scp-O.bin /proc/1/root/etc/app/sftp.bin"],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), expected.join("\n") + "\n");
    // And not in the debug container's own /etc: the session ran and its
    // `ls` found nothing there (not a session that failed to start).
    let out = bastion.ssh("alice@default/api-0/app.debug", &["ls /etc/app"], b"");
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (
            Some(2),
            "ls: cannot access '/etc/app': No such file or directory\n".to_string()
        ),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(text(&out.stdout), "");
}
