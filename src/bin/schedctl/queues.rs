//! Queue-level views: `queues`, `stats`, `due`.

use anyhow::{Context as _, Result};
use scheduler::redis;
use serde_json::{json, Map, Value as Json};

use crate::inspect::{self, ordered_counters, server_now_ms, shard_counts, shards_of, Counts};
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
    let store = ctx.store();
    let now = server_now_ms(store).await?;
    let all = inspect::queues(store).await?;
    let mut rows = Vec::with_capacity(all.len());
    for (queue, shards) in all {
        let mut total = Counts::default();
        for c in shard_counts(store, &queue, shards, now).await? {
            total.add(&c);
        }
        rows.push((queue, shards, total));
    }
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
        return Ok(format!(
            "no queues registered in {}\n",
            store.keys().queues()
        ));
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
    let store = ctx.store();
    // Checked first: `queue_stats` would register an unknown queue.
    let shards = shards_of(store, queue).await?;
    let stats = ctx.client.queue_stats(queue).await?;
    let now = server_now_ms(store).await?;
    let counts = shard_counts(store, queue, shards, now).await?;
    let due_now: u64 = counts.iter().map(|c| c.due_now).sum();
    let counters = ordered_counters(&stats.counters);
    let by_shard = if per_shard {
        inspect::shard_counters(store, queue, shards).await?
    } else {
        Vec::new()
    };

    if ctx.json {
        let mut v = json!({
            "queue": queue,
            "shards": stats.shards,
            "server_now_ms": now,
            "scheduled": stats.scheduled,
            "ready": stats.ready,
            "running": stats.active,
            "dead": stats.dead,
            "due_now": due_now,
            "counters": counters
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<Map<String, Json>>(),
        });
        if per_shard {
            v["per_shard"] = counts
                .iter()
                .zip(&by_shard)
                .enumerate()
                .map(|(shard, (c, k))| {
                    let mut m = Map::new();
                    m.insert("shard".into(), json!(shard));
                    m.extend(counts_json(c));
                    m.insert(
                        "counters".into(),
                        ordered_counters(k)
                            .into_iter()
                            .map(|(k, v)| (k, json!(v)))
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
        (
            "queue".to_owned(),
            format!("{queue} ({} shards)", stats.shards),
        ),
        ("scheduled".to_owned(), stats.scheduled.to_string()),
        ("ready".to_owned(), stats.ready.to_string()),
        ("running".to_owned(), stats.active.to_string()),
        ("dead".to_owned(), stats.dead.to_string()),
        ("due now".to_owned(), due_now.to_string()),
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
        for (shard, (c, k)) in counts.iter().zip(&by_shard).enumerate() {
            let mut cells = vec![shard.to_string()];
            cells.extend(count_cells(c));
            // The first eight of `ordered_counters` are the known counters, in column order.
            cells.extend(
                ordered_counters(k)
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
    let store = ctx.store();
    let shards = shards_of(store, queue).await?;
    let now = server_now_ms(store).await?;
    let until = now.saturating_add(i64::try_from(within_ms).unwrap_or(i64::MAX));
    let mut pipe = redis::pipe();
    for shard in 0..shards {
        let k = store.partition(queue, shard).keys;
        pipe.zcount(k.scheduled(), "-inf", now)
            .zcount(k.scheduled(), format!("({now}"), until)
            .zcard(k.ready())
            .zrange_withscores(k.scheduled(), 0, 0);
    }
    type Reply = (u64, u64, u64, Vec<(String, f64)>);
    let replies: Vec<Reply> = {
        let flat: Vec<redis::Value> = pipe
            .query_async(&mut store.conn())
            .await
            .with_context(|| format!("counting due tasks of queue {queue}"))?;
        flat.chunks_exact(4)
            .map(|c| redis::from_redis_value(redis::Value::Array(c.to_vec())))
            .collect::<Result<_, _>>()
            .context("unexpected reply counting due tasks")?
    };
    let (mut due_now, mut due_within, mut ready) = (0, 0, 0);
    let mut next: Option<i64> = None;
    for (n, w, r, head) in &replies {
        due_now += n;
        due_within += w;
        ready += r;
        if let Some((_, score)) = head.first() {
            let s = *score as i64;
            next = Some(next.map_or(s, |x: i64| x.min(s)));
        }
    }
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
