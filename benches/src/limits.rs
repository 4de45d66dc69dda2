//! `limits`: flow-control limits held across worker processes (`docs/flow-control.md`).
//!
//! - Rate: a limit of `--rate` starts per second on one key, `--workers` worker processes, a
//!   backlog of 1.5 x rate x `--window-secs` tasks due at once: starts in every sliding 1-s window
//!   (from each start, on the Redis clock: the moments the limit let the runs start), max and
//!   p99, and the share of the limit used from the first start to the last.
//! - Concurrency: a limit of `--limit-concurrency` runs at once on the task name, the same
//!   workers, `--window-secs` worth of 50-ms tasks: the most runs at once (handler start to end,
//!   every process's clock mapped to the Redis clock) and the mean from the first start to the
//!   last.
//! - Cost for everything else: `--tasks` unlimited tasks (default 50,000) drained alone, then
//!   with one rate-limited task (50 per second on one key) after every 10, then every 100, in
//!   the same partitions: processed per second of the unlimited ones, `--rounds` times
//!   interleaved, the median of each.

use std::time::Duration;

use anyhow::Result;
use scheduler::limits::{Limit, LimitScope};
use scheduler::{Inspector, TaskRequest};
use serde_json::{json, Value};

use crate::pool::Pool;
use crate::probe::{round2, Env};
use crate::scenarios::{cleanup, client, fresh_namespace, spec};
use crate::task::held;
use crate::Args;

/// How long one concurrency-limited run lasts.
const RUN_MS: u64 = 50;

pub(crate) async fn limits(env: &mut Env, args: &Args) -> Result<Value> {
    let load = crate::probe::load_avg();
    let workers = args.workers.unwrap_or(4);
    let shards = args.shards.unwrap_or(16);
    let secs = args.window_secs;
    let rate = args.rate;
    let conc = args.limit_concurrency;

    // Rate.
    let ns = fresh_namespace();
    let c = client(env, &ns, shards).await?;
    Inspector::new(&c)
        .set_limit(
            &LimitScope::key("bench")?,
            Limit::rate(rate, Duration::from_secs(1))?,
        )
        .await?;
    let n = (f64::from(rate) * secs * 1.5) as u64;
    let reqs: Vec<TaskRequest> = (0..n)
        .map(|i| held::new(i, 0).limit_key("bench", "k1").into_request())
        .collect::<scheduler::Result<_>>()?;
    let mut pool = Pool::spawn(workers, &spec(env, args, &ns, shards)).await?;
    for chunk in reqs.chunks(1000) {
        c.enqueue_bulk(chunk.to_vec()).await?;
    }
    pool.go().await?;
    let t = tokio::time::Instant::now();
    let timeout = Duration::from_secs_f64(n as f64 / f64::from(rate) * 2.0 + 30.0);
    let finished = pool.wait_runs(n, timeout).await.is_some();
    let rate_secs = t.elapsed().as_secs_f64();
    let report = pool.stop().await?;
    let mut starts: Vec<i64> = report.runs.iter().map(|r| r.due_ms + r.late_ms).collect();
    starts.sort_unstable();
    let mut per_window: Vec<usize> = (0..starts.len())
        .map(|i| {
            starts[i..]
                .iter()
                .take_while(|t| **t < starts[i] + 1000)
                .count()
        })
        .collect();
    per_window.sort_unstable();
    let pct = |v: &[usize], p: f64| {
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let span_s = (starts.last().copied().unwrap_or(0) - starts.first().copied().unwrap_or(0))
        as f64
        / 1000.0;
    let used = if span_s > 0.0 {
        (starts.len() as f64 - 1.0) / span_s / f64::from(rate)
    } else {
        0.0
    };
    let rate_json = json!({
        "limit_per_s": rate,
        "tasks": n,
        "ran": report.runs.len(),
        "finished": finished,
        "seconds": round2(rate_secs),
        "starts_per_1s_window_max": pct(&per_window, 1.0),
        "starts_per_1s_window_p99": pct(&per_window, 0.99),
        "share_of_limit_used": round2(used),
    });
    cleanup(env, args, &ns).await?;

    // Concurrency.
    let ns = fresh_namespace();
    let c = client(env, &ns, shards).await?;
    Inspector::new(&c)
        .set_limit(&LimitScope::task("held")?, Limit::concurrency(conc)?)
        .await?;
    let n = (secs * 1000.0 / RUN_MS as f64 * f64::from(conc)) as u64;
    let reqs: Vec<TaskRequest> = (0..n)
        .map(|i| held::new(i, RUN_MS).into_request())
        .collect::<scheduler::Result<_>>()?;
    let mut pool = Pool::spawn(workers, &spec(env, args, &ns, shards)).await?;
    for chunk in reqs.chunks(1000) {
        c.enqueue_bulk(chunk.to_vec()).await?;
    }
    let before = env.snapshot().await?;
    pool.go().await?;
    let t = tokio::time::Instant::now();
    let timeout = Duration::from_secs_f64(secs * 4.0 + 30.0);
    let finished = pool.wait_runs(n, timeout).await.is_some();
    let conc_secs = t.elapsed().as_secs_f64();
    let after = env.snapshot().await?;
    let report = pool.stop().await?;
    // Runs at once: +1 at each start, -1 at each end (an end before a start at the same µs).
    let mut events: Vec<(i64, i64)> = Vec::with_capacity(report.runs.len() * 2);
    for r in &report.runs {
        let start = r.due_ms * 1000 + r.late_start_us;
        events.push((start, 1));
        events.push((r.end_us, -1));
    }
    events.sort_unstable();
    let first = events.first().map_or(0, |e| e.0);
    let last_start = report
        .runs
        .iter()
        .map(|r| r.due_ms * 1000 + r.late_start_us)
        .max()
        .unwrap_or(0);
    let (mut now, mut most, mut area, mut prev) = (0i64, 0i64, 0f64, first);
    for (t, d) in &events {
        if *t > last_start {
            break;
        }
        area += now as f64 * (t - prev) as f64;
        prev = *t;
        now += d;
        most = most.max(now);
    }
    let mean = if last_start > first {
        area / (last_start - first) as f64
    } else {
        0.0
    };
    let cost = before.cost_to(&after);
    let conc_json = json!({
        "limit": conc,
        "run_ms": RUN_MS,
        "tasks": n,
        "ran": report.runs.len(),
        "finished": finished,
        "seconds": round2(conc_secs),
        "most_at_once": most,
        "mean_at_once": round2(mean),
        "redis_calls_per_task": round2(cost.calls() as f64 / n as f64),
    });
    cleanup(env, args, &ns).await?;

    // The cost for everything else: unlimited tasks drained alone, then beside limited ones of
    // the same queue (one task in ten keyed to a rate limit of 50 per second, most of them
    // waiting the whole time).
    let free = args.tasks.unwrap_or(50_000);
    let kinds = [0u64, 10, 100];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for _ in 0..args.rounds.max(1) {
        for (k, &every) in kinds.iter().enumerate() {
            rates[k].push(drain_beside_limited(env, args, workers, shards, free, every).await?);
        }
    }
    let medians: Vec<f64> = rates.iter().map(|r| median(r)).collect();
    let unlimited_json = json!({
        "tasks": free,
        "rounds": args.rounds.max(1),
        "processed_per_s_alone": medians[0],
        "processed_per_s_beside_limited_1_in_10": medians[1],
        "ratio_1_in_10": round2(medians[1] / medians[0].max(1.0)),
        "processed_per_s_beside_limited_1_in_100": medians[2],
        "ratio_1_in_100": round2(medians[2] / medians[0].max(1.0)),
        "runs_alone": rates[0],
        "runs_1_in_10": rates[1],
        "runs_1_in_100": rates[2],
    });
    Ok(json!({
        "scenario": "limits",
        "workers": workers,
        "shards": shards,
        "load_avg": round2(load),
        "rate": rate_json,
        "concurrency": conc_json,
        "unlimited": unlimited_json,
    }))
}

/// `free` unlimited tasks drained by `workers` processes, with one rate-limited task (50 per
/// second on one key, most of them waiting the whole time) after every `every` in the same
/// partitions (`every` 0: none): processed per second of the unlimited ones.
async fn drain_beside_limited(
    env: &mut Env,
    args: &Args,
    workers: usize,
    shards: u16,
    free: u64,
    every: u64,
) -> Result<f64> {
    let with_limited = every > 0;
    let ns = fresh_namespace();
    let c = client(env, &ns, shards).await?;
    let pad = crate::task::pad();
    if with_limited {
        Inspector::new(&c)
            .set_limit(
                &LimitScope::key("bench")?,
                Limit::rate(50, Duration::from_secs(1))?,
            )
            .await?;
    }
    let mut reqs: Vec<TaskRequest> = Vec::new();
    for i in 0..free {
        reqs.push(crate::task::call(i, &pad).into_request()?);
        if with_limited && i % every == every - 1 {
            reqs.push(
                held::new(1_000_000 + i, 0)
                    .limit_key("bench", "k1")
                    .into_request()?,
            );
        }
    }
    let mut pool = Pool::spawn(workers, &spec(env, args, &ns, shards)).await?;
    for chunk in reqs.chunks(1000) {
        c.enqueue_bulk(chunk.to_vec()).await?;
    }
    let go_us = env.redis_now_ms().await? * 1000;
    pool.go().await?;
    pool.wait_runs(free, Duration::from_secs(120)).await;
    let report = pool.stop().await?;
    let ends: Vec<i64> = report
        .runs
        .iter()
        .filter(|r| r.seq < 1_000_000)
        .map(|r| r.end_us)
        .collect();
    let last = ends.iter().copied().max().unwrap_or(go_us);
    let secs = (last - go_us) as f64 / 1e6;
    cleanup(env, args, &ns).await?;
    Ok(if secs > 0.0 {
        (ends.len() as f64 / secs).round()
    } else {
        0.0
    })
}

/// The median of `xs` (the mean of the two middle ones for an even count; 0 when empty).
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
