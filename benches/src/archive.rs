//! `archive`: the cost and lag of the task history archive (`scheduler::archive`, PostgreSQL).
//! N ready tasks drained by one in-process worker, twice: archive off, then archive on into a
//! fresh PostgreSQL database (`--database-url`, default the local server; the database is
//! created and dropped). Prints the drain rates, the archive lag (row insert minus finishing,
//! p50/p99/max from PostgreSQL), rows, drops, and Redis `used_memory` before the run, once
//! drained, and once archived (with a result TTL of 0, so that the archive holds the results).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use scheduler::archive::{ArchiveConfig, HistoryDb};
use scheduler::Worker;
use serde_json::{json, Value};

use crate::probe::Env;
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

/// One drain: seconds from the worker's start to an empty queue.
async fn drain(
    env: &Env,
    args: &Args,
    ns: &str,
    n: u64,
    archive: Option<ArchiveConfig>,
) -> Result<f64> {
    let shards = args.shards.unwrap_or(16);
    let c = client(env, ns, shards).await?;
    let pad = crate::task::pad();
    for from in (0..n).step_by(1000) {
        let reqs = (from..(from + 1000).min(n))
            .map(|i| crate::task::call(i, &pad).into_request())
            .collect::<Result<Vec<_>, _>>()?;
        c.enqueue_bulk(reqs).await?;
    }
    let mut b = Worker::builder()
        .redis_url(&env.url)
        .namespace(ns)
        .register(noop)
        .queues([QUEUE])
        .default_shards(shards)
        .concurrency(args.concurrency)
        .result_ttl(Duration::ZERO)
        .state(Arc::new(Recorder::new(env.offset_us)));
    let archived = archive.is_some();
    if let Some(a) = archive {
        b = b.archive(a);
    }
    let w = b.build().await?;
    let stop = w.shutdown_handle();
    let started = Instant::now();
    let run = tokio::spawn(w.run(std::future::pending()));
    loop {
        let s = c.queue_stats(QUEUE).await?;
        if s.ready + s.running + s.scheduled == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("queue not drained in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    if archived {
        // Let the archiver finish before the worker stops.
        let parts: Vec<_> = (0..shards).map(|s| c.store().partition(QUEUE, s)).collect();
        loop {
            let mut held = 0;
            for p in &parts {
                held += c.store().archive_backlog(p).await?.0;
            }
            if held == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.shutdown();
    run.await?;
    Ok(secs)
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
        "archive off: {n} tasks drained in {off:.2} s ({:.0}/s)",
        per_s(n, off)
    );

    psql(&admin, &format!("CREATE DATABASE {db_name}"))?;
    let result = async {
        let ns = fresh_namespace();
        let mem_before = env.used_memory().await?;
        let cfg = ArchiveConfig::new(&db_url).idle_poll(Duration::from_millis(10));
        let on = drain(env, args, &ns, n, Some(cfg)).await?;
        let mem_after = env.used_memory().await?;
        let db = HistoryDb::connect(&db_url, 1).await?;
        let (rows, p50, p99, max): (i64, f64, f64, f64) = sqlx_row(&db).await?;
        println!(
            "archive on: {n} tasks drained in {on:.2} s ({:.0}/s); {rows} rows; lag p50 {p50:.1} p99 {p99:.1} max {max:.1} ms; used_memory before {mem_before} after {mem_after} bytes",
            per_s(n, on)
        );
        env.delete_namespace(&ns).await?;
        let mut m = base(env, args, "archive", load);
        m.insert("tasks".into(), json!(n));
        m.insert("processed_per_s_archive_off".into(), json!(per_s(n, off)));
        m.insert("processed_per_s_archive_on".into(), json!(per_s(n, on)));
        m.insert("rows".into(), json!(rows));
        m.insert("lag_ms".into(), json!({"p50": p50, "p99": p99, "max": max}));
        m.insert("used_memory_before".into(), json!(mem_before));
        m.insert("used_memory_after_archived".into(), json!(mem_after));
        Ok::<_, anyhow::Error>(Value::Object(m))
    }
    .await;
    psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"),
    )?;
    result
}

/// Rows, and the lag (archived_at - finished_at) percentiles in ms.
async fn sqlx_row(db: &HistoryDb) -> Result<(i64, f64, f64, f64)> {
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
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))
}
