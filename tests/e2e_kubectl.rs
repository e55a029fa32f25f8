//! kubectl through kbastion's kubectl door, as the person: the kubeconfig
//! is what `ssh PERSON@bastion kubeconfig` printed, and kubectl gets its
//! credential by running OpenSSH itself (`ssh ... kube-credential`), with
//! the person's key from their ssh config, against `kbastion serve` and
//! the simulator.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// A bastion with the kubectl door on, and a home for kubectl's ssh.
struct Door {
    bastion: Bastion,
    server: String,
    audit: PathBuf,
    /// Holds `ssh` (the person's OpenSSH, with their config) first on PATH.
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Door {
    fn start(sim: &Sim, extra: &str) -> Door {
        Self::start_with(sim, extra, "")
    }

    /// `start` with more lines in `[kube_proxy]`.
    fn start_with(sim: &Sim, extra: &str, kube_extra: &str) -> Door {
        let dir = tempfile::tempdir().expect("temp dir");
        let pair =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("certificate");
        let certificate = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&certificate, pair.cert.pem()).expect("write certificate");
        std::fs::write(&key, pair.signing_key.serialize_pem()).expect("write key");
        let port = free_port();
        let server = format!("https://127.0.0.1:{port}");
        let audit = dir.path().join("audit.jsonl");
        let recordings = dir.path().join("recordings");
        let config = format!(
            "{extra}\n[audit]\nfile = \"{audit}\"\nrecordings_dir = \"{recordings}\"\n\
             [kube_proxy]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{server}\"\n\
             certificate = \"{certificate}\"\nkey = \"{key}\"\n{kube_extra}\n",
            audit = audit.display(),
            recordings = recordings.display(),
            certificate = certificate.display(),
            key = key.display(),
        );
        let bastion = Bastion::start(sim, &config);
        // The person's ssh: their key and known hosts, as ~/.ssh/config
        // would give them.
        let bin = person_ssh(
            dir.path(),
            &bastion.keys.identity,
            &dir.path().join("known_hosts"),
        );
        Door {
            bastion,
            server,
            audit,
            bin,
            dir,
        }
    }

    /// `program` with the person's ssh first on PATH and this door's home.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("PATH", path_with(&self.bin))
            .env("HOME", self.dir.path());
        command
    }

    /// What `ssh PERSON@bastion kubeconfig` prints, saved to a file.
    fn kubeconfig(&self, person: &str) -> PathBuf {
        let out = self.bastion.ssh(person, &["kubeconfig"], b"");
        assert!(out.status.success(), "kubeconfig: {}", text(&out.stderr));
        let path = self.dir.path().join(format!("{person}.kubeconfig"));
        std::fs::write(&path, &out.stdout).expect("write kubeconfig");
        path
    }

    /// kubectl (`kubectl` or `kubectl.1.27` ...) with `kubeconfig`.
    fn kubectl(&self, binary: &str, kubeconfig: &Path, args: &[&str], input: &[u8]) -> Output {
        let path = kubectl_path(binary);
        let mut command = self.command(&path);
        command.arg("--kubeconfig").arg(kubeconfig).args(args);
        run_with_input(command, input)
    }

    fn audit_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("an audit event"))
            .collect()
    }
}

/// Where kubectl `binary` (`kubectl` or `kubectl.1.27` ...) is.
fn kubectl_path(binary: &str) -> String {
    if binary == "kubectl" {
        "kubectl".to_string()
    } else {
        format!("/usr/lib/google-cloud-sdk/bin/{binary}")
    }
}

/// `kubectl exec -it` into web-0's app container with `binary`, in tmux:
/// `marker` (a shell expression) is typed and its value seen, and the
/// initial size and a resize reach the container's terminal.
fn terminal_through_the_door(
    door: &Door,
    binary: &str,
    kubeconfig: &Path,
    marker: (&str, &str),
) -> Tmux {
    let tmux = Tmux::start(
        &door.kubectl_line(binary, kubeconfig, "exec -it web-0 -c app -- sh"),
        100,
        30,
    );
    tmux.wait_for_line_start("#");
    tmux.send(&[&format!("echo {}", marker.0), "Enter"]);
    tmux.wait_for_text(marker.1);
    tmux.send(&["stty size", "Enter"]);
    tmux.wait_for_text("30 100");
    tmux.resize(120, 40);
    tmux.send(&["stty size", "Enter"]);
    tmux.wait_for_text("40 120");
    tmux
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        text(&out.stderr),
        text(&out.stdout)
    );
    text(&out.stdout)
}

#[test]
fn kubectl_through_the_door_acts_as_the_person_with_a_credential_from_ssh() {
    let sim = Sim::start();
    let door = Door::start(&sim, "");
    let alice = door.kubeconfig("alice");
    let written = std::fs::read_to_string(&alice).unwrap();
    assert!(written.contains(&door.server), "{written}");
    assert!(
        written.contains("kube-credential") && !written.contains("insecure"),
        "{written}"
    );

    let pods = ok(
        &door.kubectl("kubectl", &alice, &["get", "pods", "-A"], b""),
        "get pods",
    );
    assert!(pods.contains("web-0") && pods.contains("db-0"), "{pods}");
    let whoami = ok(
        &door.kubectl(
            "kubectl",
            &alice,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
            b"",
        ),
        "auth whoami",
    );
    assert_eq!(whoami, "alice");

    // apply, get, delete: written as alice.
    let manifest = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: through-the-door\n  namespace: default\ndata:\n  greeting: hello\n";
    ok(
        &door.kubectl("kubectl", &alice, &["apply", "-f", "-"], manifest),
        "apply",
    );
    let greeting = ok(
        &door.kubectl(
            "kubectl",
            &alice,
            &[
                "get",
                "configmap",
                "through-the-door",
                "-o",
                "jsonpath={.data.greeting}",
            ],
            b"",
        ),
        "get configmap",
    );
    assert_eq!(greeting, "hello");
    ok(
        &door.kubectl(
            "kubectl",
            &alice,
            &["delete", "configmap", "through-the-door"],
            b"",
        ),
        "delete",
    );
    let api = sim.api_audit();
    let shown = api.len();
    assert!(
        api.iter()
            .any(|e| e["impersonatedUser"]["username"] == "alice"
                && e["verb"] == "create"
                && e["requestURI"]
                    .as_str()
                    .is_some_and(|uri| uri.starts_with("/api/v1/namespaces/default/configmaps"))),
        "the API server saw no create as alice among {shown} events"
    );

    // exec -i: stdin in, stdout out, the exit status back; the argv as given.
    let out = door.kubectl(
        "kubectl",
        &alice,
        &[
            "exec",
            "-i",
            "web-0",
            "-c",
            "app",
            "--",
            "sh",
            "-c",
            "cat; echo \"role=$ROLE\"; exit 3",
        ],
        b"through the door\n",
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "through the door\nrole=app\n");

    let events = door.audit_events();
    assert!(
        events.iter().any(|e| e["event"] == "api"
            && e["person"] == "alice"
            && e["verb"] == "list"
            && e["resource"] == "pods"
            && e["code"] == 200),
        "no audited list of pods: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "kube_credential" && e["person"] == "alice"),
        "no audited credential: {events:?}"
    );
    let start = events
        .iter()
        .find(|e| e["event"] == "session_start" && e["transport"] == "kube")
        .unwrap_or_else(|| panic!("the exec was not a session: {events:?}"));
    assert_eq!(start["target"], "default/web-0/app");
    assert!(
        events.iter().any(|e| e["event"] == "session_end"
            && e["session"] == start["session"]
            && e["exit_status"] == 3),
        "the exec's end and status were not audited: {events:?}"
    );
}

#[test]
fn the_door_refuses_impersonation_forged_credentials_and_passes_rbac_refusals_through() {
    let sim = Sim::start();
    let door = Door::start(&sim, "");
    let bob = door.kubeconfig("bob");
    // bob's own rights: default only. The API server's refusal, unchanged.
    let out = door.kubectl("kubectl", &bob, &["get", "pods", "-n", "kube-system"], b"");
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("User \"bob\" cannot list resource \"pods\"") && said.contains("kube-system"),
        "{said}"
    );
    ok(
        &door.kubectl("kubectl", &bob, &["get", "pods"], b""),
        "bob's get pods in default",
    );
    // --as is not a way around the person.
    let out = door.kubectl("kubectl", &bob, &["--as=alice", "get", "pods", "-A"], b"");
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("acts as bob only") && said.contains("--as"),
        "{said}"
    );
    assert_eq!(said.trim().lines().count(), 1, "{said}");

    // A credential this bastion did not sign.
    let forged = door.dir.path().join("forged.kubeconfig");
    let ca = std::fs::read_to_string(&bob).unwrap();
    let ca_line = ca
        .lines()
        .find(|l| l.contains("certificate-authority-data"))
        .expect("the CA line");
    std::fs::write(
        &forged,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: {}\n{ca_line}\nusers:\n- name: u\n  user:\n    token: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl\ncontexts:\n- name: k\n  context:\n    cluster: k\n    user: u\ncurrent-context: k\n",
            door.server
        ),
    )
    .unwrap();
    let out = door.kubectl("kubectl", &forged, &["get", "pods"], b"");
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(said.contains("not one this bastion issued"), "{said}");

    // can-i asks the API server as bob.
    let out = door.kubectl(
        "kubectl",
        &bob,
        &["auth", "can-i", "get", "pods", "-n", "kube-system"],
        b"",
    );
    assert_eq!(text(&out.stdout).trim(), "no", "{}", text(&out.stderr));
    let out = door.kubectl(
        "kubectl",
        &bob,
        &["auth", "can-i", "get", "pods", "-n", "default"],
        b"",
    );
    assert_eq!(text(&out.stdout).trim(), "yes", "{}", text(&out.stderr));

    // An API server that cannot be reached: 503, one line.
    let mut sim = sim;
    let _ = sim.process.0.kill();
    let _ = sim.process.0.wait();
    let out = door.kubectl("kubectl", &bob, &["get", "pods"], b"");
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("the Kubernetes API cannot be reached"),
        "{said}"
    );
}

#[test]
fn every_kubectl_from_1_27_to_1_33_lists_applies_execs_and_reads_logs_through_the_door() {
    let sim = Sim::start();
    let door = Door::start(&sim, "");
    let alice = door.kubeconfig("alice");
    for minor in 27..=33 {
        let binary = format!("kubectl.1.{minor}");
        let pods = ok(
            &door.kubectl(&binary, &alice, &["get", "pods", "-A"], b""),
            &binary,
        );
        assert!(
            pods.contains("web-0") && pods.contains("db-0"),
            "{binary}: {pods}"
        );
        let out = door.kubectl(
            &binary,
            &alice,
            &["exec", "-i", "web-0", "-c", "app", "--", "wc", "-c"],
            b"12345",
        );
        assert_eq!(ok(&out, &binary).trim(), "5", "{binary}");
        let name = format!("door-{minor}");
        let manifest = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  minor: \"{minor}\"\n"
        );
        ok(
            &door.kubectl(&binary, &alice, &["apply", "-f", "-"], manifest.as_bytes()),
            &format!("{binary} apply"),
        );
        let got = ok(
            &door.kubectl(
                &binary,
                &alice,
                &["get", "configmap", &name, "-o", "jsonpath={.data.minor}"],
                b"",
            ),
            &format!("{binary} get"),
        );
        assert_eq!(got, minor.to_string(), "{binary}");
        ok(
            &door.kubectl(&binary, &alice, &["delete", "configmap", &name], b""),
            &format!("{binary} delete"),
        );
        let logs = ok(
            &door.kubectl(&binary, &alice, &["logs", "logger", "--tail=1"], b""),
            &format!("{binary} logs"),
        );
        assert!(logs.starts_with("line "), "{binary}: {logs}");
        // `auth whoami` is beta from 1.28 (1.27 has it under alpha, on
        // v1alpha1, which the simulator does not serve).
        if minor >= 28 {
            let whoami = ok(
                &door.kubectl(
                    &binary,
                    &alice,
                    &[
                        "auth",
                        "whoami",
                        "-o",
                        "jsonpath={.status.userInfo.username}",
                    ],
                    b"",
                ),
                &format!("{binary} auth whoami"),
            );
            assert_eq!(whoami, "alice", "{binary}");
        }
    }
}

impl Door {
    /// A shell command line running kubectl `binary` with this door's
    /// environment, for tmux.
    fn kubectl_line(&self, binary: &str, kubeconfig: &Path, args: &str) -> String {
        let path = kubectl_path(binary);
        format!(
            "env -u TMUX TERM=screen PATH={bin}:$PATH HOME={home} {path} --kubeconfig {kubeconfig} {args}; echo kubectl exited with $?; sleep 60",
            bin = self.bin.display(),
            home = self.dir.path().display(),
            kubeconfig = kubeconfig.display(),
        )
    }

    fn reload_with(&self, extra_top_level: &str) {
        let config = self.bastion.dir.path().join("kbastion.toml");
        let before = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, format!("{extra_top_level}\n{before}")).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.bastion.process.0.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
        wait_for("the reload", std::time::Duration::from_secs(10), || {
            std::fs::read_to_string(&self.bastion.log)
                .unwrap_or_default()
                .contains("configuration reloaded")
        });
    }
}

#[test]
fn an_exec_with_a_terminal_is_a_recorded_listed_session_that_revocation_ends() {
    let sim = Sim::start();
    let door = Door::start(&sim, "");
    let alice = door.kubeconfig("alice");
    // The terminal's size comes through (kubectl's resize channel).
    let tmux = terminal_through_the_door(&door, "kubectl", &alice, ("DOOR-$((6*7))", "DOOR-42"));
    // Ctrl-C reaches the container's terminal: it stops the foreground
    // command, not kubectl.
    tmux.send(&["sleep 1000; echo AFTER-$((1+1))", "Enter"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    tmux.send(&["C-c"]);
    tmux.send(&["echo INTERRUPTED-$((2+2))", "Enter"]);
    tmux.wait_for_text("INTERRUPTED-4");
    assert!(!tmux.screen().contains("AFTER-2"), "{}", tmux.screen());

    let listed = door.bastion.ssh("alice", &["sessions"], b"");
    let listed = text(&listed.stdout);
    assert!(
        listed.contains("default/web-0/app") && listed.contains("kube"),
        "{listed}"
    );

    // The key is revoked: the open exec ends within 10 s.
    let revoked = door.dir.path().join("revoked_keys");
    std::fs::write(&revoked, format!("{}\n", door.bastion.keys.public)).unwrap();
    door.reload_with(&format!("revoked_keys = \"{}\"", revoked.display()));
    tmux.wait_for_screen(
        "kubectl to end after the revocation",
        std::time::Duration::from_secs(10),
        |screen| screen.contains("kubectl exited with"),
    );
    let events = door.audit_events();
    let end = events
        .iter()
        .find(|e| e["event"] == "session_end" && e["target"] == "default/web-0/app")
        .unwrap_or_else(|| panic!("no end of the exec: {events:?}"));
    assert!(
        end["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("access revoked")),
        "{end}"
    );
    // It was recorded, like ssh -t: the typed marker replays.
    let recording = end["recording"].as_str().expect("a recording");
    let replay = asciinema_cat(Path::new(recording));
    assert!(replay.contains("DOOR-42"), "{replay}");
    // And the revoked key gets no new credential, nor a request through.
    let out = door.kubectl("kubectl", &alice, &["get", "pods"], b"");
    assert!(!out.status.success());
}

#[test]
fn port_forward_carries_http_through_the_door_over_websocket_and_spdy() {
    let sim = Sim::start();
    let door = Door::start(&sim, "");
    let alice = door.kubeconfig("alice");
    let served = door.dir.path().join("served");
    std::fs::create_dir(&served).unwrap();
    std::fs::write(served.join("hello.txt"), "hello through the door\n").unwrap();
    let server_port = free_port();
    let _server = Process(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &server_port.to_string(),
                "--bind",
                "127.0.0.1",
                "-d",
            ])
            .arg(&served)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 http.server"),
    );
    for binary in ["kubectl", "kubectl.1.27"] {
        let local = free_port();
        let path = kubectl_path(binary);
        let _forward = Process(
            door.command(&path)
                .arg("--kubeconfig")
                .arg(&alice)
                .args(["port-forward", "web-0", &format!("{local}:{server_port}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("kubectl port-forward"),
        );
        wait_for(
            "the forwarded port",
            std::time::Duration::from_secs(20),
            || std::net::TcpStream::connect(("127.0.0.1", local)).is_ok(),
        );
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", local)).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        stream
            .write_all(b"GET /hello.txt HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.0 200"), "{binary}: {answer}");
        assert!(
            answer.ends_with("\r\n\r\nhello through the door\n"),
            "{binary}: {answer}"
        );
    }
    let events = door.audit_events();
    let forwards = events
        .iter()
        .filter(|e| {
            e["event"] == "session_start" && e["kind"] == "forward" && e["transport"] == "kube"
        })
        .count();
    assert!(forwards >= 2, "the forwards were not sessions: {events:?}");
}

#[test]
fn an_spdy_exec_with_a_terminal_is_recorded_with_its_size_and_exit_status() {
    let sim = Sim::start();
    let door = Door::start(&sim, "");
    let alice = door.kubeconfig("alice");
    let tmux =
        terminal_through_the_door(&door, "kubectl.1.27", &alice, ("SPDY-$((7*6))", "SPDY-42"));
    tmux.send(&["exit 7", "Enter"]);
    tmux.wait_for_text("kubectl exited with 7");
    wait_for(
        "the exec's end in the audit",
        std::time::Duration::from_secs(10),
        || {
            door.audit_events()
                .iter()
                .any(|e| e["event"] == "session_end" && e["target"] == "default/web-0/app")
        },
    );
    let events = door.audit_events();
    let end = events
        .iter()
        .find(|e| e["event"] == "session_end" && e["target"] == "default/web-0/app")
        .unwrap();
    assert_eq!(end["exit_status"], 7, "{end}");
    let recording = end["recording"].as_str().expect("a recording");
    let replay = asciinema_cat(Path::new(recording));
    assert!(replay.contains("SPDY-42"), "{replay}");
    let cast = std::fs::read_to_string(recording).unwrap();
    assert!(
        cast.lines()
            .any(|l| l.contains("\"r\"") && l.contains("120x40")),
        "the resize was not recorded: {cast}"
    );
}

#[test]
fn the_official_python_client_lists_execs_and_watches_through_the_door() {
    let sim = Sim::start();
    let door = Door::start(&sim, "");
    let alice = door.kubeconfig("alice");
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run .ci/run (it installs the official Python client)",
        python.display()
    );
    let mut command = door.command(python.to_str().expect("a UTF-8 path"));
    command
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/door_client.py"))
        .arg(&alice);
    let out = run_with_input(command, b"");
    let stdout = ok(&out, "door_client.py");
    let result: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("JSON");
    assert!(
        result["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "web-0"),
        "{result}"
    );
    assert_eq!(result["stdout"], "from python\nrole=app\n", "{result}");
    assert_eq!(result["code"], 4, "{result}");
    assert!(
        result["watched"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e[0] == "ADDED" && e[1] == "web-0"),
        "{result}"
    );
    let events = door.audit_events();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "api" && e["verb"] == "watch" && e["stage"] == "opened"),
        "the watch was not audited when it opened: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "api" && e["verb"] == "watch" && e["stage"] == "closed"),
        "the watch was not audited when it closed: {events:?}"
    );
}

#[test]
fn kubectl_runs_ssh_again_for_a_new_credential_when_one_expires() {
    let sim = Sim::start();
    // Credentials that last two seconds, and a long-running kubectl (a
    // proxy) whose requests go on across their end, with nothing typed.
    let door = Door::start_with(&sim, "", "credential_secs = 2\n");
    let alice = door.kubeconfig("alice");
    let port = free_port();
    let proxy_log = door.dir.path().join("proxy.log");
    let _proxy = Process(
        door.command("kubectl")
            .arg("--kubeconfig")
            .arg(&alice)
            .args(["proxy", "--port", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&proxy_log).unwrap())
            .spawn()
            .expect("kubectl proxy"),
    );
    let get = || -> String {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(20)));
        let _ = stream.write_all(
            b"GET /api/v1/namespaces/default/pods/web-0 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
        );
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    };
    let status = |answer: &str| answer.split_whitespace().nth(1).map(str::to_string);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let answer = get();
        if status(&answer).as_deref() == Some("200") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kubectl proxy did not answer 200 within 20 s: {answer}\n{}",
            std::fs::read_to_string(&proxy_log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let minted = |door: &Door| {
        door.audit_events()
            .iter()
            .filter(|e| e["event"] == "kube_credential")
            .count()
    };
    let first = minted(&door);
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let answer = get();
        assert_eq!(status(&answer).as_deref(), Some("200"), "{answer}");
        assert!(answer.contains("\"name\":\"web-0\""), "{answer}");
    }
    assert!(
        minted(&door) > first,
        "kubectl did not ask ssh for a new credential ({first} minted)"
    );
}

#[test]
fn cp_both_ways_is_byte_exact_and_logs_follow_until_ctrl_c() {
    let sim = Sim::start();
    let door = Door::start(&sim, "");
    let alice = door.kubeconfig("alice");
    let local = door.dir.path().join("payload.bin");
    let data: Vec<u8> = (0..(3 << 20))
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&local, &data).unwrap();
    let remote = format!("web-0:/tmp/door-payload-{}.bin", std::process::id());
    ok(
        &door.kubectl(
            "kubectl",
            &alice,
            &["cp", "-c", "app", local.to_str().unwrap(), &remote],
            b"",
        ),
        "cp in",
    );
    let back = door.dir.path().join("back.bin");
    ok(
        &door.kubectl(
            "kubectl",
            &alice,
            &["cp", "-c", "app", &remote, back.to_str().unwrap()],
            b"",
        ),
        "cp out",
    );
    assert_eq!(sha256(&back), sha256_bytes(&data));

    // logs -f streams until Ctrl-C; the request is audited when it ends.
    let tmux = Tmux::start(
        &door.kubectl_line("kubectl", &alice, "logs -f logger"),
        100,
        30,
    );
    tmux.wait_for_text("line 3");
    let seen = tmux.screen();
    tmux.wait_for_screen(
        "more lines to follow",
        std::time::Duration::from_secs(10),
        |screen| screen != seen,
    );
    tmux.send(&["C-c"]);
    tmux.wait_for_text("kubectl exited with");
    wait_for(
        "the log request's audit",
        std::time::Duration::from_secs(10),
        || {
            door.audit_events().iter().any(|e| {
                e["event"] == "api"
                    && e["subresource"] == "log"
                    && e["stage"] == "done"
                    && e["bytes_out"].as_u64().is_some_and(|b| b > 0)
            })
        },
    );
}

#[test]
fn garbage_on_an_upgraded_stream_ends_only_that_stream() {
    let sim = Sim::start();
    let door = Door::start(&sim, "");
    let alice = door.kubeconfig("alice");
    let minted = door.bastion.ssh("alice", &["kube-credential"], b"");
    let minted: serde_json::Value =
        serde_json::from_slice(&minted.stdout).expect("an ExecCredential");
    let token = minted["status"]["token"]
        .as_str()
        .expect("a token")
        .to_string();
    let port = door.server.rsplit(':').next().unwrap().to_string();
    let mut command = Command::new("python3");
    command
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/door_garbage.py"))
        .args(["127.0.0.1", &port, &token]);
    let out = run_with_input(command, b"");
    let result: serde_json::Value =
        serde_json::from_str(ok(&out, "door_garbage.py").trim()).expect("JSON");
    assert!(
        result["status"]
            .as_str()
            .is_some_and(|s| s.contains(" 101 ")),
        "{result}"
    );
    assert_eq!(result["closed"], true, "{result}");
    // That session ended, audited; the door serves everyone else.
    wait_for(
        "the broken stream's end",
        std::time::Duration::from_secs(10),
        || {
            door.audit_events()
                .iter()
                .any(|e| e["event"] == "session_end" && e["command"] == "sleep 1000")
        },
    );
    let pods = ok(
        &door.kubectl("kubectl", &alice, &["get", "pods"], b""),
        "get pods",
    );
    assert!(pods.contains("web-0"), "{pods}");
    let out = door.kubectl(
        "kubectl",
        &alice,
        &["exec", "-i", "web-0", "-c", "app", "--", "cat"],
        b"still served\n",
    );
    assert_eq!(ok(&out, "exec after the garbage"), "still served\n");
}

/// A certificate without `permit-port-forwarding` and `permit-pty` gets a
/// credential that withholds the same through the door: `port-forward`
/// and `exec -t` are refused with the certificate's reason; a plain
/// `exec -i` works.
#[test]
fn a_certificates_missing_extensions_hold_through_the_door() {
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&ca)
            .status()
            .unwrap()
            .success()
    );
    let ca_public = std::fs::read_to_string(ca.with_extension("pub")).unwrap();
    let door = Door::start(
        &sim,
        &format!("user_ca_keys = [\"{}\"]\n", ca_public.trim()),
    );
    let keys = Keys::new();
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(&ca)
            .args(["-I", "alice-restricted", "-n", "alice", "-V", "+1h"])
            .args(["-O", "no-pty", "-O", "no-port-forwarding"])
            .arg(keys.identity.with_extension("pub"))
            .status()
            .unwrap()
            .success()
    );
    // The person's ssh, with the certificate's key only.
    let bin = person_ssh(dir.path(), &keys.identity, &dir.path().join("known_hosts"));
    let kubeconfig = door.kubeconfig("alice");
    let kubectl = |args: &[&str]| {
        let mut command = Command::new("kubectl");
        command
            .env("PATH", path_with(&bin))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args);
        run_with_input(command, b"through\n")
    };
    let out = kubectl(&["exec", "-i", "web-0", "-c", "app", "--", "cat"]);
    assert_eq!(ok(&out, "exec -i with the certificate"), "through\n");
    let events = door.audit_events();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "auth"
                && e["method"].as_str().is_some_and(|m| m.contains("cert"))),
        "the plugin's ssh did not log in with the certificate: {events:?}"
    );
    let out = kubectl(&["port-forward", "web-0", &format!("{}:80", free_port())]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("the certificate has no permit-port-forwarding extension"),
        "{}",
        text(&out.stderr)
    );
    let tmux_line = format!(
        "env -u TMUX TERM=screen PATH={}:$PATH kubectl --kubeconfig {} exec -it web-0 -c app -- sh; echo kubectl exited with $?; sleep 60",
        bin.display(),
        kubeconfig.display()
    );
    let tmux = Tmux::start(&tmux_line, 100, 30);
    tmux.wait_for_text("kubectl exited with");
    let screen = tmux.screen();
    assert!(
        screen.contains("the certificate has no permit-pty extension"),
        "{screen}"
    );
}
