//! Redis's own figures of a run: SLOWLOG by command (scripts by name), latency, memory.

use crate::*;

pub(crate) fn slowlog_max(r: &Redis) -> i64 {
    slowlog_top(r).0
}

/// `SLOWLOG` by command (scripts by name): entries, p50, p99 and max µs.
pub(crate) fn slowlog_by_command(r: &Redis) -> String {
    let Ok(redis::Value::Array(entries)) = r.cmd(&["SLOWLOG", "GET", "-1"]) else {
        return "{}".into();
    };
    let mut by: HashMap<String, Vec<i64>> = HashMap::new();
    for e in entries {
        let redis::Value::Array(f) = e else { continue };
        let (Some(redis::Value::Int(us)), Some(redis::Value::Array(a))) = (f.get(2), f.get(3))
        else {
            continue;
        };
        let word = |v: Option<&redis::Value>| match v {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        let cmd = word(a.first()).to_ascii_uppercase();
        let name = if cmd == "EVALSHA" {
            script_name(&word(a.get(1))).to_owned()
        } else {
            cmd
        };
        by.entry(name).or_default().push(*us);
    }
    let mut out: Vec<String> = by
        .iter_mut()
        .map(|(k, v)| {
            v.sort_unstable();
            format!(
                "\"{k}\":{{\"n\":{},\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
                v.len(),
                pct(v, 0.5),
                pct(v, 0.99),
                v.last().copied().unwrap_or(0)
            )
        })
        .collect();
    out.sort();
    format!("{{{}}}", out.join(","))
}

/// Entries in `SLOWLOG` (commands over its threshold since the last reset).
pub(crate) fn slowlog_len(r: &Redis) -> i64 {
    match r.cmd(&["SLOWLOG", "LEN"]) {
        Ok(redis::Value::Int(n)) => n,
        _ => -1,
    }
}

/// `used_memory` from `INFO memory`, bytes.
pub(crate) fn used_memory(r: &Redis) -> u64 {
    match r.cmd(&["INFO", "memory"]) {
        Ok(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b)
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
        Ok(redis::Value::VerbatimString { text, .. }) => text
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

/// `LATENCY LATEST`, read before Redis stops: (event, max ms) per event.
pub(crate) struct RedisFigures(pub(crate) Vec<(String, i64)>);

impl RedisFigures {
    pub(crate) fn read(r: &Redis) -> Self {
        let mut out = Vec::new();
        if let Ok(redis::Value::Array(events)) = r.cmd(&["LATENCY", "LATEST"]) {
            for e in events {
                if let redis::Value::Array(f) = e {
                    if let (Some(redis::Value::BulkString(name)), Some(redis::Value::Int(max))) =
                        (f.first(), f.get(3))
                    {
                        out.push((String::from_utf8_lossy(name).into_owned(), *max));
                    }
                }
            }
        }
        Self(out)
    }
}

/// The event with the highest `LATENCY LATEST` maximum: (event, ms); ("", 0) when none.
pub(crate) fn latency_top(f: &RedisFigures) -> (String, i64) {
    f.0.iter()
        .max_by_key(|e| e.1)
        .cloned()
        .unwrap_or((String::new(), 0))
}

/// The slowest command in `SLOWLOG` (threshold 10 ms by default): its duration in µs (0 when
/// none, -1 when unreadable) and its first two words.
pub(crate) fn slowlog_top(r: &Redis) -> (i64, String) {
    let Ok(redis::Value::Array(entries)) = r.cmd(&["SLOWLOG", "GET", "-1"]) else {
        return (-1, String::new());
    };
    let word = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(&b[..b.len().min(48)]).into_owned(),
        _ => String::new(),
    };
    entries
        .iter()
        .filter_map(|e| match e {
            redis::Value::Array(f) => match (f.get(2), f.get(3)) {
                (Some(redis::Value::Int(us)), Some(redis::Value::Array(a))) => Some((
                    *us,
                    a.iter().take(2).map(word).collect::<Vec<_>>().join(" "),
                )),
                _ => None,
            },
            _ => None,
        })
        .max_by_key(|x| x.0)
        .unwrap_or((0, String::new()))
}
