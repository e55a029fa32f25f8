//! The target's file system, reached through exec: what kbastion's own
//! SFTP server and legacy-scp emulation stand on when the target has no
//! `sftp-server` or `scp` of its own. For `CONTAINER.logs` it is the
//! container's log as two read-only files instead (`log_files`).
//!
//! Every operation is one exec of a short POSIX `sh` script using only
//! what coreutils and busybox both have (`stat -c`, `tail -c`, `dd`,
//! `touch -d @`). Paths are passed as separate argv words (`sh -c SCRIPT
//! sh PATH…`), never pasted into the script. Bulk data streams through one
//! long-lived exec per open file (`tail -c +N` to read, `cat`/`dd` to
//! write), so a download costs one exec, not one per request.
//!
//! It must not buffer whole files: readers and writers are streams with
//! the bridge's bounded pipe sizes.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::exec::Ended;
use crate::exec::process::{Process, Stdin};
use crate::file_system::{FsError, Metadata, SetAttributes, WriteOpen, normalize};
use crate::log_files::LogFiles;
use crate::pods::ExecTarget;

/// The most a metadata exec may print (a directory listing): a bound on
/// memory for directories with very many entries.
const MAX_LISTING: usize = 32 * 1024 * 1024;

/// The most of a failing command's stderr kept for its message.
const MAX_STDERR: usize = 4 * 1024;

/// `stat` format: raw mode in hex, size, uid, gid, atime, mtime, link
/// count, then the name (last, so it may hold spaces). Both GNU and
/// busybox `stat -c`.
const STAT_FORMAT: &str = "%f %s %u %g %X %Y %h %n";

impl FsError {
    /// Reads a failed command's stderr the way strerror(3) words it
    /// (glibc, musl and busybox alike).
    fn from_stderr(path: &str, stderr: &str, code: u32) -> FsError {
        let line = stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim();
        if stderr.contains("No such file") || stderr.contains("nonexistent") {
            FsError::NotFound(path.to_string())
        } else if stderr.contains("Permission denied") || stderr.contains("Operation not permitted")
        {
            FsError::PermissionDenied(path.to_string())
        } else if code == 127 {
            FsError::Failure(format!(
                "the target lacks a command kbastion needs for file transfer: {line}"
            ))
        } else if line.is_empty() {
            FsError::Failure(format!("{path}: failed with exit status {code}"))
        } else {
            FsError::Failure(line.to_string())
        }
    }
}

/// Parses one line of `stat -c STAT_FORMAT`: the metadata and the name.
pub fn parse_stat_line(line: &str) -> Option<(Metadata, &str)> {
    let mut fields = line.splitn(8, ' ');
    let mut next = || fields.next();
    let mode = u32::from_str_radix(next()?, 16).ok()?;
    let size = next()?.parse().ok()?;
    let uid = next()?.parse().ok()?;
    let gid = next()?.parse().ok()?;
    // Times before 1970 or after 2106 are clamped rather than refused.
    let atime = next()?.parse::<i64>().ok()?.max(0) as u64;
    let mtime = next()?.parse::<i64>().ok()?.max(0) as u64;
    let links = next()?.parse().ok()?;
    let name = next()?;
    Some((
        Metadata {
            mode,
            size,
            uid,
            gid,
            atime,
            mtime,
            links,
        },
        name,
    ))
}

/// A finished metadata command.
struct Output {
    stdout: Vec<u8>,
    stderr: String,
    code: u32,
}

/// The target's file system, for one session.
#[derive(Clone)]
pub struct RemoteFs {
    backend: Backend,
    /// Where the client's paths lead (`ExecTarget::files_root`): absolute
    /// paths go under it, relative ones start at it.
    root: Option<String>,
    api_wait: Duration,
}

/// What the files are.
#[derive(Clone)]
enum Backend {
    /// The target's own, through execs.
    Exec(Arc<ExecTarget>),
    /// A container's log (`CONTAINER.logs`), read-only.
    Log(Arc<LogFiles>),
}

impl RemoteFs {
    pub fn new(target: Arc<ExecTarget>, api_wait: Duration) -> Self {
        RemoteFs {
            root: target.files_root.clone(),
            backend: Backend::Exec(target),
            api_wait,
        }
    }

    /// Whether the files are not the exec container's own (a debug
    /// container's target's, a log): kbastion's own SFTP and scp serve
    /// them, as the container's `sftp-server` or `scp` would serve its own.
    pub fn needs_builtin(&self) -> bool {
        self.root.is_some() || matches!(self.backend, Backend::Log(_))
    }

    /// The client's `path` as the exec reaches it.
    fn at(&self, path: &str) -> String {
        match &self.root {
            None => path.to_string(),
            Some(root) => format!("{root}{}", normalize(path)),
        }
    }

    /// A container's log as files (`log_files`).
    pub fn log(files: LogFiles, api_wait: Duration) -> Self {
        RemoteFs {
            root: None,
            backend: Backend::Log(Arc::new(files)),
            api_wait,
        }
    }

    /// Refuses a change where the files are read-only.
    fn writable(&self, path: &str) -> Result<(), FsError> {
        match &self.backend {
            Backend::Exec(_) => Ok(()),
            Backend::Log(_) => Err(crate::log_files::read_only(path)),
        }
    }

    /// Starts `sh -c SCRIPT sh ARGS…` in the target (after its prefix:
    /// nsenter for node shells).
    async fn spawn(&self, script: &str, args: &[&str], stdin: bool) -> Result<Process, FsError> {
        self.spawn_marked(None, script, args, stdin).await
    }

    /// `spawn`, marking the process as `marker`'s (`exec::
    /// marked_script_argv`) when given.
    async fn spawn_marked(
        &self,
        marker: Option<&str>,
        script: &str,
        args: &[&str],
        stdin: bool,
    ) -> Result<Process, FsError> {
        let Backend::Exec(target) = &self.backend else {
            return Err(FsError::Failure(
                "a container's log runs no commands".into(),
            ));
        };
        let argv = match marker {
            Some(marker) => crate::exec::marked_script_argv(&target.prefix, marker, script, args),
            None => crate::exec::script_argv(&target.prefix, script, args),
        };
        let streams = crate::exec::Streams { stdin, tty: false };
        crate::exec::process::spawn(target, argv, streams, self.api_wait)
            .await
            .map_err(|error| {
                FsError::Failure(format!(
                    "exec into {}/{} failed: {}",
                    target.namespace,
                    target.pod,
                    error.to_string().lines().next().unwrap_or_default()
                ))
            })
    }

    /// Runs a metadata command to its end.
    async fn run(&self, script: &str, args: &[&str]) -> Result<Output, FsError> {
        let mut process = self.spawn(script, args, false).await?;
        let stdout = process.stdout();
        let stderr = process.stderr();
        let status = take_status(&mut process);
        let (stdout, stderr) = tokio::join!(read_bounded(stdout, MAX_LISTING), async {
            let bytes = read_bounded(stderr, MAX_STDERR).await;
            String::from_utf8_lossy(&bytes).into_owned()
        });
        let code = exit_code(status).await?;
        Ok(Output {
            stdout,
            stderr,
            code,
        })
    }

    /// Runs a command that prints nothing on success.
    async fn run_quiet(&self, path: &str, script: &str, args: &[&str]) -> Result<(), FsError> {
        let output = self.run(script, args).await?;
        if output.code == 0 {
            Ok(())
        } else {
            Err(FsError::from_stderr(path, &output.stderr, output.code))
        }
    }

    /// The words of a command line, expanded by the target's shell as sshd
    /// would (globs, quotes, variables): for legacy scp, whose command the
    /// user sends to be run in their own target.
    pub async fn expand_words(&self, words: &str) -> Result<Vec<String>, FsError> {
        if let Backend::Log(_) = &self.backend {
            // No shell: the names as given.
            return Ok(words.split_whitespace().map(str::to_string).collect());
        }
        // Globs would match the exec container's files, not those under
        // the root: there, only quotes and variables are expanded.
        let no_glob = if self.root.is_some() { "set -f\n" } else { "" };
        let script = format!("{no_glob}set -- {words}\n[ $# -eq 0 ] || printf '%s\\0' \"$@\"");
        let output = self.run(&script, &[]).await?;
        if output.code != 0 {
            return Err(FsError::from_stderr(words, &output.stderr, output.code));
        }
        Ok(output
            .stdout
            .split(|b| *b == 0)
            .filter(|w| !w.is_empty())
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect())
    }

    /// Whether the target has an `sftp-server` that `exec::SFTP_SERVER`
    /// finds.
    pub async fn has_sftp_server(&self) -> Result<bool, FsError> {
        if let Backend::Log(_) = &self.backend {
            return Ok(false);
        }
        let script = format!("{{ {}; }} >/dev/null 2>&1", crate::exec::SFTP_SERVER_FOUND);
        Ok(self.run(&script, &[]).await?.code == 0)
    }

    /// `stat` (following symlinks) or `lstat`.
    pub async fn stat(&self, path: &str, follow: bool) -> Result<Metadata, FsError> {
        if let Backend::Log(log) = &self.backend {
            return log.stat(path).await;
        }
        let script = if follow {
            "exec stat -L -c \"$1\" -- \"$2\""
        } else {
            "exec stat -c \"$1\" -- \"$2\""
        };
        let output = self.run(script, &[STAT_FORMAT, &self.at(path)]).await?;
        if output.code != 0 {
            return Err(FsError::from_stderr(path, &output.stderr, output.code));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines()
            .next()
            .and_then(parse_stat_line)
            .map(|(metadata, _)| metadata)
            .ok_or_else(|| FsError::Failure(format!("{path}: unexpected stat output")))
    }

    /// The entries of a directory (with `.` and `..`), lstat'ed. Names
    /// holding a newline cannot be told apart in `stat` output and are
    /// left out.
    pub async fn list(&self, dir: &str) -> Result<Vec<(String, Metadata)>, FsError> {
        if let Backend::Log(log) = &self.backend {
            return log.list(dir).await;
        }
        // Globs that match nothing stay literal and fail `stat` quietly.
        let script =
            "cd -- \"$2\" || exit 1; stat -c \"$1\" -- . .. * .[!.]* ..?* 2>/dev/null; exit 0";
        let output = self.run(script, &[STAT_FORMAT, &self.at(dir)]).await?;
        if output.code != 0 {
            return Err(FsError::from_stderr(dir, &output.stderr, output.code));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(text
            .lines()
            .filter_map(parse_stat_line)
            .map(|(metadata, name)| (name.to_string(), metadata))
            .collect())
    }

    /// The absolute, symlink-free form of `path`; its last part need not
    /// exist (as OpenSSH's sftp-server allows, for uploads).
    pub async fn realpath(&self, path: &str) -> Result<String, FsError> {
        // A log, or files under a root whose physical paths mean nothing
        // to the client: resolved by the path alone.
        if self.root.is_some() || matches!(self.backend, Backend::Log(_)) {
            return Ok(normalize(path));
        }
        let path = if path.is_empty() { "." } else { path };
        let script = "if [ -d \"$1\" ]; then cd -- \"$1\" && pwd -P; \
             else d=$(dirname -- \"$1\"); b=$(basename -- \"$1\"); cd -- \"$d\" || exit 1; \
             p=$(pwd -P); [ \"$p\" = / ] && p=''; printf '%s/%s\\n' \"$p\" \"$b\"; fi";
        let output = self.run(script, &[path]).await?;
        if output.code != 0 {
            return Err(FsError::from_stderr(path, &output.stderr, output.code));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(text.strip_suffix('\n').unwrap_or(&text).to_string())
    }

    pub async fn mkdir(&self, path: &str, mode: Option<u32>) -> Result<(), FsError> {
        self.writable(path)?;
        let mode = mode
            .map(|m| format!("{:o}", m & 0o7777))
            .unwrap_or_default();
        self.run_quiet(
            path,
            "mkdir -- \"$1\" || exit 1; [ -z \"$2\" ] || chmod \"$2\" -- \"$1\"",
            &[&self.at(path), &mode],
        )
        .await
    }

    pub async fn rmdir(&self, path: &str) -> Result<(), FsError> {
        self.writable(path)?;
        self.run_quiet(path, "exec rmdir -- \"$1\"", &[&self.at(path)])
            .await
    }

    /// Removes a file (not a directory: `rm` without `-r` refuses those).
    pub async fn remove(&self, path: &str) -> Result<(), FsError> {
        self.writable(path)?;
        self.run_quiet(path, "exec rm -- \"$1\"", &[&self.at(path)])
            .await
    }

    /// Renames; like OpenSSH's sftp-server, refuses to replace a file.
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), FsError> {
        self.writable(from)?;
        let script = "if [ -e \"$2\" ] || [ -L \"$2\" ]; then echo \"$2: File exists\" >&2; exit 1; fi; exec mv -- \"$1\" \"$2\"";
        self.run_quiet(from, script, &[&self.at(from), &self.at(to)])
            .await
    }

    /// Renames `from` to `to`, replacing a file there (rename(2), as
    /// `posix-rename@openssh.com` asks); a directory there is not
    /// replaced.
    pub async fn replace(&self, from: &str, to: &str) -> Result<(), FsError> {
        self.writable(from)?;
        self.writable(to)?;
        let script = "if [ -d \"$2\" ] && [ ! -L \"$2\" ]; then echo \"$2: Is a directory\" >&2; exit 1; fi; exec mv -f -- \"$1\" \"$2\"";
        self.run_quiet(from, script, &[&self.at(from), &self.at(to)])
            .await
    }

    /// Makes `link` a hard link to `target`.
    pub async fn hardlink(&self, target: &str, link: &str) -> Result<(), FsError> {
        self.writable(link)?;
        self.run_quiet(
            link,
            "exec ln -- \"$1\" \"$2\"",
            &[&self.at(target), &self.at(link)],
        )
        .await
    }

    /// The file system's figures for `path`, as statvfs(3) gives them:
    /// block size, fragment size, blocks, free, available, inodes, free,
    /// available, id, flags, longest name.
    pub async fn statvfs(&self, path: &str) -> Result<[u64; 11], FsError> {
        if let Backend::Log(_) = &self.backend {
            return Err(crate::log_files::read_only(path));
        }
        let output = self
            .run(
                "exec stat -f -c '%s %S %b %f %a %c %d %d %i %l' -- \"$1\"",
                &[&self.at(path)],
            )
            .await?;
        if output.code != 0 {
            return Err(FsError::from_stderr(path, &output.stderr, output.code));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let mut fields = text.split_whitespace();
        let mut numbers = [0u64; 11];
        for (n, slot) in numbers.iter_mut().enumerate() {
            let field = fields.next().unwrap_or("0");
            // The id is hexadecimal (`%i`), the rest decimal.
            *slot = if n == 8 {
                u64::from_str_radix(field, 16).unwrap_or(0)
            } else {
                field.parse().unwrap_or(0)
            };
        }
        // f_flag stays 0 (read-write, setuid allowed): stat cannot say;
        // numbers[9] is the last field printed, the name length, moved.
        numbers[10] = numbers[9];
        numbers[9] = 0;
        Ok(numbers)
    }

    /// Creates `link` pointing at `target`.
    pub async fn symlink(&self, target: &str, link: &str) -> Result<(), FsError> {
        self.writable(link)?;
        // The link's text is kept as given: it is read in the target.
        self.run_quiet(
            link,
            "exec ln -s -- \"$1\" \"$2\"",
            &[target, &self.at(link)],
        )
        .await
    }

    pub async fn readlink(&self, path: &str) -> Result<String, FsError> {
        if let Backend::Log(_) = &self.backend {
            return Err(FsError::Failure(format!("{path}: not a symbolic link")));
        }
        let output = self
            .run("exec readlink -- \"$1\"", &[&self.at(path)])
            .await?;
        if output.code != 0 {
            return Err(FsError::from_stderr(path, &output.stderr, output.code));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(text.strip_suffix('\n').unwrap_or(&text).to_string())
    }

    pub async fn set_attributes(
        &self,
        path: &str,
        attributes: SetAttributes,
    ) -> Result<(), FsError> {
        self.writable(path)?;
        let words = [
            attributes
                .permissions
                .map(|p| format!("{:o}", p & 0o7777))
                .unwrap_or_default(),
            attributes
                .owner
                .map(|(uid, gid)| format!("{uid}:{gid}"))
                .unwrap_or_default(),
            attributes.atime.map(|t| t.to_string()).unwrap_or_default(),
            attributes.mtime.map(|t| t.to_string()).unwrap_or_default(),
            attributes.size.map(|s| s.to_string()).unwrap_or_default(),
        ];
        let script = "p=$1; [ -e \"$p\" ] || [ -L \"$p\" ] || { echo \"$p: No such file or directory\" >&2; exit 1; }; \
             [ -z \"$2\" ] || chmod \"$2\" -- \"$p\" || exit 1; \
             [ -z \"$3\" ] || chown \"$3\" -- \"$p\" || exit 1; \
             [ -z \"$4\" ] || touch -c -a -d \"@$4\" -- \"$p\" || exit 1; \
             [ -z \"$5\" ] || touch -c -m -d \"@$5\" -- \"$p\" || exit 1; \
             [ -z \"$6\" ] || truncate -s \"$6\" -- \"$p\" || exit 1";
        let at = self.at(path);
        let mut args = vec![at.as_str()];
        args.extend(words.iter().map(String::as_str));
        self.run_quiet(path, script, &args).await
    }

    /// Checks that `path` can be read as a file.
    pub async fn check_readable(&self, path: &str) -> Result<Metadata, FsError> {
        let metadata = self.stat(path, true).await?;
        if metadata.is_dir() {
            return Err(FsError::Failure(format!("{path}: Is a directory")));
        }
        if let Backend::Log(_) = &self.backend {
            return Ok(metadata);
        }
        let script = "[ -r \"$1\" ] || { echo \"$1: Permission denied\" >&2; exit 1; }";
        self.run_quiet(path, script, &[&self.at(path)]).await?;
        Ok(metadata)
    }

    /// Creates, truncates or checks `path` for writing, as `open` asks.
    pub async fn prepare_write(&self, path: &str, open: WriteOpen) -> Result<(), FsError> {
        self.writable(path)?;
        let flag = |b: bool| if b { "1" } else { "" };
        let mode = open
            .mode
            .map(|m| format!("{:o}", m & 0o7777))
            .unwrap_or_default();
        let script = "p=$1; \
             if [ -e \"$p\" ]; then \
               [ -z \"$2\" ] || { echo \"$p: File exists\" >&2; exit 1; }; \
               [ ! -d \"$p\" ] || { echo \"$p: Is a directory\" >&2; exit 1; }; \
               [ -w \"$p\" ] || { echo \"$p: Permission denied\" >&2; exit 1; }; \
               [ -z \"$3\" ] || : > \"$p\" || exit 1; \
             else \
               [ -n \"$4\" ] || { echo \"$p: No such file or directory\" >&2; exit 1; }; \
               : > \"$p\" || exit 1; \
               [ -z \"$5\" ] || chmod \"$5\" -- \"$p\"; \
             fi";
        self.run_quiet(
            path,
            script,
            &[
                &self.at(path),
                flag(open.exclusive),
                flag(open.truncate),
                flag(open.create),
                &mode,
            ],
        )
        .await
    }

    /// What ends a streaming command left running (`Ender`).
    fn ender(&self, marker: String) -> Option<Ender> {
        match &self.backend {
            Backend::Exec(target) => Some(Ender {
                target: target.clone(),
                marker,
                api_wait: self.api_wait,
            }),
            Backend::Log(_) => None,
        }
    }

    /// Streams the file from `offset` to its current end.
    pub async fn reader(&self, path: &str, offset: u64) -> Result<FileReader, FsError> {
        if let Backend::Log(log) = &self.backend {
            return Ok(FileReader {
                stdout: log.reader(path, offset).await?,
                path: path.to_string(),
                streaming: None,
            });
        }
        let start = (offset + 1).to_string();
        let marker = streaming_marker();
        let mut process = self
            .spawn_marked(
                Some(&marker),
                "exec tail -c \"+$1\" -- \"$2\"",
                &[&start, &self.at(path)],
                false,
            )
            .await?;
        let stdout = process.stdout().ok_or_else(|| no_pipe("stdout"))?;
        Ok(FileReader {
            stdout: Box::new(stdout),
            path: path.to_string(),
            streaming: Some(Streaming::new(path, process, self.ender(marker))),
        })
    }

    /// Streams writes into the file from `offset` (or at its end when
    /// `append`), keeping what lies beyond.
    pub async fn writer(
        &self,
        path: &str,
        offset: u64,
        append: bool,
    ) -> Result<FileWriter, FsError> {
        self.writable(path)?;
        /// dd seeks in whole blocks: 64 KiB blocks where the offset allows
        /// (always true at 0), single bytes otherwise (a resumed upload).
        const BLOCK: u64 = 64 * 1024;
        let (script, words) = if append {
            ("exec cat >> \"$1\"", Vec::new())
        } else if offset.is_multiple_of(BLOCK) {
            (
                "exec dd of=\"$1\" bs=\"$2\" seek=\"$3\" conv=notrunc 2>/dev/null",
                vec![BLOCK.to_string(), (offset / BLOCK).to_string()],
            )
        } else {
            (
                "exec dd of=\"$1\" bs=1 seek=\"$2\" conv=notrunc 2>/dev/null",
                vec![offset.to_string()],
            )
        };
        let at = self.at(path);
        let mut args = vec![at.as_str()];
        args.extend(words.iter().map(String::as_str));
        let marker = streaming_marker();
        let mut process = self
            .spawn_marked(Some(&marker), script, &args, true)
            .await?;
        let stdin = process.stdin().ok_or_else(|| no_pipe("stdin"))?;
        // Nothing is printed on stdout, but the pipe must be drained.
        if let Some(mut stdout) = process.stdout() {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await;
            });
        }
        Ok(FileWriter {
            stdin: Some(stdin),
            streaming: Streaming::new(path, process, self.ender(marker)),
        })
    }
}

fn no_pipe(name: &str) -> FsError {
    FsError::Failure(format!("the exec stream gave no {name}"))
}

/// An exec's final `Status`, once it arrives.
type StatusFuture = Option<
    futures::future::BoxFuture<
        'static,
        Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
    >,
>;

fn take_status(process: &mut Process) -> StatusFuture {
    process
        .take_status()
        .map(|status| -> futures::future::BoxFuture<'static, _> { Box::pin(status) })
}

/// The exit code of a finished exec.
async fn exit_code(status: StatusFuture) -> Result<u32, FsError> {
    match crate::exec::ended(status).await {
        Ended::Exited(code) => Ok(code),
        Ended::Failed(message) => Err(FsError::Failure(message)),
        Ended::Lost => Err(FsError::Failure(crate::exec::LOST.into())),
    }
}

/// Reads a pipe to its end, keeping at most `limit` bytes (the rest is
/// read and dropped so the process is never stalled).
async fn read_bounded(reader: Option<impl AsyncRead + Unpin>, limit: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut reader) = reader else {
        return kept;
    };
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buffer[..room]);
            }
        }
    }
    kept
}

/// Collects a streaming exec's stderr in a task: kube-rs writes stdout
/// and stderr from one loop, so an unread stderr stalls stdout too.
fn collect_stderr(process: &mut Process) -> tokio::task::JoinHandle<String> {
    let stderr = process.stderr();
    tokio::spawn(async move {
        String::from_utf8_lossy(&read_bounded(stderr, MAX_STDERR).await).into_owned()
    })
}

/// A streaming exec's end: its stderr, kept for the message, its status,
/// and the process, ended when this is dropped.
struct Streaming {
    path: String,
    stderr: tokio::task::JoinHandle<String>,
    status: StatusFuture,
    process: Process,
    /// Until the command is seen to end: what ends it if it is dropped
    /// first (a handle closed early, a session ended).
    ender: Option<Ender>,
}

/// Ends a streaming command that its handle left running: the kubelet
/// keeps an exec's process when its stream is dropped (a `tail` of
/// `/dev/zero` would run forever), so a clean-up exec ends what carries
/// its marker.
struct Ender {
    target: Arc<ExecTarget>,
    marker: String,
    api_wait: Duration,
}

/// A marker of one streaming command (the session marker's format).
fn streaming_marker() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Streaming {
    fn new(path: &str, mut process: Process, ender: Option<Ender>) -> Self {
        Streaming {
            path: path.to_string(),
            stderr: collect_stderr(&mut process),
            status: take_status(&mut process),
            process,
            ender,
        }
    }

    /// Whether the command succeeded, with its error if not.
    async fn outcome(&mut self) -> Result<(), FsError> {
        let code = exit_code(self.status.take()).await;
        // Its status came (or the stream is gone): nothing to end.
        self.ender = None;
        let code = code?;
        let stderr = (&mut self.stderr).await.unwrap_or_default();
        if code == 0 {
            Ok(())
        } else {
            Err(FsError::from_stderr(&self.path, &stderr, code))
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.stderr.abort();
        self.process.abort();
        if let (Some(ender), Ok(runtime)) =
            (self.ender.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                crate::exec::end_session_processes(&ender.target, &ender.marker, ender.api_wait)
                    .await;
            });
        }
    }
}

/// One file being read from some offset.
pub struct FileReader {
    stdout: Box<dyn AsyncRead + Send + Unpin>,
    path: String,
    /// The exec that streams it (none for a log).
    streaming: Option<Streaming>,
}

impl FileReader {
    /// Fills `buffer` as far as the file goes; fewer bytes mean its end.
    pub async fn read_full(&mut self, buffer: &mut [u8]) -> Result<usize, FsError> {
        let mut filled = 0;
        while filled < buffer.len() {
            match self.stdout.read(&mut buffer[filled..]).await {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => {
                    return Err(FsError::Failure(format!("{}: {e}", self.path)));
                }
            }
        }
        Ok(filled)
    }

    /// After the end: whether the read succeeded (`tail` may have failed
    /// to open the file).
    pub async fn finish(self) -> Result<(), FsError> {
        match self.streaming {
            Some(mut streaming) => streaming.outcome().await,
            None => Ok(()),
        }
    }
}

/// One file being written from some offset.
pub struct FileWriter {
    stdin: Option<Stdin>,
    streaming: Streaming,
}

impl FileWriter {
    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), FsError> {
        let path = &self.streaming.path;
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(FsError::Failure(format!("{path}: already closed")));
        };
        stdin
            .write_all(data)
            .await
            .map_err(|_| FsError::Failure(format!("{path}: the writer in the target ended")))
    }

    /// Ends the input and waits for the data to be written.
    pub async fn finish(mut self) -> Result<(), FsError> {
        if let Some(stdin) = self.stdin.take() {
            stdin.shutdown();
        }
        self.streaming.outcome().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_without_the_files() {
        assert_eq!(normalize(""), "/");
        assert_eq!(normalize("."), "/");
        assert_eq!(normalize("./current"), "/current");
        assert_eq!(normalize("/a/../previous/"), "/previous");
        assert_eq!(normalize("../.."), "/");
        assert_eq!(normalize("etc//app/./x.yaml"), "/etc/app/x.yaml");
    }

    #[test]
    fn stat_lines_parse_with_spaces_in_names() {
        let (metadata, name) =
            parse_stat_line("81a4 12 0 0 1700000000 1700000001 1 a b c").unwrap();
        assert_eq!(name, "a b c");
        assert!(metadata.is_regular());
        assert_eq!(metadata.permissions(), 0o644);
        assert_eq!((metadata.size, metadata.mtime), (12, 1700000001));
        let (directory, _) = parse_stat_line("41ed 4096 0 0 1 2 3 .").unwrap();
        assert!(directory.is_dir());
        assert!(parse_stat_line("zz 1 2 3 4 5 6 x").is_none());
        assert!(parse_stat_line("81a4 12 0 0").is_none());
    }

    #[test]
    fn errors_follow_strerror() {
        assert_eq!(
            FsError::from_stderr(
                "/x",
                "stat: cannot statx '/x': No such file or directory",
                1
            ),
            FsError::NotFound("/x".into())
        );
        assert_eq!(
            FsError::from_stderr("/x", "sh: 1: cannot create /x: Permission denied", 2),
            FsError::PermissionDenied("/x".into())
        );
        assert_eq!(
            FsError::from_stderr(
                "/x",
                "rmdir: failed to remove '/x': Directory not empty\n",
                1
            ),
            FsError::Failure("rmdir: failed to remove '/x': Directory not empty".into())
        );
    }
}
