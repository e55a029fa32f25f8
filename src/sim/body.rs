//! The HTTP body type of every simulator answer: whole or streamed (watch).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use tokio_util::sync::CancellationToken;

/// A body that can fail: hyper then drops the connection without ending
/// the chunked encoding, which is how a streamed answer is cut.
pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A body fed chunk by chunk from a bounded channel. It ends cleanly when
/// the sender is dropped, and fails at once when `cut` fires, whatever is
/// still queued: the client sees its connection drop mid-stream.
pub fn streamed(receiver: tokio::sync::mpsc::Receiver<Bytes>, cut: CancellationToken) -> Body {
    let stream = futures::stream::unfold(Some((receiver, cut)), |state| async move {
        let (mut receiver, cut) = state?;
        tokio::select! {
            biased;
            _ = cut.cancelled() => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "stream cut (fault injection)",
                )),
                None,
            )),
            chunk = receiver.recv() => {
                let chunk = chunk?;
                Some((Ok(Frame::data(chunk)), Some((receiver, cut))))
            }
        }
    });
    StreamBody::new(stream).boxed()
}
