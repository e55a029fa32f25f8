//! The simulator's side of SPDY/3.1 for exec and port-forward: a
//! server-side connection that hands out the client's streams, on the
//! frames of `crate::spdy`.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::spdy::*;

/// DATA frames the server writes carry at most this much.
const MAX_DATA_CHUNK: usize = 64 * 1024;

/// What the connection's writer task is asked to do.
enum Command {
    Frame(Frame),
    Shutdown,
}

/// A client-initiated stream, already answered with SYN_REPLY.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// Data until the client's FIN or RST_STREAM.
    pub data: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

/// Writes to one stream. Cloneable; frames of a connection go out in order.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    commands: mpsc::Sender<Command>,
}

impl StreamWriter {
    /// Sends data, split into DATA frames. Err when the connection is gone.
    pub async fn write(&self, data: &[u8]) -> Result<(), SpdyError> {
        for chunk in data.chunks(MAX_DATA_CHUNK) {
            self.send(Frame::Data {
                stream_id: self.id,
                fin: false,
                data: Bytes::copy_from_slice(chunk),
            })
            .await?;
        }
        Ok(())
    }

    /// Half-closes the stream (empty DATA with FIN).
    pub async fn close(&self) -> Result<(), SpdyError> {
        self.send(Frame::Data {
            stream_id: self.id,
            fin: true,
            data: Bytes::new(),
        })
        .await
    }

    /// Resolves when the connection can no longer carry anything: the
    /// peer is gone or the connection was cut.
    pub async fn closed(&self) {
        self.commands.closed().await
    }

    async fn send(&self, frame: Frame) -> Result<(), SpdyError> {
        self.commands
            .send(Command::Frame(frame))
            .await
            .map_err(|_| {
                SpdyError::Io(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "SPDY connection closed",
                ))
            })
    }
}

/// The server side of a SPDY connection.
pub struct Connection {
    pub incoming: mpsc::Receiver<Stream>,
    commands: mpsc::Sender<Command>,
    reader: tokio::task::JoinHandle<Option<()>>,
}

impl Connection {
    /// Starts reading and writing frames on `io` until the peer leaves,
    /// `shutdown` is called, or `cut` fires (fault injection).
    pub fn serve<IO>(io: IO, cut: CancellationToken) -> Connection
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut read, mut write) = tokio::io::split(io);
        // Frames queued for the socket: a bounded queue is the only
        // backpressure SPDY as Kubernetes uses it has.
        let (commands, mut queue) = mpsc::channel::<Command>(64);
        let (incoming_tx, incoming) = mpsc::channel::<Stream>(16);
        // At a cut both tasks stop where they are and drop their half of
        // `io`: the peer sees the connection end, without GOAWAY.
        tokio::spawn(super::until_cut(cut.clone(), async move {
            let mut compressor = HeaderCompressor::default();
            while let Some(command) = queue.recv().await {
                let frame = match command {
                    Command::Frame(frame) => frame,
                    Command::Shutdown => {
                        let goaway = Frame::GoAway {
                            last_good_stream_id: 0,
                            status: 0,
                        };
                        if let Ok(bytes) = encode(&goaway, &mut compressor) {
                            let _ = write.write_all(&bytes).await;
                        }
                        let _ = write.flush().await;
                        let _ = write.shutdown().await;
                        return;
                    }
                };
                let Ok(bytes) = encode(&frame, &mut compressor) else {
                    return;
                };
                if write.write_all(&bytes).await.is_err() {
                    return;
                }
                if queue.is_empty() && write.flush().await.is_err() {
                    return;
                }
            }
        }));
        let replies = commands.clone();
        let reader = tokio::spawn(super::until_cut(cut, async move {
            let mut decompressor = HeaderDecompressor::default();
            let mut streams: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
            loop {
                let frame = match read_frame(&mut read, &mut decompressor).await {
                    Ok(Some(frame)) => {
                        tracing::trace!(?frame, "SPDY frame in");
                        frame
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::debug!(%error, "SPDY connection ended");
                        break;
                    }
                };
                match frame {
                    Frame::SynStream {
                        stream_id,
                        fin,
                        headers,
                        ..
                    } => {
                        let reply = Frame::SynReply {
                            stream_id,
                            fin: false,
                            headers: Headers::default(),
                        };
                        if replies.send(Command::Frame(reply)).await.is_err() {
                            break;
                        }
                        // 64 chunks buffered per stream before the reader waits.
                        let (data_tx, data) = mpsc::channel(64);
                        if !fin {
                            streams.insert(stream_id, data_tx);
                        }
                        let stream = Stream {
                            id: stream_id,
                            headers,
                            data,
                            writer: StreamWriter {
                                id: stream_id,
                                commands: replies.clone(),
                            },
                        };
                        if incoming_tx.send(stream).await.is_err() {
                            break;
                        }
                    }
                    Frame::Data {
                        stream_id,
                        fin,
                        data,
                    } => {
                        if let Some(sender) = streams.get(&stream_id)
                            && !data.is_empty()
                            && sender.send(data).await.is_err()
                        {
                            streams.remove(&stream_id);
                        }
                        if fin {
                            streams.remove(&stream_id);
                        }
                    }
                    Frame::Headers {
                        stream_id,
                        fin: true,
                        ..
                    }
                    | Frame::RstStream { stream_id, .. } => {
                        streams.remove(&stream_id);
                    }
                    // Echo the peer's pings (odd ids from a client).
                    Frame::Ping { id } if id % 2 == 1 => {
                        let _ = replies.send(Command::Frame(Frame::Ping { id })).await;
                    }
                    Frame::GoAway { .. } => break,
                    _ => {}
                }
            }
        }));
        Connection {
            incoming,
            commands,
            reader,
        }
    }

    /// Sends GOAWAY and closes the connection after what is queued.
    pub async fn shutdown(self) {
        let _ = self.commands.send(Command::Shutdown).await;
        self.reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options"));
        assert!(DICTIONARY.ends_with(b"enq=0."));
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[tokio::test]
    async fn frames_round_trip_with_persistent_compression() {
        let mut compressor = HeaderCompressor::default();
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                fin: true,
                headers: headers(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0"),
                ]),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 0,
                fin: false,
                headers: headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream_id: 3,
                fin: false,
                headers: Headers::default(),
            },
            Frame::Data {
                stream_id: 3,
                fin: false,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 3,
                fin: true,
                data: Bytes::new(),
            },
            Frame::Ping { id: 1 },
            Frame::RstStream {
                stream_id: 3,
                status: 5,
            },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 100,
            },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
        ];
        let mut wire = Vec::new();
        for frame in &frames {
            wire.extend(encode(frame, &mut compressor).unwrap());
        }
        let mut reader = &wire[..];
        let mut decompressor = HeaderDecompressor::default();
        for frame in &frames {
            assert_eq!(
                read_frame(&mut reader, &mut decompressor)
                    .await
                    .unwrap()
                    .as_ref(),
                Some(frame)
            );
        }
        assert_eq!(
            read_frame(&mut reader, &mut decompressor).await.unwrap(),
            None
        );
    }

    /// A SYN_STREAM header block made by an independent zlib (Python's,
    /// with the SPDY dictionary): `streamtype: stdout`, `port: 8080`,
    /// `requestid: 0`, as kubectl port-forward sends them.
    #[tokio::test]
    async fn decodes_a_header_block_from_another_implementation() {
        let block = hex(PYTHON_BLOCK);
        let mut payload = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        payload.extend(block);
        let mut frame = vec![0x80, 0x03, 0x00, 0x01, 0x00];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        frame.extend(payload);
        let mut decompressor = HeaderDecompressor::default();
        let parsed = read_frame(&mut &frame[..], &mut decompressor)
            .await
            .unwrap()
            .unwrap();
        let Frame::SynStream {
            stream_id: 1,
            headers,
            ..
        } = parsed
        else {
            panic!("{parsed:?}")
        };
        assert_eq!(headers.get("streamtype"), Some("stdout"));
        assert_eq!(headers.get("port"), Some("8080"));
        assert_eq!(headers.get("requestid"), Some("0"));
    }

    const PYTHON_BLOCK: &str = include_str!("spdy_python_block.hex");

    fn hex(text: &str) -> Vec<u8> {
        let text = text.trim();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        for seed in 0..200u32 {
            let junk: Vec<u8> = (0..(seed % 40))
                .map(|i| (i.wrapping_mul(seed).wrapping_add(0x80)) as u8)
                .collect();
            let mut decompressor = HeaderDecompressor::default();
            let mut reader = &junk[..];
            let mut last = read_frame(&mut reader, &mut decompressor).await;
            while let Ok(Some(_)) = last {
                last = read_frame(&mut reader, &mut decompressor).await;
            }
            // Nothing is a clean end; junk ends in an error (a frame cut
            // short, a bad version, a bad header block), never a clean end
            // that would drop what was cut.
            if junk.is_empty() {
                assert!(matches!(last, Ok(None)), "seed {seed}");
            } else {
                assert!(last.is_err(), "seed {seed}: {junk:?} read as a clean end");
            }
        }
    }

    #[tokio::test]
    async fn connection_replies_echoes_pings_and_carries_data() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut connection = Connection::serve(server, CancellationToken::new());
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let mut compressor = HeaderCompressor::default();
        let syn = Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            fin: false,
            headers: headers(&[("streamtype", "stdin")]),
        };
        client_write
            .write_all(&encode(&syn, &mut compressor).unwrap())
            .await
            .unwrap();
        client_write
            .write_all(&encode(&Frame::Ping { id: 1 }, &mut compressor).unwrap())
            .await
            .unwrap();
        let data = Frame::Data {
            stream_id: 1,
            fin: true,
            data: Bytes::from_static(b"abc"),
        };
        client_write
            .write_all(&encode(&data, &mut compressor).unwrap())
            .await
            .unwrap();
        let mut stream = connection.incoming.recv().await.unwrap();
        assert_eq!(stream.headers.get("streamtype"), Some("stdin"));
        assert_eq!(
            stream.data.recv().await.unwrap(),
            Bytes::from_static(b"abc")
        );
        assert_eq!(stream.data.recv().await, None);
        stream.writer.write(b"out").await.unwrap();
        stream.writer.close().await.unwrap();
        let mut decompressor = HeaderDecompressor::default();
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(
                read_frame(&mut client_read, &mut decompressor)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        assert!(matches!(seen[0], Frame::SynReply { stream_id: 1, .. }));
        assert!(seen.contains(&Frame::Ping { id: 1 }));
        assert!(seen.contains(&Frame::Data {
            stream_id: 1,
            fin: false,
            data: Bytes::from_static(b"out")
        }));
        assert!(seen.contains(&Frame::Data {
            stream_id: 1,
            fin: true,
            data: Bytes::new()
        }));
    }
}
