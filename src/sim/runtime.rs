//! The simulator's container runtime: every exec is a local process.
//!
//! A container is a working directory under the state dir plus an
//! environment; its processes run on this machine as the simulator's user.
//! A `hostPID` privileged pod running `nsenter ... -- CMD` runs CMD as the
//! node's host shell instead (working directory per node, `HOSTNAME` = node),
//! so node shells work without root.
//!
//! Like a kubelet with containerd, the runtime does NOT end a process when
//! its client goes away (containerd/containerd#8856): output keeps being
//! read and discarded until the process exits by itself. Deleting the pod
//! kills every process group it started.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncWrite};

pub type Reader = Pin<Box<dyn AsyncRead + Send>>;
pub type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// What to run and how it is attached.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// The programs the container's image has (`None`: all of this
    /// machine's), checked before anything starts as containerd resolves
    /// the command in the container's file system.
    pub executables: Option<Vec<String>>,
    /// How far the process is kept apart from this machine.
    pub isolation: Isolation,
    /// The host name it sees (`hostname`, uname(2)): the pod's, as the
    /// kubelet gives each pod a UTS namespace of its own (`spec.hostname`,
    /// else its name), or the node's for what runs on the node. Needs
    /// root, as isolation does; without it the machine's name shows.
    pub hostname: Option<String>,
}

/// How far a process is kept apart from this machine. Containers of
/// images the scenario does not describe run as this machine's processes
/// (every program is in them). A container of an image the scenario
/// describes (`[[images]]`: distroless, scratch) gets its own root file
/// system and PID namespace, as a real one has, so that an ephemeral
/// container targeting it finds its files under `/proc/1/root`. Both need
/// root; without it the simulator says so once and runs the container as
/// this machine's process.
#[derive(Debug, Clone, Default)]
pub enum Isolation {
    #[default]
    None,
    /// The container's main process: its root file system is `cwd`, which
    /// gets the image's programs (with their libraries) and files, and it
    /// is PID 1 of a PID namespace of its own.
    Own { files: BTreeMap<String, String> },
    /// A process of an ephemeral container that targets an isolated
    /// container whose namespaces `pid` (on this machine) holds: it joins
    /// that PID namespace and its mount namespace (whose `/proc` is that
    /// namespace's), as containerd shares the target's PID namespace; its
    /// own root file system stays this machine's.
    Join { pid: i32 },
    /// A process exec'd into an isolated container itself: it joins the
    /// container's PID and mount namespaces and its root file system, as
    /// `kubectl exec` into a distroless container sees only its files.
    Enter { pid: i32 },
}

/// Whether the simulator may isolate containers (it runs as root).
fn can_isolate() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| {
        let root = nix::unistd::geteuid().is_root();
        if !root {
            tracing::warn!("not root: containers of described images run unisolated (no own root file system or PID namespace)");
        }
        root
    })
}

/// Fills an isolated container's root file system: the image's programs,
/// copied from this machine with the shared libraries `ldd` names, and the
/// image's files.
fn populate_root(
    root: &Path,
    executables: &[String],
    files: &BTreeMap<String, String>,
) -> std::io::Result<()> {
    let copy = |from: &Path, inside: &str| -> std::io::Result<()> {
        let to = root.join(inside.trim_start_matches('/'));
        if to.exists() {
            return Ok(());
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from, &to).map(|_| ())
    };
    for program in executables {
        let name = program.rsplit('/').next().unwrap_or(program);
        let host = which_host(name).ok_or_else(|| {
            std::io::Error::other(format!(
                "{name}: not on this machine, cannot be in an image"
            ))
        })?;
        copy(&host, program)?;
        let ldd = std::process::Command::new("ldd").arg(&host).output()?;
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x…)".
            let path = line
                .split("=>")
                .last()
                .and_then(|rest| rest.split_whitespace().next())
                .filter(|p| p.starts_with('/'));
            if let Some(path) = path {
                copy(Path::new(path), path)?;
            }
        }
    }
    for (path, content) in files {
        let to = root.join(path.trim_start_matches('/'));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(to, content)?;
    }
    Ok(())
}

/// `program` as found in this machine's `$PATH`.
fn which_host(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The namespaces a `Join` process enters, opened before the fork (the
/// child may only make async-signal-safe calls).
struct Namespaces {
    mount: std::fs::File,
    pid: std::fs::File,
    cwd: std::ffi::CString,
}

impl Namespaces {
    fn open(pid: i32, cwd: &Path) -> std::io::Result<Namespaces> {
        use std::os::unix::ffi::OsStrExt;
        Ok(Namespaces {
            mount: std::fs::File::open(format!("/proc/{pid}/ns/mnt"))?,
            pid: std::fs::File::open(format!("/proc/{pid}/ns/pid_for_children"))?,
            cwd: std::ffi::CString::new(cwd.as_os_str().as_bytes())
                .map_err(std::io::Error::other)?,
        })
    }

    /// In the child: enters the mount namespace (which moves the root and
    /// the working directory to its root: the working directory is set
    /// again) and the PID namespace, for the children it starts.
    fn enter(&self) -> std::io::Result<()> {
        use nix::libc;
        use std::os::fd::AsRawFd;
        // SAFETY: setns(2) and chdir(2) are async-signal-safe; the fds and
        // the path outlive the call.
        unsafe {
            if libc::setns(self.mount.as_raw_fd(), libc::CLONE_NEWNS) != 0
                || libc::setns(self.pid.as_raw_fd(), libc::CLONE_NEWPID) != 0
                || libc::chdir(self.cwd.as_ptr()) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// In the child: a UTS namespace of its own, named `name`.
fn own_hostname(name: &std::ffi::CStr) -> std::io::Result<()> {
    use nix::libc;
    // SAFETY: unshare(2) and sethostname(2) are async-signal-safe; the
    // name outlives the call.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUTS) != 0
            || libc::sethostname(name.as_ptr(), name.to_bytes().len()) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Resolves `program` among an image's programs as runc does: a name with
/// a slash is a path that must exist, a bare name is looked up in `$PATH`.
/// The errors are containerd's wording after `exec: "PROGRAM": `.
fn resolve_in_image(program: &str, executables: &[String]) -> std::io::Result<()> {
    let found = if program.contains('/') {
        executables.iter().any(|e| e == program)
    } else {
        executables
            .iter()
            .any(|e| e.rsplit('/').next() == Some(program))
    };
    match (found, program.contains('/')) {
        (true, _) => Ok(()),
        (false, false) => Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "executable file not found in $PATH",
        )),
        (false, true) => Err(std::io::Error::other(format!(
            "stat {program}: no such file or directory"
        ))),
    }
}

/// A started process and its streams (absent where not requested; with a
/// tty, stdout carries both output streams and there is no stderr).
pub struct Process {
    pub stdin: Option<Writer>,
    pub stdout: Option<Reader>,
    pub stderr: Option<Reader>,
    pub terminal: Option<Terminal>,
    pub child: tokio::process::Child,
    pub pid: i32,
    /// For an isolated main process: the process on this machine whose
    /// namespaces are the container's (`Isolation::Join` takes it).
    pub namespaces: Option<i32>,
}

/// Resizes the process's terminal through its own handle on the pty
/// master, so resizing and writing stdin can live in different tasks.
#[derive(Clone)]
pub struct Terminal(Arc<std::os::fd::OwnedFd>);

nix::ioctl_write_ptr_bad!(set_window_size, nix::libc::TIOCSWINSZ, nix::libc::winsize);

impl Terminal {
    pub fn resize(&self, width: u16, height: u16) {
        use std::os::fd::AsRawFd;
        let size = nix::libc::winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: the fd is a pty master we own and `size` outlives the call.
        // A resize after the process exited fails harmlessly.
        let _ = unsafe { set_window_size(self.0.as_raw_fd(), &size) };
    }
}

/// Reading the pty master after the last slave fd closed gives EIO on
/// Linux: that is the terminal's end of file.
struct PtyReader(pty_process::OwnedReadPty);

impl AsyncRead for PtyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(e)) if e.raw_os_error() == Some(nix::libc::EIO) => {
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// Which pod a process belongs to, so deleting the pod can end it.
type PodKey = (String, String);

/// A container of a pod: namespace, pod, container.
type ContainerKey = (String, String, String);

#[derive(Default)]
pub struct Runtime {
    processes: Mutex<HashMap<PodKey, Vec<i32>>>,
    /// The containers' running main processes, for attach.
    mains: Mutex<HashMap<ContainerKey, Arc<super::container::MainProcess>>>,
    state_dir: PathBuf,
}

impl Runtime {
    pub fn new(state_dir: &Path) -> Self {
        Runtime {
            processes: Mutex::default(),
            mains: Mutex::default(),
            state_dir: state_dir.to_path_buf(),
        }
    }

    /// Where container logs are kept (the kubelet's `/var/log/pods`).
    pub fn log_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    fn mains(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ContainerKey, Arc<super::container::MainProcess>>> {
        self.mains.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register_main(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        main: Arc<super::container::MainProcess>,
    ) {
        self.mains()
            .insert((namespace.into(), pod.into(), container.into()), main);
    }

    pub fn unregister_main(&self, namespace: &str, pod: &str, container: &str) {
        self.mains()
            .remove(&(namespace.into(), pod.into(), container.into()));
    }

    /// A container's running main process, if it has one.
    pub fn main_process(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Option<Arc<super::container::MainProcess>> {
        self.mains()
            .get(&(namespace.into(), pod.into(), container.into()))
            .cloned()
    }

    pub fn container_dir(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.state_dir
            .join("pods")
            .join(namespace)
            .join(pod)
            .join(container)
    }

    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.state_dir.join("nodes").join(node)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<PodKey, Vec<i32>>> {
        self.processes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a process for a pod. Every process leads its own process group
    /// (its own session with a tty), which is what pod deletion kills.
    pub fn spawn(
        self: &Arc<Self>,
        namespace: &str,
        pod: &str,
        spec: &ProcessSpec,
    ) -> std::io::Result<Process> {
        let program = spec.argv.first().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command")
        })?;
        if let Some(executables) = &spec.executables {
            resolve_in_image(program, executables)?;
        }
        // The image's program runs as this machine's program of that name.
        let program = &program.rsplit('/').next().unwrap_or(program).to_string();
        let program = if spec.executables.is_some() {
            program
        } else {
            spec.argv.first().expect("checked above")
        };
        std::fs::create_dir_all(&spec.cwd)?;
        let isolation = match &spec.isolation {
            Isolation::None => Isolation::None,
            _ if !can_isolate() => Isolation::None,
            other => other.clone(),
        };
        // An isolated main process: `unshare` makes the PID and mount
        // namespaces (its child is PID 1, with that namespace's /proc),
        // then `chroot` enters the root file system, where the image's
        // program is.
        let wrapped: Vec<String>;
        let wrapped_in_namespaces = matches!(
            (&isolation, &spec.executables),
            (Isolation::Own { .. }, Some(_))
        );
        let (program, args) = match (&isolation, &spec.executables) {
            (Isolation::Own { files }, Some(executables)) => {
                populate_root(&spec.cwd, executables, files)?;
                let inside = executables
                    .iter()
                    .find(|e| *e == &spec.argv[0] || e.rsplit('/').next() == Some(program))
                    .cloned()
                    .unwrap_or_else(|| spec.argv[0].clone());
                wrapped = ["--pid", "--fork", "--mount-proc", "--kill-child", "chroot"]
                    .into_iter()
                    .map(str::to_string)
                    .chain([spec.cwd.display().to_string(), inside])
                    .chain(spec.argv[1..].iter().cloned())
                    .collect();
                ("unshare", &wrapped[..])
            }
            // `nsenter` forks once inside, so the command itself is in the
            // container's PID namespace (setns moves only children), with
            // the container's root as its own.
            (Isolation::Enter { pid }, _) => {
                wrapped = [
                    "-t".to_string(),
                    pid.to_string(),
                    "-m".into(),
                    // The holder (`unshare`) is outside the namespace it
                    // made; its children are in it.
                    format!("--pid=/proc/{pid}/ns/pid_for_children"),
                    format!("--root={}", spec.cwd.display()),
                    "--wd=/".into(),
                    "--".into(),
                    program.clone(),
                ]
                .into_iter()
                .chain(spec.argv[1..].iter().cloned())
                .collect();
                ("nsenter", &wrapped[..])
            }
            _ => (program.as_str(), &spec.argv[1..]),
        };
        let namespaces = match isolation {
            Isolation::Join { pid } => Some(Arc::new(Namespaces::open(pid, &spec.cwd)?)),
            _ => None,
        };
        let hostname = match &spec.hostname {
            Some(name) if can_isolate() => {
                Some(std::ffi::CString::new(name.as_str()).map_err(std::io::Error::other)?)
            }
            _ => None,
        };
        let prepare = move || {
            default_signals()?;
            if let Some(name) = &hostname {
                own_hostname(name)?;
            }
            match &namespaces {
                Some(namespaces) => namespaces.enter(),
                None => Ok(()),
            }
        };
        let mut process = if spec.tty {
            let (pty, pts) = pty_process::open().map_err(std::io::Error::other)?;
            pty.resize(pty_process::Size::new(24, 80))
                .map_err(std::io::Error::other)?;
            let command = pty_process::Command::new(program)
                .args(args)
                .env_clear()
                .envs(spec.env.iter().map(|(k, v)| (k, v)))
                .current_dir(&spec.cwd);
            // SAFETY: `prepare` makes only async-signal-safe calls.
            let command = unsafe { command.pre_exec(prepare) };
            let child = command.spawn(pts).map_err(std::io::Error::other)?;
            let terminal = {
                use std::os::fd::AsFd;
                Terminal(Arc::new(pty.as_fd().try_clone_to_owned()?))
            };
            let (read, write) = pty.into_split();
            Process {
                pid: child.id().map_or(0, |p| p as i32),
                stdin: Some(Box::pin(write)),
                stdout: Some(Box::pin(PtyReader(read))),
                stderr: None,
                terminal: Some(terminal),
                child,
                namespaces: None,
            }
        } else {
            let pipe_or_null = |wanted: bool| {
                if wanted {
                    Stdio::piped()
                } else {
                    Stdio::null()
                }
            };
            let mut command = tokio::process::Command::new(program);
            command
                .args(args)
                .env_clear()
                .envs(spec.env.iter().map(|(k, v)| (k, v)))
                .current_dir(&spec.cwd)
                .stdin(pipe_or_null(spec.stdin))
                .stdout(pipe_or_null(spec.stdout))
                .stderr(pipe_or_null(spec.stderr))
                .process_group(0);
            // SAFETY: `prepare` makes only async-signal-safe calls.
            unsafe { command.pre_exec(prepare) };
            let mut child = command.spawn()?;
            Process {
                pid: child.id().map_or(0, |p| p as i32),
                stdin: child.stdin.take().map(|s| Box::pin(s) as Writer),
                stdout: child.stdout.take().map(|s| Box::pin(s) as Reader),
                stderr: child.stderr.take().map(|s| Box::pin(s) as Reader),
                terminal: None,
                child,
                namespaces: None,
            }
        };
        if wrapped_in_namespaces {
            process.namespaces = Some(process.pid);
        }
        if !spec.stdin {
            process.stdin = None;
        }
        self.table()
            .entry((namespace.to_string(), pod.to_string()))
            .or_default()
            .push(process.pid);
        Ok(process)
    }

    /// Forgets a process that has exited.
    pub fn exited(&self, namespace: &str, pod: &str, pid: i32) {
        let mut table = self.table();
        let key = (namespace.to_string(), pod.to_string());
        if let Some(pids) = table.get_mut(&key) {
            pids.retain(|p| *p != pid);
            if pids.is_empty() {
                table.remove(&key);
            }
        }
    }

    /// Ends a pod's processes as a kubelet stops its containers: SIGTERM to
    /// every process group it started, then SIGKILL to what is left when
    /// `grace` is over.
    pub async fn terminate_pod(&self, namespace: &str, pod: &str, grace: std::time::Duration) {
        let key = (namespace.to_string(), pod.to_string());
        let pids = self.table().get(&key).cloned().unwrap_or_default();
        for pid in pids {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + grace;
        // Exited processes leave the table when their exec has finished.
        while tokio::time::Instant::now() < deadline && self.table().contains_key(&key) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.kill_pod(namespace, pod);
    }

    /// Kills every process group a pod started (pod deletion).
    pub fn kill_pod(&self, namespace: &str, pod: &str) {
        self.mains()
            .retain(|(ns, p, _), _| !(ns == namespace && p == pod));
        let pids = self
            .table()
            .remove(&(namespace.to_string(), pod.to_string()))
            .unwrap_or_default();
        for pid in pids {
            // Gone already is fine.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Runs in the child between fork and exec: every signal back to its
/// default disposition and none blocked, as runc starts a container's
/// processes. Without it a process would inherit what the simulator
/// inherited: started in the background by a non-interactive shell, it has
/// SIGINT and SIGQUIT ignored, and Ctrl-C would not stop `sleep` in a
/// container. (Caught signals reset themselves at exec; ignored ones and
/// the mask do not.)
///
/// It also asks for SIGKILL when the simulator goes (`PR_SET_PDEATHSIG`):
/// a node's containers do not outlive the node, and a stopped simulator
/// must not leave its containers' `sleep`s and loops behind on this
/// machine.
fn default_signals() -> std::io::Result<()> {
    use nix::libc;
    // SAFETY: prctl(2) with PR_SET_PDEATHSIG is async-signal-safe.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Linux numbers signals 1..=64; SIGKILL and SIGSTOP cannot be changed,
    // and glibc reserves 32 and 33 (EINVAL, harmless).
    for signal in 1..=64 {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            // SAFETY: signal(2) is async-signal-safe.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
    }
    // SAFETY: an empty set on the stack; sigprocmask(2) is
    // async-signal-safe.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The exit code Kubernetes reports for a finished process: its code, or
/// 128 + signal when a signal ended it (as containerd reports it).
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}
