//! The task history archive's side in Redis (see `docs/storage.md`): the namespace setting
//! ([`crate::keys::Keys::archive`]), and reading the per-partition archive streams
//! ([`crate::keys::PartitionKeys::archive`]) that `ack.lua`, `retry.lua`, `reap.lua` and
//! `cancel.lua` append to while the archive is on, with `archive_done.lua` to forget what was
//! stored. The archiver itself (PostgreSQL) is `scheduler_worker::archive`.

use std::sync::atomic::Ordering;
use std::sync::LazyLock;

use redis::{Script, Value};

use super::script::script;
use super::{Partition, Store};
use crate::error::{Error, Result};

static ARCHIVE_DONE: LazyLock<Script> = script!("archive_done");

/// The consumer group of every archive stream.
pub const ARCHIVE_GROUP: &str = "archivers";

/// One finished attempt read from an archive stream: the fields `archive_entry` (lua/_prelude.lua)
/// writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArchiveEntry {
    /// Stream entry id (`<ms>-<seq>`): the order of finishing within the partition.
    pub entry_id: String,
    /// Task id.
    pub id: String,
    /// Task name.
    pub name: String,
    /// `succeeded`, `dead`, `cancelled` or `expired`.
    pub state: String,
    /// Attempt number (claims so far; 0 for a task cancelled before it ran).
    pub attempt: i64,
    /// Enqueue time (unix ms), when recorded.
    pub enqueued_at_ms: Option<i64>,
    /// Start of the last run (unix ms), when it ran.
    pub started_at_ms: Option<i64>,
    /// Finishing time (unix ms, Redis clock).
    pub finished_at_ms: i64,
    /// Worker that ran it, when known.
    pub worker: Option<String>,
    /// Error text (dead tasks).
    pub error: Option<String>,
    /// Result (MessagePack; empty for none).
    pub result: Vec<u8>,
    /// Arguments (MessagePack).
    pub args: Vec<u8>,
}

impl ArchiveEntry {
    /// Reads one `[id, [field, value, ...]]` stream entry; `None` for an entry trimmed from the
    /// stream while pending (its fields are nil).
    fn parse(v: Value) -> Result<Option<Self>> {
        let bad = |what: &str| Error::Protocol(format!("archive stream entry: {what}"));
        let Value::Array(mut parts) = v else {
            return Err(bad("not an array"));
        };
        if parts.len() != 2 {
            return Err(bad("not [id, fields]"));
        }
        let fields = parts.pop().unwrap_or(Value::Nil);
        let entry_id = text(parts.pop().unwrap_or(Value::Nil));
        let pairs: Vec<(Value, Value)> = match fields {
            Value::Nil => return Ok(None),
            Value::Array(a) => {
                let mut it = a.into_iter();
                let mut out = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    out.push((k, v));
                }
                out
            }
            Value::Map(m) => m,
            _ => return Err(bad("fields")),
        };
        let mut e = ArchiveEntry {
            entry_id,
            ..Default::default()
        };
        let num = |b: &[u8]| {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
        };
        for (k, v) in pairs {
            let k = text(k);
            let b = raw(v);
            match k.as_str() {
                "id" => e.id = lossy(b),
                "name" => e.name = lossy(b),
                "state" => e.state = lossy(b),
                "attempt" => e.attempt = num(&b).unwrap_or(0),
                "enqueued_at" => e.enqueued_at_ms = num(&b),
                "started_at" => e.started_at_ms = num(&b),
                "finished_at" => e.finished_at_ms = num(&b).unwrap_or(0),
                "worker" if !b.is_empty() => e.worker = Some(lossy(b)),
                "error" if !b.is_empty() => e.error = Some(lossy(b)),
                "result" => e.result = b,
                "args" => e.args = b,
                _ => {}
            }
        }
        Ok(Some(e))
    }
}

fn raw(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

fn lossy(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn text(v: Value) -> String {
    lossy(raw(v))
}

/// The entries of an XREADGROUP or XAUTOCLAIM entry list; entries trimmed while pending are
/// returned by id in the second list.
fn entries(v: Value) -> Result<(Vec<ArchiveEntry>, Vec<String>)> {
    let list = match v {
        Value::Nil => return Ok((Vec::new(), Vec::new())),
        Value::Array(a) => a,
        other => return Err(Error::Protocol(format!("archive stream reply {other:?}"))),
    };
    let mut out = Vec::new();
    let mut gone = Vec::new();
    for item in list {
        let id = match &item {
            Value::Array(p) => p.first().cloned().map(text).unwrap_or_default(),
            _ => String::new(),
        };
        match ArchiveEntry::parse(item)? {
            Some(e) => out.push(e),
            None => gone.push(id),
        }
    }
    Ok((out, gone))
}

impl Store {
    /// The archive bound the finishing scripts get: entries each partition's archive stream
    /// keeps at most; 0 when the archive is off (then they write nothing for it). Shared by
    /// clones of this store.
    pub fn archive_bound(&self) -> u64 {
        self.archive.load(Ordering::Relaxed)
    }

    /// Sets what [`Store::archive_bound`] returns for this store and its clones (not Redis: see
    /// [`Store::write_archive_setting`]).
    pub fn set_archive_bound(&self, bound: u64) {
        self.archive.store(bound, Ordering::Relaxed);
    }

    /// Reads the namespace's archive setting (`HGET <ns>:archive bound`), applies it with
    /// [`Store::set_archive_bound`] and returns it (0: off).
    ///
    /// # Errors
    ///
    /// A Redis error (the bound in use is left as it was).
    pub async fn load_archive_setting(&self) -> Result<u64> {
        let mut conn = self.conn();
        let v: Option<String> = redis::cmd("HGET")
            .arg(self.keys.archive())
            .arg("bound")
            .query_async(&mut conn)
            .await?;
        let bound = v.and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        self.set_archive_bound(bound);
        Ok(bound)
    }

    /// Turns the archive on for the namespace with `bound` entries at most per partition's
    /// stream (0 turns it off), in Redis, and for this store. Workers apply it at their next
    /// heartbeat, clients when they connect.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn write_archive_setting(&self, bound: u64) -> Result<()> {
        let mut conn = self.conn();
        if bound == 0 {
            redis::cmd("DEL")
                .arg(self.keys.archive())
                .query_async::<()>(&mut conn)
                .await?;
        } else {
            redis::cmd("HSET")
                .arg(self.keys.archive())
                .arg("bound")
                .arg(bound)
                .query_async::<()>(&mut conn)
                .await?;
        }
        self.set_archive_bound(bound);
        Ok(())
    }

    /// Creates the archive stream of `p` with its consumer group [`ARCHIVE_GROUP`] unless they
    /// exist (`XGROUP CREATE ... MKSTREAM`).
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn archive_group(&self, p: &Partition) -> Result<()> {
        let mut conn = self.conn();
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(p.keys.archive())
            .arg(ARCHIVE_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match r {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => Ok(other?),
        }
    }

    /// Reads at most `count` entries of the archive stream of `p` for `consumer`
    /// (`XREADGROUP`, no blocking): its own pending entries (read before and not done) when
    /// `pending`, else entries no archiver has read. Returns the entries, in order of finishing,
    /// and the ids of pending entries trimmed from the stream meanwhile (dropped: pass them to
    /// [`Store::archive_done`] with `stored` false).
    ///
    /// # Errors
    ///
    /// A Redis error (`NOGROUP` when [`Store::archive_group`] did not run).
    pub async fn archive_read(
        &self,
        p: &Partition,
        consumer: &str,
        count: usize,
        pending: bool,
    ) -> Result<(Vec<ArchiveEntry>, Vec<String>)> {
        let mut conn = self.conn();
        let v: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(ARCHIVE_GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count.max(1))
            .arg("STREAMS")
            .arg(p.keys.archive())
            .arg(if pending { "0" } else { ">" })
            .query_async(&mut conn)
            .await?;
        // [[stream, entries]] (RESP2) or {stream: entries} (RESP3); nil when nothing is new.
        let list = match v {
            Value::Nil => return Ok((Vec::new(), Vec::new())),
            Value::Array(mut streams) => match streams.pop() {
                Some(Value::Array(mut kv)) if kv.len() == 2 => kv.pop().unwrap_or(Value::Nil),
                _ => Value::Nil,
            },
            Value::Map(mut m) => m.pop().map_or(Value::Nil, |(_, v)| v),
            other => return Err(Error::Protocol(format!("XREADGROUP returned {other:?}"))),
        };
        entries(list)
    }

    /// Takes over entries of the archive stream of `p` that another archiver read and left
    /// pending for at least `min_idle_ms` (it crashed or hangs), for `consumer`: at most `count`
    /// (`XAUTOCLAIM`, from the start of the pending list). Returns them as
    /// [`Store::archive_read`] does.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn archive_claim(
        &self,
        p: &Partition,
        consumer: &str,
        min_idle_ms: u64,
        count: usize,
    ) -> Result<(Vec<ArchiveEntry>, Vec<String>)> {
        let mut conn = self.conn();
        let v: Value = redis::cmd("XAUTOCLAIM")
            .arg(p.keys.archive())
            .arg(ARCHIVE_GROUP)
            .arg(consumer)
            .arg(min_idle_ms)
            .arg("0-0")
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut conn)
            .await?;
        // [next cursor, entries, deleted ids] (Redis 7).
        let Value::Array(mut parts) = v else {
            return Err(Error::Protocol(format!("XAUTOCLAIM returned {v:?}")));
        };
        let deleted = if parts.len() >= 3 {
            parts.pop().unwrap_or(Value::Nil)
        } else {
            Value::Nil
        };
        let list = if parts.len() >= 2 {
            parts.swap_remove(1)
        } else {
            Value::Nil
        };
        let (got, mut gone) = entries(list)?;
        if let Value::Array(d) = deleted {
            gone.extend(d.into_iter().map(text));
        }
        Ok((got, gone))
    }

    /// `archive_done.lua`: acknowledges and deletes the entries `ids` of the archive stream of
    /// `p`: `stored` in the archive, or (false) found trimmed. Stored entries that were trimmed
    /// after they were read are taken off the `archive_dropped` count. Returns how many were
    /// deleted from the stream.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn archive_done(&self, p: &Partition, ids: &[String], stored: bool) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut inv = ARCHIVE_DONE.prepare_invoke();
        inv.key(p.keys.archive())
            .key(p.keys.stats())
            .arg(ARCHIVE_GROUP)
            .arg(u8::from(stored));
        for id in ids {
            inv.arg(id);
        }
        let v = self.run_script(&inv).await?;
        super::reply::int(&v).map(|n| n as u64)
    }

    /// Entries waiting in the archive stream of `p` (`XLEN`), and how many were dropped over
    /// the bound so far (`archive_dropped` of its stats hash).
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn archive_backlog(&self, p: &Partition) -> Result<(u64, u64)> {
        let mut conn = self.conn();
        let (len, dropped): (u64, Option<u64>) = redis::pipe()
            .cmd("XLEN")
            .arg(p.keys.archive())
            .cmd("HGET")
            .arg(p.keys.stats())
            .arg("archive_dropped")
            .query_async(&mut conn)
            .await?;
        Ok((len, dropped.unwrap_or(0)))
    }
}
