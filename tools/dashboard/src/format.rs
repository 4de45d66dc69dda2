//! How stored values look to people, shared by the dashboard and `schedctl` so that both show a
//! time, a span or a payload the same way: times as ISO-8601 UTC and "in 29 s" / "3 min ago",
//! spans in one coarse unit, MessagePack payloads as JSON or as text.
//!
//! ```
//! use scheduler_dashboard::format::{iso_utc, msgpack_json, relative, span, TIME_FIELDS};
//!
//! assert_eq!(iso_utc(1_772_366_429_123), "2026-03-01T12:00:29.123Z");
//! assert_eq!(span(90_000), "1 min");
//! assert_eq!(relative(31_000, 1_000), "in 30 s");
//! // [7, "hi"] as rmp-serde writes it.
//! assert_eq!(msgpack_json(b"\x92\x07\xa2hi"), Some(serde_json::json!([7, "hi"])));
//! assert_eq!(msgpack_json(b"\x92\x01"), None);
//! // Task hash fields shown as times.
//! assert!(TIME_FIELDS.contains(&"expires"));
//! ```

/// The fields of a task hash that hold times (unix ms, Redis clock), which both views show as
/// ISO-8601 UTC: `run_at`, `enqueued_at`, `expires`, `started_at`, `progress_at`, `finished_at`.
pub const TIME_FIELDS: [&str; 6] = [
    "run_at",
    "enqueued_at",
    "expires",
    "started_at",
    "progress_at",
    "finished_at",
];

use std::fmt::Write as _;

use serde_json::{json, Value as Json};

/// Unix ms as ISO-8601 UTC with milliseconds, e.g. `2026-03-01T12:00:29.123Z`; a time chrono
/// cannot represent as the number itself.
pub fn iso_utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    )
}

/// A span of milliseconds in one coarse unit: `450 ms`, `29 s`, `3 min`, `5 h`, `2 d`.
pub fn span(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{} s", ms / 1_000),
        60_000..3_600_000 => format!("{} min", ms / 60_000),
        3_600_000..172_800_000 => format!("{} h", ms / 3_600_000),
        _ => format!("{} d", ms / 86_400_000),
    }
}

/// `t_ms` relative to `now_ms` (both Unix ms): `in 29 s`, `3 min ago`, `now` (within a second).
pub fn relative(t_ms: i64, now_ms: i64) -> String {
    let d = t_ms - now_ms;
    if d.abs() < 1_000 {
        "now".to_owned()
    } else if d > 0 {
        format!("in {}", span(d.unsigned_abs()))
    } else {
        format!("{} ago", span(d.unsigned_abs()))
    }
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Decodes one complete MessagePack value; `None` when `bytes` is not exactly one value.
fn decode(bytes: &[u8]) -> Option<rmpv::Value> {
    let mut rest = bytes;
    let v = rmpv::decode::read_value(&mut rest).ok()?;
    rest.is_empty().then_some(v)
}

/// A MessagePack payload (arguments, a result) as JSON; `None` when the bytes are not exactly one
/// MessagePack value. Maps with text keys become objects, other maps arrays of `[key, value]`;
/// binary becomes an array of byte values; an extension `{"ext_type": n, "data_hex": "..."}`.
pub fn msgpack_json(bytes: &[u8]) -> Option<Json> {
    decode(bytes).map(|v| value_json(&v))
}

fn value_json(v: &rmpv::Value) -> Json {
    use rmpv::Value as V;
    match v {
        V::Nil => Json::Null,
        V::Boolean(b) => Json::Bool(*b),
        V::Integer(i) => i
            .as_i64()
            .map(Json::from)
            .or_else(|| i.as_u64().map(Json::from))
            .unwrap_or(Json::Null),
        V::F32(f) => json!(f),
        V::F64(f) => json!(f),
        V::String(s) => Json::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        V::Binary(b) => json!(b),
        V::Array(a) => Json::Array(a.iter().map(value_json).collect()),
        V::Map(m) if m.iter().all(|(k, _)| k.is_str()) => Json::Object(
            m.iter()
                .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), value_json(v)))
                .collect(),
        ),
        V::Map(m) => Json::Array(
            m.iter()
                .map(|(k, v)| json!([value_json(k), value_json(v)]))
                .collect(),
        ),
        V::Ext(t, data) => json!({ "ext_type": t, "data_hex": hex(data) }),
    }
}

/// A MessagePack payload for people on one line: `[6, "reminder 6"]`, `{"a": 1}`, `nil`. Bytes
/// that are not one MessagePack value are shown as `<n bytes, not MessagePack: hex>`.
pub fn msgpack_text(bytes: &[u8]) -> String {
    match decode(bytes) {
        Some(v) => value_text(&v),
        None => not_msgpack(bytes),
    }
}

/// What a payload that is not MessagePack looks like: `<2 bytes, not MessagePack: 9201>`.
pub fn not_msgpack(bytes: &[u8]) -> String {
    format!("<{} bytes, not MessagePack: {}>", bytes.len(), hex(bytes))
}

fn value_text(v: &rmpv::Value) -> String {
    use rmpv::Value as V;
    let list = |items: Vec<String>| items.join(", ");
    match v {
        V::Nil => "nil".to_owned(),
        V::Boolean(b) => b.to_string(),
        V::Integer(i) => i.to_string(),
        V::F32(f) => f.to_string(),
        V::F64(f) => f.to_string(),
        V::String(s) => match s.as_str() {
            Some(s) => format!("{s:?}"),
            None => format!("<invalid UTF-8: {}>", hex(s.as_bytes())),
        },
        V::Binary(b) => format!("<{} bytes: {}>", b.len(), hex(b)),
        V::Array(a) => format!("[{}]", list(a.iter().map(value_text).collect())),
        V::Map(m) => format!(
            "{{{}}}",
            list(
                m.iter()
                    .map(|(k, v)| format!("{}: {}", value_text(k), value_text(v)))
                    .collect()
            )
        ),
        V::Ext(t, data) => format!("<ext {t}: {}>", hex(data)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ISO-8601 conversion at known instants, including before 1970 and a leap day.
    #[test]
    fn iso_times() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_utc(1_795_707_417_342), "2026-11-26T15:36:57.342Z");
        assert_eq!(iso_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso_utc(-1), "1969-12-31T23:59:59.999Z");
    }

    /// Relative times pick one coarse unit and a direction.
    #[test]
    fn relative_times() {
        let now = 1_000_000_000;
        assert_eq!(relative(now + 29_500, now), "in 29 s");
        assert_eq!(relative(now - 180_000, now), "3 min ago");
        assert_eq!(relative(now + 300, now), "now");
        assert_eq!(relative(now - 7_200_000, now), "2 h ago");
        assert_eq!(relative(now + 3 * 86_400_000, now), "in 3 d");
        assert_eq!(span(450), "450 ms");
    }

    /// MessagePack as rmp-serde writes it, shown as text and JSON; garbage shown in hex.
    #[test]
    fn msgpack() {
        let args = b"\x92\x06\xaareminder 6";
        assert_eq!(msgpack_text(args), r#"[6, "reminder 6"]"#);
        assert_eq!(msgpack_json(args), Some(json!([6, "reminder 6"])));
        // {1: "a"}: a map whose key is not text becomes pairs.
        assert_eq!(msgpack_json(b"\x81\x01\xa1a"), Some(json!([[1, "a"]])));
        assert_eq!(
            msgpack_text(b"\x92\x01"),
            "<2 bytes, not MessagePack: 9201>"
        );
        assert_eq!(msgpack_json(b"\x92\x01"), None);
        assert_eq!(msgpack_text(b"\xc4\x02\xab\xcd"), "<2 bytes: abcd>");
    }
}
