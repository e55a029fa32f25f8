//! A container's log as files, for SFTP and scp on `CONTAINER.logs`: a
//! read-only directory `/` holding `current` (what `kubectl logs` prints)
//! and `previous` (`kubectl logs --previous`: the instance before the
//! last restart). The log is the kubelet's, read through `pods/log` as the
//! person (`logs::authorize` checked their `get` on `pods/log`); nothing
//! runs in the container.
//!
//! A log has no size until it is read: `stat` reads it to its current end
//! and counts (what scp announces before sending), and a read streams it
//! from the start, skipping to the offset asked for.

use std::time::Duration;

use futures::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::LogParams;
use tokio::io::AsyncRead;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::file_system::{FsError, Metadata};
use crate::pods::bounded;

/// A container's log that the person may read (`get` on `pods/log`
/// checked): what a log session streams and `LogFiles` serves as files.
pub struct LogSource {
    pub pods: Api<Pod>,
    pub pod: String,
    pub container: String,
}

impl LogSource {
    /// The log as it is now, of the container's current or previous
    /// instance, as a stream; the API server's error in one line if not.
    pub async fn read(
        &self,
        previous: bool,
        api_wait: Duration,
    ) -> Result<impl futures::AsyncBufRead + Send + use<>, String> {
        let params = LogParams {
            container: Some(self.container.clone()),
            previous,
            ..LogParams::default()
        };
        match bounded(api_wait, self.pods.log_stream(&self.pod, &params)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => Err(log_error(error)),
            Err(timeout) => Err(timeout.to_string()),
        }
    }
}

/// The API's own first line for a refused log request (`previous
/// terminated container "app" in pod "web-0" not found`), as kubectl shows
/// it.
pub fn log_error(error: kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status
            .message
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        other => format!("the Kubernetes API server is unreachable ({other}); try again later"),
    }
}

/// The two files.
const CURRENT: &str = "current";
const PREVIOUS: &str = "previous";

/// `st_mode` of the directory (r-x for all) and of the files (r-- for all).
const DIRECTORY_MODE: u32 = 0o040555;
const FILE_MODE: u32 = 0o100444;

/// What a path in the log directory names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Directory,
    /// `previous` or not.
    Log(bool),
}

/// A container's log, as files.
pub struct LogFiles {
    source: LogSource,
    api_wait: Duration,
}

fn entry(path: &str) -> Result<Entry, FsError> {
    match crate::file_system::normalize(path).as_str() {
        "/" => Ok(Entry::Directory),
        "/current" => Ok(Entry::Log(false)),
        "/previous" => Ok(Entry::Log(true)),
        _ => Err(FsError::NotFound(path.to_string())),
    }
}

/// A read-only file system's answer to a change.
pub fn read_only(path: &str) -> FsError {
    FsError::ReadOnly(path.to_string())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl LogFiles {
    pub fn new(source: LogSource, api_wait: Duration) -> Self {
        LogFiles { source, api_wait }
    }

    async fn open(&self, previous: bool, path: &str) -> Result<impl AsyncRead + use<>, FsError> {
        let stream = self
            .source
            .read(previous, self.api_wait)
            .await
            .map_err(|line| FsError::Failure(format!("{path}: {line}")))?;
        Ok(stream.compat())
    }

    /// The log's size now: it is read to its end and counted.
    async fn size(&self, previous: bool, path: &str) -> Result<u64, FsError> {
        let mut stream = self
            .source
            .read(previous, self.api_wait)
            .await
            .map_err(|line| FsError::Failure(format!("{path}: {line}")))?;
        let mut buffer = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) => return Ok(size),
                Ok(n) => size += n as u64,
                Err(error) => {
                    return Err(FsError::Failure(format!(
                        "{path}: the log stream broke: {error}"
                    )));
                }
            }
        }
    }

    pub async fn stat(&self, path: &str) -> Result<Metadata, FsError> {
        let now = now();
        let (mode, size) = match entry(path)? {
            Entry::Directory => (DIRECTORY_MODE, 0),
            Entry::Log(previous) => (FILE_MODE, self.size(previous, path).await?),
        };
        Ok(Metadata {
            mode,
            size,
            atime: now,
            mtime: now,
            links: 1,
            ..Metadata::default()
        })
    }

    /// The directory's entries; `previous` only where the container has
    /// had an earlier instance.
    pub async fn list(&self, dir: &str) -> Result<Vec<(String, Metadata)>, FsError> {
        if entry(dir)? != Entry::Directory {
            return Err(FsError::Failure(format!("{dir}: Not a directory")));
        }
        let directory = self.stat("/").await?;
        let mut entries = vec![(".".to_string(), directory), ("..".to_string(), directory)];
        for name in [CURRENT, PREVIOUS] {
            match self.stat(name).await {
                Ok(metadata) => entries.push((name.to_string(), metadata)),
                Err(error) if name == PREVIOUS => {
                    tracing::debug!(%error, "no previous log to list");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(entries)
    }

    /// Streams the log from `offset` (read from the start and skipped:
    /// the log API has no byte offsets).
    pub async fn reader(
        &self,
        path: &str,
        offset: u64,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>, FsError> {
        let Entry::Log(previous) = entry(path)? else {
            return Err(FsError::Failure(format!("{path}: Is a directory")));
        };
        let mut stream = Box::pin(self.open(previous, path).await?);
        let skipped = tokio::io::copy(
            &mut tokio::io::AsyncReadExt::take(&mut stream, offset),
            &mut tokio::io::sink(),
        )
        .await
        .map_err(|error| FsError::Failure(format!("{path}: the log stream broke: {error}")))?;
        if skipped < offset {
            // Past the end: nothing to read.
            return Ok(Box::new(tokio::io::empty()));
        }
        Ok(Box::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_the_log_directory() {
        assert_eq!(entry("current"), Ok(Entry::Log(false)));
        assert_eq!(entry("/previous"), Ok(Entry::Log(true)));
        assert_eq!(entry("/"), Ok(Entry::Directory));
        assert_eq!(entry("other"), Err(FsError::NotFound("other".into())));
    }
}
