//! Legacy scp (`scp -O`), spoken by kbastion itself so that it works in
//! targets without an `scp` binary: the remote end of the rcp protocol
//! (`scp -f` sends files, `scp -t` receives them), with the files read and
//! written through exec (`remote_fs`).
//!
//! The protocol, as OpenSSH's scp.c speaks it: the receiving side sends a
//! NUL to start and after every record; records are `C<mode> <size>
//! <name>\n` followed by the data and a NUL, `D<mode> 0 <name>\n` … `E\n`
//! for directories, `T<mtime> 0 <atime> 0\n` before a record when times
//! are kept (`-p`). An error is `\x01scp: message\n` (go on) or `\x02…`
//! (stop).
//!
//! As with a real sshd, the path words of the command are expanded by the
//! target's shell (globs, quotes): the command is the user's own, run in
//! their own target.

use bytes::BytesMut;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::file_system::{FsError, Metadata, SetAttributes, WriteOpen};
use crate::recording::Recorder;
use crate::remote_fs::RemoteFs;
use crate::session::control::{Activity, Counted, Outcome, Report};

/// The longest protocol line accepted (a record with a long file name).
const MAX_LINE: u64 = 64 * 1024;

/// Data is carried in chunks of this size.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `scp -f`: files flow from the target to the client.
    Source,
    /// `scp -t`: files flow from the client into the target.
    Sink,
}

/// A legacy scp command, as the OpenSSH client sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScpCommand {
    pub direction: Direction,
    pub recursive: bool,
    pub preserve: bool,
    /// `-d`: the destination must be a directory.
    pub target_is_directory: bool,
    /// The path words, unexpanded, as the shell would see them.
    pub paths: String,
}

/// Recognises `scp [-v] [-r] [-p] [-d] [-q] -f|-t [--] PATHS`; anything
/// else (other options, no direction) is not for us and runs as a command.
pub fn parse(command: &str) -> Option<ScpCommand> {
    let mut rest = command.trim_start();
    let program = rest.split_ascii_whitespace().next()?;
    if program != "scp" && !program.ends_with("/scp") {
        return None;
    }
    rest = rest[program.len()..].trim_start();
    let mut direction = None;
    let (mut recursive, mut preserve, mut target_is_directory) = (false, false, false);
    while let Some(word) = rest.split_ascii_whitespace().next() {
        if !word.starts_with('-') {
            break;
        }
        rest = rest[word.len()..].trim_start();
        if word == "--" {
            break;
        }
        for flag in word[1..].chars() {
            match flag {
                'f' if direction.is_none() => direction = Some(Direction::Source),
                't' if direction.is_none() => direction = Some(Direction::Sink),
                'r' => recursive = true,
                'p' => preserve = true,
                'd' => target_is_directory = true,
                'v' | 'q' => {}
                _ => return None,
            }
        }
    }
    if rest.is_empty() {
        return None;
    }
    Some(ScpCommand {
        direction: direction?,
        recursive,
        preserve,
        target_is_directory,
        paths: rest.to_string(),
    })
}

/// A record header: `C`/`D` with mode, size and name.
#[derive(Debug, PartialEq, Eq)]
struct Record {
    mode: u32,
    size: u64,
    name: String,
}

fn parse_record(line: &str) -> Option<Record> {
    let mut fields = line.splitn(3, ' ');
    let mode = u32::from_str_radix(fields.next()?, 8).ok()?;
    let size = fields.next()?.parse().ok()?;
    let name = fields.next()?.to_string();
    Some(Record { mode, size, name })
}

/// `T<mtime> 0 <atime> 0`.
fn parse_times(line: &str) -> Option<(u64, u64)> {
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        [mtime, _, atime, _] => Some((atime.parse().ok()?, mtime.parse().ok()?)),
        _ => None,
    }
}

/// A received name must be one path component (scp.c refuses the rest).
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

fn base_name(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    trimmed
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or(trimmed)
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The protocol's two byte streams.
struct Link<R, W> {
    input: BufReader<R>,
    output: W,
    /// Whether any file failed (exit status 1, as scp).
    failed: bool,
    /// The session's recording (with `audit.record_exec`): what the client
    /// reads as output, what it sends as input (kept only when keystrokes
    /// are recorded).
    recorder: Option<Recorder>,
    bytes_in: u64,
    bytes_out: u64,
}

/// The far side stopped the transfer, or went away.
#[derive(Debug)]
struct Stop;

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Link<R, W> {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        if let Some(recorder) = &self.recorder {
            recorder.output(bytes).await;
        }
        self.output.write_all(bytes).await.map_err(|_| Stop)?;
        self.output.flush().await.map_err(|_| Stop)
    }

    /// Reports an error to the client's scp, which prints it and goes on.
    async fn warn(&mut self, message: &str) -> Result<(), Stop> {
        self.failed = true;
        let line = format!("\x01scp: {}\n", message.replace('\n', " "));
        self.send(line.as_bytes()).await
    }

    /// One protocol line, without its newline; None at the end.
    async fn line(&mut self) -> Result<Option<String>, Stop> {
        let mut line = Vec::new();
        let n = (&mut self.input)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|_| Stop)?;
        if n == 0 {
            return Ok(None);
        }
        self.received(&line).await;
        if line.pop() != Some(b'\n') {
            return Err(Stop);
        }
        Ok(Some(String::from_utf8_lossy(&line).into_owned()))
    }

    /// Records what the client sent (`&mut`: the link is not shared).
    async fn received(&mut self, bytes: &[u8]) {
        if let Some(recorder) = &self.recorder {
            recorder.input(bytes).await;
        }
    }

    /// The client's answer to what we sent: Ok(true) to go on, Ok(false)
    /// when it refused this one item.
    async fn response(&mut self) -> Result<bool, Stop> {
        let code = self.input.read_u8().await.map_err(|_| Stop)?;
        self.received(&[code]).await;
        match code {
            0 => Ok(true),
            1 => {
                self.line().await?;
                self.failed = true;
                Ok(false)
            }
            _ => Err(Stop),
        }
    }
}

/// Serves one legacy scp command on the client's stream; the caller ends
/// the session with the exit status.
pub async fn serve(
    fs: RemoteFs,
    command: ScpCommand,
    input: impl AsyncRead + Unpin,
    output: impl AsyncWrite + Unpin,
    activity: Activity,
    recorder: Option<Recorder>,
) -> Report {
    let mut link = Link {
        recorder,
        input: BufReader::with_capacity(CHUNK, Counted::new(input, &activity)),
        output: Counted::new(output, &activity),
        failed: false,
        bytes_in: 0,
        bytes_out: 0,
    };
    let result = match fs.expand_words(&command.paths).await {
        Err(error) => link.warn(&error.to_string()).await,
        Ok(paths) => match command.direction {
            Direction::Source => source(&fs, &command, &paths, &mut link).await,
            Direction::Sink => sink_start(&fs, &command, &paths, &mut link).await,
        },
    };
    let outcome = match result {
        Ok(()) => Outcome::Exited(u32::from(link.failed)),
        Err(Stop) => Outcome::Exited(1),
    };
    let _ = link.output.flush().await;
    let (bytes_in, bytes_out) = (link.bytes_in, link.bytes_out);
    drop(link);
    Report {
        outcome,
        bytes_in,
        bytes_out,
    }
}

/// `scp -f`: sends every path to the client.
async fn source<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    fs: &RemoteFs,
    command: &ScpCommand,
    paths: &[String],
    link: &mut Link<R, W>,
) -> Result<(), Stop> {
    // The receiving scp speaks first.
    if !link.response().await? {
        return Ok(());
    }
    for path in paths {
        send_path(fs, command, path, link).await?;
    }
    Ok(())
}

async fn send_path<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    fs: &RemoteFs,
    command: &ScpCommand,
    path: &str,
    link: &mut Link<R, W>,
) -> Result<(), Stop> {
    let metadata = match fs.stat(path, true).await {
        Ok(metadata) => metadata,
        Err(error) => return link.warn(&error.to_string()).await,
    };
    if metadata.is_dir() {
        if !command.recursive {
            return link.warn(&format!("{path}: not a regular file")).await;
        }
        return Box::pin(send_directory(fs, command, path, &metadata, link)).await;
    }
    if !metadata.is_regular() {
        return link.warn(&format!("{path}: not a regular file")).await;
    }
    if command.preserve && !send_times(&metadata, link).await? {
        return Ok(());
    }
    let header = format!(
        "C{:04o} {} {}\n",
        metadata.permissions(),
        metadata.size,
        base_name(path)
    );
    link.send(header.as_bytes()).await?;
    if !link.response().await? {
        return Ok(());
    }
    // Exactly the announced size goes out; a file that shrank meanwhile
    // is padded and reported, as scp does.
    let mut problem = None;
    let mut remaining = metadata.size;
    match fs.reader(path, 0).await {
        Ok(mut reader) => {
            let mut buffer = vec![0u8; CHUNK];
            while remaining > 0 {
                let want = buffer
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(CHUNK));
                let n = match reader.read_full(&mut buffer[..want]).await {
                    Ok(n) => n,
                    Err(error) => {
                        problem = Some(error.to_string());
                        0
                    }
                };
                if n == 0 {
                    break;
                }
                link.send(&buffer[..n]).await?;
                link.bytes_out += n as u64;
                remaining -= n as u64;
            }
        }
        Err(error) => problem = Some(error.to_string()),
    }
    if remaining > 0 {
        let zeros = vec![0u8; CHUNK];
        while remaining > 0 {
            let n = zeros.len().min(usize::try_from(remaining).unwrap_or(CHUNK));
            link.send(&zeros[..n]).await?;
            remaining -= n as u64;
        }
        problem.get_or_insert_with(|| format!("{path}: file changed size"));
    }
    match problem {
        None => link.send(b"\0").await?,
        Some(message) => link.warn(&message).await?,
    }
    link.response().await?;
    Ok(())
}

async fn send_times<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    metadata: &Metadata,
    link: &mut Link<R, W>,
) -> Result<bool, Stop> {
    let line = format!("T{} 0 {} 0\n", metadata.mtime, metadata.atime);
    link.send(line.as_bytes()).await?;
    link.response().await
}

async fn send_directory<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    fs: &RemoteFs,
    command: &ScpCommand,
    path: &str,
    metadata: &Metadata,
    link: &mut Link<R, W>,
) -> Result<(), Stop> {
    let entries = match fs.list(path).await {
        Ok(entries) => entries,
        Err(error) => return link.warn(&error.to_string()).await,
    };
    if command.preserve && !send_times(metadata, link).await? {
        return Ok(());
    }
    let header = format!("D{:04o} 0 {}\n", metadata.permissions(), base_name(path));
    link.send(header.as_bytes()).await?;
    if !link.response().await? {
        return Ok(());
    }
    for (name, _) in entries.iter().filter(|(n, _)| n != "." && n != "..") {
        send_path(fs, command, &join(path, name), link).await?;
    }
    link.send(b"E\n").await?;
    link.response().await?;
    Ok(())
}

/// `scp -t`: receives into the one destination path.
async fn sink_start<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    fs: &RemoteFs,
    command: &ScpCommand,
    paths: &[String],
    link: &mut Link<R, W>,
) -> Result<(), Stop> {
    let [destination] = paths else {
        link.failed = true;
        return link
            .send(b"\x02scp: ambiguous target: give exactly one destination\n")
            .await;
    };
    let is_directory = matches!(fs.stat(destination, true).await, Ok(m) if m.is_dir());
    if command.target_is_directory && !is_directory {
        link.failed = true;
        let line = format!("\x02scp: {destination}: Not a directory\n");
        return link.send(line.as_bytes()).await;
    }
    link.send(b"\0").await?;
    sink(fs, command, destination, is_directory, link).await
}

async fn sink<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    fs: &RemoteFs,
    command: &ScpCommand,
    destination: &str,
    is_directory: bool,
    link: &mut Link<R, W>,
) -> Result<(), Stop> {
    let mut times: Option<(u64, u64)> = None;
    loop {
        let Some(line) = link.line().await? else {
            return Ok(());
        };
        let Some(kind) = line.chars().next() else {
            return Err(Stop);
        };
        let body = &line[kind.len_utf8()..];
        match kind {
            // The client reports a problem of its own: go on, or stop.
            '\x01' => {
                link.failed = true;
                continue;
            }
            '\x02' => {
                link.failed = true;
                return Ok(());
            }
            'E' => {
                link.send(b"\0").await?;
                return Ok(());
            }
            'T' => {
                times = parse_times(body);
                if times.is_none() {
                    link.send(b"\x02scp: protocol error: bad time record\n")
                        .await?;
                    return Err(Stop);
                }
                link.send(b"\0").await?;
                continue;
            }
            'C' | 'D' => {}
            _ => {
                link.send(b"\x02scp: protocol error: unexpected record\n")
                    .await?;
                return Err(Stop);
            }
        }
        let Some(record) = parse_record(body).filter(|r| valid_name(&r.name)) else {
            let line = format!("\x02scp: protocol error: unexpected filename: {body}\n");
            link.send(line.as_bytes()).await?;
            return Err(Stop);
        };
        let path = if is_directory {
            join(destination, &record.name)
        } else {
            destination.to_string()
        };
        let times = times.take();
        if kind == 'D' {
            if !command.recursive {
                link.send(b"\x02scp: received a directory without -r\n")
                    .await?;
                return Err(Stop);
            }
            match fs.stat(&path, true).await {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    link.warn(&format!("{path}: Not a directory")).await?;
                    continue;
                }
                Err(_) => {
                    if let Err(error) = fs.mkdir(&path, Some(record.mode | 0o700)).await {
                        link.warn(&error.to_string()).await?;
                        continue;
                    }
                }
            }
            link.send(b"\0").await?;
            Box::pin(sink(fs, command, &path, true, link)).await?;
            let attributes = SetAttributes {
                permissions: command.preserve.then_some(record.mode),
                atime: times.map(|t| t.0),
                mtime: times.map(|t| t.1),
                ..Default::default()
            };
            if let Err(error) = fs.set_attributes(&path, attributes).await {
                link.warn(&error.to_string()).await?;
            }
            continue;
        }
        receive_file(fs, command, &path, &record, times, link).await?;
    }
}

async fn receive_file<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    fs: &RemoteFs,
    command: &ScpCommand,
    path: &str,
    record: &Record,
    times: Option<(u64, u64)>,
    link: &mut Link<R, W>,
) -> Result<(), Stop> {
    let open = WriteOpen {
        create: true,
        truncate: true,
        exclusive: false,
        mode: Some(record.mode),
    };
    let mut writer = match fs.prepare_write(path, open).await {
        Ok(()) => fs.writer(path, 0, false).await,
        Err(error) => Err(error),
    };
    if let Err(error) = &writer {
        // The client sends no data after a refusal.
        return link.warn(&error.to_string()).await;
    }
    link.send(b"\0").await?;
    let mut problem: Option<FsError> = None;
    let mut remaining = record.size;
    let mut buffer = BytesMut::zeroed(CHUNK);
    while remaining > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(remaining).unwrap_or(CHUNK));
        let n = link
            .input
            .read(&mut buffer[..want])
            .await
            .map_err(|_| Stop)?;
        if n == 0 {
            return Err(Stop);
        }
        remaining -= n as u64;
        link.bytes_in += n as u64;
        link.received(&buffer[..n]).await;
        // After a failed write the data is still read, to stay in step.
        if let (Ok(w), None) = (writer.as_mut(), &problem)
            && let Err(error) = w.write_all(&buffer[..n]).await
        {
            problem = Some(error);
        }
    }
    // The sender's NUL (or its own error) after the data.
    let sent_fine = link.response().await?;
    if let Ok(w) = writer
        && let Err(error) = w.finish().await
    {
        problem.get_or_insert(error);
    }
    if problem.is_none() && sent_fine {
        let attributes = SetAttributes {
            permissions: command.preserve.then_some(record.mode),
            atime: times.map(|t| t.0),
            mtime: times.map(|t| t.1),
            ..Default::default()
        };
        if let Err(error) = fs.set_attributes(path, attributes).await {
            problem = Some(error);
        }
    }
    match problem {
        None => link.send(b"\0").await,
        Some(error) => link.warn(&error.to_string()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssh_commands_are_recognised() {
        let download = parse("scp -v -r -p -f -- /var/log/'my app'/*.log").unwrap();
        assert_eq!(download.direction, Direction::Source);
        assert!(download.recursive && download.preserve && !download.target_is_directory);
        assert_eq!(download.paths, "/var/log/'my app'/*.log");
        let upload = parse("scp -d -t /tmp").unwrap();
        assert_eq!(upload.direction, Direction::Sink);
        assert!(upload.target_is_directory);
        assert_eq!(upload.paths, "/tmp");
        assert_eq!(parse("/usr/bin/scp -t x").unwrap().paths, "x");
    }

    #[test]
    fn other_commands_are_not_scp() {
        for command in [
            "scp",
            "scp -t",
            "scp -r host:x y",
            "scp -x -t /tmp",
            "scpx -t /tmp",
            "echo scp -t /tmp",
            "",
        ] {
            assert_eq!(parse(command), None, "{command:?}");
        }
    }

    #[test]
    fn records_and_names() {
        assert_eq!(
            parse_record("0644 12 a file"),
            Some(Record {
                mode: 0o644,
                size: 12,
                name: "a file".into()
            })
        );
        assert_eq!(parse_record("0644 x a"), None);
        assert_eq!(
            parse_times("1700000000 0 1700000001 0"),
            Some((1700000001, 1700000000))
        );
        assert_eq!(parse_times("1 0 2"), None);
        for bad in ["", ".", "..", "a/b", "/etc"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(valid_name("..hidden"));
        assert_eq!(base_name("/var/log/"), "log");
        assert_eq!(base_name("file"), "file");
        assert_eq!(join("/", "x"), "/x");
    }
}
