//! `history` (finished attempts, read from the history archive in PostgreSQL) and `archive`
//! (runs an archiver for every queue of the namespace, or turns the archive off). See
//! `docs/storage.md`.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use scheduler::archive::{ArchiveConfig, Archiver, HistoryDb, HistoryQuery};
use serde_json::json;

use crate::render::{iso_utc, msgpack_json, msgpack_text, parse_duration, Table};
use crate::{json_out, Ctx};

/// The arguments of `history`.
#[derive(Debug, clap::Args)]
pub(crate) struct HistoryArgs {
    /// PostgreSQL URL of the archive.
    #[arg(long, env = "SCHED_ARCHIVE_URL")]
    database_url: String,
    /// Only this task id.
    #[arg(long)]
    id: Option<String>,
    /// Only tasks of this name.
    #[arg(long)]
    name: Option<String>,
    /// Only this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Only this state: succeeded, dead, cancelled or expired.
    #[arg(long)]
    state: Option<String>,
    /// Only attempts finished within this long before now (e.g. 30m, 2h, 7d).
    #[arg(long, value_parser = parse_duration)]
    since: Option<u64>,
    /// Only attempts finished more than this long before now.
    #[arg(long, value_parser = parse_duration)]
    until: Option<u64>,
    /// Rows at most, newest first.
    #[arg(long, default_value_t = 50, value_parser = crate::positive)]
    limit: u64,
}

/// The arguments of `archive`.
#[derive(Debug, clap::Args)]
pub(crate) struct ArchiveArgs {
    /// PostgreSQL URL of the archive (not needed with `--off`).
    #[arg(long, env = "SCHED_ARCHIVE_URL", required_unless_present = "off")]
    database_url: Option<String>,
    /// Finished attempts each partition's stream keeps at most while PostgreSQL is away.
    #[arg(long, default_value_t = scheduler::archive::DEFAULT_BOUND, value_parser = crate::positive)]
    bound: u64,
    /// Attempts read and inserted per batch (1-4000).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Turn the archive off for the namespace (the workers stop appending at their next
    /// heartbeat) and exit; entries still in the streams stay there for a later archiver.
    #[arg(long)]
    off: bool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) async fn history(ctx: &Ctx, a: HistoryArgs) -> Result<String> {
    let db = HistoryDb::connect(&a.database_url, 1).await?;
    if let Some(s) = &a.state {
        if !["succeeded", "dead", "cancelled", "expired"].contains(&s.as_str()) {
            bail!("unknown state {s:?}: the history holds succeeded, dead, cancelled and expired");
        }
    }
    let mut q = HistoryQuery::new(&ctx.namespace).limit(a.limit.min(i64::MAX as u64) as i64);
    q.id = a.id;
    q.name = a.name;
    q.queue = a.queue;
    q.state = a.state;
    let now = now_ms();
    q.since_ms = a.since.map(|d| now - d as i64);
    q.until_ms = a.until.map(|d| now - d as i64);
    let rows = db.query(&q).await?;
    if ctx.json {
        let rows: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "queue": r.queue, "shard": r.shard, "id": r.task_id, "attempt": r.attempt,
                    "name": r.name, "state": r.state, "finished_at_ms": r.finished_at_ms,
                    "enqueued_at_ms": r.enqueued_at_ms, "started_at_ms": r.started_at_ms,
                    "archived_at_ms": r.archived_at_ms, "worker": r.worker, "error": r.error,
                    "args": msgpack_json(&r.args),
                    "result": r.result.as_deref().map(msgpack_json),
                })
            })
            .collect();
        return Ok(json_out(&json!({ "rows": rows })));
    }
    if rows.is_empty() {
        return Ok("no finished attempts match\n".to_owned());
    }
    let mut t = Table::new(&[
        "FINISHED (UTC)",
        "TASK",
        "NAME",
        "STATE",
        "ATTEMPT>",
        "ARGS",
        "RESULT / ERROR",
    ]);
    for r in &rows {
        let outcome = match (&r.error, &r.result) {
            (Some(e), _) => e.clone(),
            (None, Some(b)) => msgpack_text(b),
            _ => String::new(),
        };
        t.row(vec![
            iso_utc(r.finished_at_ms),
            format!("{}/{}", r.queue, r.task_id),
            r.name.clone(),
            r.state.clone(),
            r.attempt.to_string(),
            clip(&msgpack_text(&r.args)),
            clip(&outcome),
        ]);
    }
    Ok(t.render())
}

fn clip(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(59).collect::<String>())
    } else {
        s.to_owned()
    }
}

pub(crate) async fn archive(ctx: &Ctx, a: ArchiveArgs) -> Result<String> {
    let store = ctx.client.store().clone();
    if a.off {
        store.write_archive_setting(0).await?;
        return Ok(format!(
            "archive off for namespace {}: workers stop appending at their next heartbeat\n",
            ctx.namespace
        ));
    }
    let url = a.database_url.unwrap_or_default();
    let cfg = ArchiveConfig::new(&url).bound(a.bound).batch(a.batch);
    let db = HistoryDb::connect(&url, cfg.max_connections).await?;
    store.write_archive_setting(cfg.bound).await?;
    let partitions = Archiver::all_partitions(&store).await?;
    eprintln!(
        "archive on for namespace {} (bound {} per partition); archiving {} partitions until Ctrl-C",
        ctx.namespace,
        cfg.bound,
        partitions.len()
    );
    let consumer = format!("schedctl-{}-{}", std::process::id(), now_ms());
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(Archiver::new(store, db, partitions, cfg, consumer).run(stop.clone()));
    let _ = tokio::signal::ctrl_c().await;
    stop.cancel();
    let report = run.await?;
    Ok(format!(
        "archiver stopped: {} rows stored, {} entries taken over from stopped archivers, {} database errors\n",
        report.stored, report.claimed, report.db_errors
    ))
}
