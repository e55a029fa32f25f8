//! The web terminal's WebSocket messages: binary frames whose first byte
//! is the message type (the browser side is `assets/terminal.js`).
//!
//! Browser to kbastion: `0` input bytes; `1` resize, columns and rows as
//! big-endian u16; `2` ack, the big-endian u64 offset after the last output
//! byte the terminal has drawn; `3` keepalive.
//! kbastion to browser: `0` output, the big-endian u64 offset of its first
//! byte then the bytes (a byte stream: the browser decodes UTF-8 across
//! frames); `1` exit, the big-endian u32 status; `2` one line for the
//! user; `3` attached, the big-endian u16 seconds between kbastion's pings
//! then the id under which the page can reattach; `4` ping; `5` credit,
//! the big-endian u32 count of input bytes the page may send more (it
//! sends input only within the credit kbastion grants as the process
//! takes it, so kbastion always reads the socket: acknowledgements and
//! resizes never wait behind input a process does not read).

use bytes::{BufMut, Bytes, BytesMut};

/// The largest message a browser may send: far above a paste's chunk
/// (xterm sends a paste as one input message; browsers split nothing), and
/// small enough that a hostile page cannot make kbastion buffer much.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    Input(Bytes),
    Resize { cols: u16, rows: u16 },
    Ack(u64),
    Keepalive,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message too big ({0} bytes; the limit is 65536)")]
    TooBig(usize),
    #[error("malformed message (type {0})")]
    Malformed(u8),
    #[error("empty message")]
    Empty,
    #[error("text frames are not part of this protocol; send binary frames")]
    Text,
}

impl ClientMessage {
    pub fn decode(frame: Bytes) -> Result<ClientMessage, WireError> {
        if frame.len() > MAX_CLIENT_MESSAGE {
            return Err(WireError::TooBig(frame.len()));
        }
        let Some(&kind) = frame.first() else {
            return Err(WireError::Empty);
        };
        let body = frame.slice(1..);
        match (kind, body.len()) {
            (0, _) => Ok(ClientMessage::Input(body)),
            (1, 4) => Ok(ClientMessage::Resize {
                cols: u16::from_be_bytes([body[0], body[1]]),
                rows: u16::from_be_bytes([body[2], body[3]]),
            }),
            (2, 8) => {
                let mut offset = [0u8; 8];
                offset.copy_from_slice(&body);
                Ok(ClientMessage::Ack(u64::from_be_bytes(offset)))
            }
            (3, 0) => Ok(ClientMessage::Keepalive),
            (kind, _) => Err(WireError::Malformed(kind)),
        }
    }

    /// The frame a client sends (for Rust clients: tests and benchmarks).
    pub fn encode(&self) -> Bytes {
        let mut frame = BytesMut::new();
        match self {
            ClientMessage::Input(data) => {
                frame.put_u8(0);
                frame.put_slice(data);
            }
            ClientMessage::Resize { cols, rows } => {
                frame.put_u8(1);
                frame.put_u16(*cols);
                frame.put_u16(*rows);
            }
            ClientMessage::Ack(offset) => {
                frame.put_u8(2);
                frame.put_u64(*offset);
            }
            ClientMessage::Keepalive => frame.put_u8(3),
        }
        frame.freeze()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    Output { offset: u64, data: Bytes },
    Exit(u32),
    Message(String),
    Attached { id: String, keepalive_secs: u16 },
    Ping,
    Credit(u32),
}

impl ServerMessage {
    pub fn encode(&self) -> Bytes {
        let mut frame = BytesMut::new();
        match self {
            ServerMessage::Output { offset, data } => {
                frame.reserve(9 + data.len());
                frame.put_u8(0);
                frame.put_u64(*offset);
                frame.put_slice(data);
            }
            ServerMessage::Exit(code) => {
                frame.put_u8(1);
                frame.put_u32(*code);
            }
            ServerMessage::Message(line) => {
                frame.put_u8(2);
                frame.put_slice(line.as_bytes());
            }
            ServerMessage::Attached { id, keepalive_secs } => {
                frame.put_u8(3);
                frame.put_u16(*keepalive_secs);
                frame.put_slice(id.as_bytes());
            }
            ServerMessage::Ping => frame.put_u8(4),
            ServerMessage::Credit(bytes) => {
                frame.put_u8(5);
                frame.put_u32(*bytes);
            }
        }
        frame.freeze()
    }

    /// Reads a frame kbastion sent (for Rust clients: tests and benchmarks).
    pub fn decode(frame: Bytes) -> Result<ServerMessage, WireError> {
        let Some(&kind) = frame.first() else {
            return Err(WireError::Empty);
        };
        let body = frame.slice(1..);
        let text =
            |body: &Bytes| String::from_utf8(body.to_vec()).map_err(|_| WireError::Malformed(kind));
        match (kind, body.len()) {
            (0, n) if n >= 8 => {
                let mut offset = [0u8; 8];
                offset.copy_from_slice(&body[..8]);
                Ok(ServerMessage::Output {
                    offset: u64::from_be_bytes(offset),
                    data: body.slice(8..),
                })
            }
            (1, 4) => Ok(ServerMessage::Exit(u32::from_be_bytes([
                body[0], body[1], body[2], body[3],
            ]))),
            (2, _) => text(&body).map(ServerMessage::Message),
            (3, n) if n >= 2 => Ok(ServerMessage::Attached {
                keepalive_secs: u16::from_be_bytes([body[0], body[1]]),
                id: text(&body.slice(2..))?,
            }),
            (4, 0) => Ok(ServerMessage::Ping),
            (5, 4) => Ok(ServerMessage::Credit(u32::from_be_bytes([
                body[0], body[1], body[2], body[3],
            ]))),
            (kind, _) => Err(WireError::Malformed(kind)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for message in [
            ClientMessage::Input(Bytes::from_static("é漢🙂".as_bytes())),
            ClientMessage::Resize {
                cols: 132,
                rows: 43,
            },
            ClientMessage::Ack(1 << 40),
            ClientMessage::Keepalive,
        ] {
            assert_eq!(ClientMessage::decode(message.encode()), Ok(message));
        }
        for message in [
            ServerMessage::Output {
                offset: 7,
                data: Bytes::from_static(b"\xe6\xbc"),
            },
            ServerMessage::Exit(3),
            ServerMessage::Message("kbastion: no".into()),
            ServerMessage::Attached {
                id: "abc".into(),
                keepalive_secs: 30,
            },
            ServerMessage::Ping,
            ServerMessage::Credit(65536),
        ] {
            assert_eq!(ServerMessage::decode(message.encode()), Ok(message));
        }
    }

    #[test]
    fn bad_frames_are_named() {
        assert_eq!(
            ClientMessage::decode(Bytes::from(vec![0; MAX_CLIENT_MESSAGE + 1])),
            Err(WireError::TooBig(MAX_CLIENT_MESSAGE + 1))
        );
        assert_eq!(ClientMessage::decode(Bytes::new()), Err(WireError::Empty));
        assert_eq!(
            ClientMessage::decode(Bytes::from_static(&[1, 0, 80])),
            Err(WireError::Malformed(1))
        );
        assert_eq!(
            ClientMessage::decode(Bytes::from_static(&[9])),
            Err(WireError::Malformed(9))
        );
    }
}
