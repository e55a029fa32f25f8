//! A web terminal's output between the process and the page: a bounded
//! ring of the most recent bytes, numbered from the start of the session.
//!
//! The process writes into it (`ScreenWriter`, an `AsyncWrite`); the
//! attached page is sent bytes at most `WINDOW` past what it has
//! acknowledged as drawn, and the writer waits while the ring holds
//! `RING` bytes the page has not acknowledged. So a tab that cannot keep
//! up, or no tab at all, stalls the command rather than kbastion's
//! memory; and a page that comes back (a network blip, a reload) is sent
//! what it missed, or the whole ring, which is the screen's recent past.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::io::AsyncWrite;

/// Output kept per terminal for a returning page: a few full screens of a
/// busy program, and the whole memory cost of a stalled tab.
pub const RING: usize = 1024 * 1024;

/// Output sent ahead of the page's acknowledgement: enough to keep a fast
/// link busy (the page acknowledges every 64 KiB), a bound on what a slow
/// tab buffers. Smaller than `RING`, so unacknowledged output is always
/// still in the ring.
pub const WINDOW: u64 = 512 * 1024;

/// The largest output message sent at once.
const CHUNK: usize = 32 * 1024;

#[derive(Default)]
struct State {
    ring: VecDeque<u8>,
    /// Offset after the last byte written.
    end: u64,
    /// Offset after the last byte a page has drawn.
    acked: u64,
    /// The process's output ended.
    closed: bool,
    /// Writers waiting for room.
    writers: Vec<Waker>,
}

impl State {
    fn start(&self) -> u64 {
        self.end - self.ring.len() as u64
    }
}

pub struct Screen {
    state: Mutex<State>,
    /// Bumped whenever there is more to send (output, an ack, the end).
    changed: tokio::sync::watch::Sender<u64>,
}

/// What the attached page is sent next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Output {
        offset: u64,
        data: Bytes,
    },
    /// All output is sent and the process's output has ended.
    Closed,
}

impl Default for Screen {
    fn default() -> Self {
        Screen {
            state: Mutex::default(),
            changed: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Screen {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Where output for a page that has received everything before
    /// `offset` starts: there, if the ring still holds it, else at the
    /// ring's first whole UTF-8 character.
    pub fn resume_at(&self, offset: u64) -> u64 {
        let state = self.state();
        if offset >= state.start() && offset <= state.end {
            return offset;
        }
        // A character's continuation bytes are 0b10xxxxxx; at most three
        // follow its first byte.
        let skip = state
            .ring
            .iter()
            .take(3)
            .take_while(|b| (**b & 0xc0) == 0x80)
            .count();
        state.start() + skip as u64
    }

    /// The page has drawn everything before `offset`.
    pub fn ack(&self, offset: u64) {
        let writers = {
            let mut state = self.state();
            let offset = offset.min(state.end);
            if offset <= state.acked {
                return;
            }
            state.acked = offset;
            std::mem::take(&mut state.writers)
        };
        writers.into_iter().for_each(Waker::wake);
        self.bump();
    }

    /// Adds a line from the bastion (a notice, the reason for the end)
    /// without waiting for room: it must reach a page even when the ring
    /// is full of output no page has drawn, which then loses as many of
    /// its oldest bytes (a returning page starts afresh if it needed them).
    pub fn tell(&self, line: &[u8]) {
        {
            let mut state = self.state();
            let overflow = (state.ring.len() + line.len()).saturating_sub(RING);
            state.ring.drain(..overflow);
            state.ring.extend(line);
            state.end += line.len() as u64;
            let start = state.start();
            state.acked = state.acked.max(start);
        }
        self.bump();
    }

    /// The process's output has ended.
    pub fn close(&self) {
        self.state().closed = true;
        self.bump();
    }

    /// Waits for output to send from `sent` on, within the window.
    pub async fn next(&self, sent: u64) -> Next {
        let mut changed = self.changed.subscribe();
        loop {
            {
                let state = self.state();
                let from = sent.max(state.start());
                let limit = state.end.min(state.acked + WINDOW);
                if from < limit {
                    let skip = (from - state.start()) as usize;
                    let take = ((limit - from) as usize).min(CHUNK);
                    // Two memcpys at most (the ring's two halves), not a
                    // byte at a time.
                    let (front, back) = state.ring.as_slices();
                    let mut data = Vec::with_capacity(take);
                    let end = skip + take;
                    if skip < front.len() {
                        data.extend_from_slice(&front[skip..end.min(front.len())]);
                    }
                    if end > front.len() {
                        let from = skip.saturating_sub(front.len());
                        data.extend_from_slice(&back[from..end - front.len()]);
                    }
                    return Next::Output {
                        offset: from,
                        data: Bytes::from(data),
                    };
                }
                if state.closed && from >= state.end {
                    return Next::Closed;
                }
            }
            if changed.changed().await.is_err() {
                return Next::Closed;
            }
        }
    }

    /// The writer the process's output goes into.
    pub fn writer(self: &Arc<Self>) -> ScreenWriter {
        ScreenWriter(self.clone())
    }
}

/// The process's side of a `Screen`.
pub struct ScreenWriter(Arc<Screen>);

impl AsyncWrite for ScreenWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = {
            let mut state = self.0.state();
            let unacked = (state.end - state.acked) as usize;
            let room = RING.saturating_sub(unacked);
            if room == 0 {
                if !state.writers.iter().any(|w| w.will_wake(cx.waker())) {
                    state.writers.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            let n = room.min(buf.len());
            let overflow = (state.ring.len() + n).saturating_sub(RING);
            state.ring.drain(..overflow);
            state.ring.extend(&buf[..n]);
            state.end += n as u64;
            n
        };
        self.0.bump();
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn output_is_sent_within_the_window_and_the_writer_waits_for_acks() {
        let screen = Arc::new(Screen::default());
        let mut writer = screen.writer();
        writer.write_all(&vec![b'x'; RING]).await.unwrap();
        // The ring is full of unacknowledged output: the next write waits.
        let blocked =
            tokio::time::timeout(std::time::Duration::from_millis(50), writer.write_all(b"y"))
                .await;
        assert!(blocked.is_err());
        let mut sent = 0;
        while sent < WINDOW {
            match screen.next(sent).await {
                Next::Output { offset, data } => {
                    assert_eq!(offset, sent);
                    sent += data.len() as u64;
                }
                Next::Closed => panic!("not closed"),
            }
        }
        assert_eq!(sent, WINDOW);
        // Nothing past the window until the page acknowledges.
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), screen.next(sent)).await;
        assert!(waiting.is_err());
        screen.ack(1000);
        writer.write_all(b"y").await.unwrap();
        // The ring dropped the first byte for the new one: a page that has
        // nothing resumes at the ring's start, one that has more where it was.
        assert_eq!(screen.resume_at(0), 1);
        assert_eq!(screen.resume_at(WINDOW), WINDOW);
        screen.close();
        screen.ack(RING as u64 + 1);
        let mut last = None;
        while let Next::Output { offset, data } = screen.next(sent).await {
            sent = offset + data.len() as u64;
            last = data.last().copied();
        }
        assert_eq!((sent, last), (RING as u64 + 1, Some(b'y')));
    }

    #[tokio::test]
    async fn a_returning_page_resumes_on_a_character_boundary() {
        let screen = Arc::new(Screen::default());
        let mut writer = screen.writer();
        writer.write_all(&vec![b'a'; RING - 1]).await.unwrap();
        screen.ack(RING as u64 - 1);
        writer.write_all("漢x".as_bytes()).await.unwrap();
        // The ring dropped the first three bytes; "漢" begins at RING-1,
        // which is still held.
        assert_eq!(screen.resume_at(0), 3);
        assert_eq!(screen.resume_at(RING as u64 - 1), RING as u64 - 1);
        // Now the ring starts one byte into "漢": resume after it.
        screen.ack(RING as u64 + 3);
        writer.write_all(&vec![b'b'; RING - 3]).await.unwrap();
        assert_eq!(screen.resume_at(0), RING as u64 + 2);
    }
}
