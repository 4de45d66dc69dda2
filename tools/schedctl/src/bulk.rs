//! Listing and bulk actions: `ls` (one page of a state), `delete`, `purge` (asks first), and
//! the progress bar `requeue --all-dead` and `purge` draw on stderr (hidden when stderr is not
//! a terminal).

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use scheduler::{TaskId, TaskState};
use serde_json::{json, Value as Json};

use crate::inspect::shards_of;
use crate::render::{iso_utc, when, Table};
use crate::{json_out, Ctx};

/// A progress bar of `total` tasks on stderr; drawn only on a terminal.
pub(crate) fn bar(total: u64, verb: &str) -> ProgressBar {
    let b = ProgressBar::new(total);
    b.set_style(
        ProgressStyle::with_template(&format!(
            "{verb} {{bar:40.cyan/blue}} {{pos}}/{{len}} tasks ({{per_sec}}, {{eta}} left)"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

fn parse_state(s: &str) -> Result<TaskState> {
    s.parse::<TaskState>()
        .map_err(|e| anyhow::anyhow!("{e}: use scheduled, ready, running or dead"))
}

/// `ls <queue> <state> [--cursor C] [--limit N]`: one page, and the command for the next.
pub(crate) async fn ls(
    ctx: &Ctx,
    queue: &str,
    state: &str,
    cursor: Option<&str>,
    limit: u64,
) -> Result<String> {
    let st = parse_state(state)?;
    shards_of(&ctx.inspector, queue).await?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let page = ctx.inspector.tasks(queue, st, cursor, limit).await?;
    if cursor.is_some() && page.tasks.is_empty() {
        bail!("this page is past the end of the {st} tasks of {queue}");
    }
    let now = ctx.inspector.server_time_ms().await?;
    if ctx.json {
        let tasks: Vec<Json> = page
            .tasks
            .iter()
            .map(|t| {
                json!({
                    "id": t.id.to_string(),
                    "shard": t.shard,
                    "name": t.name,
                    "attempts": t.attempts,
                    "score_ms": t.score,
                    "score": iso_utc(t.score),
                    "error": t.error,
                    "worker": t.worker,
                    "started_at_ms": t.started_at_ms,
                })
            })
            .collect();
        return Ok(json_out(&json!({
            "queue": queue,
            "state": st.as_str(),
            "total": page.total,
            "tasks": tasks,
            "next": page.next,
        })));
    }
    if page.total == 0 {
        return Ok(format!("no {st} tasks in {queue}\n"));
    }
    let when_col = match st {
        TaskState::Scheduled => "DUE",
        TaskState::Ready => "READY SINCE",
        TaskState::Running => "LEASE ENDS",
        _ => "DIED",
    };
    let running = st == TaskState::Running;
    let mut cols = vec!["ID", "SHARD>", "NAME", "ATTEMPTS>"];
    if running {
        cols.extend(["WORKER", "STARTED"]);
    }
    cols.extend([when_col, "ERROR"]);
    let mut t = Table::new(&cols);
    let dash = || "-".to_owned();
    for s in &page.tasks {
        let mut row = vec![
            s.id.to_string(),
            s.shard.to_string(),
            s.name.clone().unwrap_or_else(dash),
            s.attempts.map_or_else(dash, |a| a.to_string()),
        ];
        if running {
            row.push(s.worker.clone().unwrap_or_else(dash));
            row.push(s.started_at_ms.map_or_else(dash, |ms| when(ms, now)));
        }
        row.push(when(s.score, now));
        row.push(
            s.error
                .as_deref()
                .map_or_else(dash, |e| e.lines().collect::<Vec<_>>().join(" | ")),
        );
        t.row(row);
    }
    let mut out = format!(
        "{} of {} {st} tasks in {queue}\n",
        page.tasks.len(),
        page.total
    );
    out.push_str(&t.render());
    if let Some(next) = page.next {
        out.push_str(&format!(
            "next page: schedctl ls {queue} {st} --cursor {next} --limit {limit}\n"
        ));
    }
    Ok(out)
}

/// `delete <queue>/<id>`: a task that is not running, whatever its state.
pub(crate) async fn delete(ctx: &Ctx, target: &str) -> Result<String> {
    let id: TaskId = target
        .parse()
        .with_context(|| format!("{target:?} is not a task: use <queue>/<id>"))?;
    shards_of(&ctx.inspector, id.queue()).await?;
    ctx.inspector.delete(&id).await?;
    if ctx.json {
        return Ok(json_out(&json!({ "id": id.to_string(), "deleted": true })));
    }
    Ok(format!("deleted {id}\n"))
}

/// Asks on the terminal; refuses when there is none to ask on.
fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("{question} Refusing without --yes: standard input is not a terminal");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES"))
}

/// `purge <queue> <state> [--yes]`: deletes every scheduled, ready or dead task of the queue.
pub(crate) async fn purge(ctx: &Ctx, queue: &str, state: &str, yes: bool) -> Result<String> {
    let st = parse_state(state)?;
    if !matches!(
        st,
        TaskState::Scheduled | TaskState::Ready | TaskState::Dead
    ) {
        bail!("{st} tasks cannot be purged: only scheduled, ready and dead");
    }
    shards_of(&ctx.inspector, queue).await?;
    let c = ctx.inspector.queue(queue).await?.total;
    let total = match st {
        TaskState::Scheduled => c.scheduled,
        TaskState::Ready => c.ready,
        _ => c.dead,
    };
    if total > 0
        && !yes
        && !confirm(&format!(
            "Delete all {total} {st} tasks of {queue} for good?"
        ))?
    {
        bail!("not confirmed: nothing deleted");
    }
    let b = bar(total, "deleting");
    let tally = ctx
        .inspector
        .purge(queue, st, |t| b.set_position(t.deleted))
        .await;
    b.finish_and_clear();
    let tally = tally?;
    if ctx.json {
        return Ok(json_out(&json!({
            "queue": queue,
            "state": st.as_str(),
            "deleted": tally.deleted,
            "running": tally.running,
            "not_found": tally.not_found,
        })));
    }
    let mut out = format!("deleted {} {st} tasks of {queue}\n", tally.deleted);
    if tally.running + tally.not_found > 0 {
        out.push_str(&format!(
            "left alone {} that started running and {} without a record\n",
            tally.running, tally.not_found
        ));
    }
    Ok(out)
}
