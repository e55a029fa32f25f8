//! TEMPORARY
pub fn accept_direct(
    _r: http::Request<hyper::body::Incoming>,
    _p: String,
    _u: String,
) -> Result<http::Response<super::body::Body>, super::status::ApiError> {
    Err(super::status::ApiError::bad_request("spdy"))
}
pub async fn serve_tunnelled<S>(
    _ws: tokio_tungstenite::WebSocketStream<S>,
    _p: String,
    _u: String,
) {
}
