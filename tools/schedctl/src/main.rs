//! `schedctl`, the operators' CLI: looks at queues, tasks and workers in Redis and acts on single
//! tasks (cancel, requeue the dead, delete) and in bulk (requeue every dead task, purge a state,
//! with progress bars); `serve` runs the web dashboard on the same `Inspector`. It goes only through the library's `Inspector` and `Client`
//! (`docs/redis-layout.md`, "The CLI", lists every subcommand with sample output), which change
//! state only through the Lua scripts, like the workers do.
//!
//! ```text
//! schedctl queues
//! schedctl stats emails --shards
//! schedctl status emails/order-3
//! schedctl dead emails --limit 20
//! schedctl requeue emails/order-3
//! schedctl requeue emails --all-dead --limit 100
//! schedctl cancel emails/order-4
//! schedctl ls emails scheduled --limit 50
//! schedctl delete emails/order-5
//! schedctl purge emails dead --yes
//! schedctl workers
//! schedctl due emails --within 5m
//! schedctl pause emails
//! schedctl resume emails
//! schedctl limits set key:tenant --concurrency 5
//! schedctl limits set task:charge_card --rate 100 --per 1s
//! schedctl limits ls
//! schedctl limits rm key:tenant
//! schedctl events emails --on
//! schedctl events emails                        # follow them live (Ctrl-C stops)
//! schedctl export --out tasks.schedexp
//! schedctl import tasks.schedexp
//! schedctl history --database-url postgres://postgres@127.0.0.1/history --state dead --since 1h
//! schedctl archive --database-url postgres://postgres@127.0.0.1/history --bound 100000
//! schedctl serve --addr 127.0.0.1:8080 --token s3cret --read-only --prefix /ops
//! schedctl serve --database-url postgres://postgres@127.0.0.1/history   # with the history page
//! schedctl --json queues | jq '.queues[] | select(.dead > 0)'
//! ```
//!
//! Times are shown in UTC and relative to the Redis server's clock, the clock that decides when a
//! task is due. Errors go to stderr and the exit status is 1 (2 for a usage error).
//!
//! # Layout
//!
//! - `main.rs`: arguments, connecting, dispatch, printing.
//! - `inspect.rs`: what the subcommands share on top of `scheduler::Inspector`, through
//!   which every read and action goes.
//! - `queues.rs`: `queues`, `stats`, `due`, `pause`, `resume`.
//! - `tasks.rs`: `status`, `cancel`, `dead`, `requeue`.
//! - `workers.rs`: `workers`.
//! - `bulk.rs`: `ls`, `delete`, `purge`, and the progress bars of bulk actions.
//! - `render.rs`: times, durations, MessagePack, tables.
//! - `schedules.rs`: `schedules ls|add|rm|pause|resume|trigger`.
//! - `backup.rs`: `export`, `import` (logical backups, `docs/storage.md`).
//! - `history.rs`: `history`, `archive` (the task history archive in PostgreSQL).
//! - `events.rs`: `events` (task events: follow them, turn them on or off).
//! - `serve.rs`: `serve`, the web dashboard.

mod backup;
mod bulk;
mod events;
mod history;
mod inspect;
mod limits;
mod queues;
mod render;
mod schedules;
mod serve;
mod tasks;
mod workers;
mod workflows;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use clap::{Parser, Subcommand};
use scheduler::{Client, ClientConfig, Inspector};

/// Inspect and operate a Redis-backed task scheduler.
#[derive(Debug, Parser)]
#[command(name = "schedctl", version, about)]
struct Cli {
    /// Redis URL (`redis://[user:password@]host:port[/db]`, `rediss://` for TLS).
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        global = true
    )]
    redis_url: String,
    /// Key namespace, the prefix of every key.
    #[arg(long, env = "SCHED_NAMESPACE", default_value = scheduler::defaults::NAMESPACE, global = true)]
    namespace: String,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every queue with its shards and task counts: scheduled, ready, running, dead, due now,
    /// and whether it is paused.
    Queues,
    /// Pause a queue: workers stop claiming its tasks within a second (running tasks finish);
    /// enqueues and promotion go on.
    Pause {
        /// The queue.
        queue: String,
    },
    /// Resume a paused queue: workers claim its tasks again at once.
    Resume {
        /// The queue.
        queue: String,
    },
    /// Task counts and lifetime counters of one queue.
    Stats {
        /// The queue.
        queue: String,
        /// Also show every shard.
        #[arg(long)]
        shards: bool,
    },
    /// Follow a queue's task events live, one line each (`--json`: one JSON object each),
    /// until Ctrl-C; or turn them on or off for the queue (`docs/events.md`).
    Events {
        /// The queue.
        queue: String,
        /// Turn the queue's task events on (one PUBLISH per state change of its tasks).
        #[arg(long, conflicts_with_all = ["off", "task", "count"])]
        on: bool,
        /// Turn the queue's task events off.
        #[arg(long, conflicts_with_all = ["task", "count"])]
        off: bool,
        /// Only the events of this task (its id in the queue).
        #[arg(long)]
        task: Option<String>,
        /// Stop after this many events.
        #[arg(long, value_parser = positive)]
        count: Option<u64>,
    },
    /// Every field of one task, times in UTC and relative, arguments and result decoded; or,
    /// given a workflow id (no `/`), the workflow's state and each member's task state.
    Status {
        /// The task, as `<queue>/<id>`, or a workflow id.
        task: String,
    },
    /// Cancel a task: withdrawn if it has not started; if it runs, its worker is told to stop it.
    Cancel {
        /// The task, as `<queue>/<id>`.
        task: String,
    },
    /// The newest dead tasks of a queue, across shards, with their last error.
    Dead {
        /// The queue.
        queue: String,
        /// How many to show.
        #[arg(long, default_value_t = 20, value_parser = positive)]
        limit: u64,
    },
    /// Put dead tasks back in the ready set, attempts reset to 0, last error kept.
    Requeue {
        /// A task as `<queue>/<id>`, or a queue with `--all-dead`.
        target: String,
        /// Requeue every dead task of the queue (the newest `--limit` with a limit).
        #[arg(long)]
        all_dead: bool,
        /// With `--all-dead`: requeue at most this many, newest first.
        #[arg(long, requires = "all_dead", value_parser = positive)]
        limit: Option<u64>,
    },
    /// Live workers, from their heartbeats.
    Workers,
    /// One page of a queue's tasks in a state (scheduled, ready, running or dead).
    Ls {
        /// The queue.
        queue: String,
        /// scheduled, ready, running or dead.
        state: String,
        /// Where the page starts: the `next page` a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        /// Tasks per page (at most 1000).
        #[arg(long, default_value_t = 50, value_parser = positive)]
        limit: u64,
    },
    /// Delete a task that is not running (its record and its set entry).
    Delete {
        /// The task, as `<queue>/<id>`.
        task: String,
    },
    /// Delete every scheduled, ready or dead task of a queue (asks first).
    Purge {
        /// The queue.
        queue: String,
        /// scheduled, ready or dead.
        state: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Periodic schedules: `ls`, `add`, `rm`, `pause`, `resume`, `trigger`.
    Schedules {
        #[command(subcommand)]
        cmd: schedules::SchedulesCmd,
    },
    /// Flow-control limits held across every worker: ls, set, rm.
    Limits {
        #[command(subcommand)]
        cmd: limits::LimitsCmd,
    },
    /// Serve the web dashboard (queues, tasks, workers, schedules, actions) until Ctrl-C.
    Serve(serve::ServeArgs),
    /// How many tasks of a queue are due now, and within a window.
    Due {
        /// The queue.
        queue: String,
        /// The window: `60s`, `500ms`, `5m`, `2h`, `1d` (a bare number is seconds).
        #[arg(long, default_value = "60s", value_parser = render::parse_duration)]
        within: u64,
    },
    /// Write every unfinished task (scheduled, ready, running as ready, dead) and every schedule
    /// to a file (format: docs/storage.md), in pages of `--batch` tasks per script call.
    Export {
        /// Only these queues (repeat the flag); default every queue.
        #[arg(long = "queue")]
        queues: Vec<String>,
        /// The file to write (written as `<FILE>.partial`, renamed when complete).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Tasks read per script call (1-1000): the longest one call holds Redis.
        #[arg(long, default_value_t = scheduler::backup::DEFAULT_BATCH)]
        batch: u32,
    },
    /// Finished attempts (succeeded, dead, cancelled, expired) from the history archive in PostgreSQL,
    /// newest first, by id, task name, queue, state and time range.
    History(history::HistoryArgs),
    /// Run the history archive for every queue of the namespace until Ctrl-C: turns it on
    /// (workers append finished tasks to Redis streams) and moves them to PostgreSQL. `--off`
    /// turns it off.
    Archive(history::ArchiveArgs),
    /// Restore an export file: checked whole first, then imported; tasks that exist are skipped.
    Import {
        /// The export file.
        file: std::path::PathBuf,
        /// Shard count for a queue the target does not have yet, as QUEUE=N (repeat the flag);
        /// default the source's. A queue the target has keeps its count.
        #[arg(long, value_parser = backup::parse_shards)]
        shards: Vec<(String, u16)>,
    },
}

/// What every subcommand gets: the connection and the output mode.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) client: Client,
    pub(crate) inspector: Inspector,
    pub(crate) namespace: String,
    pub(crate) json: bool,
}

/// JSON for programs, pretty-printed, with a final newline.
pub(crate) fn json_out(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

/// Connects, failing within 15 s when Redis does not answer.
async fn connect(url: &str, namespace: &str) -> Result<Client> {
    let shown = render::redact_url(url);
    let config = ClientConfig::new(url).namespace(namespace);
    match tokio::time::timeout(Duration::from_secs(15), Client::with_config(config)).await {
        Err(_) => Err(anyhow!(
            "cannot connect to Redis at {shown}: no answer in 15 s"
        )),
        // The library's message would repeat the URL with its password.
        Ok(Err(scheduler::Error::InvalidUrl { source, .. })) => {
            Err(anyhow!("invalid Redis URL {shown}: {source}"))
        }
        Ok(Err(e)) => Err(anyhow!("cannot connect to Redis at {shown}: {e}")),
        Ok(Ok(c)) => Ok(c),
    }
}

async fn run(cli: Cli) -> Result<String> {
    let client = connect(&cli.redis_url, &cli.namespace).await?;
    let ctx = Ctx {
        inspector: Inspector::new(&client),
        client: client.clone(),
        namespace: cli.namespace.clone(),
        json: cli.json,
    };
    match cli.command {
        Command::Queues => queues::queues(&ctx).await,
        Command::Pause { queue } => queues::pause(&ctx, &queue, true).await,
        Command::Resume { queue } => queues::pause(&ctx, &queue, false).await,
        Command::Stats { queue, shards } => queues::stats(&ctx, &queue, shards).await,
        Command::Status { task } if !task.contains('/') => workflows::status(&ctx, &task).await,
        Command::Status { task } => tasks::status(&ctx, &task).await,
        Command::Events {
            queue,
            on,
            off,
            task,
            count,
        } => events::events(&ctx, &queue, on, off, task.as_deref(), count).await,
        Command::Cancel { task } => tasks::cancel(&ctx, &task).await,
        Command::Dead { queue, limit } => tasks::dead(&ctx, &queue, limit).await,
        Command::Requeue {
            target,
            all_dead,
            limit,
        } => {
            if all_dead {
                tasks::requeue_all(&ctx, &target, limit).await
            } else {
                tasks::requeue_one(&ctx, &target).await
            }
        }
        Command::Workers => workers::workers(&ctx).await,
        Command::Ls {
            queue,
            state,
            cursor,
            limit,
        } => bulk::ls(&ctx, &queue, &state, cursor.as_deref(), limit).await,
        Command::Delete { task } => bulk::delete(&ctx, &task).await,
        Command::Purge { queue, state, yes } => bulk::purge(&ctx, &queue, &state, yes).await,
        Command::Schedules { cmd } => schedules::run(&ctx, cmd).await,
        Command::Limits { cmd } => limits::run(&ctx, cmd).await,
        Command::Due { queue, within } => queues::due(&ctx, &queue, within).await,
        Command::Export { queues, out, batch } => backup::export(&ctx, queues, &out, batch).await,
        Command::Import { file, shards } => backup::import(&ctx, &file, shards).await,
        Command::Serve(args) => serve::serve(&ctx, args).await,
        Command::History(args) => history::history(&ctx, args).await,
        Command::Archive(args) => history::archive(&ctx, args).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("schedctl: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(out) => {
            // A closed pipe (`schedctl dead q | head`) is not an error worth a message.
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(out.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("schedctl: writing output: {e}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("schedctl: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text is already there (our
/// error types embed their source's message, and so do Redis's).
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// A count of at least 1.
fn positive(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}
