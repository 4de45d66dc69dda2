//! `workers`: live workers, from their heartbeat hashes `<ns>:workers:<worker id>`.
//!
//! We find them through the worker index `<ns>:workers` (`Inspector::workers`), which every
//! heartbeat stamps, not by scanning the keyspace; an index entry whose heartbeat has expired
//! (a stopped worker) is not listed.

use anyhow::Result;
use serde_json::{json, Value as Json};

use crate::render::{iso_utc, when, Table};
use crate::{json_out, Ctx};

pub(crate) async fn workers(ctx: &Ctx) -> Result<String> {
    let beats = ctx.inspector.workers().await?;
    let now = ctx.inspector.server_time_ms().await?;
    let cell = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());

    if ctx.json {
        let list: Vec<Json> = beats
            .iter()
            .map(|b| {
                let started = b.started_at_ms;
                json!({
                    "id": b.id,
                    "pid": b.pid,
                    "queues": b.queues,
                    "concurrency": b.concurrency,
                    "running": b.running,
                    "succeeded": b.succeeded,
                    "failed": b.failed,
                    "started_at_ms": started,
                    "started_at": started.map(iso_utc),
                    "ttl_ms": b.ttl_ms,
                })
            })
            .collect();
        return Ok(json_out(&json!({ "server_now_ms": now, "workers": list })));
    }
    if beats.is_empty() {
        return Ok(format!(
            "no live workers (none in the worker index {}:workers)\n",
            ctx.namespace
        ));
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
            cell(b.pid.map(|v| v.to_string())),
            b.queues.join(","),
            cell(b.concurrency.map(|v| v.to_string())),
            cell(b.running.map(|v| v.to_string())),
            cell(b.succeeded.map(|v| v.to_string())),
            cell(b.failed.map(|v| v.to_string())),
            // The worker host's clock, shown against the Redis clock.
            cell(b.started_at_ms.map(|t| when(t, now))),
        ]);
    }
    Ok(t.render())
}
