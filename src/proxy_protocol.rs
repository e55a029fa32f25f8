//! The PROXY protocol (HAProxy's v1 text and v2 binary headers) on the SSH
//! listener: the real client address behind a load balancer or proxy.
//!
//! A header is taken only from a configured trusted address
//! (`proxy_protocol.trusted`): from anywhere else it is refused, or a
//! client could claim any address and walk past `from`, `source-address`
//! and the per-source limits. From a trusted address a missing header is
//! refused when `proxy_protocol.required` (the default), so a proxy that
//! lost its `send-proxy` line fails loudly instead of turning every
//! client into the proxy.
//!
//! Parsing is the `ppp` crate's; this module only reads exactly the
//! header's bytes (never into the SSH stream behind it), bounds them in
//! size and time, and turns the result into the client's address.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The v2 header's fixed signature (HAProxy's proxy-protocol.txt §2.2).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes, its CRLF included (§2.1).
const V1_MAX: usize = 107;
/// The largest v2 address block and TLVs accepted (HAProxy sends well under
/// this; a larger one is an attack, not a proxy).
const V2_MAX_PAYLOAD: usize = 1024;
/// How long a trusted proxy may take to send its header.
const HEADER_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyProtocolConfig {
    /// Addresses and CIDR blocks of the proxies that send a PROXY header
    /// (v1 or v2); empty: the protocol is off and a header is refused.
    pub trusted: Vec<String>,
    /// Whether a connection from a trusted address must carry a header
    /// (default true). When false, one without a header keeps its own
    /// address; the bastion then waits up to 5 s for the client's first
    /// bytes, so clients that wait for the server's version line are slow.
    pub required: bool,
}

impl Default for ProxyProtocolConfig {
    fn default() -> Self {
        ProxyProtocolConfig {
            trusted: Vec::new(),
            required: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "a PROXY protocol header from {0}, which is not a trusted proxy (proxy_protocol.trusted)"
    )]
    Untrusted(IpAddr),
    #[error("no PROXY protocol header from the trusted proxy {0} (proxy_protocol.required)")]
    Missing(IpAddr),
    #[error("a malformed PROXY protocol header from {0}: {1}")]
    Malformed(IpAddr, String),
    #[error("the trusted proxy {0} sent no complete PROXY header within {1:?}")]
    Timeout(IpAddr, Duration),
    #[error("reading the PROXY header from {0}: {1}")]
    Io(IpAddr, std::io::Error),
}

impl ProxyProtocolConfig {
    /// Checks the trusted list (for `Config::parse`).
    pub fn validate(&self) -> Result<(), String> {
        for (i, entry) in self.trusted.iter().enumerate() {
            if entry.parse::<ipnet::IpNet>().is_err() && entry.parse::<IpAddr>().is_err() {
                return Err(format!(
                    "proxy_protocol.trusted[{i}]: {entry:?} is not an address or CIDR block"
                ));
            }
        }
        Ok(())
    }

    /// Whether `peer` is a proxy that sends (or may send) a header.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        crate::certificates::source_allowed(&self.trusted.join(","), peer)
    }
}

/// A client connection: the stream SSH runs on and the client's address
/// (the proxy's header's source, or the TCP peer).
pub struct Accepted {
    pub stream: GuardedStream,
    pub client: SocketAddr,
}

/// Reads the PROXY header where one is due and returns the stream and the
/// client's address; refuses a header from an untrusted peer (detected on
/// the stream's first bytes, without delaying the server's version line).
pub async fn accept(
    socket: TcpStream,
    peer: SocketAddr,
    config: &ProxyProtocolConfig,
) -> Result<Accepted, ProxyError> {
    if !config.trusts(peer.ip()) {
        return Ok(Accepted {
            stream: GuardedStream::new(socket, peer.ip(), true),
            client: peer,
        });
    }
    let mut socket = socket;
    let read = async {
        let mut first = [0u8; 1];
        let seen = socket.peek(&mut first).await?;
        match (seen, first[0]) {
            (0, _) => Ok(None),
            (_, b'P') => read_v1(&mut socket).await.map(Some),
            (_, b'\r') => read_v2(&mut socket).await.map(Some),
            _ => Ok(None),
        }
    };
    let header = tokio::time::timeout(HEADER_WAIT, read)
        .await
        .map_err(|_| ProxyError::Timeout(peer.ip(), HEADER_WAIT))?
        .map_err(|e| ProxyError::Io(peer.ip(), e))?;
    let client = match header {
        Some(bytes) => client_address(&bytes, peer)?,
        None if config.required => return Err(ProxyError::Missing(peer.ip())),
        None => peer,
    };
    Ok(Accepted {
        stream: GuardedStream::new(socket, peer.ip(), false),
        client,
    })
}

/// A v1 header: byte by byte up to its CRLF, so nothing of SSH is read.
async fn read_v1(socket: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut header = Vec::with_capacity(V1_MAX);
    while !header.ends_with(b"\r\n") {
        if header.len() == V1_MAX {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "v1 header longer than 107 bytes",
            ));
        }
        header.push(socket.read_u8().await?);
    }
    Ok(header)
}

/// A v2 header: the 16 fixed bytes, then exactly the length they announce.
async fn read_v2(socket: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut header = vec![0u8; 16];
    socket.read_exact(&mut header).await?;
    let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
    if length > V2_MAX_PAYLOAD {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("v2 header announces {length} bytes (at most {V2_MAX_PAYLOAD})"),
        ));
    }
    header.resize(16 + length, 0);
    socket.read_exact(&mut header[16..]).await?;
    Ok(header)
}

/// The client's address from a complete header; `LOCAL` (v2) and
/// `UNKNOWN` (v1), which proxies send for their own health checks, keep
/// the peer's.
pub fn client_address(header: &[u8], peer: SocketAddr) -> Result<SocketAddr, ProxyError> {
    let malformed = |why: String| ProxyError::Malformed(peer.ip(), why);
    if header.starts_with(V2_SIGNATURE) {
        let header = ppp::v2::Header::try_from(header).map_err(|e| malformed(e.to_string()))?;
        if header.command == ppp::v2::Command::Local {
            return Ok(peer);
        }
        return match header.addresses {
            ppp::v2::Addresses::IPv4(a) => Ok(SocketAddr::from((a.source_address, a.source_port))),
            ppp::v2::Addresses::IPv6(a) => Ok(SocketAddr::from((a.source_address, a.source_port))),
            ppp::v2::Addresses::Unspecified => Ok(peer),
            ppp::v2::Addresses::Unix(_) => Err(malformed("a UNIX socket address".into())),
        };
    }
    let header = ppp::v1::Header::try_from(header).map_err(|e| malformed(e.to_string()))?;
    match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => Ok(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Tcp6(a) => Ok(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Unknown => Ok(peer),
    }
}

/// The TCP stream SSH runs on. From an untrusted peer, it watches the
/// first bytes the client sends and fails the connection if they are a
/// PROXY header (v1 `PROXY ` or the v2 signature): such a header would
/// otherwise be skipped or misread, and it means someone tries to choose
/// their own address.
pub struct GuardedStream {
    inner: TcpStream,
    peer: IpAddr,
    /// The client's first bytes, while they may still begin a header.
    first: Option<Vec<u8>>,
}

impl GuardedStream {
    fn new(inner: TcpStream, peer: IpAddr, guard: bool) -> Self {
        GuardedStream {
            inner,
            peer,
            first: guard.then(Vec::new),
        }
    }

    /// Adds newly read bytes to the watched prefix; an error if it is a
    /// PROXY header, and stops watching once it cannot become one.
    fn watch(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let Some(first) = self.first.as_mut() else {
            return Ok(());
        };
        let wanted = V2_SIGNATURE.len().saturating_sub(first.len());
        first.extend_from_slice(&bytes[..bytes.len().min(wanted)]);
        let v1 = b"PROXY ";
        let could_be = |prefix: &[u8]| {
            let n = first.len().min(prefix.len());
            first[..n] == prefix[..n]
        };
        let is_v1 = first.len() >= v1.len() && first.starts_with(v1);
        let is_v2 = first.len() >= V2_SIGNATURE.len() && first.starts_with(V2_SIGNATURE);
        if is_v1 || is_v2 {
            let error = ProxyError::Untrusted(self.peer);
            tracing::info!(peer = %self.peer, "connection refused: {error}");
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                error.to_string(),
            ));
        }
        if !could_be(v1) && !could_be(V2_SIGNATURE) {
            self.first = None;
        }
        Ok(())
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && self.first.is_some()
        {
            let fresh = buf.filled()[before..].to_vec();
            if let Err(error) = self.watch(&fresh) {
                return Poll::Ready(Err(error));
            }
        }
        polled
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_headers_give_the_client_address() {
        let peer: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 2222\r\n";
        assert_eq!(
            client_address(v1, peer).unwrap(),
            "192.0.2.7:51000".parse().unwrap()
        );
        let v1 = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 2222\r\n";
        assert_eq!(
            client_address(v1, peer).unwrap(),
            "[2001:db8::7]:51000".parse().unwrap()
        );
        assert_eq!(client_address(b"PROXY UNKNOWN\r\n", peer).unwrap(), peer);
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend([
            0x21, 0x11, 0, 12, 192, 0, 2, 8, 10, 0, 0, 1, 0xc7, 0x38, 0x08, 0xae,
        ]);
        assert_eq!(
            client_address(&v2, peer).unwrap(),
            "192.0.2.8:51000".parse().unwrap()
        );
        // LOCAL (a proxy's own health check) keeps the peer.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(client_address(&local, peer).unwrap(), peer);
        assert!(client_address(b"PROXY TCP4 nonsense\r\n", peer).is_err());
    }
}
