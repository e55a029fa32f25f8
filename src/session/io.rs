//! What a session needs from the way the person reached it, whatever it
//! is: an SSH channel today (`ssh::channel`), a WebSocket next. The
//! bridge and the services read `ClientInput` and write `ClientOutput`,
//! and never learn which transport they serve.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

/// A pseudo-terminal: its TERM and size (RFC 4254 §6.2).
#[derive(Debug, Clone)]
pub struct Pty {
    pub term: String,
    pub width: u32,
    pub height: u32,
}

/// Gives a client's transport back the room that handed-on input took
/// (SSH: the channel's window), so the client may send that much more.
pub type Credit = std::sync::Arc<dyn Fn(usize) + Send + Sync>;

/// A piece of client input. Dropping it tells the transport it was handed
/// on (or dropped on purpose): a service drops it once the next hop's
/// bounded writer has taken it, so what waits for a target never exceeds
/// what the transport lets the client send ahead (SSH: one window).
pub struct Chunk {
    data: Bytes,
    credit: Option<Credit>,
}

impl Chunk {
    pub fn new(data: Bytes, credit: Option<Credit>) -> Chunk {
        Chunk { data, credit }
    }

    /// Input whose transport has no credit to give back.
    pub fn plain(data: impl Into<Bytes>) -> Chunk {
        Chunk::new(data.into(), None)
    }
}

impl std::ops::Deref for Chunk {
    type Target = Bytes;

    fn deref(&self) -> &Bytes {
        &self.data
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Some(credit) = &self.credit {
            credit(self.data.len());
        }
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.data.fmt(f)
    }
}

impl PartialEq for Chunk {
    fn eq(&self, other: &Chunk) -> bool {
        self.data == other.data
    }
}

impl Eq for Chunk {}

/// A chunk read as a byte source (SFTP, scp): credit is given back as the
/// protocol reader takes the bytes.
impl bytes::Buf for Chunk {
    fn remaining(&self) -> usize {
        self.data.remaining()
    }

    fn chunk(&self) -> &[u8] {
        self.data.chunk()
    }

    fn advance(&mut self, count: usize) {
        self.data.advance(count);
        if let Some(credit) = &self.credit {
            credit(count);
        }
    }
}

/// What the client sends, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientEvent {
    Data(Chunk),
    /// End of input (the client will send no more data).
    Eof,
    /// The client's terminal has a new size (columns, rows).
    Resize {
        cols: u32,
        rows: u32,
    },
    /// The client has left; nothing more will come.
    Gone,
}

/// Completes when the client has left (see `ClientInput::departed`).
pub type Departure = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The client's side of a session, read by one task.
pub trait ClientInput: Send {
    /// The next event; `Gone` once the client has left, and after.
    fn next(&mut self) -> impl Future<Output = ClientEvent> + Send;

    /// Completes when the client has left, even while input it sent
    /// still waits, unread, ahead of its `Gone` (a target that does not
    /// read holds the client's input back, not its departure). A
    /// transport that cannot tell never completes it.
    fn departed(&self) -> Departure {
        Box::pin(std::future::pending())
    }
}

/// A writer for one of the client's output streams.
pub type Writer = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// Where a session's output goes. Writers wait for the client (an SSH
/// window, a WebSocket's send buffer): a client that stops reading stops
/// the session's output, never grows memory.
pub trait ClientOutput: Send + Sync {
    fn stdout(&self) -> Writer;
    /// Where a separate stderr goes (with a terminal, stderr is merged
    /// into stdout by the target).
    fn stderr(&self) -> Writer;
    /// One line from the bastion to the person, where the client shows
    /// it (SSH: stderr). `tty`: the client's terminal is in raw mode.
    fn tell(&self, line: &str, tty: bool) -> impl Future<Output = ()> + Send;
    /// Ends the session with an exit status, in the order clients expect.
    fn finish(&self, code: u32) -> impl Future<Output = ()> + Send;
    /// Ends the session without an exit status.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// A line as the client shows it: prefixed `kbastion: `, ending in CRLF on
/// a terminal (in raw mode) and in LF otherwise.
pub fn message_bytes(message: &str, tty: bool) -> Vec<u8> {
    let text = format!("kbastion: {message}\n");
    if tty {
        text.replace('\n', "\r\n").into_bytes()
    } else {
        text.into_bytes()
    }
}

/// Tells the person why, and ends the session with exit status 1.
pub async fn refuse(output: &impl ClientOutput, message: &str, tty: bool) {
    output.tell(message, tty).await;
    output.finish(1).await;
}

/// The client's data as a byte stream, for services that speak a protocol
/// of their own over it (SFTP, legacy scp): end of input and departure
/// both end the stream; size changes are not data.
pub fn reader<I: ClientInput + 'static>(input: I) -> impl AsyncRead + Send + Unpin {
    let events = futures::stream::unfold(input, |mut input| async move {
        loop {
            match input.next().await {
                ClientEvent::Data(chunk) => return Some((Ok::<_, std::io::Error>(chunk), input)),
                ClientEvent::Resize { .. } => continue,
                ClientEvent::Eof | ClientEvent::Gone => return None,
            }
        }
    });
    // Fused: a reader read again after its end reads the end again (a
    // stream promises nothing once it has ended).
    let events: Pin<Box<dyn futures::Stream<Item = std::io::Result<Chunk>> + Send>> =
        Box::pin(futures::StreamExt::fuse(events));
    tokio_util::io::StreamReader::new(events)
}

/// Runs `work` while reading and dropping what the client still sends:
/// each dropped chunk gives its room back, so a client still sending is
/// not left with a shut window, and its close (which the writes that end
/// this session wait behind) is seen.
pub async fn while_draining<T>(input: &mut impl ClientInput, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    let mut gone = false;
    loop {
        tokio::select! {
            output = &mut work => return output,
            event = input.next(), if !gone => gone = event == ClientEvent::Gone,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that sends two chunks, a size change, then its end.
    struct Script(Vec<ClientEvent>);

    impl ClientInput for Script {
        async fn next(&mut self) -> ClientEvent {
            if self.0.is_empty() {
                ClientEvent::Gone
            } else {
                self.0.remove(0)
            }
        }
    }

    #[tokio::test]
    async fn the_byte_stream_is_the_data_without_size_changes_and_ends_at_eof() {
        use tokio::io::AsyncReadExt;
        let mut reader = reader(Script(vec![
            ClientEvent::Data(Chunk::plain(Bytes::from_static(b"ab"))),
            ClientEvent::Resize { cols: 80, rows: 24 },
            ClientEvent::Data(Chunk::plain(Bytes::from_static(b"c"))),
            ClientEvent::Eof,
        ]));
        let mut all = Vec::new();
        reader.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"abc");
        assert_eq!(reader.read(&mut [0u8; 4]).await.unwrap(), 0);
        assert!(reader.read_u32().await.is_err());
    }

    #[test]
    fn lines_end_as_the_terminal_expects() {
        assert_eq!(message_bytes("a\nb", false), b"kbastion: a\nb\n");
        assert_eq!(message_bytes("a\nb", true), b"kbastion: a\r\nb\r\n");
    }
}
