//! HTTP bodies: the one body type wardgate handles, and bounded buffering of a body.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every request and response wardgate handles.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// Why a body could not be buffered.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("the body did not arrive within {0:?}")]
    Timeout(Duration),
    #[error("reading the body failed: {0}")]
    Failed(String),
}

/// Buffers a body up to `limit` bytes within `within`.
pub async fn collect(mut body: Body, limit: usize, within: Duration) -> Result<Bytes, BodyError> {
    let read = async {
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Failed(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(BodyError::TooLarge(limit));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(within, read)
        .await
        .map_err(|_| BodyError::Timeout(within))?
}
