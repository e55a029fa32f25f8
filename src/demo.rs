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

use crate::bastion::Shared;
use crate::config::Config;
use crate::keys::parse_authorized_key;
use crate::ssh;

pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Address for the demo bastion.
    #[arg(long, default_value = "127.0.0.1:2222")]
    pub listen: SocketAddr,
    /// Address for the demo's web terminal (HTTPS, with a self-signed
    /// certificate generated in the state directory; port 0: a free one).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub web_listen: SocketAddr,
    /// Address for the demo's kubectl door (HTTPS, with the web terminal's
    /// certificate; port 0: a free one).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub kube_listen: SocketAddr,
    /// authorized_keys file for the demo users (default: ~/.ssh/*.pub, or a
    /// throwaway key generated in the state directory).
    #[arg(long)]
    pub authorized_keys: Option<PathBuf>,
    /// Where the demo keeps its host key, kubeconfig and containers
    /// (default: $XDG_STATE_HOME/kbastion/demo or ~/.local/state/kbastion/demo).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// Runs in the simulator's child process before exec: it is killed when
/// the demo goes, even by SIGKILL, which no clean-up in the demo can
/// catch (and its containers go with it: they are tied to it the same
/// way). The signal follows the *thread* that spawned the child: the demo
/// spawns from `main`'s own thread (`#[tokio::main]` runs the demo future
/// there), never from a blocking-pool thread that may exit while the demo
/// runs. A demo that died before this ran is caught by the parent check.
fn die_with(demo: u32) -> std::io::Result<()> {
    use nix::libc;
    // SAFETY: prctl(2) with PR_SET_PDEATHSIG is async-signal-safe.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: getppid(2) is async-signal-safe.
    if unsafe { libc::getppid() } as u32 != demo {
        return Err(std::io::Error::other(
            "the demo ended before its simulator started",
        ));
    }
    Ok(())
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

/// The web terminal's certificate for `address`: a self-signed pair in the
/// state directory, made on first use and kept, so a browser that accepted
/// it once goes on accepting it.
fn web_certificate(certificate: &Path, key: &Path, address: SocketAddr) -> anyhow::Result<()> {
    if certificate.exists() && key.exists() {
        return Ok(());
    }
    let names = vec![
        address.ip().to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    let pair = rcgen::generate_simple_self_signed(names)
        .context("cannot generate the web terminal's certificate")?;
    std::fs::write(certificate, pair.cert.pem())
        .with_context(|| format!("cannot write {}", certificate.display()))?;
    let mut file = std::fs::OpenOptions::new();
    {
        use std::os::unix::fs::OpenOptionsExt;
        file.mode(0o600);
    }
    file.write(true)
        .create(true)
        .truncate(true)
        .open(key)
        .and_then(|mut f| f.write_all(pair.signing_key.serialize_pem().as_bytes()))
        .with_context(|| format!("cannot write {}", key.display()))?;
    Ok(())
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
    let mut simulator = tokio::process::Command::new(exe);
    let demo = std::process::id();
    // SAFETY: `die_with` makes only async-signal-safe calls.
    unsafe { simulator.pre_exec(move || die_with(demo)) };
    let mut simulator = simulator
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
    // The page's origin must be known before the listener starts: port 0
    // becomes a free port now (as the SSH side's does when it binds).
    let mut web_listen = args.web_listen;
    if web_listen.port() == 0 {
        let probe = std::net::TcpListener::bind(web_listen)
            .with_context(|| format!("cannot listen on {web_listen}"))?;
        web_listen = probe.local_addr()?;
    }
    let web_url = format!("https://{web_listen}");
    let mut kube_listen = args.kube_listen;
    if kube_listen.port() == 0 {
        let probe = std::net::TcpListener::bind(kube_listen)
            .with_context(|| format!("cannot listen on {kube_listen}"))?;
        kube_listen = probe.local_addr()?;
    }
    config.kube_proxy.listen = Some(kube_listen);
    config.kube_proxy.public_url = Some(format!("https://{kube_listen}"));
    config.web.listen = Some(web_listen);
    config.web.public_url = Some(web_url.clone());
    if let (Some(certificate), Some(key)) = (&config.web.certificate, &config.web.key) {
        web_certificate(certificate, key, web_listen)?;
    }
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

    let alice = shared
        .user("alice")
        .context("the built-in demo config has no alice")?;
    let link = shared
        .web_logins
        .mint_link(
            crate::web::links::Grant {
                ends: None,
                person: alice.name.clone(),
                identity: crate::cluster::Identity {
                    user: alice.kubernetes_user().to_string(),
                    groups: alice.kubernetes_groups.clone(),
                },
                credential: None,
            },
            crate::audit::unix_now(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let link_secs = shared.web_logins.link_secs();
    let i = identity
        .as_ref()
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
    let agent_hint = identity
        .as_ref()
        .map(|p| format!(": ssh-add {}", p.display()))
        .unwrap_or_default();
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
         \n  A shell-less pod's file:     scp{cp}{i} alice@default+api-0+app.debug@{host}:/etc/app/config.yaml /tmp/\
         \n  A log as a file:             scp{cp}{i} alice@default+ticker+app.logs@{host}:current /tmp/ticker.log\
         \n  A pod's port on yours:       ssh{p}{i} -N -L 8080:localhost:8080 alice@default/web-0@{host}\
         \n  bob may only use 'default':  ssh{p}{i} bob@kube-system/coredns-0@{host}\
         \n  What can I reach?            ssh{p}{i} alice@{host}\
         \n  The cluster itself:          kubectl --kubeconfig {kubeconfig} get pods -A\
         \n\
         \n  kubectl as alice, through kbastion (its ssh must find your key{agent}):\
         \n    ssh{p}{i} alice@{host} kubeconfig > {state}/alice.kubeconfig\
         \n    kubectl --kubeconfig {state}/alice.kubeconfig get pods -A\
         \n\
         \n  Web terminal:                {web_url} (self-signed certificate: accept it once)\
         \n  Sign in as alice:            {web_url}/login/{link} (works once, for {link_secs} s)\
         \n  A new sign-in link:          ssh{p}{i} alice@{host} web\
         \n\
         \n  Audit log (JSON lines):      {audit}\
         \n  Session recordings:          {recordings}/SESSION.cast\
         \n  Replay the newest one:       asciinema play \"$(ls -t {recordings}/*.cast | head -n 1)\"\
         \n",
        state = state.display(),
        kubeconfig = kubeconfig.display(),
        agent = agent_hint,
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
