//! Queue-level views: `queues`, `stats`, `due`.

use anyhow::Result;
use scheduler::Counts;
use serde_json::{json, Map, Value as Json};

use crate::inspect::shards_of;
use crate::render::{human_ms, iso_utc, pairs, when, Table};
use crate::{json_out, Ctx};

fn counts_json(c: &Counts) -> Map<String, Json> {
    let v = json!({
        "scheduled": c.scheduled,
        "ready": c.ready,
        "running": c.running,
        "dead": c.dead,
        "due_now": c.due_now,
    });
    match v {
        Json::Object(m) => m,
        _ => Map::new(),
    }
}

fn count_cells(c: &Counts) -> [String; 5] {
    [c.scheduled, c.ready, c.running, c.dead, c.due_now].map(|n| n.to_string())
}

/// `queues`: every registered queue with summed counts.
pub(crate) async fn queues(ctx: &Ctx) -> Result<String> {
    let mut now = None;
    let mut rows = Vec::new();
    for q in ctx.inspector.queues().await? {
        let counts = ctx.inspector.queue(&q.name).await?;
        now.get_or_insert(counts.server_now_ms);
        rows.push((q.name, q.shards, counts.total));
    }
    let now = match now {
        Some(n) => n,
        None => ctx.inspector.server_time_ms().await?,
    };
    if ctx.json {
        let list: Vec<Json> = rows
            .iter()
            .map(|(q, s, c)| {
                let mut m = Map::new();
                m.insert("queue".into(), json!(q));
                m.insert("shards".into(), json!(s));
                m.extend(counts_json(c));
                Json::Object(m)
            })
            .collect();
        return Ok(json_out(&json!({ "server_now_ms": now, "queues": list })));
    }
    if rows.is_empty() {
        return Ok("no queues registered\n".to_owned());
    }
    let mut t = Table::new(&[
        "QUEUE",
        "SHARDS>",
        "SCHEDULED>",
        "READY>",
        "RUNNING>",
        "DEAD>",
        "DUE NOW>",
    ]);
    for (q, s, c) in &rows {
        let mut cells = vec![q.clone(), s.to_string()];
        cells.extend(count_cells(c));
        t.row(cells);
    }
    Ok(t.render())
}

/// `stats <queue> [--shards]`: counts and lifetime counters, summed and optionally per shard.
pub(crate) async fn stats(ctx: &Ctx, queue: &str, per_shard: bool) -> Result<String> {
    let shards = shards_of(&ctx.inspector, queue).await?;
    let all = ctx.inspector.queue(queue).await?;
    let (now, stats, counts) = (all.server_now_ms, &all.total, &all.per_shard);
    let counters = stats.ordered_counters();
    if ctx.json {
        let mut v = json!({
            "queue": queue,
            "shards": shards,
            "server_now_ms": now,
            "scheduled": stats.scheduled,
            "ready": stats.ready,
            "running": stats.running,
            "dead": stats.dead,
            "due_now": stats.due_now,
            "counters": counters
                .iter()
                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                .collect::<Map<String, Json>>(),
        });
        if per_shard {
            v["per_shard"] = counts
                .iter()
                .enumerate()
                .map(|(shard, c)| {
                    let mut m = Map::new();
                    m.insert("shard".into(), json!(shard));
                    m.extend(counts_json(c));
                    m.insert(
                        "counters".into(),
                        c.ordered_counters()
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), json!(v)))
                            .collect::<Map<String, Json>>()
                            .into(),
                    );
                    Json::Object(m)
                })
                .collect();
        }
        return Ok(json_out(&v));
    }

    let mut rows = vec![
        ("queue".to_owned(), format!("{queue} ({shards} shards)")),
        ("scheduled".to_owned(), stats.scheduled.to_string()),
        ("ready".to_owned(), stats.ready.to_string()),
        ("running".to_owned(), stats.running.to_string()),
        ("dead".to_owned(), stats.dead.to_string()),
        ("due now".to_owned(), stats.due_now.to_string()),
    ];
    let mut out = pairs(&rows);
    out.push_str("\nlifetime counters\n");
    rows = counters
        .iter()
        .map(|(k, v)| (format!("  {k}"), v.to_string()))
        .collect();
    out.push_str(&pairs(&rows));
    if per_shard {
        let mut t = Table::new(&[
            "SHARD>",
            "SCHEDULED>",
            "READY>",
            "RUNNING>",
            "DEAD>",
            "DUE NOW>",
            "ENQUEUED>",
            "PROMOTED>",
            "SUCCEEDED>",
            "RETRIED>",
            "DIED>",
            "REAPED>",
            "CANCELLED>",
            "REQUEUED>",
        ]);
        for (shard, c) in counts.iter().enumerate() {
            let mut cells = vec![shard.to_string()];
            cells.extend(count_cells(c));
            // The first eight of `ordered_counters` are the known counters, in column order.
            cells.extend(
                c.ordered_counters()
                    .iter()
                    .take(8)
                    .map(|(_, v)| v.to_string()),
            );
            t.row(cells);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    Ok(out)
}

/// `due <queue> --within <window>`: scheduled tasks due now (not yet promoted) and due within the
/// window, by the Redis server's clock, plus the ready backlog and the next due time.
pub(crate) async fn due(ctx: &Ctx, queue: &str, within_ms: u64) -> Result<String> {
    shards_of(&ctx.inspector, queue).await?;
    let d = ctx.inspector.due(queue, within_ms).await?;
    let (now, due_now, due_within, ready, next) = (
        d.server_now_ms,
        d.due_now,
        d.due_within,
        d.ready,
        d.next_due_ms,
    );
    if ctx.json {
        return Ok(json_out(&json!({
            "queue": queue,
            "server_now_ms": now,
            "window_ms": within_ms,
            "due_now": due_now,
            "due_within": due_within,
            "ready": ready,
            "next_due_ms": next,
            "next_due": next.map(iso_utc),
        })));
    }
    let rows = [
        ("queue".to_owned(), queue.to_owned()),
        ("server now".to_owned(), iso_utc(now)),
        (
            "due now".to_owned(),
            format!("{due_now} (scheduled, due, not promoted yet)"),
        ),
        (
            format!("due within {}", human_ms(within_ms)),
            due_within.to_string(),
        ),
        (
            "ready".to_owned(),
            format!("{ready} (due, waiting for a worker)"),
        ),
        (
            "next due".to_owned(),
            next.map_or_else(|| "-".to_owned(), |t| when(t, now)),
        ),
    ];
    Ok(pairs(&rows))
}
