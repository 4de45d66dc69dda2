//! `schedules ls|add|rm|pause|resume|trigger`: periodic schedules, through
//! [`scheduler::Schedules`] (the same API a program uses; see `docs/schedules.md`).

use anyhow::{anyhow, Result};
use clap::Subcommand;
use scheduler::{Misfire, Overlap, Schedule, Schedules, Spec, TaskRequest};
use serde_json::{json, Value as Json};

use crate::render::{iso_utc, msgpack_json, msgpack_text, when, Table};
use crate::{json_out, Ctx};

/// The `schedules` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum SchedulesCmd {
    /// Every schedule: when it fires, its task, next tick, fired and skipped counts.
    Ls,
    /// Store a schedule (or update it when its definition changed).
    Add {
        /// The schedule's name.
        name: String,
        /// A cron expression (5 fields, or 6-7 with seconds first).
        #[arg(long, conflicts_with = "every", required_unless_present = "every")]
        cron: Option<String>,
        /// The time zone of `--cron` (IANA name).
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// A fixed interval instead: `1s`, `500ms`, `5m`, `2h`, `1d`.
        #[arg(long, value_parser = crate::render::parse_duration)]
        every: Option<u64>,
        /// The task name each tick runs.
        #[arg(long)]
        task: String,
        /// The queue.
        #[arg(long, default_value = "default")]
        queue: String,
        /// The arguments as JSON (encoded as MessagePack), e.g. `[42, "hi"]`.
        #[arg(long, default_value = "[]")]
        args: String,
        /// Priority 0..9.
        #[arg(long, default_value_t = 0)]
        priority: u8,
        /// Misfire policy: `skip`, `once` or `catchup:<n>`.
        #[arg(long, default_value = "skip")]
        misfire: String,
        /// Overlap policy: `allow` or `skip`.
        #[arg(long, default_value = "allow")]
        overlap: String,
    },
    /// Delete a schedule (tasks already enqueued stay).
    Rm {
        /// The schedule's name.
        name: String,
    },
    /// Stop enqueueing ticks.
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Enqueue ticks again; those passed meanwhile follow the misfire policy.
    Resume {
        /// The schedule's name.
        name: String,
    },
    /// Enqueue one run now, besides the ticks.
    Trigger {
        /// The schedule's name.
        name: String,
    },
}

pub(crate) async fn run(ctx: &Ctx, cmd: SchedulesCmd) -> Result<String> {
    let s = Schedules::new(&ctx.client);
    match cmd {
        SchedulesCmd::Ls => ls(ctx, &s).await,
        SchedulesCmd::Add {
            name,
            cron,
            tz,
            every,
            task,
            queue,
            args,
            priority,
            misfire,
            overlap,
        } => {
            let args: Json =
                serde_json::from_str(&args).map_err(|e| anyhow!("--args is not JSON: {e}"))?;
            let misfire = match misfire.as_str() {
                "skip" => Misfire::Skip,
                "once" => Misfire::FireOnce,
                m => Misfire::CatchUp(
                    m.strip_prefix("catchup:")
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| anyhow!("--misfire: skip, once or catchup:<n>"))?,
                ),
            };
            let overlap = match overlap.as_str() {
                "allow" => Overlap::Allow,
                "skip" => Overlap::Skip,
                _ => return Err(anyhow!("--overlap: allow or skip")),
            };
            let sched = match (cron, every) {
                (Some(expr), _) => Schedule::cron(&name, &expr, &tz)?,
                (None, Some(ms)) => Schedule::every(&name, std::time::Duration::from_millis(ms))?,
                (None, None) => return Err(anyhow!("give --cron or --every")),
            };
            let req = TaskRequest::new(task, queue, &args)?.priority(priority);
            let what = s
                .add(&sched.request(req).misfire(misfire).overlap(overlap))
                .await?;
            Ok(format!("{name}: {what:?}\n").to_lowercase())
        }
        SchedulesCmd::Rm { name } => Ok(if s.remove(&name).await? {
            format!("removed {name}\n")
        } else {
            return Err(anyhow!("schedule {name:?} not found"));
        }),
        SchedulesCmd::Pause { name } => {
            s.pause(&name).await?;
            Ok(format!("paused {name}\n"))
        }
        SchedulesCmd::Resume { name } => {
            s.resume(&name).await?;
            Ok(format!("resumed {name}\n"))
        }
        SchedulesCmd::Trigger { name } => Ok(format!("enqueued {}\n", s.trigger(&name).await?)),
    }
}

fn spec_text(spec: &Spec) -> String {
    match spec {
        Spec::Cron { expr, tz } => format!("cron {expr} ({tz})"),
        Spec::Every(d) => format!("every {}", crate::render::human_ms(d.as_millis() as u64)),
    }
}

async fn ls(ctx: &Ctx, s: &Schedules) -> Result<String> {
    let list = s.list().await?;
    let now = ctx.inspector.server_time_ms().await?;
    if ctx.json {
        let rows: Vec<Json> = list
            .iter()
            .map(|i| {
                json!({
                    "name": i.name,
                    "spec": spec_text(&i.spec),
                    "task": i.task,
                    "queue": i.queue,
                    "args": msgpack_json(&i.args),
                    "paused": i.paused,
                    "origin": i.origin,
                    "next_ms": i.next_ms,
                    "next": i.next_ms.map(iso_utc),
                    "last_id": i.last_id.as_ref().map(ToString::to_string),
                    "fired": i.fired,
                    "skipped": i.skipped,
                })
            })
            .collect();
        return Ok(json_out(
            &json!({ "server_now_ms": now, "schedules": rows }),
        ));
    }
    if list.is_empty() {
        return Ok(format!(
            "no schedules (the hash {}:schedules is empty)\n",
            ctx.namespace
        ));
    }
    let mut t = Table::new(&[
        "NAME", "WHEN", "TASK", "QUEUE", "ARGS", "STATE", "NEXT", "FIRED>", "SKIPPED>",
    ]);
    for i in &list {
        t.row(vec![
            i.name.clone(),
            spec_text(&i.spec),
            i.task.clone(),
            i.queue.clone(),
            msgpack_text(&i.args),
            if i.paused { "paused" } else { "active" }.to_owned(),
            i.next_ms.map_or_else(|| "-".to_owned(), |n| when(n, now)),
            i.fired.to_string(),
            i.skipped.to_string(),
        ]);
    }
    Ok(t.render())
}
