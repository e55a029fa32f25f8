//! Shared helpers for the end-to-end tests: start `kbastion sim` and
//! `kbastion serve` on free loopback ports with temporary state, run the
//! real OpenSSH client against them, wait for conditions, clean up by PID.
#![allow(dead_code)]

mod simulator;
mod web;
// Not every test binary drives the simulator or the web terminal.
#[allow(unused_imports)]
pub use simulator::*;
#[allow(unused_imports)]
pub use web::*;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_kbastion");

/// A child process killed (with its group) when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `condition` holds, or panics with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub struct Sim {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub address: String,
    pub process: Process,
}

impl Sim {
    pub fn start() -> Sim {
        Self::start_version("1.33")
    }

    pub fn start_version(version: &str) -> Sim {
        let dir = tempfile::tempdir().expect("temp dir");
        let scenario = include_str!("../scenarios/test-cluster.toml").replace("VERSION", version);
        let scenario_path = dir.path().join("scenario.toml");
        std::fs::write(&scenario_path, scenario).expect("write scenario");
        let kubeconfig = dir.path().join("kubeconfig");
        let child = Command::new(BIN)
            .args(["sim", "--listen", "127.0.0.1:0", "--identity", "admin"])
            .arg("--kubeconfig-out")
            .arg(&kubeconfig)
            .arg("--scenario")
            .arg(&scenario_path)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--audit-log")
            .arg(dir.path().join("api-audit.jsonl"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("sim.log")).expect("log file"),
            ))
            .spawn()
            .expect("start kbastion sim");
        let process = Process(child);
        wait_for(
            "the simulator's kubeconfig",
            Duration::from_secs(20),
            || kubeconfig.exists(),
        );
        let text = std::fs::read_to_string(&kubeconfig).expect("read kubeconfig");
        let json: serde_json::Value = serde_json::from_str(&text).expect("kubeconfig is JSON");
        let server = json["clusters"][0]["cluster"]["server"]
            .as_str()
            .expect("server")
            .to_string();
        let address = server.trim_start_matches("https://").to_string();
        let sim = Sim {
            dir,
            kubeconfig,
            address,
            process,
        };
        sim.wait_running("default", "web-0");
        sim
    }

    /// The API server's audit events so far (`kbastion sim --audit-log`).
    pub fn api_audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("api-audit.jsonl"))
            .expect("the simulator's audit log")
            .lines()
            .map(|l| serde_json::from_str(l).expect("an audit event"))
            .collect()
    }

    /// Runs a kubectl binary (`kubectl` or `kubectl.1.27` ...) against the
    /// simulator with the given context, and fails the test when kubectl
    /// fails: an API error or a dead simulator must never read as "nothing
    /// there". Use `kubectl_unchecked` where the failure is what is tested.
    pub fn kubectl(&self, binary: &str, context: &str, args: &[&str]) -> Output {
        let out = self.kubectl_unchecked(binary, context, args);
        assert!(
            out.status.success(),
            "{binary} {} failed ({}): {}",
            args.join(" "),
            out.status,
            text(&out.stderr)
        );
        out
    }

    /// `kubectl` without the exit-status check, for tests of refusals and
    /// errors; the caller checks the status and the message.
    pub fn kubectl_unchecked(&self, binary: &str, context: &str, args: &[&str]) -> Output {
        let path = if binary == "kubectl" {
            "kubectl".to_string()
        } else {
            format!("/usr/lib/google-cloud-sdk/bin/{binary}")
        };
        let mut command = Command::new(path);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--context")
            .arg(context)
            .args(args);
        run_with_input(command, b"")
    }

    pub fn wait_running(&self, namespace: &str, pod: &str) {
        wait_for(
            &format!("pod {namespace}/{pod} Running"),
            Duration::from_secs(20),
            || {
                let out = self.kubectl_unchecked(
                    "kubectl",
                    "admin",
                    &[
                        "get",
                        "pod",
                        "-n",
                        namespace,
                        pod,
                        "-o",
                        "jsonpath={.status.phase}",
                    ],
                );
                String::from_utf8_lossy(&out.stdout) == "Running"
            },
        );
    }
}

impl Sim {
    /// Waits until pod `crasher` (in the default namespace; it exits 3
    /// after two lines) has restarted once, so that it has a previous log.
    pub fn wait_crasher_restarted(&self) {
        wait_for("crasher restarted", Duration::from_secs(20), || {
            let out = self.kubectl(
                "kubectl",
                "admin",
                &[
                    "get",
                    "pod",
                    "crasher",
                    "-o",
                    "jsonpath={.status.containerStatuses[0].restartCount}",
                ],
            );
            String::from_utf8_lossy(&out.stdout)
                .parse::<u64>()
                .unwrap_or(0)
                >= 1
        });
    }

    /// Waits until pod `broken` (an image that cannot be pulled) shows
    /// `ImagePullBackOff`.
    pub fn wait_image_pull_backoff(&self) {
        wait_for(
            "pod broken in ImagePullBackOff",
            Duration::from_secs(20),
            || {
                let out = self.kubectl(
                    "kubectl",
                    "admin",
                    &[
                        "get",
                        "pod",
                        "broken",
                        "-o",
                        "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
                    ],
                );
                text(&out.stdout) == "ImagePullBackOff"
            },
        );
    }
}

pub struct Keys {
    pub dir: tempfile::TempDir,
    pub identity: PathBuf,
    pub public: String,
}

impl Keys {
    pub fn new() -> Keys {
        let dir = tempfile::tempdir().expect("temp dir");
        let identity = dir.path().join("id");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
            .arg(&identity)
            .status()
            .expect("ssh-keygen");
        assert!(status.success());
        let public = std::fs::read_to_string(identity.with_extension("pub"))
            .expect("public key")
            .trim()
            .to_string();
        Keys {
            dir,
            identity,
            public,
        }
    }
}

pub struct Bastion {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub keys: Keys,
    pub process: Process,
    pub log: PathBuf,
}

impl Bastion {
    /// Starts `kbastion serve` against `sim` with users alice, bob and carol
    /// (all with the same test key); `extra` is appended to the config.
    pub fn start(sim: &Sim, extra: &str) -> Bastion {
        Self::start_with_env(sim, extra, &[])
    }

    /// `start` with extra environment variables (the downward API's
    /// POD_NAME and POD_UID of a replica running in a cluster).
    pub fn start_with_env(sim: &Sim, extra: &str, env: &[(&str, &str)]) -> Bastion {
        let keys = Keys::new();
        let dir = tempfile::tempdir().expect("temp dir");
        let config = format!(
            "listen = \"127.0.0.1:0\"\nkubeconfig = \"{kubeconfig}\"\ncontext = \"system:serviceaccount:kbastion:kbastion\"\n{extra}\n\
             [[users]]\nname = \"alice\"\nkubernetes_groups = [\"platform\"]\nauthorized_keys = [\"{key}\"]\n\
             [[users]]\nname = \"bob\"\nauthorized_keys = [\"{key}\"]\n\
             [[users]]\nname = \"carol\"\nauthorized_keys = [\"{key}\"]\n",
            kubeconfig = sim.kubeconfig.display(),
            key = keys.public,
        );
        let config_path = dir.path().join("kbastion.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = dir.path().join("kbastion.log");
        let mut child = Command::new(BIN)
            .envs(env.iter().copied())
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kbastion serve");
        let stderr = child.stderr.take().expect("stderr");
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let log_path = log.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(&log_path).expect("log file");
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                use std::io::Write;
                let _ = writeln!(file, "{line}");
                if !sent
                    && let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                    && json["fields"]["message"] == "listening"
                    && let Some(port) = json["fields"]["address"]
                        .as_str()
                        .and_then(|a| a.rsplit(':').next())
                        .and_then(|p| p.parse::<u16>().ok())
                {
                    let _ = port_tx.send(port);
                    sent = true;
                }
            }
        });
        let process = Process(child);
        let limit = Duration::from_secs(20);
        let port = port_rx.recv_timeout(limit).unwrap_or_else(|_| {
            panic!(
                "timed out after {limit:?} waiting for kbastion serve to log \"listening\"; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        Bastion {
            dir,
            port,
            keys,
            process,
            log,
        }
    }

    /// Waits for the bastion process to exit and returns its exit code.
    pub fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        simulator::wait_exit(&mut self.process.0, "kbastion to exit", limit).code()
    }

    /// Waits for a line of the bastion's log that contains every one of
    /// `parts`.
    pub fn wait_for_log_line(&self, parts: &[&str], limit: Duration) {
        wait_for(&format!("a log line with {parts:?}"), limit, || {
            std::fs::read_to_string(&self.log).is_ok_and(|log| {
                log.lines()
                    .any(|line| parts.iter().all(|p| line.contains(p)))
            })
        });
    }

    /// The `ssh` command with options that make it independent of the
    /// machine's own SSH setup.
    pub fn ssh_command(&self, program: &str) -> Command {
        self.ssh_command_logging(program, "ERROR")
    }

    /// `ssh_command` with another OpenSSH LogLevel (INFO shows forwarding
    /// refusals).
    pub fn ssh_command_logging(&self, program: &str, level: &str) -> Command {
        self.client_command(program, level, &self.keys.identity)
    }

    /// An OpenSSH client command using only `identity` as its key.
    pub fn client_command(&self, program: &str, level: &str, identity: &Path) -> Command {
        self.client_command_to(program, level, identity, self.port)
    }

    /// `client_command` to another port (a proxy in front of the bastion).
    pub fn client_command_to(
        &self,
        program: &str,
        level: &str,
        identity: &Path,
        port: u16,
    ) -> Command {
        let mut command = Command::new(program);
        let port_flag = if program == "ssh" { "-p" } else { "-P" };
        command
            .args([
                "-F",
                "/dev/null",
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-o",
                "BatchMode=yes",
            ])
            .arg("-o")
            .arg(format!("LogLevel={level}"))
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.dir.path().join("known_hosts").display()
            ))
            .args(["-o", "IdentitiesOnly=yes", "-i"])
            .arg(identity)
            .args([port_flag, &port.to_string()]);
        command
    }

    /// `ssh LOGIN@127.0.0.1 COMMAND...` with `input` on stdin.
    pub fn ssh(&self, login: &str, args: &[&str], input: &[u8]) -> Output {
        let mut command = self.ssh_command("ssh");
        command.arg(format!("{login}@127.0.0.1")).args(args);
        run_with_input(command, input)
    }
}

/// How long a client command may run in a test before it is killed and
/// the test fails: far above any expected run, far below nextest's limit.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(90);

/// Runs `command` with `input` on its stdin and collects its output; a
/// command still running after `COMMAND_LIMIT` is killed and fails the test.
pub fn run_with_input(command: Command, input: &[u8]) -> Output {
    run_with_input_within(command, input, COMMAND_LIMIT)
}

/// `run_with_input` with its own time limit.
pub fn run_with_input_within(mut command: Command, input: &[u8], limit: Duration) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", command.get_program()));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let what = format!("{command:?}");
    let output = wait_output(child, &what, limit);
    let _ = writer.join();
    output
}

/// Waits for `child` to exit and collects its piped stdout and stderr; a
/// child still running after `limit` is killed and fails the test with
/// `what` and what it printed so far.
pub fn wait_output(mut child: Child, what: &str, limit: Duration) -> Output {
    use std::io::Read;
    fn collect(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > limit {
            // The readers are not joined: another process may hold the
            // pipes (an `ssh -S` client hands them to its master).
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still ran after {limit:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Reads one line from `reader` (a child's pipe), failing the test when
/// none arrives within `limit`.
pub fn read_line_within(
    reader: impl BufRead + Send + 'static,
    what: &str,
    limit: Duration,
) -> (String, Box<dyn BufRead + Send>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = reader;
        let mut line = String::new();
        let result = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send((result, Box::new(reader) as Box<dyn BufRead + Send>));
    });
    match rx.recv_timeout(limit) {
        Ok((Ok(line), reader)) => (line, reader),
        Ok((Err(e), _)) => panic!("reading {what}: {e}"),
        Err(_) => panic!("no line of {what} within {limit:?}"),
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The SHA-256 of a file, hex; fails the test when the file cannot be read
/// (two missing files must not compare equal).
pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(
        out.status.success(),
        "sha256sum {}: {}",
        path.display(),
        text(&out.stderr)
    );
    text(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum prints a hash")
        .to_string()
}

/// A process's resident memory in KiB, from /proc; fails the test when the
/// process is gone (a dead process must not read as "no growth").
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("process {pid} is gone: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for process {pid}"))
}

/// Whether a process whose command line contains `marker` is running.
/// The marker must be one that the test's own client cannot carry: send
/// `sleep $((10000+19))` and look for `sleep 10019`, so that only the
/// remote process, which sees the expanded number, matches. pgrep exits 0
/// when it found one, 1 when it found none; anything else (a bad pattern,
/// no pgrep) fails the test instead of reading as "gone".
pub fn process_running(marker: &str) -> bool {
    let out = Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .expect("pgrep");
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("pgrep -f {marker:?} failed: {}", text(&out.stderr)),
    }
}

/// Waits until a process with `marker` runs, then until it is gone: the
/// positive check first, so that "gone" cannot pass for a marker that never
/// matched anything.
pub fn wait_running_then_gone(marker: &str, limit: Duration, end: impl FnOnce()) {
    wait_for(&format!("{marker} to run"), limit, || {
        process_running(marker)
    });
    end();
    wait_for(&format!("{marker} to be ended"), limit, || {
        !process_running(marker)
    });
}

/// A free loopback port (bound, then released for a client to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// What `asciinema cat` replays of a recording. asciinema wants a
/// terminal even to print, so it runs under `script`.
pub fn asciinema_cat(recording: &Path) -> String {
    let mut command = Command::new("script");
    command.args([
        "-qec",
        &format!("asciinema cat '{}'", recording.display()),
        "/dev/null",
    ]);
    let out = run_with_input(command, b"");
    assert!(
        out.status.success(),
        "asciinema cat {}: {}",
        recording.display(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A tmux session for interactive screens.
pub struct Tmux {
    pub name: String,
}

impl Tmux {
    pub fn start(command: &str, width: u16, height: u16) -> Tmux {
        let name = format!("kb{}", std::process::id() ^ rand_suffix());
        let tmux = Tmux { name };
        let status = tmux
            .tmux()
            .args([
                "new-session",
                "-d",
                "-s",
                &tmux.name,
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
                command,
            ])
            .status()
            .expect("tmux");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    /// A tmux command on this screen's own server (`-L`): tests running
    /// at once never share one, so one's server exiting as its last
    /// session ends cannot fail another's `new-session`.
    fn tmux(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.name]);
        command
    }

    pub fn send(&self, keys: &[&str]) {
        let status = self
            .tmux()
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .expect("tmux");
        assert!(status.success());
    }

    pub fn screen(&self) -> String {
        text(
            &self
                .tmux()
                .args(["capture-pane", "-p", "-t", &self.name])
                .output()
                .expect("tmux")
                .stdout,
        )
    }

    pub fn resize(&self, width: u16, height: u16) {
        let status = self
            .tmux()
            .args([
                "resize-window",
                "-t",
                &self.name,
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .status()
            .expect("tmux");
        assert!(status.success());
    }

    /// Sends `keys` once, then waits for `needle` on the screen. A lost
    /// keystroke fails the test: send only once the remote side is ready
    /// (wait for its prompt first), and after a resize use
    /// `resize_and_wait_for_the_remote`, since the resize travels to the
    /// remote pty on its own path and keys sent after it may overtake it.
    pub fn send_until(&self, keys: &[&str], needle: &str) {
        self.send(keys);
        self.wait_for_screen(
            &format!("{needle:?} after sending {keys:?}"),
            SCREEN_LIMIT,
            |screen| screen.contains(needle),
        );
    }

    /// Resizes the window, then waits for the remote terminal to have the
    /// new size (`wait_for_the_remote_size`).
    pub fn resize_and_wait_for_the_remote(&self, width: u16, height: u16) {
        self.resize(width, height);
        self.wait_for_the_remote_size(width, height);
    }

    /// Has the remote shell (a POSIX `sh` at its prompt) wait until its
    /// terminal reports `height width` (`stty size`) and print it: a size
    /// travels to the remote pty on its own path (the first one too) and
    /// may arrive after keys sent later. One send, so a lost keystroke or
    /// a size that never arrives fails the test, the latter with the size
    /// the remote saw. The remote waits at most 10 s.
    pub fn wait_for_the_remote_size(&self, width: u16, height: u16) {
        let size = format!("{height} {width}");
        // The echo of the typed line shows `size-seen: $(stty size)`, so
        // only the remote's answer matches `size-seen: ROWS COLUMNS`.
        let line = format!(
            "i=0; until [ \"$(stty size)\" = \"{size}\" ] || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done; echo \"size-seen: $(stty size)\""
        );
        self.send(&[&line, "Enter"]);
        self.wait_for_screen(
            &format!("the remote terminal to report {size}"),
            SCREEN_LIMIT,
            |screen| {
                screen
                    .lines()
                    .any(|l| l.trim_end() == format!("size-seen: {size}"))
            },
        );
    }

    /// Waits for a screen line that starts with `prefix` (a prompt, not the
    /// echo of the command that set it).
    pub fn wait_for_line_start(&self, prefix: &str) {
        self.wait_for_screen(
            &format!("a line starting with {prefix:?}"),
            SCREEN_LIMIT,
            |screen| screen.lines().any(|l| l.starts_with(prefix)),
        );
    }

    pub fn wait_for_text(&self, needle: &str) {
        self.wait_for_screen(&format!("{needle:?}"), SCREEN_LIMIT, |screen| {
            screen.contains(needle)
        });
    }

    /// Waits until the screen satisfies `condition`, or fails the test
    /// after `limit` naming `what` and showing the last screen.
    pub fn wait_for_screen(&self, what: &str, limit: Duration, condition: impl Fn(&str) -> bool) {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if condition(&screen) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for the screen to show {what}; it shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// How long a screen wait lasts: far above a loaded machine's echo, far
/// below nextest's limit.
pub const SCREEN_LIMIT: Duration = Duration::from_secs(20);

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::SeqCst) << 20
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}

/// A shell command line for tmux that runs `command` and reports its exit.
pub fn tmux_line(command: &std::process::Command) -> String {
    let words: Vec<String> = std::iter::once(command.get_program().to_string_lossy().into_owned())
        .chain(
            command
                .get_args()
                .map(|a| format!("'{}'", a.to_string_lossy())),
        )
        .collect();
    format!(
        "env -u TMUX TERM=screen {}; echo ssh exited with $?; sleep 60",
        words.join(" ")
    )
}

/// The SHA-256 of bytes in memory, hex, as `sha256` gives it for a file.
pub fn sha256_bytes(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A `bin` folder in `dir` whose `ssh` is the person's own: only
/// `identity` (and the certificate beside it), `known_hosts`, batch mode.
/// Put it first on a program's PATH (`path_with`) to give that program
/// (kubectl's credential plugin) the person's ssh.
pub fn person_ssh(dir: &Path, identity: &Path, known_hosts: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let config = dir.join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host *\n  IdentityFile {identity}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n  StrictHostKeyChecking accept-new\n  BatchMode yes\n  LogLevel ERROR\n",
            identity = identity.display(),
            known = known_hosts.display(),
        ),
    )
    .expect("ssh config");
    let wrapper = bin.join("ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec /usr/bin/ssh -F {} \"$@\"\n",
            config.display()
        ),
    )
    .expect("ssh wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    bin
}

/// PATH with `bin` first.
pub fn path_with(bin: &Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}
