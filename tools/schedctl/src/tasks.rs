//! Task-level views and actions: `status`, `cancel`, `dead`, `requeue`.

use scheduler::dashboard::format::TIME_FIELDS;
use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use scheduler::{TaskId, TaskState};
use serde_json::{json, Map, Value as Json};

use crate::inspect::shards_of;
use crate::render::{human_ms, iso_utc, msgpack_json, msgpack_text, pairs, when, Table};
use crate::{json_out, Ctx};

/// Fields of the task hash in the order of `docs/redis-layout.md` section 4.
const FIELD_ORDER: [&str; 22] = [
    "name",
    "state",
    "attempts",
    "lost",
    "max_retries",
    "timeout_ms",
    "priority",
    "run_at",
    "enqueued_at",
    "expires",
    "token",
    "args",
    "headers",
    "started_at",
    "worker",
    "progress",
    "progress_msg",
    "progress_at",
    "progress_attempt",
    "error",
    "result",
    "finished_at",
];

/// Fields holding other integers.
const INT_FIELDS: [&str; 8] = [
    "attempts",
    "lost",
    "max_retries",
    "timeout_ms",
    "priority",
    "token",
    "progress",
    "progress_attempt",
];
/// Fields holding MessagePack.
const MSGPACK_FIELDS: [&str; 3] = ["args", "headers", "result"];

/// Parses `<queue>/<id>` and checks both parts.
fn parse_task(s: &str) -> Result<TaskId> {
    s.parse()
        .with_context(|| format!("{s:?} is not a task: use <queue>/<id>, e.g. emails/order-3"))
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

fn int(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Field names of a task hash in display order: the known ones, then any others by name.
fn ordered_fields(fields: &BTreeMap<String, Vec<u8>>) -> Vec<&str> {
    let mut names: Vec<&str> = FIELD_ORDER
        .iter()
        .copied()
        .filter(|f| fields.contains_key(*f))
        .collect();
    // A BTreeMap iterates by name.
    names.extend(
        fields
            .keys()
            .map(String::as_str)
            .filter(|f| !FIELD_ORDER.contains(f)),
    );
    names
}

/// `status <queue>/<id>`: every field of the task hash, plus its shard, lease and expiry.
pub(crate) async fn status(ctx: &Ctx, target: &str) -> Result<String> {
    let id = parse_task(target)?;
    shards_of(&ctx.inspector, id.queue()).await?;
    let d = match ctx.inspector.task(&id).await {
        Err(e @ scheduler::Error::NotFound(_)) => {
            bail!("{e} (never enqueued, or its record expired after its TTL)")
        }
        other => other?,
    };
    let (shard, shards, now) = (d.shard, d.shards, d.server_now_ms);
    let key = d.key;
    let mut fields = d.fields;
    // `attempts` is written at the first claim: show the 0 it means before that.
    fields
        .entry("attempts".to_owned())
        .or_insert_with(|| b"0".to_vec());
    let (lease, expires) = (d.lease_deadline_ms, d.expires_at_ms);

    if ctx.json {
        let mut m = Map::new();
        m.insert("id".into(), json!(id.to_string()));
        m.insert("shard".into(), json!(shard));
        m.insert("key".into(), json!(key));
        m.insert("server_now_ms".into(), json!(now));
        for f in ordered_fields(&fields) {
            let v = &fields[f];
            if TIME_FIELDS.contains(&f) {
                let ms = int(v);
                m.insert(format!("{f}_ms"), json!(ms));
                m.insert(f.to_owned(), json!(ms.map(iso_utc)));
            } else if INT_FIELDS.contains(&f) {
                m.insert(
                    f.to_owned(),
                    int(v).map_or_else(|| json!(text(v)), Json::from),
                );
            } else if MSGPACK_FIELDS.contains(&f) {
                m.insert(f.to_owned(), msgpack_json(v));
            } else {
                m.insert(f.to_owned(), json!(text(v)));
            }
        }
        m.insert("lease_deadline_ms".into(), json!(lease));
        m.insert("lease_deadline".into(), json!(lease.map(iso_utc)));
        m.insert("expires_ms".into(), json!(expires));
        m.insert("expires".into(), json!(expires.map(iso_utc)));
        return Ok(json_out(&Json::Object(m)));
    }

    let mut rows = vec![
        ("task".to_owned(), id.to_string()),
        ("shard".to_owned(), format!("{shard} of {shards}")),
    ];
    for f in ordered_fields(&fields) {
        let v = &fields[f];
        let shown = if TIME_FIELDS.contains(&f) {
            int(v).map_or_else(|| text(v), |ms| when(ms, now))
        } else if f == "timeout_ms" {
            int(v).map_or_else(
                || text(v),
                |ms| format!("{ms} ({})", human_ms(ms.unsigned_abs())),
            )
        } else if f == "progress" {
            int(v).map_or_else(|| text(v), |p| format!("{p}%"))
        } else if MSGPACK_FIELDS.contains(&f) {
            msgpack_text(v)
        } else {
            text(v)
        };
        rows.push((f.to_owned(), shown));
    }
    if let Some(l) = lease {
        rows.push(("lease_deadline".to_owned(), when(l, now)));
    }
    if let Some(e) = expires {
        rows.push(("expires".to_owned(), when(e, now)));
    }
    Ok(pairs(&rows))
}

/// `cancel <queue>/<id>`: withdraws a task that has not started, or asks the worker running it
/// to stop it.
pub(crate) async fn cancel(ctx: &Ctx, target: &str) -> Result<String> {
    let id = parse_task(target)?;
    shards_of(&ctx.inspector, id.queue()).await?;
    let how = ctx.inspector.cancel(&id).await?;
    let requested = how == scheduler::Cancellation::Requested;
    if ctx.json {
        if requested {
            return Ok(json_out(
                &json!({ "id": id.to_string(), "cancelled": false, "requested": true }),
            ));
        }
        return Ok(json_out(
            &json!({ "id": id.to_string(), "cancelled": true }),
        ));
    }
    if requested {
        return Ok(format!(
            "cancellation of running task {id} requested: its worker stops it\n"
        ));
    }
    Ok(format!("cancelled {id}\n"))
}

fn tasks_word(n: u64) -> &'static str {
    if n == 1 {
        "task"
    } else {
        "tasks"
    }
}

/// `dead <queue> --limit N`: the newest dead tasks across all shards.
pub(crate) async fn dead(ctx: &Ctx, queue: &str, limit: u64) -> Result<String> {
    let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
    shards_of(&ctx.inspector, queue).await?;
    let page = ctx.inspector.newest(queue, TaskState::Dead, limit).await?;
    let now = ctx.inspector.server_time_ms().await?;
    let (total, tasks) = (page.total, page.tasks);
    if ctx.json {
        let list: Vec<Json> = tasks
            .iter()
            .map(|t| {
                json!({
                    "id": t.id.to_string(),
                    "shard": t.shard,
                    "name": t.name,
                    "attempts": t.attempts,
                    "died_at_ms": t.score,
                    "died_at": iso_utc(t.score),
                    "error": t.error,
                })
            })
            .collect();
        return Ok(json_out(
            &json!({ "queue": queue, "total": total, "tasks": list }),
        ));
    }
    if total == 0 {
        return Ok(format!("no dead tasks in {queue}\n"));
    }
    let mut out = if (tasks.len() as u64) < total {
        format!(
            "{total} dead {} in {queue}, the newest {} shown\n",
            tasks_word(total),
            tasks.len()
        )
    } else {
        format!(
            "{total} dead {} in {queue}, newest first\n",
            tasks_word(total)
        )
    };
    let mut t = Table::new(&["ID", "NAME", "ATTEMPTS>", "DIED", "ERROR"]);
    let dash = || "-".to_owned();
    for d in &tasks {
        t.row(vec![
            d.id.to_string(),
            d.name.clone().unwrap_or_else(dash),
            d.attempts.map_or_else(dash, |a| a.to_string()),
            when(d.score, now),
            // One line per task: a multi-line error is joined.
            d.error
                .as_deref()
                .map_or_else(dash, |e| e.lines().collect::<Vec<_>>().join(" | ")),
        ]);
    }
    out.push_str(&t.render());
    Ok(out)
}

/// `requeue <queue>/<id>`: one dead task back to ready.
pub(crate) async fn requeue_one(ctx: &Ctx, target: &str) -> Result<String> {
    if !target.contains('/') {
        bail!("requeue takes a task as <queue>/<id>, or a queue with --all-dead");
    }
    let id = parse_task(target)?;
    shards_of(&ctx.inspector, id.queue()).await?;
    if !ctx.inspector.requeue(&id).await? {
        let state = match ctx.inspector.task(&id).await {
            Ok(d) => d
                .fields
                .get("state")
                .map_or_else(|| "unreadable".to_owned(), |s| text(s)),
            Err(_) => "gone".to_owned(),
        };
        bail!("task {id} is {state}, not dead: nothing changed");
    }
    if ctx.json {
        return Ok(json_out(&json!({ "id": id.to_string(), "requeued": true })));
    }
    Ok(format!("requeued {id}: ready, attempts reset to 0\n"))
}

/// `requeue <queue> --all-dead [--limit N]`: every dead task of the queue, or the newest N.
pub(crate) async fn requeue_all(ctx: &Ctx, queue: &str, limit: Option<u64>) -> Result<String> {
    if queue.contains('/') {
        bail!("--all-dead takes a queue, not a task ({queue:?})");
    }
    shards_of(&ctx.inspector, queue).await?;
    let limit = limit.map(|n| usize::try_from(n.max(1)).unwrap_or(usize::MAX));
    let dead = ctx.inspector.queue(queue).await?.total.dead;
    let expect = limit.map_or(dead, |n| dead.min(n as u64));
    let bar = crate::bulk::bar(expect, "requeueing");
    let tally = ctx
        .inspector
        .requeue_dead_with_progress(queue, limit, |t| {
            bar.set_position(t.requeued + t.not_dead + t.not_found)
        })
        .await;
    bar.finish_and_clear();
    let tally = tally?;
    if ctx.json {
        return Ok(json_out(&json!({
            "queue": queue,
            "requeued": tally.requeued,
            "not_dead": tally.not_dead,
            "not_found": tally.not_found,
        })));
    }
    let mut out = format!(
        "requeued {} dead {} of {queue}: ready, attempts reset to 0\n",
        tally.requeued,
        tasks_word(tally.requeued)
    );
    if tally.not_dead + tally.not_found > 0 {
        out.push_str(&format!(
            "skipped {} no longer dead and {} without a record\n",
            tally.not_dead, tally.not_found
        ));
    }
    Ok(out)
}
