//! An SSH session channel as the session layer sees a client
//! (`session::io`): its data, EOF, window changes and close in; stdout,
//! stderr (extended data 1), the bastion's lines on stderr, and
//! `exit-status`, EOF, close out.

use russh::server::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};

use crate::session::io::{
    Chunk, ClientEvent, ClientInput, ClientOutput, Credit, Departure, Writer, message_bytes,
};

/// What the client sends on a channel. Each chunk of data gives its room
/// back to the channel's window when the session has handed it on (the
/// patched russh grants window on consumption, see `russh/PATCH.md`), so
/// what waits for a slow target is bounded by one window and slows only
/// this channel's sender.
pub struct SshInput {
    channel: ChannelReadHalf,
    credit: Option<Credit>,
}

impl SshInput {
    /// `credit` is the channel's, from `ssh::window::WindowBudget::credit`.
    pub fn new(channel: ChannelReadHalf, credit: Option<Credit>) -> SshInput {
        SshInput { channel, credit }
    }
}

impl ClientInput for SshInput {
    fn departed(&self) -> Departure {
        match self.channel.closed_by_peer() {
            Some(closed) => Box::pin(closed),
            None => Box::pin(std::future::pending()),
        }
    }

    async fn next(&mut self) -> ClientEvent {
        loop {
            match self.channel.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    return ClientEvent::Data(Chunk::new(data, self.credit.clone()));
                }
                // Nothing reads a client's extended data: its room is
                // given back at once, or the window would leak shut.
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    drop(Chunk::new(data, self.credit.clone()));
                }
                Some(ChannelMsg::Eof) => return ClientEvent::Eof,
                Some(ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    ..
                }) => {
                    return ClientEvent::Resize {
                        cols: col_width,
                        rows: row_height,
                    };
                }
                Some(ChannelMsg::Close) | None => return ClientEvent::Gone,
                // Requests after the session started (a second exec, a
                // signal) change nothing.
                Some(_) => {}
            }
        }
    }
}

/// What the session sends on a session channel.
pub struct SshOutput(pub ChannelWriteHalf<Msg>);

impl ClientOutput for SshOutput {
    fn stdout(&self) -> Writer {
        Box::new(self.0.make_writer())
    }

    fn stderr(&self) -> Writer {
        Box::new(self.0.make_writer_ext(Some(1)))
    }

    async fn tell(&self, line: &str, tty: bool) {
        let _ = self
            .0
            .extended_data_bytes(1, message_bytes(line, tty))
            .await;
    }

    async fn finish(&self, code: u32) {
        let _ = self.0.exit_status(code).await;
        let _ = self.0.eof().await;
        let _ = self.0.close().await;
    }

    async fn close(&self) {
        let _ = self.0.eof().await;
        let _ = self.0.close().await;
    }
}
