//! Session recordings in asciicast v2 (a JSON header line, then
//! `[seconds, "o"|"i"|"r", data]` lines), written as the session goes so a
//! crash keeps what was seen, with mode 0600. `asciinema play` replays them.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

/// Events queued for the writer thread; a session whose recording falls
/// this far behind waits for the disk (nothing the user saw is dropped).
const QUEUE: usize = 1024;

enum Entry {
    Output(Vec<u8>),
    Input(Vec<u8>),
    Resize(u32, u32),
}

/// One session's recording. Cloneable; the file closes when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Recorder {
    sender: tokio::sync::mpsc::Sender<(f64, Entry)>,
    started: Instant,
    pub path: PathBuf,
    pub record_input: bool,
}

impl Recorder {
    pub fn create(
        dir: &Path,
        session: &str,
        width: u32,
        height: u32,
        term: &str,
        record_input: bool,
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
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<(f64, Entry)>(QUEUE);
        // A plain thread: file writes are blocking and must stay off the
        // async runtime.
        std::thread::spawn(move || {
            let mut writer = std::io::BufWriter::new(file);
            let mut output = Utf8Carry::default();
            let mut input = Utf8Carry::default();
            let mut write = |writer: &mut std::io::BufWriter<std::fs::File>,
                             (time, entry): (f64, Entry)| {
                let line = match entry {
                    Entry::Output(bytes) => json!([time, "o", output.push(&bytes)]),
                    Entry::Input(bytes) => json!([time, "i", input.push(&bytes)]),
                    Entry::Resize(w, h) => json!([time, "r", format!("{w}x{h}")]),
                };
                writeln!(writer, "{line}")
            };
            while let Some(entry) = receiver.blocking_recv() {
                let mut result = write(&mut writer, entry);
                // Write what else is queued, then flush once: incremental
                // on disk without a syscall per event under load.
                while let (Ok(()), Ok(entry)) = (&result, receiver.try_recv()) {
                    result = write(&mut writer, entry);
                }
                if result.is_err() || writer.flush().is_err() {
                    return;
                }
            }
        });
        Ok(Recorder {
            sender,
            started: Instant::now(),
            path,
            record_input,
        })
    }

    async fn send(&self, entry: Entry) {
        // A closed writer (a write error, logged) records nothing more.
        let _ = self
            .sender
            .send((self.started.elapsed().as_secs_f64(), entry))
            .await;
    }

    pub async fn output(&self, bytes: &[u8]) {
        self.send(Entry::Output(bytes.to_vec())).await;
    }

    pub async fn input(&self, bytes: &[u8]) {
        if self.record_input {
            self.send(Entry::Input(bytes.to_vec())).await;
        }
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.send(Entry::Resize(width, height)).await;
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
