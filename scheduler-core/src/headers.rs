//! Task headers: a small map of string metadata (tenant id, request id, trace context) that a
//! producer attaches to a task and its handler reads, kept across retries.
//!
//! In Redis, headers are the `headers` field of the task hash (a MessagePack map of strings,
//! stored in 64-byte pieces like `args`), present only when the task has headers: a task without
//! headers stores, sends and reads back nothing more than before.
//!
//! # Bounds
//!
//! At most [`MAX_HEADER_ENTRIES`] entries and [`MAX_HEADERS_BYTES`] bytes encoded; an enqueue over
//! either bound fails with [`Error::HeadersTooLarge`] before anything is sent. Headers are for
//! metadata; data belongs in the arguments.
//!
//! # Examples
//!
//! ```no_run
//! # use scheduler_core::{Client, TaskRequest};
//! # async fn demo(client: &Client) -> Result<(), scheduler_core::Error> {
//! let req = TaskRequest::new("send_reminder", "emails", &(42u64, "hi"))?
//!     .header("tenant", "42")
//!     .header("request_id", "r-7f3a");
//! let id = client.enqueue_request(req).await?;
//! assert_eq!(client.status(&id).await?.headers["tenant"], "42");
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// A task's headers: names to values, both strings, sorted by name.
pub type Headers = BTreeMap<String, String>;

/// Most entries one task's headers may have.
pub const MAX_HEADER_ENTRIES: usize = 64;

/// Most bytes one task's headers may take encoded (MessagePack): 8 KiB.
pub const MAX_HEADERS_BYTES: usize = 8 * 1024;

/// The headers as stored: MessagePack map, or empty bytes for no headers (nothing stored).
///
/// # Errors
///
/// [`Error::HeadersTooLarge`] over [`MAX_HEADER_ENTRIES`] or [`MAX_HEADERS_BYTES`];
/// [`Error::InvalidLimit`] for a malformed limit key ([`crate::limits::limit_header`]).
pub fn encode(h: &Headers) -> Result<Vec<u8>> {
    if h.is_empty() {
        return Ok(Vec::new());
    }
    // Limit keys (`sched.limit.<family>`, set by `limit_key`) are checked here, on every path
    // that stores headers.
    for (name, key) in h.range(crate::limits::LIMIT_HEADER_PREFIX.to_owned()..) {
        let Some(family) = name.strip_prefix(crate::limits::LIMIT_HEADER_PREFIX) else {
            break;
        };
        crate::limits::limit_header(family, key)?;
    }
    let bytes = rmp_serde::to_vec(h)?;
    if h.len() > MAX_HEADER_ENTRIES || bytes.len() > MAX_HEADERS_BYTES {
        return Err(Error::HeadersTooLarge {
            entries: h.len(),
            bytes: bytes.len(),
        });
    }
    Ok(bytes)
}

/// The headers stored as `bytes` by [`encode`]; empty bytes are no headers.
///
/// # Errors
///
/// [`Error::Decode`] when the bytes are not a MessagePack map of strings.
pub fn decode(bytes: &[u8]) -> Result<Headers> {
    if bytes.is_empty() {
        return Ok(Headers::new());
    }
    Ok(rmp_serde::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No headers encode to nothing; headers round-trip; both bounds are typed errors.
    #[test]
    fn encode_decode_and_bounds() {
        assert!(encode(&Headers::new()).unwrap().is_empty());
        assert!(decode(b"").unwrap().is_empty());
        let mut h = Headers::new();
        h.insert("tenant".into(), "42".into());
        h.insert(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        );
        assert_eq!(decode(&encode(&h).unwrap()).unwrap(), h);

        let many: Headers = (0..=MAX_HEADER_ENTRIES)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(matches!(
            encode(&many),
            Err(Error::HeadersTooLarge { entries: 65, .. })
        ));
        let mut big = Headers::new();
        big.insert("blob".into(), "x".repeat(MAX_HEADERS_BYTES));
        assert!(matches!(
            encode(&big),
            Err(Error::HeadersTooLarge { entries: 1, bytes }) if bytes > MAX_HEADERS_BYTES
        ));
        assert!(decode(b"\x01").is_err());
    }
}
