//! The simulator's ephemeral containers, attach and container logs against
//! the real kubectl binaries: `kubectl debug --target` into a shell-less
//! container, the API server's validation of ephemeral container updates,
//! and `kubectl logs` with its options and errors.

mod common;

use std::io::BufReader;
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// The ephemeral containers of pod `default/NAME`, as `name=exitCode`
/// (exit code empty while it runs).
fn ephemeral_containers(sim: &Sim, pod: &str) -> Vec<String> {
    let out = sim.kubectl("kubectl", "admin", &["get", "pod", pod, "-o", "json"]);
    let pod: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pod JSON");
    pod["spec"]["ephemeralContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let status = pod["status"]["ephemeralContainerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["name"] == c["name"]);
            let code = status
                .and_then(|s| s.pointer("/state/terminated/exitCode"))
                .map(|c| c.to_string())
                .unwrap_or_default();
            format!("{}={code}", c["name"].as_str().unwrap_or_default())
        })
        .collect()
}

#[test]
fn a_plain_exec_into_a_shell_less_container_fails_with_containerds_words() {
    let sim = Sim::start();
    sim.wait_running("default", "api-0");
    for version in ["1.27", "1.33"] {
        let out = sim.kubectl_version(
            version,
            "admin",
            &["exec", "api-0", "--", "sh", "-c", "true"],
            b"",
        );
        assert_eq!(out.status.code(), Some(1), "kubectl {version}");
        assert_eq!(
            text(&out.stderr),
            "error: Internal error occurred: error executing command in container: failed to exec in container: failed to start exec: OCI runtime exec failed: exec failed: unable to start container process: exec: \"sh\": executable file not found in $PATH: unknown\n",
            "kubectl {version}"
        );
    }
    // A path that is not in the image is stat'ed, as runc does.
    let out = sim.kubectl_version("1.33", "admin", &["exec", "api-0", "--", "/bin/ls"], b"");
    assert!(
        text(&out.stderr)
            .contains("exec: \"/bin/ls\": stat /bin/ls: no such file or directory: unknown"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn every_kubectl_version_debugs_a_shell_less_pod_through_an_ephemeral_container() {
    let sim = Sim::start();
    sim.wait_running("default", "api-0");
    let mut expected = Vec::new();
    for version in VERSIONS {
        let out = run_with_input_within(
            {
                let mut command = sim.kubectl_command(version, "admin");
                command.args([
                    "debug",
                    "-i",
                    "api-0",
                    "--image=busybox:1.36",
                    "--target=app",
                    "--container",
                    &format!("dbg-{}", version.replace('.', "-")),
                    "--",
                    "sh",
                    "-c",
                    // The target's main process is PID 1 of the process
                    // namespace the debug container shares: its files.
                    "read line; echo \"got $line\"; cat /proc/1/root/etc/app/config.yaml; exit 4",
                ]);
                command
            },
            b"hello\n",
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "kubectl {version}: {}",
            text(&out.stderr)
        );
        assert_eq!(
            text(&out.stdout),
            "Targeting container \"app\". If you don't see processes from this container it may be because the container runtime doesn't support this feature.\ngot hello\nlisten: 8080\nlog_level: info\n",
            "kubectl {version}: {}",
            text(&out.stderr)
        );
        // kubectl debug drops the exit code; the pod's status keeps it.
        expected.push(format!("dbg-{}=4", version.replace('.', "-")));
        wait_for(
            &format!("kubectl {version}'s debug container terminated"),
            Duration::from_secs(10),
            || ephemeral_containers(&sim, "api-0") == expected,
        );
    }
}

#[test]
fn kubectl_debug_with_a_terminal_resizes_and_ends_for_1_27_and_1_33() {
    let sim = Sim::start();
    sim.wait_running("default", "api-0");
    for version in ["1.27", "1.33"] {
        let command = format!(
            "{} --kubeconfig {} --context admin debug -it api-0 --image=busybox:1.36 --target=app; echo debug-ended-$?; sleep 60",
            kubectl_path(version),
            sim.kubeconfig.display()
        );
        let tmux = Tmux::start(&command, 100, 30);
        tmux.wait_for_text("If you don't see a command prompt");
        // The shell drew its first prompt before kubectl attached: set one
        // and wait for it before typing more.
        tmux.send(&["PS1='prompt> '", "Enter"]);
        tmux.wait_for_line_start("prompt>");
        tmux.wait_for_the_remote_size(100, 30);
        tmux.resize_and_wait_for_the_remote(120, 40);
        tmux.send(&["exit 3", "Enter"]);
        tmux.wait_for_text("Session ended, the ephemeral container will not be restarted");
        tmux.wait_for_text("debug-ended-0");
        // kubectl ends with the stream; the kubelet posts the container's
        // exit code on its own path, so it is waited for.
        wait_for(
            &format!("kubectl {version}'s debug container to be terminated with 3"),
            Duration::from_secs(10),
            || {
                let containers = ephemeral_containers(&sim, "api-0");
                !containers.is_empty() && containers.iter().all(|c| c.ends_with("=3"))
            },
        );
    }
    let containers = ephemeral_containers(&sim, "api-0");
    assert_eq!(containers.len(), 2, "{containers:?}");
    assert!(
        containers.iter().all(|c| c.ends_with("=3")),
        "{containers:?}"
    );
}

#[test]
fn ephemeral_container_updates_are_validated_and_authorized_as_the_api_server_does() {
    let sim = Sim::start();
    sim.wait_running("default", "api-0");
    let patch = |context: &str, kind: &str, body: &str| {
        sim.kubectl_unchecked(
            "kubectl.1.33",
            context,
            &[
                "patch",
                "pod",
                "api-0",
                "--subresource=ephemeralcontainers",
                "--type",
                kind,
                "-p",
                body,
            ],
        )
    };
    let out = patch(
        "admin",
        "strategic",
        r#"{"spec":{"ephemeralContainers":[{"name":"dbg","image":"busybox:1.36","targetContainerName":"nope","command":["sleep","60"]}]}}"#,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "The Pod \"api-0\" is invalid: spec.ephemeralContainers[0].targetContainerName: Not found: \"nope\"\n"
    );
    let out = patch(
        "admin",
        "strategic",
        r#"{"spec":{"ephemeralContainers":[{"name":"app","image":"busybox:1.36","ports":[{"containerPort":80}]}]}}"#,
    );
    assert_eq!(
        text(&out.stderr),
        "The Pod \"api-0\" is invalid: \n* spec.ephemeralContainers[0].name: Duplicate value: \"app\"\n* spec.ephemeralContainers[0].ports: Forbidden: cannot be set for an Ephemeral Container\n"
    );
    // An addition is accepted; taking it away again is not.
    let out = patch(
        "admin",
        "strategic",
        r#"{"spec":{"ephemeralContainers":[{"name":"dbg","image":"busybox:1.36","targetContainerName":"app","command":["sleep","60"]}]}}"#,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = patch(
        "admin",
        "json",
        r#"[{"op":"remove","path":"/spec/ephemeralContainers/0"}]"#,
    );
    assert_eq!(
        text(&out.stderr),
        "The Pod \"api-0\" is invalid: spec.ephemeralContainers: Forbidden: existing ephemeral containers \"dbg\" may not be removed\n\n"
    );
    // dave may read pods but not add containers to them.
    let out = sim.kubectl_unchecked(
        "kubectl.1.33",
        "dave",
        &[
            "debug",
            "api-0",
            "--image=busybox:1.36",
            "--target=app",
            "--",
            "true",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).ends_with(
            "Error from server (Forbidden): pods \"api-0\" is forbidden: User \"dave\" cannot patch resource \"pods/ephemeralcontainers\" in API group \"\" in the namespace \"default\"\n"
        ),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        ephemeral_containers(&sim, "api-0"),
        vec!["dbg=".to_string()]
    );
}

#[test]
fn kubectl_logs_options_read_what_the_container_wrote() {
    let sim = Sim::start();
    sim.wait_running("default", "logger");
    wait_for("five lines logged", Duration::from_secs(10), || {
        text(&sim.kubectl("kubectl", "admin", &["logs", "logger"]).stdout)
            .lines()
            .count()
            >= 5
    });
    let all = text(
        &sim.kubectl("kubectl.1.33", "admin", &["logs", "logger"])
            .stdout,
    );
    let lines: Vec<&str> = all.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("line {}", i + 1));
    }
    // --tail counts from the end of what is there: the last two lines
    // when it was asked, which lie between the counts before and after.
    let logged = || {
        text(
            &sim.kubectl("kubectl.1.33", "admin", &["logs", "logger"])
                .stdout,
        )
        .lines()
        .count()
    };
    let before = logged();
    let tail = text(
        &sim.kubectl("kubectl.1.27", "admin", &["logs", "logger", "--tail=2"])
            .stdout,
    );
    let after = logged();
    assert!(
        (before..=after).any(|last| tail == format!("line {}\nline {last}\n", last - 1)),
        "--tail=2 printed {tail:?}, not the last two of lines 1..N for N in {before}..={after}"
    );
    // --timestamps puts the kubelet's RFC 3339 time with nine digits first.
    let stamped = text(
        &sim.kubectl(
            "kubectl.1.33",
            "admin",
            &["logs", "logger", "--timestamps", "--tail=1"],
        )
        .stdout,
    );
    let (time, rest) = stamped.trim_end().split_once(' ').expect("a timestamp");
    assert_eq!(
        time.len(),
        "2026-11-26T03:04:05.123456789Z".len(),
        "{stamped}"
    );
    assert!(
        time.ends_with('Z') && rest.starts_with("line "),
        "{stamped}"
    );
    // --since leaves out what is older.
    std::thread::sleep(Duration::from_secs(2));
    let recent = text(
        &sim.kubectl("kubectl.1.33", "admin", &["logs", "logger", "--since=1s"])
            .stdout,
    );
    let count = recent.lines().count();
    assert!(
        (3..=7).contains(&count),
        "{count} lines in the last second: {recent}"
    );
    // --follow delivers lines as they are written.
    let mut child = sim
        .kubectl_command("1.33", "admin")
        .args(["logs", "-f", "logger", "--tail=0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let reader: Box<dyn std::io::BufRead + Send> =
        Box::new(BufReader::new(child.stdout.take().expect("stdout")));
    let (first, reader) = read_line_within(reader, "kubectl logs -f", Duration::from_secs(5));
    let (second, _) = read_line_within(reader, "kubectl logs -f", Duration::from_secs(5));
    let number = |l: &str| {
        l.trim()
            .strip_prefix("line ")
            .and_then(|n| n.parse::<u64>().ok())
    };
    assert_eq!(
        number(&second),
        number(&first).map(|n| n + 1),
        "{first:?} {second:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn kubectl_logs_previous_and_its_errors_are_the_kubelets() {
    let sim = Sim::start();
    sim.wait_image_pull_backoff();
    sim.wait_crasher_restarted();
    let out = sim.kubectl("kubectl.1.33", "admin", &["logs", "crasher", "--previous"]);
    assert_eq!(text(&out.stdout), "started\nto-stderr\n");
    let out = sim.kubectl_unchecked("kubectl.1.33", "admin", &["logs", "logger", "--previous"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Error from server (BadRequest): previous terminated container \"app\" in pod \"logger\" not found\n"
    );
    let out = sim.kubectl_unchecked("kubectl.1.33", "admin", &["logs", "broken"]);
    assert_eq!(
        text(&out.stderr),
        "Error from server (BadRequest): container \"main\" in pod \"broken\" is waiting to start: trying and failing to pull image\n"
    );
    let out = sim.kubectl_unchecked("kubectl.1.33", "admin", &["logs", "web-0", "-c", "nope"]);
    assert_eq!(
        text(&out.stderr),
        "error: container nope is not valid for pod web-0\n"
    );
    let out = sim.kubectl_unchecked("kubectl.1.33", "dave", &["logs", "logger"]);
    assert_eq!(
        text(&out.stderr),
        "Error from server (Forbidden): pods \"logger\" is forbidden: User \"dave\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"default\"\n"
    );
}
