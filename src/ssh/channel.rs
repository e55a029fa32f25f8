//! An SSH session channel as the session layer sees a client
//! (`session::io`): its data, EOF, window changes and close in; stdout,
//! stderr (extended data 1), the bastion's lines on stderr, and
//! `exit-status`, EOF, close out.

use russh::server::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};

use crate::session::io::{ClientEvent, ClientInput, ClientOutput, Writer, message_bytes};

/// What the client sends on a session channel.
pub struct SshInput(pub ChannelReadHalf);

impl ClientInput for SshInput {
    async fn next(&mut self) -> ClientEvent {
        loop {
            match self.0.wait().await {
                Some(ChannelMsg::Data { data }) => return ClientEvent::Data(data),
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
                // signal) and extended data from the client change nothing.
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
