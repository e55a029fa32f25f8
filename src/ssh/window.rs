//! Every SSH channel's window, within one bastion-wide budget.
//!
//! A channel's window is the most of its client's input that can wait in
//! kbastion (the patched russh grants window as input is handed on,
//! `russh/PATCH.md`). Each channel starts with a small window
//! ([`INITIAL_WINDOW`]); as it carries data, its window grows by what it
//! hands on (doubling per window's worth) up to
//! `limits.channel_window_bytes`, while the sum of all windows stays within
//! `limits.bastion_window_bytes`. Past the budget no window grows, and a
//! grown window that carries data shrinks back towards the initial size
//! (what it hands on is not granted again) until the sum is within the
//! budget: senders slow down, no session ends. Idle channels (a shell
//! nobody types in) keep only the initial window.
//!
//! So what all clients together can make kbastion hold is at most the
//! budget, or the initial window per open channel where that is more.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::gauge::Gauge;
use russh::WindowReleaser;

use crate::session::io::Credit;

/// The window each channel starts with (one grant of four 32 KiB packets).
pub const INITIAL_WINDOW: u32 = 128 * 1024;

/// The sum of every channel's window on this replica, and its bound.
pub struct WindowBudget {
    /// What all windows together may grow to.
    budget: u64,
    /// What one channel's window may grow to.
    channel_max: u64,
    initial: u64,
    /// The sum of every open channel's window.
    total: Mutex<u64>,
    /// `total`, for `/metrics`.
    gauge: Gauge,
}

impl WindowBudget {
    pub fn new(budget: u64, channel_max: u32, gauge: Gauge) -> WindowBudget {
        WindowBudget {
            budget,
            channel_max: u64::from(channel_max),
            initial: u64::from(Self::initial(channel_max)),
            total: Mutex::new(0),
            gauge,
        }
    }

    /// The window a channel opens with (russh's `window_size`).
    pub fn initial(channel_max: u32) -> u32 {
        INITIAL_WINDOW.min(channel_max)
    }

    /// The sum of every open channel's window now.
    pub fn in_use(&self) -> u64 {
        *self.lock()
    }

    /// What gives `channel`'s window back as its input is handed on (none
    /// where russh grants it on arrival): the channel's initial window
    /// counts from now until this credit, and every chunk holding it, is
    /// dropped. Take it once per channel.
    pub fn credit(self: &Arc<Self>, channel: &russh::ChannelReadHalf) -> Option<Credit> {
        channel
            .window_releaser()
            .map(|releaser| self.channel(releaser))
    }

    fn channel(self: &Arc<Self>, releaser: WindowReleaser) -> Credit {
        self.change(|total| *total += self.initial);
        let window = ChannelWindow {
            budget: self.clone(),
            releaser,
            state: Mutex::new(ChannelState {
                size: self.initial,
                withheld: 0,
            }),
        };
        Arc::new(move |bytes| window.handed_on(bytes as u64))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.total.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn change<T>(&self, f: impl FnOnce(&mut u64) -> T) -> T {
        let mut total = self.lock();
        let out = f(&mut total);
        self.gauge.set(i64::try_from(*total).unwrap_or(i64::MAX));
        out
    }
}

/// One channel's share of the budget.
struct ChannelWindow {
    budget: Arc<WindowBudget>,
    releaser: WindowReleaser,
    state: Mutex<ChannelState>,
}

struct ChannelState {
    /// This channel's window as the budget counts it.
    size: u64,
    /// Handed-on bytes not given back to the client (the window shrank by
    /// them); given back first when it grows again.
    withheld: u64,
}

impl ChannelWindow {
    fn handed_on(&self, bytes: u64) {
        let budget = &self.budget;
        let (release, grow) = budget.change(|total| {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            plan(
                &mut state,
                total,
                bytes,
                budget.budget,
                budget.channel_max,
                budget.initial,
            )
        });
        self.releaser.release(release as usize);
        self.releaser.grow(grow as usize);
    }
}

impl Drop for ChannelWindow {
    fn drop(&mut self) {
        let size = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .size;
        self.budget
            .change(|total| *total = total.saturating_sub(size));
    }
}

/// What to give back (release) and add (grow) to a channel's window when
/// it has handed on `bytes`, changing its size and the total.
fn plan(
    state: &mut ChannelState,
    total: &mut u64,
    bytes: u64,
    budget: u64,
    channel_max: u64,
    initial: u64,
) -> (u64, u64) {
    if *total > budget {
        // Over the budget (channels opened with their initial windows):
        // a grown window shrinks by what it handed on.
        let shrink = bytes.min(state.size.saturating_sub(initial));
        state.size -= shrink;
        state.withheld += shrink;
        *total -= shrink;
        return (bytes - shrink, 0);
    }
    // Within it: the window grows by what it handed on, withheld bytes
    // first (they are still held as russh counts them).
    let growth = bytes
        .min(channel_max.saturating_sub(state.size))
        .min(budget - *total);
    state.size += growth;
    *total += growth;
    let regained = growth.min(state.withheld);
    state.withheld -= regained;
    (bytes + regained, growth - regained)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;

    fn state(size: u64) -> ChannelState {
        ChannelState { size, withheld: 0 }
    }

    #[test]
    fn a_window_doubles_per_window_handed_on_up_to_the_channel_maximum() {
        let mut channel = state(128 * KIB);
        let mut total = 128 * KIB;
        assert_eq!(
            plan(
                &mut channel,
                &mut total,
                128 * KIB,
                1 << 30,
                2048 * KIB,
                128 * KIB
            ),
            (128 * KIB, 128 * KIB)
        );
        assert_eq!((channel.size, total), (256 * KIB, 256 * KIB));
        for _ in 0..10 {
            plan(
                &mut channel,
                &mut total,
                1024 * KIB,
                1 << 30,
                2048 * KIB,
                128 * KIB,
            );
        }
        assert_eq!((channel.size, total), (2048 * KIB, 2048 * KIB));
        assert_eq!(
            plan(
                &mut channel,
                &mut total,
                64 * KIB,
                1 << 30,
                2048 * KIB,
                128 * KIB
            ),
            (64 * KIB, 0)
        );
    }

    #[test]
    fn no_window_grows_past_the_budget() {
        let mut channel = state(128 * KIB);
        let mut total = 900 * KIB;
        assert_eq!(
            plan(
                &mut channel,
                &mut total,
                512 * KIB,
                1000 * KIB,
                2048 * KIB,
                128 * KIB
            ),
            (512 * KIB, 100 * KIB)
        );
        assert_eq!((channel.size, total), (228 * KIB, 1000 * KIB));
        assert_eq!(
            plan(
                &mut channel,
                &mut total,
                512 * KIB,
                1000 * KIB,
                2048 * KIB,
                128 * KIB
            ),
            (512 * KIB, 0)
        );
    }

    #[test]
    fn over_the_budget_a_grown_window_shrinks_to_its_start_and_regains_later() {
        let mut channel = state(512 * KIB);
        let mut total = 1200 * KIB;
        // Hands on 300 KiB: none is given back, the window is 212 KiB.
        assert_eq!(
            plan(
                &mut channel,
                &mut total,
                300 * KIB,
                1000 * KIB,
                2048 * KIB,
                128 * KIB
            ),
            (0, 0)
        );
        assert_eq!(
            (channel.size, channel.withheld, total),
            (212 * KIB, 300 * KIB, 900 * KIB)
        );
        // Within the budget again: growth gives the withheld bytes first.
        assert_eq!(
            plan(
                &mut channel,
                &mut total,
                64 * KIB,
                1000 * KIB,
                2048 * KIB,
                128 * KIB
            ),
            (128 * KIB, 0)
        );
        assert_eq!(
            (channel.size, channel.withheld, total),
            (276 * KIB, 236 * KIB, 964 * KIB)
        );
        // Over again, it never shrinks below the initial window.
        total = 2000 * KIB;
        assert_eq!(
            plan(
                &mut channel,
                &mut total,
                1024 * KIB,
                1000 * KIB,
                2048 * KIB,
                128 * KIB
            ),
            (1024 * KIB - 148 * KIB, 0)
        );
        assert_eq!(channel.size, 128 * KIB);
    }
}
