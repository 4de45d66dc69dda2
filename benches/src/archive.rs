//! `archive`: the cost and lag of the task history archive (`scheduler::archive`, PostgreSQL).
//! N ready tasks drained by one in-process worker, twice: archive off, then archive on into a
//! fresh PostgreSQL database (`--database-url`, default the local server; the database is
//! created and dropped) by `--archivers` workers that each run an archiver. Prints the drain
//! rates, the archive lag (row insert minus finishing, p50/p99/max from PostgreSQL), rows,
//! attempts stored twice, drops, the largest backlog, and Redis `used_memory` before the run,
//! with the tasks enqueued, and once archived (with a result TTL of 0, so that the archive holds
//! the results). With `--pg-outage-data` it stops that PostgreSQL cluster (`pg_ctl`) during the
//! archive-on run and starts it again `--outage-secs` later, and prints the backlog each second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use scheduler::archive::{ArchiveConfig, HistoryDb};
use scheduler::Worker;
use serde_json::{json, Value};

use crate::probe::{round2, Env};
use crate::scenarios::{base, client, fresh_namespace, per_s};
use crate::task::{noop, Recorder, QUEUE};
use crate::Args;

fn psql(admin_url: &str, sql: &str) -> Result<()> {
    let out = std::process::Command::new("psql")
        .args([admin_url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .context("psql")?;
    if !out.status.success() {
        bail!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// What one drain saw.
struct Drain {
    /// Seconds from the workers' start to an empty queue.
    secs: f64,
    /// Seconds from the workers' start to empty archive streams (archive on; else `secs`).
    archived_secs: f64,
    /// Redis `used_memory` with the N tasks enqueued, before the workers start.
    mem_loaded: i64,
    /// The most entries the archive streams held at one sample.
    backlog_peak: u64,
    /// Once a second: seconds since the start, entries in the streams, entries dropped.
    timeline: Vec<(f64, u64, u64)>,
    /// Entries dropped over the bound (the partitions' `archive_dropped`), at the end.
    dropped: u64,
    /// With `--pg-outage-data`: seconds since the start when PostgreSQL stopped and when it
    /// was back.
    outage: Option<(f64, f64)>,
}

/// Runs `pg_ctl` (blocking; from `spawn_blocking`) on the bench's own PostgreSQL cluster.
fn pg_ctl(bin: &std::path::Path, data: &std::path::Path, action: &str) -> Result<()> {
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("-D").arg(data).arg("-w");
    match action {
        "stop" => cmd.args(["-m", "fast", "stop"]),
        _ => cmd.arg("-l").arg(data.join("bench.log")).arg("start"),
    };
    let out = cmd.output().with_context(|| format!("{}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "pg_ctl {action}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// One drain: N ready tasks enqueued, then `--archivers` in-process workers (one without the
/// archive) run until the queue is empty and, with the archive on, until its streams are empty.
async fn drain(
    env: &mut Env,
    args: &Args,
    ns: &str,
    n: u64,
    archive: Option<ArchiveConfig>,
) -> Result<Drain> {
    let shards = args.shards.unwrap_or(16);
    let c = client(env, ns, shards).await?;
    let pad = crate::task::pad();
    for from in (0..n).step_by(1000) {
        let reqs = (from..(from + 1000).min(n))
            .map(|i| crate::task::call(i, &pad).into_request())
            .collect::<Result<Vec<_>, _>>()?;
        c.enqueue_bulk(reqs).await?;
    }
    let mem_loaded = env.used_memory().await?;
    let archived = archive.is_some();
    let workers = if archived { args.archivers.max(1) } else { 1 };
    let mut built = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut b = Worker::builder()
            .redis_url(&env.url)
            .namespace(ns)
            .register(noop)
            .queues([QUEUE])
            .default_shards(shards)
            .concurrency((args.concurrency / workers).max(1))
            .result_ttl(Duration::ZERO)
            .state(Arc::new(Recorder::new(env.offset_us)));
        if let Some(a) = &archive {
            b = b.archive(a.clone());
        }
        built.push(b.build().await?);
    }
    let started = Instant::now();
    let mut stops = Vec::with_capacity(workers);
    let mut runs = Vec::with_capacity(workers);
    for w in built {
        stops.push(w.shutdown_handle());
        runs.push(tokio::spawn(w.run(std::future::pending())));
    }
    // A real outage: the cluster's postmaster stopped and started again, while the workers
    // run; the archiver meets the errors its users would.
    let outage = match (&args.pg_outage_data, archived) {
        (Some(dir), true) => {
            let (bin, dir) = (args.pg_ctl.clone(), dir.clone());
            let (at, down) = (args.outage_at_secs, args.outage_secs);
            Some(tokio::spawn(async move {
                tokio::time::sleep_until((started + Duration::from_secs_f64(at)).into()).await;
                let (b, d) = (bin.clone(), dir.clone());
                tokio::task::spawn_blocking(move || pg_ctl(&b, &d, "stop")).await??;
                let stopped = started.elapsed().as_secs_f64();
                println!("  {stopped:.1} s: PostgreSQL stopped");
                tokio::time::sleep(Duration::from_secs_f64(down)).await;
                tokio::task::spawn_blocking(move || pg_ctl(&bin, &dir, "start")).await??;
                let back = started.elapsed().as_secs_f64();
                println!("  {back:.1} s: PostgreSQL started");
                Ok::<_, anyhow::Error>((stopped, back))
            }))
        }
        _ => None,
    };
    let parts: Vec<_> = (0..shards).map(|s| c.store().partition(QUEUE, s)).collect();
    let mut timeline = Vec::new();
    let (mut next_sample, mut peak, mut dropped) = (0.0, 0u64, 0u64);
    let mut drained_at = None;
    loop {
        let t = started.elapsed().as_secs_f64();
        if drained_at.is_none() {
            let s = c.queue_stats(QUEUE).await?;
            if s.ready + s.running + s.scheduled == 0 {
                drained_at = Some(t);
            }
        }
        let mut held = 0;
        let sample = t >= next_sample;
        if archived && (sample || drained_at.is_some()) {
            dropped = 0;
            for p in &parts {
                let (len, gone) = c.store().archive_backlog(p).await?;
                held += len;
                dropped += gone;
            }
            peak = peak.max(held);
            if sample {
                timeline.push((t, held, dropped));
            }
        }
        if sample {
            next_sample += 1.0;
        }
        let outage_over = outage.as_ref().is_none_or(|h| h.is_finished());
        if drained_at.is_some() && held == 0 && outage_over {
            break;
        }
        if t > 3600.0 {
            bail!("not drained and archived in an hour");
        }
        let pause = if drained_at.is_some() { 20 } else { 5 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    let archived_secs = started.elapsed().as_secs_f64();
    let outage = match outage {
        Some(h) => Some(h.await??),
        None => None,
    };
    for s in &stops {
        s.shutdown();
    }
    for r in runs {
        r.await?;
    }
    Ok(Drain {
        secs: drained_at.unwrap_or(archived_secs),
        archived_secs,
        mem_loaded,
        backlog_peak: peak,
        timeline,
        dropped,
        outage,
    })
}

/// `archive`: see the module documentation.
pub(crate) async fn archive(env: &mut Env, args: &Args) -> Result<Value> {
    let load = crate::probe::load_avg();
    let n = args.tasks.unwrap_or(100_000);
    let admin = args
        .database_url
        .clone()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let db_name = format!(
        "sched_bench_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    let db_url = match admin.rfind('/') {
        Some(i) => format!("{}/{db_name}", &admin[..i]),
        None => bail!("--database-url must name a database"),
    };

    let ns_off = fresh_namespace();
    let off = drain(env, args, &ns_off, n, None).await?;
    env.delete_namespace(&ns_off).await?;
    println!(
        "archive off: {n} tasks drained in {:.2} s ({:.0}/s)",
        off.secs,
        per_s(n, off.secs)
    );

    psql(&admin, &format!("CREATE DATABASE {db_name}"))?;
    let result = async {
        let ns = fresh_namespace();
        let mem_before = env.used_memory().await?;
        let mut cfg = ArchiveConfig::new(&db_url).idle_poll(Duration::from_millis(10));
        if let Some(b) = args.archive_bound {
            cfg = cfg.bound(b);
        }
        let bound = cfg.bound;
        let on = drain(env, args, &ns, n, Some(cfg)).await?;
        let mem_after = env.used_memory().await?;
        let db = HistoryDb::connect(&db_url, 1).await?;
        let h = history_figures(&db).await?;
        println!(
            "archive on ({} archiver(s), bound {bound}): {n} tasks drained in {:.2} s ({:.0}/s), archived after {:.2} s; \
             {} rows, {} attempts stored twice or more, {} dropped; backlog peak {}; \
             lag p50 {:.1} p99 {:.1} max {:.1} ms; \
             used_memory before {mem_before}, loaded {}, after archived {mem_after} bytes",
            args.archivers.max(1),
            on.secs,
            per_s(n, on.secs),
            on.archived_secs,
            h.rows,
            h.duplicated,
            on.dropped,
            on.backlog_peak,
            h.p50,
            h.p99,
            h.max,
            on.mem_loaded,
        );
        if on.outage.is_some() || args.archive_bound.is_some() {
            let line: Vec<String> = on
                .timeline
                .iter()
                .map(|(t, held, gone)| format!("{t:.0}s:{held}/{gone}"))
                .collect();
            println!("  backlog/dropped each second: {}", line.join(" "));
        }
        env.delete_namespace(&ns).await?;
        let mut m = base(env, args, "archive", load);
        m.insert("tasks".into(), json!(n));
        m.insert("archivers".into(), json!(args.archivers.max(1)));
        m.insert("bound".into(), json!(bound));
        m.insert("processed_per_s_archive_off".into(), json!(per_s(n, off.secs)));
        m.insert("processed_per_s_archive_on".into(), json!(per_s(n, on.secs)));
        m.insert("archived_after_s".into(), json!(round2(on.archived_secs)));
        m.insert("rows".into(), json!(h.rows));
        m.insert("attempts_stored_twice".into(), json!(h.duplicated));
        m.insert("dropped".into(), json!(on.dropped));
        m.insert("backlog_peak".into(), json!(on.backlog_peak));
        m.insert("lag_ms".into(), json!({"p50": h.p50, "p99": h.p99, "max": h.max}));
        m.insert("used_memory_before".into(), json!(mem_before));
        m.insert("used_memory_loaded".into(), json!(on.mem_loaded));
        m.insert("used_memory_after_archived".into(), json!(mem_after));
        if let Some((down, up)) = on.outage {
            m.insert("outage_s".into(), json!({"stopped": round2(down), "started": round2(up)}));
            m.insert(
                "backlog_timeline".into(),
                json!(on.timeline.iter().map(|(t, held, gone)| json!([round2(*t), held, gone])).collect::<Vec<_>>()),
            );
        }
        Ok::<_, anyhow::Error>(Value::Object(m))
    }
    .await;
    psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"),
    )?;
    result
}

/// What PostgreSQL holds after a run.
struct History {
    /// Rows in `task_history`.
    rows: i64,
    /// (task id, attempt) pairs stored more than once.
    duplicated: i64,
    /// Lag (`archived_at - finished_at`) percentiles, ms.
    p50: f64,
    p99: f64,
    max: f64,
}

/// Rows, attempts stored twice, and the lag (archived_at - finished_at) percentiles in ms.
async fn history_figures(db: &HistoryDb) -> Result<History> {
    use scheduler::archive::sqlx::Row as _;
    let r = scheduler::archive::sqlx::query(
        "SELECT count(*)::int8, \
         coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), 0)::float8, \
         coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), 0)::float8, \
         coalesce(max(lag), 0)::float8 \
         FROM (SELECT extract(epoch FROM archived_at - finished_at) * 1000 AS lag FROM task_history) t",
    )
    .fetch_one(db.pool())
    .await?;
    let d = scheduler::archive::sqlx::query(
        "SELECT count(*)::int8 FROM (SELECT 1 FROM task_history \
         GROUP BY namespace, task_id, attempt HAVING count(*) > 1) d",
    )
    .fetch_one(db.pool())
    .await?;
    Ok(History {
        rows: r.try_get(0)?,
        duplicated: d.try_get(0)?,
        p50: r.try_get(1)?,
        p99: r.try_get(2)?,
        max: r.try_get(3)?,
    })
}
