//! Task-level views and actions: `status`, `cancel`, `dead`, `requeue`.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context as _, Result};
use scheduler::id::validate_id;
use scheduler::info::take_blob;
use scheduler::redis;
use scheduler::scripts::RequeueReply;
use scheduler::TaskId;
use serde_json::{json, Map, Value as Json};

use crate::inspect::{server_now_ms, shards_of};
use crate::render::{human_ms, iso_utc, msgpack_json, msgpack_text, pairs, when, Table};
use crate::{json_out, Ctx};

/// Dead ids sent to one `requeue.lua` call: bounds the time one call holds Redis.
const REQUEUE_BATCH: usize = 500;

/// Fields of the task hash in the order of `docs/redis-layout.md` section 4.
const FIELD_ORDER: [&str; 16] = [
    "name",
    "state",
    "attempts",
    "lost",
    "max_retries",
    "timeout_ms",
    "priority",
    "run_at",
    "enqueued_at",
    "token",
    "args",
    "started_at",
    "worker",
    "error",
    "result",
    "finished_at",
];

/// Fields holding unix ms.
const TIME_FIELDS: [&str; 4] = ["run_at", "enqueued_at", "started_at", "finished_at"];
/// Fields holding other integers.
const INT_FIELDS: [&str; 6] = [
    "attempts",
    "lost",
    "max_retries",
    "timeout_ms",
    "priority",
    "token",
];
/// Fields holding MessagePack.
const MSGPACK_FIELDS: [&str; 2] = ["args", "result"];

/// Parses `<queue>/<id>` and checks both parts.
fn parse_task(s: &str) -> Result<TaskId> {
    let id: TaskId = s
        .parse()
        .with_context(|| format!("{s:?} is not a task: use <queue>/<id>, e.g. emails/order-3"))?;
    validate_id(id.id())?;
    Ok(id)
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

fn int(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Field names of a task hash in display order: the known ones, then any others by name.
fn ordered_fields(fields: &HashMap<String, Vec<u8>>) -> Vec<&str> {
    let mut names: Vec<&str> = FIELD_ORDER
        .iter()
        .copied()
        .filter(|f| fields.contains_key(*f))
        .collect();
    let mut rest: Vec<&str> = fields
        .keys()
        .map(String::as_str)
        .filter(|f| !FIELD_ORDER.contains(f))
        .collect();
    rest.sort_unstable();
    names.extend(rest);
    names
}

/// Task hash, its PTTL, its lease deadline (score in the active set), server `TIME`.
type StatusReply = (HashMap<String, Vec<u8>>, i64, Option<f64>, (i64, i64));

/// `status <queue>/<id>`: every field of the task hash, plus its shard, lease and expiry.
pub(crate) async fn status(ctx: &Ctx, target: &str) -> Result<String> {
    let id = parse_task(target)?;
    let store = ctx.store();
    let shards = shards_of(store, id.queue()).await?;
    let shard = id.shard(shards);
    let p = store.partition(id.queue(), shard);
    let key = p.keys.task(id.id());
    // One round trip; TIME last so "now" is no earlier than what we read.
    let (mut fields, pttl, lease, (s, us)): StatusReply = redis::pipe()
        .hgetall(&key)
        .pttl(&key)
        .zscore(p.keys.active(), id.id())
        .cmd("TIME")
        .query_async(&mut store.conn())
        .await
        .with_context(|| format!("reading {key}"))?;
    let now = s * 1000 + us / 1000;
    if fields.is_empty() {
        bail!(
            "{} (never enqueued, or its record expired after its TTL)",
            scheduler::Error::NotFound(id)
        );
    }
    // `args` and `result` are stored in 64-byte pieces: show each whole.
    for f in MSGPACK_FIELDS {
        if let Some(v) = take_blob(&mut fields, f) {
            fields.insert(f.to_owned(), v);
        }
    }
    // `attempts` is written at the first claim: show the 0 it means before that.
    fields
        .entry("attempts".to_owned())
        .or_insert_with(|| b"0".to_vec());
    let lease = lease.map(|l| l as i64);
    let expires = (pttl > 0).then(|| now + pttl);

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

/// `cancel <queue>/<id>`.
pub(crate) async fn cancel(ctx: &Ctx, target: &str) -> Result<String> {
    let id = parse_task(target)?;
    shards_of(ctx.store(), id.queue()).await?;
    ctx.client.cancel(&id).await?;
    if ctx.json {
        return Ok(json_out(
            &json!({ "id": id.to_string(), "cancelled": true }),
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

/// One dead task as listed by `dead`.
struct DeadTask {
    id: TaskId,
    shard: u16,
    died_ms: i64,
    name: Option<String>,
    attempts: Option<i64>,
    error: Option<String>,
}

/// `dead <queue> --limit N`: the newest dead tasks across all shards.
pub(crate) async fn dead(ctx: &Ctx, queue: &str, limit: u64) -> Result<String> {
    let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
    let store = ctx.store();
    let shards = shards_of(store, queue).await?;
    let now = server_now_ms(store).await?;
    // The newest `limit` of each shard hold the newest `limit` overall.
    let mut pipe = redis::pipe();
    for shard in 0..shards {
        let k = store.partition(queue, shard).keys;
        pipe.zcard(k.dead());
        pipe.cmd("ZRANGE")
            .arg(k.dead())
            .arg(0)
            .arg(limit.saturating_sub(1))
            .arg("REV")
            .arg("WITHSCORES");
    }
    let flat: Vec<redis::Value> = pipe
        .query_async(&mut store.conn())
        .await
        .with_context(|| format!("reading the dead sets of queue {queue}"))?;
    let mut total = 0u64;
    let mut found: Vec<(i64, u16, String)> = Vec::new();
    for (shard, c) in flat.chunks_exact(2).enumerate() {
        let (n, members): (u64, Vec<(String, f64)>) =
            redis::from_redis_value(redis::Value::Array(c.to_vec()))
                .context("unexpected reply reading a dead set")?;
        total += n;
        found.extend(
            members
                .into_iter()
                .map(|(id, died)| (died as i64, shard as u16, id)),
        );
    }
    // Newest first; ties by id so the output is stable.
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.2.cmp(&b.2)));
    found.truncate(limit);

    let mut pipe = redis::pipe();
    for (_, shard, id) in &found {
        pipe.cmd("HMGET")
            .arg(store.partition(queue, *shard).keys.task(id))
            .arg("name")
            .arg("attempts")
            .arg("error");
    }
    let details: Vec<(Option<String>, Option<i64>, Option<String>)> = if found.is_empty() {
        Vec::new()
    } else {
        // Dead tasks of several shards live in different cluster slots.
        store
            .query_pipeline(&pipe)
            .await
            .context("reading dead tasks")?
            .into_iter()
            .map(|v| {
                redis::from_redis_value(v).map_err(|e| anyhow::anyhow!("reading dead tasks: {e}"))
            })
            .collect::<Result<_>>()?
    };
    let tasks: Vec<DeadTask> = found
        .into_iter()
        .zip(details)
        .map(|((died_ms, shard, id), (name, attempts, error))| DeadTask {
            id: TaskId::new(queue, id),
            shard,
            died_ms,
            name,
            attempts,
            error,
        })
        .collect();

    if ctx.json {
        let list: Vec<Json> = tasks
            .iter()
            .map(|t| {
                json!({
                    "id": t.id.to_string(),
                    "shard": t.shard,
                    "name": t.name,
                    "attempts": t.attempts,
                    "died_at_ms": t.died_ms,
                    "died_at": iso_utc(t.died_ms),
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
            when(d.died_ms, now),
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
    let store = ctx.store();
    let shards = shards_of(store, id.queue()).await?;
    if !ctx.client.requeue_dead(&id).await? {
        let key = store
            .partition(id.queue(), id.shard(shards))
            .keys
            .task(id.id());
        let state: Option<String> = redis::cmd("HGET")
            .arg(key)
            .arg("state")
            .query_async(&mut store.conn())
            .await?;
        bail!(
            "task {id} is {}, not dead: nothing changed",
            state.as_deref().unwrap_or("gone")
        );
    }
    if ctx.json {
        return Ok(json_out(&json!({ "id": id.to_string(), "requeued": true })));
    }
    Ok(format!("requeued {id}: ready, attempts reset to 0\n"))
}

/// What a `--all-dead` requeue did.
#[derive(Default)]
struct Tally {
    requeued: u64,
    not_dead: u64,
    not_found: u64,
}

impl Tally {
    fn add(&mut self, replies: &[RequeueReply]) {
        for r in replies {
            match r {
                RequeueReply::Requeued => self.requeued += 1,
                RequeueReply::NotDead => self.not_dead += 1,
                RequeueReply::NotFound => self.not_found += 1,
            }
        }
    }
}

/// `requeue <queue> --all-dead [--limit N]`: every dead task of the queue, or the newest N.
pub(crate) async fn requeue_all(ctx: &Ctx, queue: &str, limit: Option<u64>) -> Result<String> {
    if queue.contains('/') {
        bail!("--all-dead takes a queue, not a task ({queue:?})");
    }
    let store = ctx.store();
    let shards = shards_of(store, queue).await?;
    let mut tally = Tally::default();
    match limit {
        None => {
            // Shard by shard, a batch at a time. Requeued and vanished ids leave the dead set;
            // ids that are not dead stay, so we skip past them.
            for shard in 0..shards {
                let p = store.partition(queue, shard);
                let mut skip = 0usize;
                loop {
                    let ids: Vec<String> = redis::cmd("ZRANGE")
                        .arg(p.keys.dead())
                        .arg(skip)
                        .arg(skip + REQUEUE_BATCH - 1)
                        .query_async(&mut store.conn())
                        .await
                        .with_context(|| format!("reading {}", p.keys.dead()))?;
                    if ids.is_empty() {
                        break;
                    }
                    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                    let replies = store.requeue(&p, &refs).await?;
                    skip += replies
                        .iter()
                        .filter(|r| **r == RequeueReply::NotDead)
                        .count();
                    tally.add(&replies);
                }
            }
        }
        Some(n) => {
            // The newest n overall are among the newest n of each shard.
            let n = usize::try_from(n.max(1)).unwrap_or(usize::MAX);
            let mut pipe = redis::pipe();
            for shard in 0..shards {
                pipe.cmd("ZRANGE")
                    .arg(store.partition(queue, shard).keys.dead())
                    .arg(0)
                    .arg(n.saturating_sub(1))
                    .arg("REV")
                    .arg("WITHSCORES");
            }
            let per_shard: Vec<Vec<(String, f64)>> = pipe
                .query_async(&mut store.conn())
                .await
                .with_context(|| format!("reading the dead sets of queue {queue}"))?;
            let mut all: Vec<(f64, u16, String)> = per_shard
                .into_iter()
                .enumerate()
                .flat_map(|(shard, m)| {
                    m.into_iter()
                        .map(move |(id, died)| (died, shard as u16, id))
                })
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.2.cmp(&b.2)));
            all.truncate(n);
            let mut by_shard: BTreeMap<u16, Vec<String>> = BTreeMap::new();
            for (_, shard, id) in all {
                by_shard.entry(shard).or_default().push(id);
            }
            for (shard, ids) in by_shard {
                let p = store.partition(queue, shard);
                for chunk in ids.chunks(REQUEUE_BATCH) {
                    let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                    tally.add(&store.requeue(&p, &refs).await?);
                }
            }
        }
    }
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
