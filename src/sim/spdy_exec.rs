//! TEMPORARY
use std::sync::Arc;
pub fn accept(
    _s: Arc<super::Sim>,
    _r: http::Request<hyper::body::Incoming>,
    _p: super::runtime::ProcessSpec,
    _n: String,
    _pod: String,
) -> Result<http::Response<super::body::Body>, super::status::ApiError> {
    Err(super::status::ApiError::bad_request("spdy"))
}
