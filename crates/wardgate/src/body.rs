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
    // Sized once when the length is announced: a ward's 4 MB grown by doubling would be
    // allocated, copied and faulted in twice over. A length past the limit is refused unread.
    let announced = http_body::Body::size_hint(&body).lower();
    let announced = match usize::try_from(announced) {
        Ok(n) if n <= limit => n,
        _ => return Err(BodyError::TooLarge(limit)),
    };
    let read = async {
        let mut buf = bytes::BytesMut::with_capacity(announced);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_announced_body_is_read_whole() {
        let bytes = Bytes::from(vec![b'x'; 100_000]);
        let got = collect(full(bytes.clone()), 1 << 20, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got, bytes);
    }

    #[tokio::test]
    async fn a_length_past_the_limit_is_refused_before_reading() {
        let got = collect(full(vec![0u8; 2048]), 1024, Duration::from_secs(5)).await;
        assert!(matches!(got, Err(BodyError::TooLarge(1024))), "{got:?}");
    }
}
