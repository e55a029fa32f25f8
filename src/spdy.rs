//! SPDY/3.1 as Kubernetes uses it for exec, attach and port-forward
//! (moby/spdystream under client-go; SPDY draft 3.1): the frames and the
//! zlib-compressed header blocks. The kubectl door reads the frames of the
//! streams it relays (`kube_proxy::stream`); the simulator serves them
//! (`sim::spdy`).
//!
//! Only what Kubernetes uses is here: SYN_STREAM, SYN_REPLY, DATA (FIN),
//! RST_STREAM, HEADERS, PING and GOAWAY; SETTINGS and WINDOW_UPDATE are
//! read and ignored, as spdystream does (no flow control). No server push,
//! no priorities. The server replies to every client stream at once.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The SPDY/3 header-compression dictionary (draft 3 §2.6.10.1), 1423
/// bytes, byte-identical to spdystream's `headerDictionary` (sha256
/// 51d27341...7f02, checked in a test).
pub const DICTIONARY: &[u8] = include_bytes!("spdy_dictionary.bin");

const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// Larger frames are refused rather than allocated.
const MAX_FRAME: usize = 16 << 20;
/// Decompressed header blocks larger than this are refused.
const MAX_HEADER_BLOCK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is too large")]
    TooLarge(usize),
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    #[error("header compression: {0}")]
    Compression(String),
}

/// A header block: names (lowercase) and values (several joined by NUL).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings,
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
}

/// One direction's header (de)compression state: persistent for the
/// connection's lifetime, as SPDY requires.
pub struct HeaderCompressor(Compress);
pub struct HeaderDecompressor(Decompress);

impl Default for HeaderCompressor {
    fn default() -> Self {
        let mut compress = Compress::new(Compression::default(), true);
        compress
            .set_dictionary(DICTIONARY)
            .expect("a fresh zlib stream accepts a dictionary");
        HeaderCompressor(compress)
    }
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        HeaderDecompressor(Decompress::new(true))
    }
}

fn encode_block(headers: &Headers) -> Vec<u8> {
    let mut raw = Vec::new();
    raw.extend_from_slice(&(headers.0.len() as u32).to_be_bytes());
    for (name, value) in &headers.0 {
        raw.extend_from_slice(&(name.len() as u32).to_be_bytes());
        raw.extend_from_slice(name.to_ascii_lowercase().as_bytes());
        raw.extend_from_slice(&(value.len() as u32).to_be_bytes());
        raw.extend_from_slice(value.as_bytes());
    }
    raw
}

fn decode_block(raw: &[u8]) -> Result<Headers, SpdyError> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        let slice = raw
            .get(at..at + n)
            .ok_or(SpdyError::Malformed("header block truncated"))?;
        at += n;
        Ok(slice)
    };
    let u32_at = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = u32_at(take(4)?);
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let name_len = u32_at(take(4)?);
        let name = String::from_utf8_lossy(take(name_len)?).into_owned();
        let value_len = u32_at(take(4)?);
        let value = String::from_utf8_lossy(take(value_len)?).into_owned();
        headers.push((name, value));
    }
    Ok(Headers(headers))
}

impl HeaderCompressor {
    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let input = encode_block(headers);
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut consumed = 0usize;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(input.len() + 64);
            }
            let before = self.0.total_in();
            self.0
                .compress_vec(&input[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            consumed += (self.0.total_in() - before) as usize;
            // Done when all input is in and the flush had room to finish.
            if consumed == input.len() && out.capacity() - out.len() >= 64 {
                return Ok(out);
            }
        }
    }
}

impl HeaderDecompressor {
    pub fn decompress(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let mut out = Vec::with_capacity(compressed.len() * 4 + 256);
        let mut consumed = 0usize;
        while consumed < compressed.len() {
            if out.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::TooLarge(out.len()));
            }
            if out.capacity() - out.len() < 1024 {
                out.reserve(4096);
            }
            let before = self.0.total_in();
            let result =
                self.0
                    .decompress_vec(&compressed[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.0.total_in() - before) as usize;
            match result {
                Ok(Status::Ok | Status::BufError) => {}
                Ok(Status::StreamEnd) => break,
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| SpdyError::Compression(e.to_string()))?;
                }
                Err(e) => return Err(SpdyError::Compression(e.to_string())),
            }
        }
        // zlib may hold output back until asked once more.
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(4096);
            }
            let before = out.len();
            self.0
                .decompress_vec(&[], &mut out, FlushDecompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            if out.len() == before {
                break;
            }
        }
        decode_block(&out)
    }
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.push(flags);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(payload);
    frame
}

/// Serializes a frame, compressing its header block with `compressor`.
pub fn encode(frame: &Frame, compressor: &mut HeaderCompressor) -> Result<Vec<u8>, SpdyError> {
    let fin = |f: bool| if f { FLAG_FIN } else { 0 };
    Ok(match frame {
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            fin: f,
            headers,
        } => {
            let mut payload = Vec::new();
            payload.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            payload.extend_from_slice(&(associated_to & 0x7fff_ffff).to_be_bytes());
            payload.push((priority & 0x7) << 5);
            payload.push(0);
            payload.extend_from_slice(&compressor.compress(headers)?);
            control(TYPE_SYN_STREAM, fin(*f), &payload)
        }
        Frame::SynReply {
            stream_id,
            fin: f,
            headers,
        } => {
            let mut payload = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
            payload.extend_from_slice(&compressor.compress(headers)?);
            control(TYPE_SYN_REPLY, fin(*f), &payload)
        }
        Frame::Headers {
            stream_id,
            fin: f,
            headers,
        } => {
            let mut payload = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
            payload.extend_from_slice(&compressor.compress(headers)?);
            control(TYPE_HEADERS, fin(*f), &payload)
        }
        Frame::RstStream { stream_id, status } => control(
            TYPE_RST_STREAM,
            0,
            &[stream_id.to_be_bytes(), status.to_be_bytes()].concat(),
        ),
        Frame::Settings => control(TYPE_SETTINGS, 0, &0u32.to_be_bytes()),
        Frame::Ping { id } => control(TYPE_PING, 0, &id.to_be_bytes()),
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => control(
            TYPE_GOAWAY,
            0,
            &[last_good_stream_id.to_be_bytes(), status.to_be_bytes()].concat(),
        ),
        Frame::WindowUpdate { stream_id, delta } => control(
            TYPE_WINDOW_UPDATE,
            0,
            &[stream_id.to_be_bytes(), delta.to_be_bytes()].concat(),
        ),
        Frame::Data {
            stream_id,
            fin: f,
            data,
        } => {
            let mut out = Vec::with_capacity(8 + data.len());
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.push(fin(*f));
            out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(data);
            out
        }
    })
}

fn be32(b: &[u8], at: usize) -> Result<u32, SpdyError> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(SpdyError::Malformed("control frame too short"))
}

/// Reads one frame; None at a clean end of the connection.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    decompressor: &mut HeaderDecompressor,
) -> Result<Option<Frame>, SpdyError> {
    // The end of the stream is clean only between frames: a header cut
    // short is an error, as a payload cut short is.
    let mut head = [0u8; 8];
    if reader.read(&mut head[..1]).await? == 0 {
        return Ok(None);
    }
    reader.read_exact(&mut head[1..]).await?;
    let flags = head[4];
    let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if length > MAX_FRAME {
        return Err(SpdyError::TooLarge(length));
    }
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).await?;
    let fin = flags & FLAG_FIN != 0;
    if head[0] & 0x80 == 0 {
        let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        return Ok(Some(Frame::Data {
            stream_id,
            fin,
            data: Bytes::from(payload),
        }));
    }
    let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
    if version != VERSION {
        return Err(SpdyError::Version(version));
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    let p = &payload;
    Ok(Some(match kind {
        TYPE_SYN_STREAM => {
            let block = p
                .get(10..)
                .ok_or(SpdyError::Malformed("SYN_STREAM too short"))?;
            Frame::SynStream {
                stream_id: be32(p, 0)? & 0x7fff_ffff,
                associated_to: be32(p, 4)? & 0x7fff_ffff,
                priority: p[8] >> 5,
                fin,
                headers: decompressor.decompress(block)?,
            }
        }
        TYPE_SYN_REPLY => Frame::SynReply {
            stream_id: be32(p, 0)? & 0x7fff_ffff,
            fin,
            headers: decompressor.decompress(&p[4..])?,
        },
        TYPE_HEADERS => Frame::Headers {
            stream_id: be32(p, 0)? & 0x7fff_ffff,
            fin,
            headers: decompressor.decompress(&p[4..])?,
        },
        TYPE_RST_STREAM => Frame::RstStream {
            stream_id: be32(p, 0)? & 0x7fff_ffff,
            status: be32(p, 4)?,
        },
        TYPE_PING => Frame::Ping { id: be32(p, 0)? },
        TYPE_GOAWAY => Frame::GoAway {
            last_good_stream_id: be32(p, 0)? & 0x7fff_ffff,
            status: be32(p, 4).unwrap_or(0),
        },
        TYPE_WINDOW_UPDATE => Frame::WindowUpdate {
            stream_id: be32(p, 0)? & 0x7fff_ffff,
            delta: be32(p, 4)? & 0x7fff_ffff,
        },
        // SETTINGS and unknown control frames are ignored (spec §2.2.1).
        _ => Frame::Settings,
    }))
}
