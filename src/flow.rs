//! Flow control of client input, for every session kind that passes what
//! a client sends on to a target (exec sessions, forwarded connections).
//!
//! russh refills a channel's receive window when data arrives, not when it
//! is consumed, and a channel whose messages are not read parks the whole
//! connection: other channels, new channels, keepalives, rekeying (russh
//! PR #730, gating window adjustments on consumption, was closed unmerged).
//! So a channel is never left unread for long, and what waits for a
//! target is bounded per session, per connection and per person.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

/// Client input buffered beyond this makes the bastion pause reading the
/// session's channel, while the target is taking input and no output is
/// waiting for the client's window (see `Flow`).
const INPUT_SOFT_LIMIT: usize = 1024 * 1024;

/// A pause that sees the target take nothing for this long is given up:
/// the channel is drained again and the backlog bounds take over. A paused
/// channel parks russh's whole connection (its per-channel queue fills), so
/// a pause must never outlast a target that has stopped reading.
const STALL: Duration = Duration::from_millis(200);

/// Client input one session may hold that its target has not taken: past
/// it the session is ended (a backlog bound, not a pause).
const SESSION_BACKLOG: usize = 16 * 1024 * 1024;

/// The same bound for all sessions of one SSH connection.
pub const CONNECTION_BACKLOG: usize = 64 * 1024 * 1024;

/// The same bound for all sessions of one person, over all connections.
pub const PERSON_BACKLOG: usize = 128 * 1024 * 1024;

/// Bytes of client input waiting for targets, shared by the sessions of
/// one connection or of one person.
#[derive(Debug)]
pub struct Backlog {
    used: std::sync::atomic::AtomicUsize,
    limit: usize,
    /// Whose backlog it is, for the message that ends a session.
    owner: &'static str,
}

impl Backlog {
    pub fn new(limit: usize, owner: &'static str) -> Arc<Backlog> {
        Arc::new(Backlog {
            used: Default::default(),
            limit,
            owner,
        })
    }

    /// Takes room for `bytes`, or leaves everything as it was when there is
    /// none.
    fn take(&self, bytes: usize) -> bool {
        let before = self.used.fetch_add(bytes, SeqCst);
        if before + bytes > self.limit {
            self.used.fetch_sub(bytes, SeqCst);
            return false;
        }
        true
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, SeqCst);
    }
}

/// Flow control of one session's input.
///
/// russh refills a channel's receive window when data arrives, not when it
/// is consumed, and a channel whose messages are not read parks the whole
/// connection: other channels, new channels, keepalives. So the bridge
/// never stops draining the channel for long. Input waits here for the
/// target; while the target is taking it, reading pauses above the soft
/// limit (that is what slows an upload to the target's pace); when the
/// target takes nothing for `STALL`, the pause is given up until it takes
/// something again, and what piles up is bounded per session, per
/// connection and per person: past a bound only that session is ended.
///
/// The pause is also skipped while an output writer waits for the client's
/// window: the connection carries the client's window adjustments, and
/// waiting for one with reads paused would deadlock a session that streams
/// both ways (`cat` of a big file).
pub struct Flow {
    buffered: std::sync::atomic::AtomicUsize,
    /// Input the target has taken so far: progress, for the stall check.
    consumed: AtomicU64,
    output_waiting: std::sync::atomic::AtomicUsize,
    changed: tokio::sync::Notify,
    /// The `consumed` figure at which a pause was last given up: no pause
    /// again until the target has taken more.
    stalled_at: std::sync::Mutex<Option<u64>>,
    /// The connection's and the person's backlogs.
    shared: Vec<Arc<Backlog>>,
}

/// Why input could not be queued.
#[derive(Debug, thiserror::Error)]
#[error(
    "the session was ended: its target did not read the input sent to it and {held} MiB waited ({owner} limit {limit} MiB)"
)]
pub struct BacklogFull {
    held: usize,
    owner: &'static str,
    limit: usize,
}

impl Flow {
    pub fn new(shared: Vec<Arc<Backlog>>) -> Flow {
        Flow {
            buffered: Default::default(),
            consumed: Default::default(),
            output_waiting: Default::default(),
            changed: Default::default(),
            stalled_at: Default::default(),
            shared,
        }
    }

    fn must_pause(&self) -> bool {
        self.buffered.load(SeqCst) > INPUT_SOFT_LIMIT && self.output_waiting.load(SeqCst) == 0
    }

    /// Pauses while the target is taking input and the backlog is above
    /// the soft limit; gives up after `STALL` without progress.
    pub async fn wait_for_room(&self) {
        let stalled = *self.stalled_at.lock().unwrap_or_else(|p| p.into_inner());
        if stalled == Some(self.consumed.load(SeqCst)) {
            return;
        }
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self.must_pause() {
                return;
            }
            if tokio::time::timeout(STALL, changed).await.is_err() {
                *self.stalled_at.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(self.consumed.load(SeqCst));
                return;
            }
        }
    }

    /// Queues `bytes` of input within every bound, or says which is full.
    pub fn add(&self, bytes: usize) -> Result<(), BacklogFull> {
        let held = self.buffered.load(SeqCst) + bytes;
        let full = |owner, limit| BacklogFull {
            held: held >> 20,
            owner,
            limit: limit >> 20,
        };
        if held > SESSION_BACKLOG {
            return Err(full("session", SESSION_BACKLOG));
        }
        for (n, backlog) in self.shared.iter().enumerate() {
            if !backlog.take(bytes) {
                self.shared[..n].iter().for_each(|b| b.give_back(bytes));
                return Err(full(backlog.owner, backlog.limit));
            }
        }
        self.buffered.fetch_add(bytes, SeqCst);
        Ok(())
    }

    pub fn consumed(&self, bytes: usize) {
        self.buffered.fetch_sub(bytes, SeqCst);
        self.consumed.fetch_add(bytes as u64, SeqCst);
        self.shared.iter().for_each(|b| b.give_back(bytes));
        self.changed.notify_waiters();
    }

    pub fn set_output_waiting(&self, waiting: bool) {
        if waiting {
            self.output_waiting.fetch_add(1, SeqCst);
        } else {
            self.output_waiting.fetch_sub(1, SeqCst);
        }
        self.changed.notify_waiters();
    }
}

impl Drop for Flow {
    /// Input never taken (the session ended first) leaves the shared
    /// backlogs with the session.
    fn drop(&mut self) {
        let left = self.buffered.load(SeqCst);
        self.shared.iter().for_each(|b| b.give_back(left));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bound_ends_the_session_that_crosses_it_and_room_comes_back() {
        let connection = Backlog::new(3 << 20, "connection");
        let first = Flow::new(vec![connection.clone()]);
        let second = Flow::new(vec![connection.clone()]);
        first.add(2 << 20).expect("within every bound");
        let full = second.add(2 << 20).expect_err("the connection's bound");
        assert_eq!(full.owner, "connection");
        // Nothing was taken by the refused add.
        second
            .add(1 << 20)
            .expect("what is left of the connection's room");
        first.consumed(2 << 20);
        second.add(2 << 20).expect("room given back by the target");
        let full = Flow::new(vec![])
            .add(SESSION_BACKLOG + 1)
            .expect_err("the session's bound");
        assert_eq!(full.owner, "session");
        // A session that ends gives back what its target never took.
        drop(second);
        assert_eq!(connection.used.load(SeqCst), 0);
    }

    #[tokio::test]
    async fn a_pause_ends_when_the_target_takes_input_or_gives_up_when_it_stalls() {
        let flow = Arc::new(Flow::new(vec![]));
        flow.add(INPUT_SOFT_LIMIT + 1).unwrap();
        // The target takes some: the pause ends at once.
        let taker = {
            let flow = flow.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                flow.consumed(INPUT_SOFT_LIMIT);
            })
        };
        let started = std::time::Instant::now();
        flow.wait_for_room().await;
        assert!(started.elapsed() < STALL);
        taker.await.unwrap();
        // Above the soft limit with a target that takes nothing: given up
        // after STALL, and no pause at all until it takes something.
        flow.add(INPUT_SOFT_LIMIT).unwrap();
        let started = std::time::Instant::now();
        flow.wait_for_room().await;
        assert!(started.elapsed() >= STALL);
        let started = std::time::Instant::now();
        flow.wait_for_room().await;
        assert!(started.elapsed() < STALL / 2);
        // Output waiting for the client's window: never a pause.
        flow.consumed(1);
        flow.set_output_waiting(true);
        let started = std::time::Instant::now();
        flow.wait_for_room().await;
        assert!(started.elapsed() < STALL / 2);
    }
}
