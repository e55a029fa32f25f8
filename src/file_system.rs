//! What kbastion's own file services (SFTP, legacy scp) say about files,
//! wherever the files are: a target's through exec (`remote_fs`) or a
//! container's log (`log_files`). Paths, metadata and the errors a client
//! reads.

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FsError {
    #[error("{0}: No such file or directory")]
    NotFound(String),
    #[error("{0}: Permission denied")]
    PermissionDenied(String),
    /// A change to files that cannot change (a container's log).
    #[error("{0}: read-only: a container's log is the files current and previous, to read")]
    ReadOnly(String),
    #[error("{0}")]
    Failure(String),
}

/// `path` made absolute against `/` with `.` and `..` resolved, without
/// looking at the files (symbolic links are not followed).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// What `stat` says of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Metadata {
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    pub atime: u64,
    pub mtime: u64,
    pub links: u64,
}

impl Metadata {
    pub fn is_dir(&self) -> bool {
        self.mode & 0o170000 == 0o040000
    }

    pub fn is_regular(&self) -> bool {
        self.mode & 0o170000 == 0o100000
    }

    pub fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }
}

/// How a file is opened for writing.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOpen {
    pub create: bool,
    pub truncate: bool,
    pub exclusive: bool,
    /// Permissions for a file this creates.
    pub mode: Option<u32>,
}

/// Attributes to change; `None` leaves one alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttributes {
    pub size: Option<u64>,
    pub permissions: Option<u32>,
    pub owner: Option<(u32, u32)>,
    pub atime: Option<u64>,
    pub mtime: Option<u64>,
}
