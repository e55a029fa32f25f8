//! Receive windows granted as the application consumes data (kbastion's
//! patch; see `PATCH.md` at the crate's root).
//!
//! Upstream russh grants window when CHANNEL_DATA arrives, so a peer may
//! always send more than the application has taken. With
//! `server::Config::window_on_consumption`, a channel's window shrinks as
//! data arrives and grows only by what the application releases
//! (`ChannelReadHalf::window_releaser`), so what waits for one channel is
//! bounded by that channel's window.

use std::sync::Arc;

/// One channel's receive window, as this side accounts for it.
///
/// Invariant: `open + released + held == max`, where `held` is what was
/// received and not yet released by the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumptionWindow {
    /// What the peer may still send.
    open: u32,
    /// Released by the application, not yet granted to the peer.
    released: u32,
    /// The window's size: never more than this is open, released or held.
    max: u32,
    /// The largest packet the peer may send (for when to grant).
    max_packet: u32,
}

/// The peer sent more than its window (RFC 4254, section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowExceeded;

impl ConsumptionWindow {
    pub(crate) fn new(max: u32, max_packet: u32) -> Self {
        ConsumptionWindow {
            open: max,
            released: 0,
            max,
            max_packet,
        }
    }

    /// `bytes` arrived (data or extended data).
    pub(crate) fn receive(&mut self, bytes: usize) -> Result<(), WindowExceeded> {
        let bytes = u32::try_from(bytes).map_err(|_| WindowExceeded)?;
        self.open = self.open.checked_sub(bytes).ok_or(WindowExceeded)?;
        Ok(())
    }

    /// What received and not yet released.
    fn held(&self) -> u32 {
        self.max - self.open - self.released
    }

    /// The application took `bytes`: returns what to grant the peer now
    /// (one WINDOW_ADJUST), if anything. Releasing more than is held is
    /// capped, so the window never grows past its size. Grants follow
    /// OpenSSH's rule (`channel_check_window`): when more than three
    /// packets were released, or less than half the window is open.
    pub(crate) fn release(&mut self, bytes: usize) -> Option<u32> {
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.released += bytes.min(self.held());
        let due = self.released > self.max_packet.saturating_mul(3) || self.open < self.max / 2;
        if self.released == 0 || !due {
            return None;
        }
        let grant = std::mem::take(&mut self.released);
        self.open += grant;
        Some(grant)
    }

    /// The application makes the window `bytes` larger (up to `u32::MAX`):
    /// returns what to grant the peer now, the growth and whatever was
    /// released and not yet granted. A window starts at the configured
    /// size and grows only this way, so an application can start
    /// channels small and give room to those that carry data.
    pub(crate) fn grow(&mut self, bytes: usize) -> Option<u32> {
        let bytes = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .min(u32::MAX - self.max);
        self.max += bytes;
        let grant = bytes + std::mem::take(&mut self.released);
        self.open += grant;
        (grant > 0).then_some(grant)
    }
}

/// Hands consumed bytes back to a channel's window, and grows it, from
/// any task. The function takes (released, grown) bytes.
#[derive(Clone)]
pub struct WindowReleaser(pub(crate) Arc<dyn Fn(usize, usize) + Send + Sync>);

impl WindowReleaser {
    /// The application has taken (or deliberately dropped) `bytes` of
    /// this channel's data or extended data: the peer may send that much
    /// more.
    pub fn release(&self, bytes: usize) {
        if bytes > 0 {
            (self.0)(bytes, 0)
        }
    }

    /// Makes this channel's window `bytes` larger, granted to the peer at
    /// once (with any releases gathered so far).
    pub fn grow(&self, bytes: usize) {
        if bytes > 0 {
            (self.0)(0, bytes)
        }
    }
}

impl std::fmt::Debug for WindowReleaser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WindowReleaser")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 2 * 1024 * 1024;
    const PACKET: u32 = 32 * 1024;

    #[test]
    fn data_only_shrinks_the_window_and_past_it_is_an_error() {
        let mut window = ConsumptionWindow::new(MAX, PACKET);
        for _ in 0..(MAX / PACKET) {
            window.receive(PACKET as usize).unwrap();
        }
        assert_eq!(window.open, 0);
        assert_eq!(window.receive(1), Err(WindowExceeded));
        // Never below zero: the refused packet changed nothing.
        assert_eq!(window.open, 0);
        assert_eq!(window.held(), MAX);
    }

    #[test]
    fn releases_are_granted_in_batches_and_never_past_the_maximum() {
        let mut window = ConsumptionWindow::new(MAX, PACKET);
        window.receive(100).unwrap();
        // A small release with most of the window open waits.
        assert_eq!(window.release(100), None);
        window.receive(4 * PACKET as usize).unwrap();
        assert_eq!(window.release(4 * PACKET as usize), Some(4 * PACKET + 100));
        assert_eq!(window.open, MAX);
        // Releasing what was never received grants nothing.
        assert_eq!(window.release(1 << 20), None);
        assert_eq!(window.open + window.released, MAX);
        // Below half open, any release is granted at once.
        window.receive((MAX / 2 + 1) as usize).unwrap();
        assert_eq!(window.release(1), Some(1));
        assert_eq!(window.release(usize::MAX), Some(MAX / 2));
        assert_eq!(window.open, MAX);
    }

    #[test]
    fn a_window_grows_at_once_with_what_was_released() {
        let mut window = ConsumptionWindow::new(4 * PACKET, PACKET);
        window.receive(PACKET as usize).unwrap();
        assert_eq!(window.release(100), None);
        assert_eq!(window.grow(PACKET as usize), Some(PACKET + 100));
        assert_eq!(window.max, 5 * PACKET);
        assert_eq!(window.open, 4 * PACKET + 100);
        assert_eq!(window.held(), PACKET - 100);
        assert_eq!(window.grow(0), None);
        window.receive(4 * PACKET as usize + 100).unwrap();
        assert_eq!(window.receive(1), Err(WindowExceeded));
        assert_eq!(window.grow(usize::MAX), Some(u32::MAX - 5 * PACKET));
        assert_eq!(window.max, u32::MAX);
        assert_eq!(window.grow(1), None);
    }

    #[test]
    fn extended_data_counts_like_data() {
        // The caller passes both through `receive`; the window does not
        // know the difference, which is the point.
        let mut window = ConsumptionWindow::new(PACKET, PACKET);
        window.receive(PACKET as usize / 2).unwrap();
        window.receive(PACKET as usize / 2).unwrap();
        assert_eq!(window.receive(1), Err(WindowExceeded));
        assert_eq!(window.release(PACKET as usize), Some(PACKET));
    }
}
