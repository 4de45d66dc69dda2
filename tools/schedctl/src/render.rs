//! Turning stored values into text for people and JSON for programs: times (ISO-8601 UTC plus
//! "in 29 s" / "3 min ago"), durations, MessagePack payloads, aligned tables.

use std::fmt::Write as _;

use serde_json::{json, Value as Json};

/// Unix ms as ISO-8601 UTC with milliseconds, e.g. `2026-03-01T12:00:29.123Z`.
pub(crate) fn iso_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A span of milliseconds in one coarse unit: `450 ms`, `29 s`, `3 min`, `5 h`, `2 d`.
pub(crate) fn human_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{} s", ms / 1_000),
        60_000..3_600_000 => format!("{} min", ms / 60_000),
        3_600_000..172_800_000 => format!("{} h", ms / 3_600_000),
        _ => format!("{} d", ms / 86_400_000),
    }
}

/// `t_ms` relative to `now_ms`: `in 29 s`, `3 min ago`, `now` (within a second).
pub(crate) fn relative(t_ms: i64, now_ms: i64) -> String {
    let d = t_ms - now_ms;
    if d.abs() < 1_000 {
        "now".to_owned()
    } else if d > 0 {
        format!("in {}", human_ms(d.unsigned_abs()))
    } else {
        format!("{} ago", human_ms(d.unsigned_abs()))
    }
}

/// `2026-03-01T12:00:29.123Z (in 29 s)`.
pub(crate) fn when(t_ms: i64, now_ms: i64) -> String {
    format!("{} ({})", iso_utc(t_ms), relative(t_ms, now_ms))
}

/// Parses a duration such as `60s`, `500ms`, `5m`, `5min`, `2h`, `1d`; a bare number is seconds.
pub(crate) fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 60s, 500ms, 5m, 2h, 1d)"))?;
    let per = match unit.trim() {
        "ms" => 1,
        "" | "s" | "sec" | "secs" => 1_000,
        "m" | "min" | "mins" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: use ms, s, m, h or d"
            ))
        }
    };
    n.checked_mul(per)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

/// Decodes one complete MessagePack value; `None` when `bytes` is not exactly one value.
fn decode(bytes: &[u8]) -> Option<rmpv::Value> {
    let mut rest = bytes;
    let v = rmpv::decode::read_value(&mut rest).ok()?;
    rest.is_empty().then_some(v)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A MessagePack payload for people: `[6, "reminder 6"]`, `{"a": 1}`, `nil`. Bytes that are not
/// one MessagePack value are shown in hex.
pub(crate) fn msgpack_text(bytes: &[u8]) -> String {
    match decode(bytes) {
        Some(v) => value_text(&v),
        None => format!("<{} bytes, not MessagePack: {}>", bytes.len(), hex(bytes)),
    }
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

/// A MessagePack payload as JSON. Maps with text keys become objects, other maps arrays of
/// `[key, value]`; binary becomes an array of byte values. Bytes that are not MessagePack become
/// `{"undecodable_hex": "..."}`.
pub(crate) fn msgpack_json(bytes: &[u8]) -> Json {
    match decode(bytes) {
        Some(v) => value_json(&v),
        None => json!({ "undecodable_hex": hex(bytes) }),
    }
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

/// A text table: a header row, then rows; columns separated by two spaces, numbers right-aligned.
#[derive(Debug)]
pub(crate) struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headers; a header ending in `>` marks a right-aligned column (the `>`
    /// is not printed).
    pub(crate) fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.trim_end_matches('>')).collect(),
            right: headers.iter().map(|h| h.ends_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let mut width: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let w = width.get(i).copied().unwrap_or(0);
                if self.right.get(i).copied().unwrap_or(false) {
                    let _ = write!(line, "{cell:>w$}");
                } else {
                    let _ = write!(line, "{cell:<w$}");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Key/value lines with the values aligned: `name         send_reminder`.
pub(crate) fn pairs(rows: &[(String, String)]) -> String {
    let w = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    rows.iter().fold(String::new(), |mut out, (k, v)| {
        let _ = writeln!(out, "{:<w$}  {v}", k);
        out
    })
}

/// The URL with any password replaced by `***`, for error messages.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None if !userinfo.is_empty() => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
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
    }

    /// Durations in the units an operator types.
    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(60_000));
        assert_eq!(parse_duration("60"), Ok(60_000));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }

    /// MessagePack as rmp-serde writes it, shown as text and JSON; garbage shown in hex.
    #[test]
    fn msgpack() {
        let args = b"\x92\x06\xaareminder 6";
        assert_eq!(msgpack_text(args), r#"[6, "reminder 6"]"#);
        assert_eq!(msgpack_json(args), json!([6, "reminder 6"]));
        let map = b"\x81\xa1a\xc3";
        assert_eq!(msgpack_text(map), r#"{"a": true}"#);
        assert_eq!(msgpack_json(map), json!({"a": true}));
        assert_eq!(msgpack_text(b"\xc0"), "nil");
        assert_eq!(
            msgpack_text(b"\x92\x06"),
            "<2 bytes, not MessagePack: 9206>"
        );
        // Two values where one is expected.
        assert_eq!(
            msgpack_json(b"\x06\x07"),
            json!({"undecodable_hex": "0607"})
        );
    }

    /// Passwords never reach an error message.
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("redis://u:secret@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert_eq!(redact_url("redis://:secret@h"), "redis://:***@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }

    /// Columns line up; `>` columns are right-aligned.
    #[test]
    fn tables() {
        let mut t = Table::new(&["QUEUE", "READY>"]);
        t.row(vec!["emails".into(), "12".into()]);
        t.row(vec!["q".into(), "3".into()]);
        assert_eq!(t.render(), "QUEUE   READY\nemails     12\nq           3\n");
    }
}
