use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::BytesMut;
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::{SendError, TrySendError};

use super::WindowSizeRef;
use crate::ChannelMsg;
use crate::window::WindowReleaser;

/// A handle to the [`super::Channel`]'s to be able to transmit messages
/// to it and update it's `window_size`.
#[derive(Debug)]
pub struct ChannelRef {
    pub(super) sender: Sender<ChannelMsg>,
    pub(super) window_size: WindowSizeRef,
    /// Set on channels whose window is granted on consumption: messages
    /// that do not fit the channel's queue wait here instead of parking
    /// the session loop.
    pub(crate) inbox: Option<Inbox>,
}

impl ChannelRef {
    pub fn new(sender: Sender<ChannelMsg>) -> Self {
        Self {
            sender,
            window_size: WindowSizeRef::new(0),
            inbox: None,
        }
    }

    pub(crate) fn window_size(&self) -> &WindowSizeRef {
        &self.window_size
    }

    /// Sends to the channel's queue. With an inbox, this never waits for
    /// the application: what does not fit waits in the inbox, in order
    /// (data bounded by the channel's window, coalesced so that tiny
    /// packets do not become millions of messages).
    pub async fn send(&self, msg: ChannelMsg) -> Result<(), SendError<ChannelMsg>> {
        match &self.inbox {
            None => self.sender.send(msg).await,
            Some(inbox) => {
                if inbox.push(&self.sender, msg) {
                    // A peer flooding one channel with requests (data is
                    // bounded by the window) parks its own connection,
                    // as upstream does for every channel.
                    while let Ok(permit) = self.sender.reserve().await {
                        if !inbox.send_one(permit) {
                            break;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Like [`Sender::try_send`]: for messages that may be dropped when
    /// the queue is full (`WindowAdjusted`). With an inbox, such a message
    /// is dropped too while anything waits there (never stashed: a long
    /// download's adjustments would pile up behind a channel whose
    /// application reads nothing).
    pub fn try_send(&self, msg: ChannelMsg) -> Result<(), TrySendError<ChannelMsg>> {
        match &self.inbox {
            Some(inbox) if inbox.is_waiting() => Err(TrySendError::Full(msg)),
            _ => self.sender.try_send(msg),
        }
    }

    /// The peer closed the channel (its Close is queued behind data).
    pub(crate) fn peer_closed(&self) {
        if let Some(inbox) = &self.inbox {
            inbox.peer_closed();
        }
    }

    /// Moves what waits in the inbox to the channel's queue, as far as it
    /// has room. Returns whether anything still waits.
    pub(crate) fn flush_inbox(&self) -> bool {
        self.inbox
            .as_ref()
            .is_some_and(|inbox| inbox.flush(&self.sender))
    }
}

impl std::ops::Deref for ChannelRef {
    type Target = Sender<ChannelMsg>;

    fn deref(&self) -> &Self::Target {
        &self.sender
    }
}

/// Data is coalesced in the inbox up to this size per message.
const COALESCE: usize = 64 * 1024;

/// Past this many waiting messages, `send` waits for the application.
const MAX_WAITING: usize = 4096;

#[derive(Debug)]
enum Waiting {
    Data(BytesMut),
    ExtendedData(u32, BytesMut),
    Other(ChannelMsg),
}

impl Waiting {
    fn into_msg(self) -> ChannelMsg {
        match self {
            Waiting::Data(data) => ChannelMsg::Data {
                data: data.freeze(),
            },
            Waiting::ExtendedData(ext, data) => ChannelMsg::ExtendedData {
                data: data.freeze(),
                ext,
            },
            Waiting::Other(msg) => msg,
        }
    }
}

/// Messages for one channel that its queue had no room for.
pub(crate) struct Inbox {
    waiting: Mutex<VecDeque<Waiting>>,
    /// Set when the peer closes the channel; dropped with the session.
    /// The application learns of it at once, not after what waits ahead
    /// of the Close (see `ChannelReadHalf::closed_by_peer`).
    closed: tokio::sync::watch::Sender<bool>,
    /// Gives back the window of data dropped because the application
    /// dropped its end of the channel.
    releaser: WindowReleaser,
    /// The session's flag that some inbox holds messages.
    any_waiting: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").finish()
    }
}

fn data_len(msg: &ChannelMsg) -> usize {
    match msg {
        ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => data.len(),
        _ => 0,
    }
}

impl Inbox {
    pub(crate) fn new(
        releaser: WindowReleaser,
        any_waiting: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> (Self, tokio::sync::watch::Receiver<bool>) {
        let (closed, closed_rx) = tokio::sync::watch::channel(false);
        let inbox = Inbox {
            waiting: Mutex::new(VecDeque::new()),
            closed,
            releaser,
            any_waiting,
        };
        (inbox, closed_rx)
    }

    pub(crate) fn peer_closed(&self) {
        self.closed.send_replace(true);
    }

    fn is_waiting(&self) -> bool {
        !self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Queues `msg`; returns whether too many messages wait.
    fn push(&self, sender: &Sender<ChannelMsg>, msg: ChannelMsg) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.is_empty() {
            match sender.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Closed(msg)) => self.releaser.release(data_len(&msg)),
                Err(TrySendError::Full(msg)) => {
                    waiting.push_back(Waiting::Other(msg));
                    self.any_waiting
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
            return false;
        }
        match (waiting.back_mut(), msg) {
            (Some(Waiting::Data(tail)), ChannelMsg::Data { data }) if tail.len() < COALESCE => {
                tail.extend_from_slice(&data)
            }
            (Some(Waiting::ExtendedData(e, tail)), ChannelMsg::ExtendedData { data, ext })
                if *e == ext && tail.len() < COALESCE =>
            {
                tail.extend_from_slice(&data)
            }
            (_, ChannelMsg::Data { data }) => waiting.push_back(Waiting::Data(BytesMut::from(&data[..]))),
            (_, ChannelMsg::ExtendedData { data, ext }) => {
                waiting.push_back(Waiting::ExtendedData(ext, BytesMut::from(&data[..])))
            }
            (_, msg) => waiting.push_back(Waiting::Other(msg)),
        }
        waiting.len() > MAX_WAITING
    }

    /// Sends the oldest waiting message with `permit`; returns whether
    /// too many still wait.
    fn send_one(&self, permit: tokio::sync::mpsc::Permit<'_, ChannelMsg>) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(next) = waiting.pop_front() {
            permit.send(next.into_msg());
        }
        waiting.len() > MAX_WAITING
    }

    fn flush(&self, sender: &Sender<ChannelMsg>) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        // Only the session loop sends on this queue, so room seen here is
        // still there at `try_send`.
        while !waiting.is_empty() && (sender.capacity() > 0 || sender.is_closed()) {
            let Some(next) = waiting.pop_front() else {
                break;
            };
            if let Err(TrySendError::Closed(msg) | TrySendError::Full(msg)) =
                sender.try_send(next.into_msg())
            {
                self.releaser.release(data_len(&msg));
            }
        }
        !waiting.is_empty()
    }
}
