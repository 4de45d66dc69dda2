//! `workers`: live workers, from their heartbeat hashes `<ns>:workers:<worker id>`.
//!
//! We find them with `SCAN` (never `KEYS`, which blocks Redis for the whole keyspace). `SCAN` may
//! return a key twice, and a heartbeat may expire between the scan and the read: both are
//! handled. On Redis Cluster, `SCAN` covers only the node we are connected to.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Context as _, Result};
use scheduler::redis;
use serde_json::{json, Value as Json};

use crate::inspect::server_now_ms;
use crate::render::{iso_utc, when, Table};
use crate::{json_out, Ctx};

/// Keys asked for per `SCAN` step (a hint to Redis, not a limit).
const SCAN_COUNT: u64 = 1000;

/// One live worker's heartbeat.
struct Beat {
    id: String,
    fields: HashMap<String, String>,
    ttl_ms: i64,
}

impl Beat {
    fn num(&self, f: &str) -> Option<i64> {
        self.fields.get(f).and_then(|v| v.parse().ok())
    }

    fn cell(&self, f: &str) -> String {
        self.fields
            .get(f)
            .cloned()
            .unwrap_or_else(|| "-".to_owned())
    }

    fn queues(&self) -> Vec<&str> {
        self.fields
            .get("queues")
            .map(|q| q.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }
}

pub(crate) async fn workers(ctx: &Ctx) -> Result<String> {
    let store = ctx.store();
    let pattern = store.keys().workers_pattern();
    let prefix = store.keys().worker("");
    let mut keys = BTreeSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(&mut store.conn())
            .await
            .context("scanning for worker heartbeats")?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut beats = Vec::with_capacity(keys.len());
    if !keys.is_empty() {
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.hgetall(k).pttl(k);
        }
        let flat: Vec<redis::Value> = pipe
            .query_async(&mut store.conn())
            .await
            .context("reading worker heartbeats")?;
        for (key, c) in keys.iter().zip(flat.chunks_exact(2)) {
            let (fields, ttl_ms): (HashMap<String, String>, i64) =
                redis::from_redis_value(redis::Value::Array(c.to_vec()))
                    .context("unexpected reply reading a heartbeat")?;
            // Expired since the scan (or not a hash we wrote): not live.
            if fields.is_empty() {
                continue;
            }
            let id = key.strip_prefix(&prefix).unwrap_or(key).to_owned();
            beats.push(Beat { id, fields, ttl_ms });
        }
    }
    let now = server_now_ms(store).await?;

    if ctx.json {
        let list: Vec<Json> = beats
            .iter()
            .map(|b| {
                let started = b.num("started_at");
                json!({
                    "id": b.id,
                    "pid": b.num("pid"),
                    "queues": b.queues(),
                    "concurrency": b.num("concurrency"),
                    "running": b.num("running"),
                    "succeeded": b.num("succeeded"),
                    "failed": b.num("failed"),
                    "started_at_ms": started,
                    "started_at": started.map(iso_utc),
                    "ttl_ms": b.ttl_ms,
                })
            })
            .collect();
        return Ok(json_out(&json!({ "server_now_ms": now, "workers": list })));
    }
    if beats.is_empty() {
        return Ok(format!("no live workers (no key matches {pattern})\n"));
    }
    let mut t = Table::new(&[
        "WORKER",
        "PID>",
        "QUEUES",
        "CONCURRENCY>",
        "RUNNING>",
        "SUCCEEDED>",
        "FAILED>",
        "STARTED",
    ]);
    for b in &beats {
        t.row(vec![
            b.id.clone(),
            b.cell("pid"),
            b.cell("queues"),
            b.cell("concurrency"),
            b.cell("running"),
            b.cell("succeeded"),
            b.cell("failed"),
            // The worker host's clock, shown against the Redis clock.
            b.num("started_at")
                .map_or_else(|| "-".to_owned(), |t| when(t, now)),
        ]);
    }
    Ok(t.render())
}
