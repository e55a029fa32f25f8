//! Helpers for driving the simulator itself: its admin endpoint (faults,
//! cuts, stops), the real kubectl binary of a chosen version, a kube-rs
//! client for a scenario identity, and a loopback echo server standing in
//! for a pod's port.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use super::{Sim, run_with_input, text};

/// Every kubectl minor version on the machine (`/usr/lib/google-cloud-sdk/bin`).
pub const VERSIONS: &[&str] = &["1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33"];

pub fn kubectl_path(version: &str) -> String {
    format!("/usr/lib/google-cloud-sdk/bin/kubectl.{version}")
}

impl Sim {
    /// POSTs `body` to the simulator's admin endpoint (`/sim/faults`,
    /// `/sim/cut`, `/sim/stop`) as the `system:masters` admin and checks
    /// that it answered 200.
    pub fn admin(&self, path: &str, body: &str) {
        let out = Command::new("curl")
            .args([
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "Authorization: Bearer admin-token",
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
            ])
            .arg(format!("https://{}{path}", self.address))
            .output()
            .expect("curl");
        assert_eq!(text(&out.stdout), "200", "POST {path} {body}");
    }

    /// The kubectl binary of `version` ("1.27" ... "1.33") against the
    /// simulator with `context`; the caller adds arguments and stdio.
    pub fn kubectl_command(&self, version: &str, context: &str) -> Command {
        let mut command = Command::new(kubectl_path(version));
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--context")
            .arg(context);
        command
    }

    /// Runs kubectl `version` with `args` and `input` on its stdin.
    pub fn kubectl_version(
        &self,
        version: &str,
        context: &str,
        args: &[&str],
        input: &[u8],
    ) -> Output {
        let mut command = self.kubectl_command(version, context);
        command.args(args);
        run_with_input(command, input)
    }

    /// A kube-rs client for a scenario identity (a kubeconfig context).
    pub async fn kube_client(&self, context: &str) -> kube::Client {
        let options = kube::config::KubeConfigOptions {
            context: Some(context.into()),
            ..Default::default()
        };
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .expect("kube config");
        kube::Client::try_from(config).expect("kube client")
    }
}

/// Waits for `child` to exit, or panics with `what` after `timeout`.
pub fn wait_exit(child: &mut Child, what: &str, timeout: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A TCP echo server on a free loopback port, standing in for a pod's
/// port (pods share the machine's loopback in the simulator). It lives as
/// long as the test process.
pub fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A simulator started the way CI scripts and demos start it: in the
/// background (`&`) by a non-interactive shell, which starts background
/// jobs with SIGINT and SIGQUIT ignored. `sim.process` is that shell; the
/// simulator itself is killed by its PID when this is dropped.
pub struct ScriptedSim {
    pub sim: Sim,
    pub pid: i32,
}

impl ScriptedSim {
    pub fn start(version: &str) -> ScriptedSim {
        let dir = tempfile::tempdir().expect("temp dir");
        let scenario = include_str!("../scenarios/test-cluster.toml").replace("VERSION", version);
        let scenario_path = dir.path().join("scenario.toml");
        std::fs::write(&scenario_path, scenario).expect("write scenario");
        let kubeconfig = dir.path().join("kubeconfig");
        let pid_file = dir.path().join("sim.pid");
        let script = r#""$0" sim --listen 127.0.0.1:0 --identity admin --kubeconfig-out "$1" --scenario "$2" --state-dir "$3" 2>"$4" &
echo $! >"$5"
wait"#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(super::BIN)
            .arg(&kubeconfig)
            .arg(&scenario_path)
            .arg(dir.path().join("state"))
            .arg(dir.path().join("sim.log"))
            .arg(&pid_file)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the simulator from a script");
        let process = super::Process(child);
        super::wait_for(
            "the simulator's kubeconfig",
            Duration::from_secs(20),
            || kubeconfig.exists() && pid_file.exists(),
        );
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&kubeconfig).expect("kubeconfig"))
                .expect("kubeconfig is JSON");
        let address = json["clusters"][0]["cluster"]["server"]
            .as_str()
            .expect("server")
            .trim_start_matches("https://")
            .to_string();
        let sim = Sim {
            dir,
            kubeconfig,
            address,
            process,
        };
        sim.wait_running("default", "solo");
        ScriptedSim { sim, pid }
    }

    /// The signals the simulator process ignores (`SigIgn` in /proc).
    pub fn ignored_signals(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("simulator status");
        let mask = status
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .expect("SigIgn line");
        u64::from_str_radix(mask.trim(), 16).expect("hex mask")
    }
}

impl Drop for ScriptedSim {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
    }
}
