//! Session recordings in asciicast v2 (a JSON header line, then
//! `[seconds, "o"|"i"|"r", data]` lines), written as the session goes so a
//! crash keeps what was seen, with mode 0600. `asciinema play` replays them.
//!
//! Each recording is capped (`audit.recording_max_bytes`); one that hits
//! the cap or cannot be written stops, and says why through `failed`, so
//! that a session that must be recorded can be ended.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Bytes of events queued for the writer thread; a session whose
/// recording falls this far behind waits for the disk (nothing the user
/// saw is dropped).
const QUEUE_BYTES: usize = 4 * 1024 * 1024;

enum Entry {
    Output(Vec<u8>),
    Input(Vec<u8>),
    Resize(u32, u32),
}

/// One session's recording. Cloneable; the file closes when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Recorder {
    /// Unbounded in type only: `room` bounds it in bytes.
    sender: tokio::sync::mpsc::UnboundedSender<(f64, Entry, u32)>,
    room: Arc<Semaphore>,
    started: Instant,
    pub path: PathBuf,
    pub record_input: bool,
    /// Whether any event was recorded.
    recorded: Arc<AtomicBool>,
    /// Cancelled when the recording stopped short (`why` says why).
    failed: CancellationToken,
    why: Arc<OnceLock<String>>,
}

impl Recorder {
    pub fn create(
        dir: &Path,
        session: &str,
        (width, height, term): (u32, u32, &str),
        record_input: bool,
        max_bytes: u64,
    ) -> std::io::Result<Recorder> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{session}.cast"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let header = json!({"version": 2, "width": width, "height": height, "timestamp": timestamp, "env": {"TERM": term}});
        writeln!(file, "{header}")?;
        file.flush()?;
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(f64, Entry, u32)>();
        let room = Arc::new(Semaphore::new(QUEUE_BYTES));
        let failed = CancellationToken::new();
        let why = Arc::new(OnceLock::new());
        let mut size = u64::try_from(header.to_string().len() + 1).unwrap_or(u64::MAX);
        let (writer_room, writer_failed, writer_why) = (room.clone(), failed.clone(), why.clone());
        // A plain thread: file writes are blocking and must stay off the
        // async runtime.
        std::thread::spawn(move || {
            let mut writer = std::io::BufWriter::new(file);
            let mut output = Utf8Carry::default();
            let mut input = Utf8Carry::default();
            let mut write = |writer: &mut std::io::BufWriter<std::fs::File>,
                             (time, entry, bytes): (f64, Entry, u32)| {
                writer_room.add_permits(bytes as usize);
                let line = match entry {
                    Entry::Output(bytes) => json!([time, "o", output.push(&bytes)]),
                    Entry::Input(bytes) => json!([time, "i", input.push(&bytes)]),
                    Entry::Resize(w, h) => json!([time, "r", format!("{w}x{h}")]),
                }
                .to_string();
                size = size.saturating_add(line.len() as u64 + 1);
                if size > max_bytes {
                    return Err(format!(
                        "it reached its size limit of {max_bytes} bytes (audit.recording_max_bytes)"
                    ));
                }
                writeln!(writer, "{line}").map_err(|e| e.to_string())
            };
            let mut result = Ok(());
            while let Some(entry) = receiver.blocking_recv() {
                result = write(&mut writer, entry);
                // Write what else is queued, then flush once: incremental
                // on disk without a syscall per event under load.
                while let (Ok(()), Ok(entry)) = (&result, receiver.try_recv()) {
                    result = write(&mut writer, entry);
                }
                if result.is_ok() {
                    result = writer.flush().map_err(|e| e.to_string());
                }
                if result.is_err() {
                    break;
                }
            }
            let _ = writer.flush();
            if let Err(reason) = result {
                tracing::warn!(%reason, "a session recording stopped");
                let _ = writer_why.set(reason);
                // Sessions stop waiting for room in a recording that is over.
                writer_room.close();
                writer_failed.cancel();
            }
        });
        Ok(Recorder {
            sender,
            room,
            started: Instant::now(),
            path,
            record_input,
            recorded: Arc::default(),
            failed,
            why,
        })
    }

    /// Resolves when the recording has stopped short, with the reason.
    pub async fn failed(&self) -> String {
        self.failed.cancelled().await;
        self.why.get().cloned().unwrap_or_default()
    }

    /// Whether anything was recorded beyond the header.
    pub fn is_empty(&self) -> bool {
        !self.recorded.load(Ordering::Relaxed)
    }

    async fn send(&self, entry: Entry, bytes: usize) {
        let bytes = bytes.min(QUEUE_BYTES) as u32;
        // Closed once the recording stopped: nothing more is recorded.
        let Ok(permit) = self.room.acquire_many(bytes).await else {
            return;
        };
        permit.forget();
        self.recorded.store(true, Ordering::Relaxed);
        let _ = self
            .sender
            .send((self.started.elapsed().as_secs_f64(), entry, bytes));
    }

    pub async fn output(&self, bytes: &[u8]) {
        self.send(Entry::Output(bytes.to_vec()), bytes.len()).await;
    }

    pub async fn input(&self, bytes: &[u8]) {
        if self.record_input {
            self.send(Entry::Input(bytes.to_vec()), bytes.len()).await;
        }
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.send(Entry::Resize(width, height), 16).await;
    }
}

/// Turns a byte stream into text without splitting a UTF-8 character that
/// straddles two chunks; invalid bytes become U+FFFD.
#[derive(Default)]
pub struct Utf8Carry {
    tail: Vec<u8>,
}

impl Utf8Carry {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.tail.extend_from_slice(bytes);
        let valid_up_to = match std::str::from_utf8(&self.tail) {
            Ok(_) => self.tail.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.tail.len(),
        };
        let rest = self.tail.split_off(valid_up_to);
        let text = String::from_utf8_lossy(&self.tail).into_owned();
        self.tail = rest;
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_are_joined() {
        let mut carry = Utf8Carry::default();
        let euro = "€".as_bytes();
        assert_eq!(carry.push(&[b'a', euro[0]]), "a");
        assert_eq!(carry.push(&euro[1..]), "€");
        assert_eq!(carry.push(&[0xff, b'b']), "\u{fffd}b");
    }
}
