//! kbastion's own SFTP server (version 3, what OpenSSH, scp and IDEs
//! speak), for targets without an `sftp-server`: each request is answered
//! from the target's file system through exec (`remote_fs`).
//!
//! The packet loop is ours, on russh-sftp's packet types: its `server::run`
//! keeps reading after a framing error, which would desynchronise the
//! stream. A packet longer than the protocol allows ends the session; one
//! that does not decode is answered `SSH_FX_BAD_MESSAGE` and the stream
//! stays in step (its length is known).
//!
//! Requests are answered in order. Reads stay fast under OpenSSH's
//! pipelining because an open file streams through one exec: each READ
//! takes the next bytes of that stream instead of starting a command.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use russh_sftp::protocol::{
    Attrs, Data, Extended, ExtendedReply, File, FileAttributes, Handle as HandleReply, Name,
    OpenFlags, Packet, Status, StatusCode, Version,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::audit::FileAudit;
use crate::file_system::{FsError, Metadata, SetAttributes, WriteOpen};
use crate::remote_fs::{FileReader, FileWriter, RemoteFs};
use crate::session::control::{Activity, Counted, Outcome, Report};

/// The longest request accepted: a 256 KiB WRITE plus its header, the
/// limit OpenSSH's own sftp-server sets (`SFTP_MAX_MSG_LENGTH`).
const MAX_PACKET: u32 = 256 * 1024 + 1024;

/// The most one READ returns (OpenSSH asks for 32 KiB; others up to 255).
const MAX_READ: u32 = 255 * 1024;

/// Entries per READDIR answer, as OpenSSH's sftp-server sends.
const ENTRIES_PER_READDIR: usize = 100;

/// Open handles per session: a bound on what a client can make us hold.
const MAX_HANDLES: usize = 256;

/// Once a file's end has been seen, reads beyond it are answered EOF for
/// this long without asking the target again: OpenSSH has up to 64 reads
/// in flight past the end of every download. Later reads look again, so a
/// growing log file keeps yielding what was appended.
const END_REMEMBERED: Duration = Duration::from_millis(250);

/// A handle's reading side: the stream and the offset of its next byte,
/// and where the file ended, and when that was seen.
#[derive(Default)]
struct Reading {
    stream: Option<(u64, FileReader)>,
    end: Option<(u64, Instant)>,
}

enum Handle {
    Read {
        path: String,
        reading: Reading,
        /// Bytes read through it, for the audit at its close.
        bytes: u64,
    },
    Write {
        path: String,
        /// The stream and the offset its next byte lands at.
        stream: Option<(u64, FileWriter)>,
        append: bool,
        /// Permissions without the owner's write bit, asked for while the
        /// handle is open (`put` of a 0444 file): set at CLOSE, after the
        /// data. sftp-server writes through the descriptor it opened,
        /// which the mode no longer governs; each write stream here opens
        /// the file anew, so until then the owner keeps write permission.
        mode_at_close: Option<u32>,
        /// For a handle opened to read too (`r+`, as sshfs and editors
        /// open files): reads see what was written before them.
        reading: Option<Reading>,
        /// Bytes written through it, for the audit at its close.
        bytes: u64,
    },
    Directory {
        entries: VecDeque<File>,
    },
}

/// A failed request: its SFTP status and message.
struct Refusal(StatusCode, String);

impl From<FsError> for Refusal {
    fn from(error: FsError) -> Self {
        let code = match error {
            FsError::NotFound(_) => StatusCode::NoSuchFile,
            FsError::PermissionDenied(_) | FsError::ReadOnly(_) => StatusCode::PermissionDenied,
            FsError::Failure(_) => StatusCode::Failure,
        };
        Refusal(code, error.to_string())
    }
}

fn bad_handle() -> Refusal {
    Refusal(StatusCode::Failure, "invalid handle".into())
}

fn status(id: u32, code: StatusCode, message: &str) -> Packet {
    Packet::Status(Status {
        id,
        status_code: code,
        error_message: message.to_string(),
        language_tag: "en-US".into(),
    })
}

fn ok(id: u32) -> Packet {
    status(id, StatusCode::Ok, "Success")
}

pub fn attributes(metadata: &Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(metadata.size),
        uid: Some(metadata.uid),
        user: None,
        gid: Some(metadata.gid),
        group: None,
        permissions: Some(metadata.mode),
        atime: Some(u32::try_from(metadata.atime).unwrap_or(u32::MAX)),
        mtime: Some(u32::try_from(metadata.mtime).unwrap_or(u32::MAX)),
    }
}

/// The `ls -l` line clients show for a directory entry, as OpenSSH's
/// sftp-server words it (`ls_file`): type and permissions, links, owner,
/// group, size, date (the year instead of the time after six months).
pub fn long_name(name: &str, metadata: &Metadata, now: i64) -> String {
    let kind = match metadata.mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        0o140000 => 's',
        _ => '-',
    };
    let mut mode = String::from(kind);
    let bits = metadata.mode;
    for (shift, special, set_char) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let part = (bits >> shift) & 0o7;
        mode.push(if part & 4 != 0 { 'r' } else { '-' });
        mode.push(if part & 2 != 0 { 'w' } else { '-' });
        mode.push(match (part & 1 != 0, bits & special != 0) {
            (true, true) => set_char,
            (false, true) => set_char.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    let mtime = i64::try_from(metadata.mtime).unwrap_or(i64::MAX);
    const SIX_MONTHS: i64 = 182 * 24 * 3600;
    let format = if (now - mtime).abs() < SIX_MONTHS {
        "%b %e %H:%M"
    } else {
        "%b %e  %Y"
    };
    let date = chrono::DateTime::from_timestamp(mtime, 0)
        .map(|t| t.format(format).to_string())
        .unwrap_or_default();
    format!(
        "{mode} {:>3} {:<8} {:<8} {:>8} {date} {name}",
        metadata.links, metadata.uid, metadata.gid, metadata.size
    )
}

fn changes(attrs: &FileAttributes) -> SetAttributes {
    SetAttributes {
        size: attrs.size,
        permissions: attrs.permissions,
        owner: attrs.uid.zip(attrs.gid),
        atime: attrs.atime.map(u64::from),
        mtime: attrs.mtime.map(u64::from),
    }
}

struct Server {
    fs: RemoteFs,
    /// Each file handle is audited at its close.
    files: FileAudit,
    handles: HashMap<String, Handle>,
    next_handle: u64,
    bytes_in: u64,
    bytes_out: u64,
}

/// Serves SFTP on the client's stream until the client ends it; the
/// caller ends the session with the exit status.
pub async fn serve(
    fs: RemoteFs,
    input: impl AsyncRead + Unpin,
    output: impl AsyncWrite + Unpin,
    activity: Activity,
    files: FileAudit,
) -> Report {
    let mut server = Server {
        fs,
        files,
        handles: HashMap::new(),
        next_handle: 0,
        bytes_in: 0,
        bytes_out: 0,
    };
    let mut output = Counted::new(output, &activity);
    let mut input = Counted::new(input, &activity);
    let mut ended_by = Outcome::Exited(0);
    while let Ok(length) = input.read_u32().await {
        if length == 0 || length > MAX_PACKET {
            ended_by = Outcome::Failed(format!(
                "SFTP packet of {length} bytes refused (limit {MAX_PACKET})"
            ));
            break;
        }
        let mut body = vec![0u8; length as usize];
        if input.read_exact(&mut body).await.is_err() {
            break;
        }
        let mut body = Bytes::from(body);
        let id = request_id(&body);
        let reply = match Packet::try_from(&mut body) {
            Ok(request) => server.answer(request).await,
            Err(error) => status(id, StatusCode::BadMessage, &error.to_string()),
        };
        let Ok(encoded) = Bytes::try_from(reply) else {
            ended_by = Outcome::Failed("an SFTP reply could not be encoded".into());
            break;
        };
        if output.write_all(&encoded).await.is_err() {
            ended_by = Outcome::ClientGone;
            break;
        }
    }
    drop(input);
    // Whatever is still open is flushed into the target, as sftp-server
    // closes its files when the session ends.
    for (_, handle) in server.handles.drain() {
        let _ = close_handle(&server.fs, &server.files, handle).await;
    }
    let _ = output.flush().await;
    Report {
        outcome: ended_by,
        bytes_in: server.bytes_in,
        bytes_out: server.bytes_out,
    }
}

/// The permissions to give a file open for writing now, and the ones to
/// set at CLOSE when they take the owner's write permission away.
fn writable_for_now(permissions: Option<u32>) -> (Option<u32>, Option<u32>) {
    match permissions {
        Some(mode) if mode & 0o200 == 0 => (Some(mode | 0o200), Some(mode)),
        other => (other, None),
    }
}

/// Closes a handle: what was written lands in the file, then the mode
/// kept for the close is set; a file handle is audited (path, direction,
/// bytes).
async fn close_handle(fs: &RemoteFs, files: &FileAudit, handle: Handle) -> Result<(), Refusal> {
    if let Handle::Read { path, bytes, .. } = &handle {
        files.record(path, "read", *bytes);
    }
    if let Handle::Write {
        path,
        stream,
        mode_at_close,
        bytes,
        ..
    } = handle
    {
        files.record(&path, "write", bytes);
        if let Some((_, writer)) = stream {
            writer.finish().await?;
        }
        if let Some(mode) = mode_at_close {
            let permissions = SetAttributes {
                permissions: Some(mode),
                ..SetAttributes::default()
            };
            fs.set_attributes(&path, permissions).await?;
        }
    }
    Ok(())
}

/// The bytes of `path` at `offset`, through `reading`'s stream (one exec
/// per run of sequential reads), or None at the file's end.
async fn read_at(
    fs: &RemoteFs,
    path: &str,
    reading: &mut Reading,
    offset: u64,
    len: u32,
) -> Result<Option<Vec<u8>>, Refusal> {
    let Reading { stream, end } = reading;
    if let Some((at, seen)) = end
        && offset >= *at
        && seen.elapsed() < END_REMEMBERED
    {
        return Ok(None);
    }
    if stream.as_ref().is_none_or(|(next, _)| *next != offset) {
        *stream = Some((offset, fs.reader(path, offset).await?));
    }
    let Some((next, reader)) = stream.as_mut() else {
        return Err(bad_handle());
    };
    let mut data = vec![0u8; len.min(MAX_READ) as usize];
    let n = reader.read_full(&mut data).await?;
    *next += n as u64;
    if n < data.len() {
        // The stream reached the file's end as it is now.
        let at = *next;
        if let Some((_, reader)) = stream.take() {
            reader.finish().await?;
        }
        *end = Some((at, Instant::now()));
    }
    if n == 0 {
        return Ok(None);
    }
    data.truncate(n);
    Ok(Some(data))
}

/// The server's version and the OpenSSH extensions it answers (the
/// versions OpenSSH's sftp-server advertises).
fn version() -> Version {
    let mut version = Version::new();
    for (name, revision) in [
        ("posix-rename@openssh.com", "1"),
        ("statvfs@openssh.com", "2"),
        ("hardlink@openssh.com", "1"),
        ("fsync@openssh.com", "1"),
        ("limits@openssh.com", "1"),
    ] {
        version.extensions.insert(name.into(), revision.into());
    }
    version
}

/// An SSH string (length, then bytes) from the front of `data`.
fn ssh_string(data: &mut &[u8]) -> Option<String> {
    let length = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let bytes = data.get(4..4 + length)?;
    *data = &data[4 + length..];
    String::from_utf8(bytes.to_vec()).ok()
}

/// The request id of a packet that may not decode (type, then id).
fn request_id(body: &[u8]) -> u32 {
    body.get(1..5)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0)
}

impl Server {
    async fn answer(&mut self, request: Packet) -> Packet {
        let id = request.get_request_id();
        match self.dispatch(request).await {
            Ok(reply) => reply,
            Err(Refusal(code, message)) => status(id, code, &message),
        }
    }

    fn add_handle(&mut self, handle: Handle) -> Result<String, Refusal> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(Refusal(
                StatusCode::Failure,
                format!("too many open handles (limit {MAX_HANDLES})"),
            ));
        }
        self.next_handle += 1;
        let name = self.next_handle.to_string();
        self.handles.insert(name.clone(), handle);
        Ok(name)
    }

    async fn dispatch(&mut self, request: Packet) -> Result<Packet, Refusal> {
        let fs = self.fs.clone();
        Ok(match request {
            Packet::Init(_) => Packet::Version(version()),
            Packet::Open(open) => {
                let writing = open.pflags.intersects(
                    OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                );
                let handle = if writing {
                    let (mode, mode_at_close) = writable_for_now(open.attrs.permissions);
                    fs.prepare_write(
                        &open.filename,
                        WriteOpen {
                            create: open.pflags.contains(OpenFlags::CREATE),
                            truncate: open.pflags.contains(OpenFlags::TRUNCATE),
                            exclusive: open.pflags.contains(OpenFlags::EXCLUDE),
                            mode,
                        },
                    )
                    .await?;
                    Handle::Write {
                        path: open.filename,
                        stream: None,
                        append: open.pflags.contains(OpenFlags::APPEND),
                        // Only a file this open created takes its mode.
                        mode_at_close: mode_at_close
                            .filter(|_| open.pflags.contains(OpenFlags::CREATE)),
                        reading: open.pflags.contains(OpenFlags::READ).then(Reading::default),
                        bytes: 0,
                    }
                } else {
                    fs.check_readable(&open.filename).await?;
                    Handle::Read {
                        path: open.filename,
                        reading: Reading::default(),
                        bytes: 0,
                    }
                };
                let handle = self.add_handle(handle)?;
                Packet::Handle(HandleReply {
                    id: open.id,
                    handle,
                })
            }
            Packet::Close(close) => {
                let handle = self.handles.remove(&close.handle).ok_or_else(bad_handle)?;
                close_handle(&fs, &self.files, handle).await?;
                ok(close.id)
            }
            Packet::Read(read) => {
                let data = self.read(&read.handle, read.offset, read.len).await?;
                match data {
                    Some(data) => {
                        self.bytes_out += data.len() as u64;
                        Packet::Data(Data { id: read.id, data })
                    }
                    None => status(read.id, StatusCode::Eof, "End of file"),
                }
            }
            Packet::Write(write) => {
                self.bytes_in += write.data.len() as u64;
                self.write(&write.handle, write.offset, &write.data).await?;
                ok(write.id)
            }
            Packet::Lstat(lstat) => Packet::Attrs(Attrs {
                id: lstat.id,
                attrs: attributes(&fs.stat(&lstat.path, false).await?),
            }),
            Packet::Stat(stat) => Packet::Attrs(Attrs {
                id: stat.id,
                attrs: attributes(&fs.stat(&stat.path, true).await?),
            }),
            Packet::Fstat(fstat) => {
                let path = self.path_of(&fstat.handle)?;
                Packet::Attrs(Attrs {
                    id: fstat.id,
                    attrs: attributes(&fs.stat(&path, true).await?),
                })
            }
            Packet::SetStat(setstat) => {
                fs.set_attributes(&setstat.path, changes(&setstat.attrs))
                    .await?;
                ok(setstat.id)
            }
            Packet::FSetStat(fsetstat) => {
                let path = self.path_of(&fsetstat.handle)?;
                // Pending writes land first, so times set after an upload stick.
                self.flush_writer(&fsetstat.handle).await?;
                let mut changes = changes(&fsetstat.attrs);
                if let Some(Handle::Write { mode_at_close, .. }) =
                    self.handles.get_mut(&fsetstat.handle)
                    && changes.permissions.is_some()
                {
                    (changes.permissions, *mode_at_close) = writable_for_now(changes.permissions);
                }
                fs.set_attributes(&path, changes).await?;
                ok(fsetstat.id)
            }
            Packet::OpenDir(opendir) => {
                let now = chrono::Utc::now().timestamp();
                let metadata = fs.stat(&opendir.path, true).await?;
                if !metadata.is_dir() {
                    return Err(Refusal(
                        StatusCode::Failure,
                        format!("{}: Not a directory", opendir.path),
                    ));
                }
                let entries = fs
                    .list(&opendir.path)
                    .await?
                    .into_iter()
                    .map(|(name, metadata)| File {
                        longname: long_name(&name, &metadata, now),
                        filename: name,
                        attrs: attributes(&metadata),
                    })
                    .collect();
                let handle = self.add_handle(Handle::Directory { entries })?;
                Packet::Handle(HandleReply {
                    id: opendir.id,
                    handle,
                })
            }
            Packet::ReadDir(readdir) => match self.handles.get_mut(&readdir.handle) {
                Some(Handle::Directory { entries }) if entries.is_empty() => {
                    status(readdir.id, StatusCode::Eof, "End of directory")
                }
                Some(Handle::Directory { entries }) => {
                    let count = entries.len().min(ENTRIES_PER_READDIR);
                    Packet::Name(Name {
                        id: readdir.id,
                        files: entries.drain(..count).collect(),
                    })
                }
                _ => return Err(bad_handle()),
            },
            Packet::Remove(remove) => {
                fs.remove(&remove.filename).await?;
                ok(remove.id)
            }
            Packet::MkDir(mkdir) => {
                fs.mkdir(&mkdir.path, mkdir.attrs.permissions).await?;
                ok(mkdir.id)
            }
            Packet::RmDir(rmdir) => {
                fs.rmdir(&rmdir.path).await?;
                ok(rmdir.id)
            }
            Packet::RealPath(realpath) => Packet::Name(Name {
                id: realpath.id,
                files: vec![File::dummy(fs.realpath(&realpath.path).await?)],
            }),
            Packet::Rename(rename) => {
                fs.rename(&rename.oldpath, &rename.newpath).await?;
                ok(rename.id)
            }
            Packet::ReadLink(readlink) => Packet::Name(Name {
                id: readlink.id,
                files: vec![File::dummy(fs.readlink(&readlink.path).await?)],
            }),
            Packet::Symlink(symlink) => {
                // OpenSSH sends the link's target first and the new link's
                // path second, the reverse of the draft (its sftp-server
                // reads them that way too; PROTOCOL §4.1), and russh-sftp
                // names the fields after the draft.
                fs.symlink(&symlink.linkpath, &symlink.targetpath).await?;
                ok(symlink.id)
            }
            Packet::Extended(extended) => self.extended(extended).await?,
            other => status(
                other.get_request_id(),
                StatusCode::BadMessage,
                "not a request a client may send",
            ),
        })
    }

    /// The OpenSSH extensions `version` advertises.
    async fn extended(&mut self, extended: Extended) -> Result<Packet, Refusal> {
        let fs = self.fs.clone();
        let id = extended.id;
        let mut data = extended.data.as_slice();
        let mut string = || {
            ssh_string(&mut data).ok_or_else(|| {
                Refusal(
                    StatusCode::BadMessage,
                    format!("{}: malformed request", extended.request),
                )
            })
        };
        Ok(match extended.request.as_str() {
            // Rename over an existing file, as rename(2) does: how editors
            // and sshfs save a file atomically.
            "posix-rename@openssh.com" => {
                let (from, to) = (string()?, string()?);
                fs.replace(&from, &to).await?;
                ok(id)
            }
            "hardlink@openssh.com" => {
                let (target, link) = (string()?, string()?);
                fs.hardlink(&target, &link).await?;
                ok(id)
            }
            // What was written through the handle is in the file once its
            // writer has ended.
            "fsync@openssh.com" => {
                let handle = string()?;
                self.path_of(&handle)?;
                self.flush_writer(&handle).await?;
                ok(id)
            }
            "statvfs@openssh.com" => {
                let path = string()?;
                let numbers = fs.statvfs(&path).await?;
                Packet::ExtendedReply(ExtendedReply {
                    id,
                    data: numbers.iter().flat_map(|n| n.to_be_bytes()).collect(),
                })
            }
            "limits@openssh.com" => Packet::ExtendedReply(ExtendedReply {
                id,
                data: [
                    u64::from(MAX_PACKET),
                    u64::from(MAX_READ),
                    u64::from(MAX_READ),
                    MAX_HANDLES as u64,
                ]
                .iter()
                .flat_map(|n| n.to_be_bytes())
                .collect(),
            }),
            other => status(
                id,
                StatusCode::OpUnsupported,
                &format!("extension {other:?} is not supported"),
            ),
        })
    }

    fn path_of(&self, handle: &str) -> Result<String, Refusal> {
        match self.handles.get(handle) {
            Some(Handle::Read { path, .. } | Handle::Write { path, .. }) => Ok(path.clone()),
            _ => Err(bad_handle()),
        }
    }

    /// Ends a handle's write stream, so what was written is in the file.
    async fn flush_writer(&mut self, handle: &str) -> Result<(), Refusal> {
        if let Some(Handle::Write { stream, .. }) = self.handles.get_mut(handle)
            && let Some((_, writer)) = stream.take()
        {
            writer.finish().await?;
        }
        Ok(())
    }

    /// The bytes at `offset`, or None at the end of the file.
    async fn read(
        &mut self,
        handle: &str,
        offset: u64,
        len: u32,
    ) -> Result<Option<Vec<u8>>, Refusal> {
        let fs = self.fs.clone();
        let (path, reading) = match self.handles.get_mut(handle) {
            Some(Handle::Read {
                path,
                reading,
                bytes,
            }) => {
                let data = read_at(&fs, path, reading, offset, len).await?;
                *bytes += data.as_ref().map_or(0, |d| d.len() as u64);
                return Ok(data);
            }
            Some(Handle::Write {
                path,
                stream,
                reading: Some(reading),
                ..
            }) => {
                // What was written lands first, and is read back anew.
                if let Some((_, writer)) = stream.take() {
                    writer.finish().await?;
                    *reading = Reading::default();
                }
                (path.clone(), reading)
            }
            _ => return Err(bad_handle()),
        };
        read_at(&fs, &path, reading, offset, len).await
    }

    async fn write(&mut self, handle: &str, offset: u64, data: &[u8]) -> Result<(), Refusal> {
        let fs = self.fs.clone();
        let Some(Handle::Write {
            path,
            stream,
            append,
            reading,
            bytes,
            ..
        }) = self.handles.get_mut(handle)
        else {
            return Err(bad_handle());
        };
        // A read after this write must see it: the read stream starts over.
        if let Some(reading) = reading {
            *reading = Reading::default();
        }
        if stream
            .as_ref()
            .is_none_or(|(next, _)| *next != offset && !*append)
        {
            if let Some((_, writer)) = stream.take() {
                writer.finish().await?;
            }
            *stream = Some((offset, fs.writer(path, offset, *append).await?));
        }
        let Some((next, writer)) = stream.as_mut() else {
            return Err(bad_handle());
        };
        writer.write_all(data).await?;
        *next = offset + data.len() as u64;
        *bytes += data.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mode_without_owner_write_waits_for_the_close() {
        // `put` of a key kept 0400: writable until CLOSE, then 0400.
        assert_eq!(writable_for_now(Some(0o400)), (Some(0o600), Some(0o400)));
        assert_eq!(writable_for_now(Some(0o444)), (Some(0o644), Some(0o444)));
        assert_eq!(writable_for_now(Some(0o640)), (Some(0o640), None));
        assert_eq!(writable_for_now(None), (None, None));
    }

    #[test]
    fn long_names_read_like_ls() {
        let file = Metadata {
            mode: 0o100640,
            size: 1234,
            uid: 1000,
            gid: 50,
            atime: 0,
            mtime: 1_764_064_800,
            links: 1,
        };
        assert_eq!(
            long_name("app.log", &file, 1_764_064_800),
            "-rw-r-----   1 1000     50           1234 Nov 25 10:00 app.log"
        );
        let old_link = Metadata {
            mode: 0o120777,
            mtime: 0,
            ..file
        };
        assert_eq!(
            long_name("l", &old_link, 1_764_064_800),
            "lrwxrwxrwx   1 1000     50           1234 Jan  1  1970 l"
        );
        let sticky = Metadata {
            mode: 0o041777,
            ..file
        };
        assert!(long_name("tmp", &sticky, 0).starts_with("drwxrwxrwt"));
    }

    #[test]
    fn request_ids_of_undecodable_packets() {
        assert_eq!(request_id(&[3, 0, 0, 1, 2, 9]), 258);
        assert_eq!(request_id(&[3, 0]), 0);
    }
}
