//! The HTTP body type of every simulator answer: whole or streamed (watch).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;

pub type Body = BoxBody<Bytes, Infallible>;

pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A body fed chunk by chunk from a bounded channel; it ends when the
/// sender is dropped.
pub fn streamed(receiver: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), receiver))
    });
    StreamBody::new(stream).boxed()
}
