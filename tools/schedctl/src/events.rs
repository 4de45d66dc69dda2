//! `events`: follow a queue's task events live, or turn them on or off (`docs/events.md`).

use std::io::Write as _;

use anyhow::{bail, Result};
use futures::StreamExt;
use serde_json::json;

use crate::Ctx;

/// `events <queue> [--on|--off] [--task ID] [--count N]`.
pub(crate) async fn events(
    ctx: &Ctx,
    queue: &str,
    on: bool,
    off: bool,
    task: Option<&str>,
    count: Option<u64>,
) -> Result<String> {
    if on || off {
        ctx.client.set_events(queue, on).await?;
        let state = if on { "on" } else { "off" };
        if ctx.json {
            return Ok(crate::json_out(&json!({ "queue": queue, "events": state })));
        }
        return Ok(format!(
            "task events of {queue} turned {state} (workers apply it at their next heartbeat, clients within 10 s)\n"
        ));
    }
    if !ctx.client.store().events_on(queue) {
        eprintln!("note: task events are off for {queue}; turn them on with `schedctl events {queue} --on`");
    }
    let mut stream = match task {
        Some(id) => {
            let id: scheduler::TaskId = format!("{queue}/{id}").parse()?;
            ctx.client.watch(&id).await?
        }
        None => ctx.client.events(queue).await?,
    };
    let mut seen = 0u64;
    let stdout = std::io::stdout();
    while count.is_none_or(|n| seen < n) {
        let next = tokio::select! {
            e = stream.next() => e,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(e) = next else {
            bail!("the subscription was lost (Redis restarted or failed over)");
        };
        seen += 1;
        let line = if ctx.json {
            json!({
                "queue": e.id.queue(),
                "id": e.id.id(),
                "kind": e.kind.as_str(),
                "attempt": e.attempt,
                "at_ms": e.at_ms,
                "progress": e.progress,
                "message": e.message,
            })
            .to_string()
        } else {
            let mut l = format!(
                "{}  {:<9}  {}  attempt {}",
                crate::render::iso_utc(e.at_ms),
                e.kind.as_str(),
                e.id,
                e.attempt
            );
            if let Some(p) = e.progress {
                l.push_str(&format!("  {p}%"));
            }
            if !e.message.is_empty() {
                l.push_str("  ");
                l.push_str(&e.message);
            }
            l
        };
        let mut out = stdout.lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(String::new())
}
