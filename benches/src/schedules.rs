//! `schedules`: N periodic schedules firing every second on one Redis, run by the worker
//! processes' schedule components (every worker runs one; no leader). After the first ticks, a
//! window of `--window-secs` is measured: tick lateness (claim minus tick time, Redis clock),
//! Redis commands and CPU per tick, and exactly-once: ticks of a schedule run twice, and ticks
//! missing between a schedule's first and last run in the window.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Result;
use scheduler::{Schedule, Schedules};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::pool::Pool;
use crate::probe::{round2, Env};
use crate::scenarios::{base, cleanup, client, fresh_namespace, spec};
use crate::stats::Lateness;
use crate::task::{self, pad};
use crate::Args;

/// The schedules' interval, ms.
const EVERY_MS: i64 = 1_000;

pub(crate) async fn schedules(env: &mut Env, args: &Args) -> Result<Value> {
    let load = crate::probe::load_avg();
    let n = args.tasks.unwrap_or(1_000);
    let shards = args.shards.unwrap_or(16);
    let workers = args.workers.unwrap_or(1);
    let window = args.window_secs;
    let ns = fresh_namespace();
    let c = client(env, &ns, shards).await?;
    let mut pool = Pool::spawn(workers, &spec(env, args, &ns, shards)).await?;
    pool.go().await?;

    let api = Schedules::new(&c);
    let pad = pad();
    let t = Instant::now();
    for i in 0..n {
        let s = Schedule::every(format!("b{i}"), Duration::from_millis(EVERY_MS as u64))?
            .task(task::call(i, &pad))?;
        api.add(&s).await?;
    }
    let add_secs = t.elapsed().as_secs_f64();
    // Two seconds of ticks before the window: the first ticks are enqueued ahead as soon as a
    // schedule component sees the schedule.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start_ms = env.redis_now_ms().await?;
    let before = env.snapshot().await?;
    tokio::time::sleep(Duration::from_secs_f64(window)).await;
    let after = env.snapshot().await?;
    let end_ms = env.redis_now_ms().await?;
    for i in 0..n {
        api.remove(&format!("b{i}")).await?;
    }
    // Let the ticks enqueued ahead of the window's end run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = pool.stop().await?;

    // The ticks due inside the window.
    let inside: Vec<_> = report
        .runs
        .iter()
        .copied()
        .filter(|r| r.due_ms >= start_ms && r.due_ms < end_ms)
        .collect();
    let mut per_schedule: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for r in &inside {
        per_schedule.entry(r.seq).or_default().push(r.due_ms);
    }
    let mut twice = 0u64;
    let mut missed = 0u64;
    let mut ticks = 0u64;
    for dues in per_schedule.values() {
        let distinct: BTreeSet<i64> = dues.iter().copied().collect();
        twice += (dues.len() - distinct.len()) as u64;
        ticks += distinct.len() as u64;
        if let (Some(first), Some(last)) = (distinct.first(), distinct.last()) {
            missed += ((last - first) / EVERY_MS + 1) as u64 - distinct.len() as u64;
        }
    }
    let silent = n - per_schedule.len() as u64;
    let late = Lateness::of(&inside);
    let cost = before.cost_to(&after);
    let secs = (end_ms - start_ms) as f64 / 1000.0;
    println!(
        "schedules: {n} schedules every {EVERY_MS} ms (added in {add_secs:.1} s), {workers} worker process(es), {ticks} ticks due in {secs:.1} s: \
         {missed} missed, {twice} run twice, {silent} schedules without a tick"
    );
    println!(
        "  tick lateness, claim - tick on the Redis clock: p50 {} p99 {} max {} ms, {} early",
        late.claim.p50, late.claim.p99, late.claim.max, late.early
    );
    cleanup(env, args, &ns).await?;
    let mut m = base(env, args, "schedules", load);
    m.insert("schedules".into(), json!(n));
    m.insert("every_ms".into(), json!(EVERY_MS));
    m.insert("workers".into(), json!(workers));
    m.insert("shards".into(), json!(shards));
    m.insert("window_secs".into(), json!(round2(secs)));
    m.insert("add_secs".into(), json!(round2(add_secs)));
    m.insert("ticks".into(), json!(ticks));
    m.insert("missed".into(), json!(missed));
    m.insert("duplicates".into(), json!(twice));
    m.insert("silent_schedules".into(), json!(silent));
    m.insert("lateness_ms".into(), late.claim.to_json());
    m.insert("early".into(), json!(late.early));
    m.insert("profile".into(), cost.to_json(ticks));
    Ok(Value::Object(m))
}
