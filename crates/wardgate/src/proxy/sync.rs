//! The sync body of a citizens POST: read within its size and time limits, then validated before anything is forwarded.

use std::time::Duration;

use bytes::Bytes;
use http::header;
use http::{Method, Request};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::respond::ApiError;
use crate::snapshot::RowId;

/// Whether a citizens request may carry changes (so it counts against the writes quota).
pub(super) fn carries_body<B>(req: &Request<B>) -> bool {
    if req.method() != Method::POST {
        return false;
    }
    let len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match len {
        Some(n) => n > 2, // "[]" is a read
        None => req.headers().contains_key(header::TRANSFER_ENCODING),
    }
}

/// An absent, empty or `[]` body: the request is a read.
pub(super) fn is_read_body(body: &[u8]) -> bool {
    let t = body.trim_ascii();
    t.is_empty()
        || (t.first() == Some(&b'[')
            && t.last() == Some(&b']')
            && t[1..t.len() - 1].trim_ascii().is_empty())
}

/// Reads a sync body within the size and time limits.
pub(super) async fn read_sync_body(
    headers: &http::HeaderMap,
    mut body: Incoming,
    limit: u64,
    within: Duration,
) -> Result<Bytes, ApiError> {
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0u64;
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| ApiError::BadBody(format!("cannot read the body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                seen += data.len() as u64;
                if seen > limit {
                    // Keep reading (and discarding) a bounded amount, so the client finishes
                    // sending and reads the 413 instead of a broken pipe; past it, hang up.
                    if seen > limit.saturating_mul(4).max(DISCARD_AT_MOST) {
                        break;
                    }
                    continue;
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.saturating_mul(4).max(DISCARD_AT_MOST)) {
        return Err(ApiError::TooLarge { limit });
    }
    match tokio::time::timeout(within, read).await {
        Err(_) => Err(ApiError::BodyTimeout),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) if seen > limit => Err(ApiError::TooLarge { limit }),
        Ok(Ok(())) => Ok(buf.freeze()),
    }
}

/// Bytes of an oversized body read and discarded before answering 413 (see `read_sync_body`).
const DISCARD_AT_MOST: u64 = 16 << 20;

/// A sync body must be a JSON array of objects, each with a numeric `id`: the ids it writes.
pub(super) fn validate_sync_body(body: &[u8]) -> Result<Vec<RowId>, ApiError> {
    #[derive(serde::Deserialize)]
    struct Element {
        id: Option<serde_json::Value>,
    }
    let rows: Vec<Element> = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadBody(format!("must be a JSON array of citizen objects: {e}")))?;
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| {
            row.id
                .and_then(|id| serde_json::from_value::<RowId>(id).ok())
                .ok_or_else(|| ApiError::BadBody(format!("element {i} has no numeric `id`")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_bodies_are_recognized() {
        assert!(is_read_body(b""));
        assert!(is_read_body(b"[]"));
        assert!(is_read_body(b" [ \n ] "));
        assert!(!is_read_body(b"[{\"id\":1}]"));
    }

    #[test]
    fn sync_bodies_are_validated() {
        assert!(
            validate_sync_body(br#"[{"id":1,"voted":true},{"id":"2","mobile":"9876543210"}]"#)
                .is_ok()
        );
        for bad in [
            &b"{\"id\":1}"[..],
            b"[1,2]",
            b"[{\"voted\":true}]",
            b"[{\"id\":-1}]",
            b"[{\"id\":\"1 OR 1=1\"}]",
            b"not json",
        ] {
            assert!(
                matches!(validate_sync_body(bad), Err(ApiError::BadBody(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
