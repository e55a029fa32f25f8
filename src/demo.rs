//! `kbastion demo`: the simulator and a bastion on loopback, ready for the
//! user's own `ssh`, `scp` and `sftp`, with nothing to install.
//!
//! The simulator runs as a child process (`kbastion sim`), so the bastion
//! reaches it exactly as it reaches a real cluster: through a kubeconfig.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey, PublicKey};

use crate::config::{Config, parse_authorized_key};
use crate::ssh::{self, Shared};

pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Address for the demo bastion.
    #[arg(long, default_value = "127.0.0.1:2222")]
    pub listen: SocketAddr,
    /// authorized_keys file for the demo users (default: ~/.ssh/*.pub, or a
    /// throwaway key generated in the state directory).
    #[arg(long)]
    pub authorized_keys: Option<PathBuf>,
    /// Where the demo keeps its host key, kubeconfig and containers
    /// (default: $XDG_STATE_HOME/kbastion/demo or ~/.local/state/kbastion/demo).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

fn default_state_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("kbastion/demo"));
    }
    let home = std::env::var_os("HOME")
        .context("neither XDG_STATE_HOME nor HOME is set; pass --state-dir")?;
    Ok(PathBuf::from(home).join(".local/state/kbastion/demo"))
}

fn read_keys(path: &Path) -> anyhow::Result<Vec<PublicKey>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if let Some(key) = parse_authorized_key(line)
            .map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), n + 1))?
        {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// The keys to authorize, and the identity file to tell the user about when
/// the demo had to make one.
fn demo_keys(args: &DemoArgs, state: &Path) -> anyhow::Result<(Vec<PublicKey>, Option<PathBuf>)> {
    if let Some(path) = &args.authorized_keys {
        let keys = read_keys(path)?;
        if keys.is_empty() {
            bail!("--authorized-keys {}: no keys in the file", path.display());
        }
        return Ok((keys, None));
    }
    let mut keys = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        let ssh_dir = PathBuf::from(home).join(".ssh");
        if let Ok(entries) = std::fs::read_dir(&ssh_dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "pub") {
                    keys.extend(read_keys(&path).unwrap_or_default());
                }
            }
        }
    }
    if !keys.is_empty() {
        return Ok((keys, None));
    }
    let identity = state.join("id_ed25519");
    if !identity.exists() {
        let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
            .map_err(|e| anyhow::anyhow!("cannot generate a key: {e}"))?;
        key.write_openssh_file(&identity, LineEnding::LF)
            .with_context(|| format!("cannot write {}", identity.display()))?;
        let public = key
            .public_key()
            .to_openssh()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        std::fs::write(
            identity.with_extension("pub"),
            format!("{public} kbastion-demo\n"),
        )?;
    }
    let key = PrivateKey::read_openssh_file(&identity)
        .with_context(|| format!("cannot read {}", identity.display()))?;
    Ok((vec![key.public_key().clone()], Some(identity)))
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let state = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => default_state_dir()?,
    };
    std::fs::create_dir_all(&state)
        .with_context(|| format!("cannot create {}", state.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))?;
    }
    let kubeconfig = state.join("kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    let exe = std::env::current_exe().context("cannot find the kbastion binary")?;
    let mut simulator = tokio::process::Command::new(exe)
        .arg("sim")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .arg("--state-dir")
        .arg(state.join("cluster"))
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("cannot start the simulator")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !kubeconfig.exists() {
        if let Some(status) = simulator.try_wait()? {
            bail!("the simulator exited ({status}) before it was ready");
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the simulator did not start within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (keys, identity) = demo_keys(&args, &state)?;
    let mut config = Config::parse(DEMO_CONFIG, &state)
        .map_err(|e| anyhow::anyhow!("built-in demo config: {e}"))?;
    config.listen = args.listen;
    for user in &mut config.users {
        user.keys = keys.clone();
    }
    // The demo config names both; without them the demo would hide the
    // audit trail and recordings a newcomer came to see.
    let audit = config
        .audit
        .file
        .clone()
        .context("the built-in demo config has no audit file")?;
    let recordings = config
        .audit
        .recordings_dir
        .clone()
        .context("the built-in demo config has no recordings directory")?;
    let listener = ssh::bind(config.listen).await?;
    let port = listener.local_addr()?.port();
    let host = listener.local_addr()?.ip();
    let shared = Shared::start(config).await?;
    // The printed commands must work the moment they are read: wait (with
    // a watch) until the demo's pod runs.
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(shared.cluster.own(), "default");
    tokio::time::timeout(
        Duration::from_secs(30),
        kube::runtime::wait::await_condition(
            pods,
            "web-0",
            kube::runtime::conditions::is_pod_running(),
        ),
    )
    .await
    .context("the demo pod default/web-0 did not start within 30 s")?
    .context("cannot watch the demo pod default/web-0")?;

    let i = identity
        .map(|p| format!(" -i {}", p.display()))
        .unwrap_or_default();
    let p = if port == 22 {
        String::new()
    } else {
        format!(" -p {port}")
    };
    let cp = if port == 22 {
        String::new()
    } else {
        format!(" -P {port}")
    };
    // A closed stdout (the demo piped into `head`) must not stop the demo.
    let _ = writeln!(
        std::io::stdout(),
        "kbastion demo is running (Ctrl-C stops it). State: {state}\n\
         \n  A shell in a container:      ssh{p}{i} alice@default/web-0@{host}\
         \n  A named container:           ssh{p}{i} alice@default/web-0/sidecar@{host}\
         \n  A command:                   ssh{p}{i} alice@default/web-0@{host} 'hostname; echo $ROLE'\
         \n  No shell in the image:       ssh{p}{i} alice@default/api-0/app.debug@{host}\
         \n  A container's log:           ssh{p}{i} alice@default/ticker/app.logs@{host} -- --tail=5\
         \n  A root shell on a node:      ssh{p}{i} alice@node-1@{host}\
         \n  A NotReady node:             ssh{p}{i} alice@edge-1@{host}\
         \n  Copy a file in (scp):        scp{cp}{i} README.md alice@default+web-0@{host}:\
         \n  Copy it back (legacy scp):   scp -O{cp}{i} alice@default+web-0@{host}:README.md /tmp/\
         \n  Browse with sftp:            sftp{cp}{i} alice@default+web-0@{host}\
         \n  A pod's port on yours:       ssh{p}{i} -N -L 8080:localhost:8080 alice@default/web-0@{host}\
         \n  bob may only use 'default':  ssh{p}{i} bob@kube-system/coredns-0@{host}\
         \n  What can I reach?            ssh{p}{i} alice@{host}\
         \n  The cluster itself:          kubectl --kubeconfig {kubeconfig} get pods -A\
         \n\
         \n  Audit log (JSON lines):      {audit}\
         \n  Session recordings:          {recordings}/SESSION.cast\
         \n  Replay the newest one:       asciinema play \"$(ls -t {recordings}/*.cast | head -n 1)\"\
         \n",
        state = state.display(),
        kubeconfig = kubeconfig.display(),
        audit = audit.display(),
        recordings = recordings.display(),
    );
    tokio::select! {
        result = crate::server::run(shared, listener, None) => {
            let _ = writeln!(std::io::stdout(), "\nkbastion demo stopped.");
            result
        }
        status = simulator.wait() => bail!("the simulator stopped unexpectedly ({})", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())),
    }
}
