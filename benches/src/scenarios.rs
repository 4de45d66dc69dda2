//! The scenarios of issue 3. Each returns its JSON object (printed last by `main`) and prints a
//! short human summary on the way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use scheduler::redis::{self, Value as RValue};
use scheduler::{Client, ClientConfig, TaskRequest};
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::pool::{Pool, WorkerSpec};
use crate::probe::{round2, Env};
use crate::stats::{lost_and_duplicates, Lateness};
use crate::task::{self, local_us, pad, QUEUE};
use crate::Args;

/// A namespace no other run uses.
pub(crate) fn fresh_namespace() -> String {
    format!("bench-{}-{:08x}", std::process::id(), rand::random::<u32>())
}

/// A client on namespace `ns` whose bench queue has `shards` shards.
pub(crate) async fn client(env: &Env, ns: &str, shards: u16) -> Result<Client> {
    let c = Client::with_config(
        ClientConfig::new(&env.url)
            .namespace(ns)
            .queue_shards(QUEUE, shards),
    )
    .await?;
    c.shards(QUEUE).await?;
    Ok(c)
}

pub(crate) fn spec(env: &Env, args: &Args, ns: &str, shards: u16) -> WorkerSpec {
    WorkerSpec {
        url: env.url.clone(),
        namespace: ns.to_owned(),
        shards,
        concurrency: args.concurrency,
        offset_us: env.offset_us,
        result_ttl_secs: args.result_ttl_secs,
        middleware: args.middleware,
        archive_url: args.archive_url.clone(),
    }
}

pub(crate) fn per_s(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        (n as f64 / secs).round()
    } else {
        0.0
    }
}

/// Enqueues tasks `range` one call each from `producers` concurrent producers sharing `client`
/// (one multiplexed connection); seconds taken.
async fn enqueue_single(
    client: &Client,
    range: std::ops::Range<u64>,
    producers: usize,
) -> Result<f64> {
    let next = Arc::new(AtomicU64::new(range.start));
    let end = range.end;
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..producers.max(1) {
        let c = client.clone();
        let next = Arc::clone(&next);
        set.spawn(async move {
            let pad = pad();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, anyhow::Error>(());
                }
                task::call(i, &pad).send(&c).await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// When a task becomes due.
#[derive(Debug, Clone, Copy)]
enum When {
    Now,
    In(Duration),
}

fn request(seq: u64, pad: &str, when: When) -> Result<TaskRequest> {
    let call = task::call(seq, pad);
    let call = match when {
        When::Now => call,
        When::In(d) => call.countdown(d),
    };
    Ok(call.into_request()?)
}

/// Enqueues `n` tasks due `delay` after their enqueue with the bulk API from 4 producers;
/// seconds taken.
pub(crate) async fn enqueue_due_in(
    client: &Client,
    n: u64,
    chunk: usize,
    delay: Duration,
) -> Result<f64> {
    enqueue_bulk(client, 0..n, chunk, 4, When::In(delay)).await
}

/// Enqueues tasks `range` with the bulk API, `chunk` per call, from `producers` concurrent
/// producers each sending one chunk at a time; seconds taken.
async fn enqueue_bulk(
    client: &Client,
    range: std::ops::Range<u64>,
    chunk: usize,
    producers: usize,
    when: When,
) -> Result<f64> {
    let chunk = chunk.max(1) as u64;
    let next = Arc::new(AtomicU64::new(range.start));
    let end = range.end;
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..producers.max(1) {
        let c = client.clone();
        let next = Arc::clone(&next);
        set.spawn(async move {
            let pad = pad();
            loop {
                let from = next.fetch_add(chunk, Ordering::Relaxed);
                if from >= end {
                    return Ok::<_, anyhow::Error>(());
                }
                let reqs = (from..(from + chunk).min(end))
                    .map(|i| request(i, &pad, when))
                    .collect::<Result<Vec<_>>>()?;
                c.enqueue_bulk(reqs).await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Waits until the queue holds nothing scheduled, ready or running (every run acknowledged).
async fn wait_queue_empty(client: &Client, timeout: Duration) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = client.queue_stats(QUEUE).await?;
        if s.scheduled + s.ready + s.running == 0 {
            return Ok(Instant::now());
        }
        if Instant::now() >= deadline {
            bail!(
                "queue not empty after {timeout:?}: {} scheduled, {} ready, {} running",
                s.scheduled,
                s.ready,
                s.running
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What draining a queue with a pool of worker processes measured.
#[derive(Debug)]
struct Drain {
    secs: f64,
    lost: u64,
    duplicates: u64,
    worker_cpu_us: u64,
    cost: crate::probe::Cost,
}

impl Drain {
    fn processed_per_s(&self, n: u64) -> f64 {
        per_s(n, self.secs)
    }
}

/// Starts `workers` worker processes on a queue already holding tasks `0..n`, and measures the
/// time until all ran and the queue is empty.
async fn drain(
    env: &mut Env,
    args: &Args,
    client: &Client,
    ns: &str,
    shards: u16,
    workers: usize,
    n: u64,
) -> Result<Drain> {
    let mut pool = Pool::spawn(workers, &spec(env, args, ns, shards)).await?;
    let before = env.snapshot().await?;
    let go = pool.go().await?;
    let timeout = Duration::from_secs(60) + Duration::from_millis(n);
    let seen = pool.wait_runs(n, timeout).await;
    if seen.is_none() {
        eprintln!("  only {} of {n} tasks ran within {timeout:?}", pool.runs());
    }
    let done = match wait_queue_empty(client, Duration::from_secs(10)).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("  {e}");
            Instant::now()
        }
    };
    let after = env.snapshot().await?;
    let worker_cpu_us = pool.cpu_us_since_go();
    let report = pool.stop().await?;
    let (lost, duplicates) = lost_and_duplicates(&report.runs, n);
    Ok(Drain {
        secs: done.duration_since(go).as_secs_f64(),
        lost,
        duplicates,
        worker_cpu_us,
        cost: before.cost_to(&after),
    })
}

pub(crate) async fn cleanup(env: &mut Env, args: &Args, ns: &str) -> Result<()> {
    if !args.keep {
        env.delete_namespace(ns).await?;
    }
    Ok(())
}

pub(crate) fn base(
    env: &Env,
    args: &Args,
    scenario: &str,
    load_start: f64,
) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("scenario".into(), json!(scenario));
    m.insert("system".into(), json!("scheduler"));
    m.insert("redis_version".into(), json!(env.version));
    m.insert("concurrency".into(), json!(args.concurrency));
    m.insert("result_ttl_secs".into(), json!(args.result_ttl_secs));
    m.insert("middleware".into(), json!(args.middleware));
    m.insert("archive".into(), json!(args.archive_url.is_some()));
    m.insert("load_avg_1m_start".into(), json!(load_start));
    m.insert("load_avg_1m_end".into(), json!(crate::probe::load_avg()));
    m
}

/// `throughput`: N single enqueues from concurrent producers, N bulk enqueues, then worker
/// processes drain all 2N.
pub(crate) async fn throughput(env: &mut Env, args: &Args) -> Result<Value> {
    let load = crate::probe::load_avg();
    let n = args.tasks.unwrap_or(100_000);
    let shards = args.shards.unwrap_or(16);
    let workers = args.workers.unwrap_or(1);
    let ns = fresh_namespace();
    let client = client(env, &ns, shards).await?;

    let s0 = env.snapshot().await?;
    let single = enqueue_single(&client, 0..n, args.producers).await?;
    let s1 = env.snapshot().await?;
    let bulk = enqueue_bulk(&client, n..2 * n, args.bulk_chunk, 1, When::Now).await?;
    let s2 = env.snapshot().await?;
    println!(
        "enqueue: {n} single calls from {} producers in {single:.2} s ({:.0}/s); {n} in bulk chunks of {} in {bulk:.2} s ({:.0}/s)",
        args.producers,
        per_s(n, single),
        args.bulk_chunk,
        per_s(n, bulk)
    );
    let d = drain(env, args, &client, &ns, shards, workers, 2 * n).await?;
    println!(
        "processed: {} tasks by {workers} worker process(es) x {} concurrency in {:.2} s ({:.0}/s); lost {}, duplicates {}",
        2 * n,
        args.concurrency,
        d.secs,
        d.processed_per_s(2 * n),
        d.lost,
        d.duplicates
    );
    cleanup(env, args, &ns).await?;
    let mut m = base(env, args, "throughput", load);
    m.insert("tasks".into(), json!(n));
    m.insert("processed_tasks".into(), json!(2 * n));
    m.insert("shards".into(), json!(shards));
    m.insert("workers".into(), json!(workers));
    m.insert("producers".into(), json!(args.producers));
    m.insert("bulk_chunk".into(), json!(args.bulk_chunk));
    m.insert("enqueue_per_s".into(), json!(per_s(n, single)));
    m.insert("enqueue_bulk_per_s".into(), json!(per_s(n, bulk)));
    m.insert("processed_per_s".into(), json!(d.processed_per_s(2 * n)));
    m.insert("lost".into(), json!(d.lost));
    m.insert("duplicates".into(), json!(d.duplicates));
    m.insert(
        "worker_cpu_us_per_task".into(),
        json!(round2(d.worker_cpu_us as f64 / (2 * n) as f64)),
    );
    m.insert(
        "profile".into(),
        json!({
            "enqueue": s0.cost_to(&s1).to_json(n),
            "enqueue_bulk": s1.cost_to(&s2).to_json(n),
            "drain": d.cost.to_json(2 * n),
        }),
    );
    Ok(Value::Object(m))
}

/// What a lateness run measured.
#[derive(Debug)]
struct LateRun {
    late: Lateness,
    lost: u64,
    duplicates: u64,
    cost: crate::probe::Cost,
    worker_cpu_us: u64,
    max_ahead_ms: f64,
    /// `--events`: the events the subscriber received.
    events: Option<u64>,
}

/// With the workers running, schedules `n` tasks due uniformly over `spread` seconds starting one
/// second from now; the producer sends them in bulk, each at least `lead` before it is due.
async fn lateness_run(
    env: &mut Env,
    args: &Args,
    n: u64,
    spread: f64,
    shards: u16,
    workers: usize,
) -> Result<LateRun> {
    let ns = fresh_namespace();
    let client = client(env, &ns, shards).await?;
    // Events on (before the workers start, so that they read the setting at connect), and a
    // subscriber counting them.
    let subscriber = if args.events {
        client.set_events(QUEUE, true).await?;
        let mut events = client.events(QUEUE).await?;
        Some(tokio::spawn(async move {
            use futures::StreamExt;
            let mut seen = 0u64;
            while events.next().await.is_some() {
                seen += 1;
                if seen == 3 * n {
                    break;
                }
            }
            seen
        }))
    } else {
        None
    };
    let mut pool = Pool::spawn(workers, &spec(env, args, &ns, shards)).await?;
    let before = env.snapshot().await?;
    pool.go().await?;
    // Let the workers subscribe and sweep before the first task is due.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lead_ms = 1000i64;
    let offset_ms = env.offset_us / 1000;
    let t0 = env.redis_now_ms().await? + lead_ms;
    let span_ms = spread * 1000.0;
    let due = |i: u64| t0 + (span_ms * (i as f64 + 0.5) / n as f64) as i64;
    let pad = pad();
    let mut next = 0u64;
    // How far ahead of its due time the last task of each bulk was sent at the latest, to check
    // that the producer kept up (a negative value: the producer was late, not the scheduler).
    let mut min_ahead_ms = f64::MAX;
    while next < n {
        let now_ms = (local_us() + env.offset_us) / 1000;
        let horizon = now_ms + lead_ms;
        let mut reqs = Vec::new();
        while next < n && due(next) <= horizon && reqs.len() < args.bulk_chunk {
            let at = UNIX_EPOCH + Duration::from_millis((due(next) - offset_ms) as u64);
            reqs.push(at_request(next, &pad, at)?);
            next += 1;
        }
        if reqs.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let last_due = due(next - 1);
        client.enqueue_bulk(reqs).await?;
        let sent_ms = (local_us() + env.offset_us) as f64 / 1000.0;
        min_ahead_ms = min_ahead_ms.min(last_due as f64 - sent_ms);
    }
    let end = t0 + span_ms as i64;
    let wait = Duration::from_millis((end - env.redis_now_ms().await?).max(0) as u64)
        + Duration::from_secs(60);
    if pool.wait_runs(n, wait).await.is_none() {
        eprintln!("  only {} of {n} tasks ran", pool.runs());
    }
    let after = env.snapshot().await?;
    let worker_cpu_us = pool.cpu_us_since_go();
    let report = pool.stop().await?;
    let events = match subscriber {
        Some(mut s) => {
            // enqueued, started and succeeded per task; a few may be lost (at most once).
            let seen = tokio::time::timeout(Duration::from_secs(5), &mut s).await;
            s.abort();
            Some(seen.ok().and_then(|r| r.ok()).unwrap_or(0))
        }
        None => None,
    };
    let (lost, duplicates) = lost_and_duplicates(&report.runs, n);
    let late = Lateness::of(&report.runs);
    cleanup(env, args, &ns).await?;
    Ok(LateRun {
        late,
        lost,
        duplicates,
        cost: before.cost_to(&after),
        worker_cpu_us,
        events,
        max_ahead_ms: round2(min_ahead_ms),
    })
}

fn at_request(seq: u64, pad: &str, at: SystemTime) -> Result<TaskRequest> {
    Ok(task::call(seq, pad).eta(at).into_request()?)
}

/// `lateness`: N tasks due uniformly over S seconds, scheduled while the workers run.
pub(crate) async fn lateness(env: &mut Env, args: &Args) -> Result<Value> {
    let load = crate::probe::load_avg();
    let n = args.tasks.unwrap_or(20_000);
    let spread = args.spread_secs.unwrap_or(10.0);
    let shards = args.shards.unwrap_or(16);
    let workers = args.workers.unwrap_or(1);
    let r = lateness_run(env, args, n, spread, shards, workers).await?;
    let l = &r.late;
    println!(
        "lateness of {n} tasks due over {spread} s ({:.0}/s), claim - due on the Redis clock: p50 {} p90 {} p99 {} max {} ms, {} early",
        n as f64 / spread,
        l.claim.p50,
        l.claim.p90,
        l.claim.p99,
        l.claim.max,
        l.early
    );
    println!(
        "  handler start - due (real clock, µs resolution): p50 {} p90 {} p99 {} max {} ms, {} early; lost {}, duplicates {}",
        l.start.p50, l.start.p90, l.start.p99, l.start.max, l.early_start, r.lost, r.duplicates
    );
    let mut m = base(env, args, "lateness", load);
    m.insert("tasks".into(), json!(n));
    m.insert("spread_secs".into(), json!(spread));
    m.insert("shards".into(), json!(shards));
    m.insert("workers".into(), json!(workers));
    m.insert("lateness_ms".into(), l.claim.to_json());
    m.insert("early".into(), json!(l.early));
    m.insert("lateness_start_ms".into(), l.start.to_json());
    m.insert("early_start".into(), json!(l.early_start));
    m.insert("lost".into(), json!(r.lost));
    m.insert("duplicates".into(), json!(r.duplicates));
    m.insert("producer_min_ahead_ms".into(), json!(r.max_ahead_ms));
    m.insert(
        "worker_cpu_us_per_task".into(),
        json!(round2(r.worker_cpu_us as f64 / n.max(1) as f64)),
    );
    m.insert("profile".into(), r.cost.to_json(n));
    m.insert("events".into(), json!(args.events));
    if let Some(seen) = r.events {
        println!(
            "  task events received by one subscriber: {seen} (3 per task: {})",
            3 * n
        );
        m.insert("events_received".into(), json!(seen));
    }
    Ok(Value::Object(m))
}

/// `memory`: N tasks due in one hour; used_memory and DBSIZE deltas.
pub(crate) async fn memory(env: &mut Env, args: &Args) -> Result<Value> {
    let load = crate::probe::load_avg();
    let n = args.tasks.unwrap_or(100_000);
    let shards = args.shards.unwrap_or(16);
    let ns = fresh_namespace();
    let client = client(env, &ns, shards).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (m0, k0) = (env.used_memory().await?, env.dbsize().await?);
    let secs = enqueue_bulk(
        &client,
        0..n,
        args.bulk_chunk,
        1,
        When::In(Duration::from_secs(3600)),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (m1, k1) = (env.used_memory().await?, env.dbsize().await?);
    let bytes = (m1 - m0) as f64 / n as f64;
    println!(
        "memory: {n} tasks due in 1 h take {} bytes of used_memory ({bytes:.0} B/task) and {} keys",
        m1 - m0,
        k1 - k0
    );
    cleanup(env, args, &ns).await?;
    let mut m = base(env, args, "memory", load);
    m.insert("tasks".into(), json!(n));
    m.insert("shards".into(), json!(shards));
    m.insert("bytes_per_task".into(), json!(bytes.round()));
    m.insert("used_memory_delta".into(), json!(m1 - m0));
    m.insert("keys_created".into(), json!(k1 - k0));
    m.insert("enqueue_bulk_per_s".into(), json!(per_s(n, secs)));
    Ok(Value::Object(m))
}

/// `backlog`: N tasks already due when the workers start; drain rate and the longest command.
pub(crate) async fn backlog(env: &mut Env, args: &Args) -> Result<Value> {
    let load = crate::probe::load_avg();
    let n = args.tasks.unwrap_or(1_000_000);
    let shards = args.shards.unwrap_or(16);
    let workers = args.workers.unwrap_or(1);
    let ns = fresh_namespace();
    let client = client(env, &ns, shards).await?;
    let fill = enqueue_bulk(&client, 0..n, args.bulk_chunk, 4, When::Now).await?;
    println!(
        "backlog: {n} due tasks enqueued in {fill:.1} s ({:.0}/s, 4 bulk producers)",
        per_s(n, fill)
    );
    let old_slow = env.config_set("slowlog-log-slower-than", "1000").await?;
    let old_len = env.config_set("slowlog-max-len", "100000").await?;
    let old_lat = env.config_set("latency-monitor-threshold", "1").await?;
    redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async::<()>(&mut env.admin)
        .await?;
    redis::cmd("LATENCY")
        .arg("RESET")
        .query_async::<()>(&mut env.admin)
        .await?;
    let d = drain(env, args, &client, &ns, shards, workers, n).await?;
    // LATENCY first: a long SLOWLOG GET would show up in the latency monitor itself.
    let latest: Vec<(String, i64, i64, i64)> = redis::cmd("LATENCY")
        .arg("LATEST")
        .query_async(&mut env.admin)
        .await
        .unwrap_or_default();
    let slow: Vec<RValue> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(&mut env.admin)
        .await?;
    env.config_set("slowlog-log-slower-than", &old_slow).await?;
    env.config_set("slowlog-max-len", &old_len).await?;
    env.config_set("latency-monitor-threshold", &old_lat)
        .await?;
    let mut slow_entries: Vec<(i64, String)> = slow
        .into_iter()
        .filter_map(|e| match e {
            RValue::Array(f) if f.len() >= 4 => {
                let us: i64 = redis::from_redis_value_ref(&f[2]).ok()?;
                Some((us, slow_label(&command_words(&f[3]))))
            }
            _ => None,
        })
        .collect();
    slow_entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    let max_us = slow_entries.first().map_or(0, |e| e.0);
    let over_10ms = slow_entries.iter().filter(|e| e.0 > 10_000).count();
    println!(
        "drained {n} in {:.2} s ({:.0}/s) with {workers} worker process(es); lost {}, duplicates {}",
        d.secs,
        d.processed_per_s(n),
        d.lost,
        d.duplicates
    );
    let mut by_label: std::collections::BTreeMap<String, (u64, i64)> = Default::default();
    for (us, label) in &slow_entries {
        let e = by_label.entry(label.clone()).or_default();
        e.0 += 1;
        e.1 = e.1.max(*us);
    }
    for (label, (count, max)) in &by_label {
        println!(
            "  {label}: {count} runs over 1 ms, longest {:.2} ms",
            *max as f64 / 1000.0
        );
    }
    println!(
        "  commands over 1 ms: {} (over 10 ms: {over_10ms}); longest {:.2} ms{}",
        slow_entries.len(),
        max_us as f64 / 1000.0,
        slow_entries
            .first()
            .map(|e| format!(" ({})", e.1))
            .unwrap_or_default()
    );
    cleanup(env, args, &ns).await?;
    let mut m = base(env, args, "backlog", load);
    m.insert("tasks".into(), json!(n));
    m.insert("shards".into(), json!(shards));
    m.insert("workers".into(), json!(workers));
    m.insert("enqueue_bulk_per_s".into(), json!(per_s(n, fill)));
    m.insert("processed_per_s".into(), json!(d.processed_per_s(n)));
    m.insert("lost".into(), json!(d.lost));
    m.insert("duplicates".into(), json!(d.duplicates));
    m.insert(
        "max_script_ms".into(),
        json!(round2(max_us as f64 / 1000.0)),
    );
    m.insert("slowlog_over_1ms".into(), json!(slow_entries.len()));
    m.insert("slowlog_over_10ms".into(), json!(over_10ms));
    m.insert(
        "slowlog_by_command".into(),
        Value::Object(
            by_label
                .into_iter()
                .map(|(l, (c, max))| {
                    (
                        l,
                        json!({ "over_1ms": c, "max_ms": round2(max as f64 / 1000.0) }),
                    )
                })
                .collect(),
        ),
    );
    m.insert(
        "latency_latest".into(),
        Value::Object(
            latest
                .into_iter()
                .map(|(ev, _, last, max)| (ev, json!({ "latest_ms": last, "max_ms": max })))
                .collect(),
        ),
    );
    m.insert(
        "worker_cpu_us_per_task".into(),
        json!(round2(d.worker_cpu_us as f64 / n.max(1) as f64)),
    );
    m.insert("profile".into(), d.cost.to_json(n));
    Ok(Value::Object(m))
}

/// A `SLOWLOG` entry's command and arguments as text (binary arguments, such as a task's
/// MessagePack, lossily: a conversion to `String` would fail and lose the whole entry's label).
fn command_words(v: &RValue) -> Vec<String> {
    redis::from_redis_value_ref::<Vec<Vec<u8>>>(v)
        .unwrap_or_default()
        .iter()
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect()
}

/// A slow command's label: the command, and for a script the last part of its first key, which
/// tells the script apart (`:ready` claim, `:active` ack/retry/extend, `:scheduled` enqueue or
/// promote).
pub(crate) fn slow_label(cmd: &[String]) -> String {
    let name = cmd.first().map_or("?", String::as_str).to_uppercase();
    if name.starts_with("EVAL") {
        let key = cmd
            .get(3)
            .map_or("", |k| k.rsplit(':').next().unwrap_or(""));
        format!("{name} first key :{key}")
    } else {
        name
    }
}

/// `idle`: W workers on an empty queue; Redis commands per second per worker.
pub(crate) async fn idle(env: &mut Env, args: &Args) -> Result<Value> {
    let load = crate::probe::load_avg();
    let shards = args.shards.unwrap_or(16);
    let workers = args.workers.unwrap_or(4);
    let window = args.window_secs;
    let ns = fresh_namespace();
    let _client = client(env, &ns, shards).await?;
    let mut pool = Pool::spawn(workers, &spec(env, args, &ns, shards)).await?;
    pool.go().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s0 = env.snapshot().await?;
    tokio::time::sleep(Duration::from_secs_f64(window)).await;
    let s1 = env.snapshot().await?;
    pool.stop().await?;
    let cost = s0.cost_to(&s1);
    let per = cost.calls() as f64 / workers as f64 / cost.secs;
    println!(
        "idle: {workers} workers x {shards} shards sent {} commands in {:.1} s: {per:.2}/s per worker ({:?})",
        cost.calls(),
        cost.secs,
        cost.cmds
    );
    cleanup(env, args, &ns).await?;
    let mut m = base(env, args, "idle", load);
    m.insert("shards".into(), json!(shards));
    m.insert("workers".into(), json!(workers));
    m.insert("window_secs".into(), json!(round2(cost.secs)));
    m.insert("idle_cmds_per_s_per_worker".into(), json!(round2(per)));
    m.insert("profile".into(), cost.to_json(0));
    Ok(Value::Object(m))
}

/// `scale`: processed/s for shards x worker processes, and lateness against due rate.
pub(crate) async fn scale(env: &mut Env, args: &Args) -> Result<Value> {
    let load = crate::probe::load_avg();
    let n = args.tasks.unwrap_or(50_000);
    let mut grid = Vec::new();
    println!("processed/s of {n} queued tasks, by shards x worker processes:");
    println!("  shards  workers  processed/s  lost  dup  redis_cpu_busy  redis_us/task  worker_cpu_us/task");
    for shards in [1u16, 16, 64] {
        for workers in [1usize, 2, 4] {
            let ns = fresh_namespace();
            let client = client(env, &ns, shards).await?;
            enqueue_bulk(&client, 0..n, args.bulk_chunk, 2, When::Now).await?;
            let d = drain(env, args, &client, &ns, shards, workers, n).await?;
            cleanup(env, args, &ns).await?;
            let busy = d.cost.cpu_s / d.secs.max(1e-9);
            let redis_us = d.cost.cpu_s * 1e6 / n as f64;
            let worker_us = d.worker_cpu_us as f64 / n as f64;
            println!(
                "  {shards:>6}  {workers:>7}  {:>11.0}  {:>4}  {:>3}  {busy:>14.2}  {redis_us:>13.2}  {worker_us:>18.2}",
                d.processed_per_s(n),
                d.lost,
                d.duplicates
            );
            grid.push(json!({
                "shards": shards, "workers": workers, "tasks": n,
                "processed_per_s": d.processed_per_s(n), "lost": d.lost, "duplicates": d.duplicates,
                "redis_cpu_busy": round2(busy), "redis_cpu_us_per_task": round2(redis_us),
                "worker_cpu_us_per_task": round2(worker_us),
            }));
        }
    }
    let spread = args.spread_secs.unwrap_or(4.0);
    let shards = args.shards.unwrap_or(16);
    let workers = args.workers.unwrap_or(1);
    let rates = args
        .rates
        .clone()
        .unwrap_or_else(|| vec![1_000, 10_000, 50_000]);
    let mut by_rate = Vec::new();
    println!("lateness (claim - due, ms) by due rate, {spread} s each, {shards} shards, {workers} worker process(es):");
    println!("  rate/s   tasks    p50    p90    p99    max  early  lost  redis_cpu_busy");
    for rate in rates {
        let tasks = (rate as f64 * spread).round() as u64;
        let r = lateness_run(env, args, tasks, spread, shards, workers).await?;
        let busy = r.cost.cpu_s / r.cost.secs.max(1e-9);
        let c = r.late.claim;
        println!(
            "  {rate:>6}  {tasks:>6}  {:>5}  {:>5}  {:>5}  {:>5}  {:>5}  {:>4}  {busy:>14.2}",
            c.p50, c.p90, c.p99, c.max, r.late.early, r.lost
        );
        by_rate.push(json!({
            "rate_per_s": rate, "tasks": tasks, "spread_secs": spread,
            "lateness_ms": c.to_json(), "early": r.late.early,
            "lateness_start_ms": r.late.start.to_json(), "early_start": r.late.early_start,
            "lost": r.lost, "duplicates": r.duplicates, "producer_min_ahead_ms": r.max_ahead_ms,
            "redis_cpu_busy": round2(busy),
        }));
    }
    let mut m = base(env, args, "scale", load);
    m.insert("tasks".into(), json!(n));
    m.insert("throughput_grid".into(), json!(grid));
    m.insert("lateness_by_rate".into(), json!(by_rate));
    Ok(Value::Object(m))
}

/// `profile`: Redis cost of each script per task, step by step through the store API: bulk
/// enqueue (delayed), promote, claim, ack.
pub(crate) async fn profile(env: &mut Env, args: &Args) -> Result<Value> {
    use scheduler::broker::scripts::AckItem;

    let load = crate::probe::load_avg();
    let n = args.tasks.unwrap_or(100_000);
    let shards = args.shards.unwrap_or(16);
    let ns = fresh_namespace();
    let client = client(env, &ns, shards).await?;
    let store = client.store().clone();
    let parts: Vec<_> = (0..shards).map(|s| store.partition(QUEUE, s)).collect();
    let delay = Duration::from_millis(2000 + n / 20);
    let s0 = env.snapshot().await?;
    enqueue_bulk(&client, 0..n, args.bulk_chunk, 1, When::In(delay)).await?;
    // The last task is due `delay` after its enqueue, which ended now.
    let all_due = Instant::now() + delay + Duration::from_millis(50);
    let s1 = env.snapshot().await?;
    let stats = client.queue_stats(QUEUE).await?;
    if stats.ready > 0 {
        eprintln!(
            "  {} tasks were due before enqueue ended; promote sees fewer",
            stats.ready
        );
    }
    tokio::time::sleep_until(all_due).await;
    let s2 = env.snapshot().await?;
    let mut promoted = 0;
    for p in &parts {
        loop {
            let r = store.promote(p, 500).await?;
            promoted += r.moved;
            if r.moved < 500 {
                break;
            }
        }
    }
    let s3 = env.snapshot().await?;
    let mut claimed = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        loop {
            let c = store.claim(p, 100, 600_000, "profile").await?;
            let got = c.tasks.len();
            claimed.extend(c.tasks.into_iter().map(|t| (i, t.id, t.token)));
            if got < 100 {
                break;
            }
        }
    }
    let s4 = env.snapshot().await?;
    let mut by_part: Vec<Vec<(String, i64)>> = vec![Vec::new(); parts.len()];
    for (i, id, token) in claimed.iter().cloned() {
        by_part[i].push((id, token));
    }
    let parts_ref = &parts;
    let groups: Vec<(&scheduler::broker::Partition, Vec<AckItem<'_>>)> = by_part
        .iter()
        .enumerate()
        .flat_map(|(i, items)| {
            items.chunks(100).map(move |c| {
                (
                    &parts_ref[i],
                    c.iter().map(|(id, t)| (id.as_str(), *t, &[][..])).collect(),
                )
            })
        })
        .collect();
    for chunk in groups.chunks(64) {
        store.ack_many(chunk, 86_400_000).await?;
    }
    let s5 = env.snapshot().await?;
    let steps = [
        ("enqueue_bulk", s0.cost_to(&s1), n),
        ("promote", s2.cost_to(&s3), promoted),
        ("claim", s3.cost_to(&s4), claimed.len() as u64),
        ("ack", s4.cost_to(&s5), claimed.len() as u64),
    ];
    println!("Redis cost per task, by step ({n} tasks, {shards} shards, batches: enqueue {} per call / 100 per script, promote 500, claim 100, ack 100):", args.bulk_chunk);
    println!("  step           tasks  scripts/task  script_us/task  redis_cpu_us/task");
    let mut out = serde_json::Map::new();
    let (mut total_cmd, mut total_cpu) = (0.0, 0.0);
    for (name, cost, tasks) in &steps {
        let j = cost.to_json(*tasks);
        total_cmd += j["script_usec_per_task"].as_f64().unwrap_or(0.0);
        total_cpu += j["redis_cpu_us_per_task"].as_f64().unwrap_or(0.0);
        println!(
            "  {name:<12} {tasks:>7}  {:>12}  {:>14}  {:>17}",
            j["script_calls_per_task"], j["script_usec_per_task"], j["redis_cpu_us_per_task"]
        );
        out.insert((*name).to_owned(), j);
    }
    println!(
        "  whole life: {:.2} us of script time, {:.2} us of Redis CPU per task (ceiling ~{:.0} tasks/s on one Redis core)",
        total_cmd,
        total_cpu,
        1e6 / total_cpu.max(1e-9)
    );
    cleanup(env, args, &ns).await?;
    let mut m = base(env, args, "profile", load);
    m.insert("tasks".into(), json!(n));
    m.insert("shards".into(), json!(shards));
    m.insert("steps".into(), Value::Object(out));
    m.insert("script_usec_per_task".into(), json!(round2(total_cmd)));
    m.insert("redis_cpu_us_per_task".into(), json!(round2(total_cpu)));
    Ok(Value::Object(m))
}

/// Fails with a clear message when a scenario needs tasks and got none.
pub(crate) fn check_args(args: &Args) -> Result<()> {
    if args.tasks == Some(0) {
        bail!("--tasks must be at least 1");
    }
    if args.concurrency == 0 || args.producers == 0 || args.bulk_chunk == 0 {
        bail!("--concurrency, --producers and --bulk-chunk must be at least 1");
    }
    Ok(())
}

/// The commands Redis logged since `SLOWLOG RESET` (µs and label), longest first, leaving out
/// the bench's own `SLOWLOG` and `CONFIG` calls.
async fn slow_commands(env: &mut Env) -> Result<Vec<(i64, String)>> {
    let slow: Vec<RValue> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(&mut env.admin)
        .await?;
    let mut all: Vec<(i64, String)> = slow
        .into_iter()
        .filter_map(|e| match e {
            RValue::Array(f) if f.len() >= 4 => {
                let us: i64 = redis::from_redis_value_ref(&f[2]).ok()?;
                let cmd = command_words(&f[3]);
                let ours = cmd.first().is_some_and(|c| {
                    c.eq_ignore_ascii_case("SLOWLOG") || c.eq_ignore_ascii_case("CONFIG")
                });
                (!ours).then(|| (us, slow_label(&cmd)))
            }
            _ => None,
        })
        .collect();
    all.sort_by_key(|e| std::cmp::Reverse(e.0));
    Ok(all)
}

/// Script calls (`EVALSHA`) since `CONFIG RESETSTAT`, and their mean time in µs
/// (`INFO commandstats`): what one page or one restore call costs Redis, load spikes averaged.
async fn script_calls(env: &mut Env) -> Result<(u64, f64)> {
    let stats = env.info("commandstats").await?;
    let Some(line) = stats.get("cmdstat_evalsha") else {
        return Ok((0, 0.0));
    };
    let field = |name: &str| {
        line.split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((field("calls") as u64, field("usec_per_call")))
}

/// One phase's slow commands as text and JSON: how many took over 1 ms and over 10 ms, the
/// longest three, and the script calls' count and mean.
fn slow_summary(slow: &[(i64, String)], calls: (u64, f64)) -> (String, Value) {
    let over_10 = slow.iter().filter(|e| e.0 > 10_000).count();
    let top: Vec<String> = slow
        .iter()
        .take(3)
        .map(|(us, l)| format!("{:.2} ms ({l})", *us as f64 / 1000.0))
        .collect();
    let text = format!(
        "{} script calls, mean {:.0} µs; over 1 ms: {}, over 10 ms: {over_10}; longest: {}",
        calls.0,
        calls.1,
        slow.len(),
        if top.is_empty() {
            "-".to_owned()
        } else {
            top.join(", ")
        }
    );
    let json = json!({
        "script_calls": calls.0,
        "script_mean_us": round2(calls.1),
        "over_1ms": slow.len(),
        "over_10ms": over_10,
        "longest_ms": round2(slow.first().map_or(0, |e| e.0) as f64 / 1000.0),
        "longest": slow.iter().take(3).map(|(us, l)| json!({"ms": round2(*us as f64 / 1000.0), "command": l})).collect::<Vec<_>>(),
    });
    (text, json)
}

/// `backup`: N tasks (a third due in one hour, the rest ready) exported to a file in a temp dir
/// (`scheduler::backup::Exporter`, pages of `--export-batch`, default the library's), then
/// imported into a fresh namespace; rates, file bytes per task, and for each phase the script
/// calls' count and mean time (`INFO commandstats`) and the commands over 1 ms and 10 ms with
/// the longest three (`SLOWLOG`, threshold 1 ms: with 0, `SLOWLOG GET` of a million-task run's
/// 100,000 entries, arguments included, timed out).
pub(crate) async fn backup(env: &mut Env, args: &Args) -> Result<Value> {
    use scheduler::backup::{Exporter, Importer, DEFAULT_BATCH};
    let load = crate::probe::load_avg();
    let n = args.tasks.unwrap_or(100_000);
    let shards = args.shards.unwrap_or(16);
    let batch = args.export_batch.unwrap_or(DEFAULT_BATCH);
    let (ns, ns2) = (fresh_namespace(), fresh_namespace());
    let client = client(env, &ns, shards).await?;
    enqueue_bulk(
        &client,
        0..n / 3,
        args.bulk_chunk,
        4,
        When::In(Duration::from_secs(3600)),
    )
    .await?;
    enqueue_bulk(&client, n / 3..n, args.bulk_chunk, 4, When::Now).await?;
    let path = std::env::temp_dir().join(format!("{ns}.schedexp"));
    let old_slow = env.config_set("slowlog-log-slower-than", "1000").await?;
    let old_len = env.config_set("slowlog-max-len", "100000").await?;
    let reset = |env: &mut Env| {
        let mut c = env.admin.clone();
        async move {
            redis::cmd("SLOWLOG")
                .arg("RESET")
                .query_async::<()>(&mut c)
                .await?;
            redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query_async::<()>(&mut c)
                .await
        }
    };
    reset(env).await?;
    let t = Instant::now();
    let out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let report = Exporter::new(&client)
        .batch(batch)
        .export(out, |_| {})
        .await?;
    let export_secs = t.elapsed().as_secs_f64();
    let export_calls = script_calls(env).await?;
    let export_slow = slow_commands(env).await?;
    let target = Client::with_config(ClientConfig::new(&env.url).namespace(&ns2)).await?;
    reset(env).await?;
    let t = Instant::now();
    let input = std::io::BufReader::new(std::fs::File::open(&path)?);
    let done = Importer::new(&target).import(input, |_| {}).await?;
    let import_secs = t.elapsed().as_secs_f64();
    let import_calls = script_calls(env).await?;
    let import_slow = slow_commands(env).await?;
    env.config_set("slowlog-log-slower-than", &old_slow).await?;
    env.config_set("slowlog-max-len", &old_len).await?;
    std::fs::remove_file(&path)?;
    if report.tasks != n || done.restored != n {
        bail!(
            "backup: {n} tasks enqueued, {} exported, {} imported",
            report.tasks,
            done.restored
        );
    }
    let (export_text, export_json) = slow_summary(&export_slow, export_calls);
    let (import_text, import_json) = slow_summary(&import_slow, import_calls);
    println!(
        "backup: exported {} tasks in {export_secs:.2} s ({:.0}/s), pages of {batch}, {} bytes ({:.0} B/task); {export_text}",
        report.tasks,
        per_s(report.tasks, export_secs),
        report.bytes,
        report.bytes as f64 / report.tasks.max(1) as f64,
    );
    println!(
        "backup: imported {} tasks in {import_secs:.2} s ({:.0}/s); {import_text}",
        done.restored,
        per_s(done.restored, import_secs),
    );
    cleanup(env, args, &ns).await?;
    cleanup(env, args, &ns2).await?;
    let mut m = base(env, args, "backup", load);
    m.insert("tasks".into(), json!(n));
    m.insert("shards".into(), json!(shards));
    m.insert("export_batch".into(), json!(batch));
    m.insert("exported".into(), json!(report.tasks));
    m.insert(
        "export_per_s".into(),
        json!(per_s(report.tasks, export_secs)),
    );
    m.insert("file_bytes".into(), json!(report.bytes));
    m.insert(
        "export_longest_command_ms".into(),
        json!(round2(
            export_slow.first().map_or(0, |e| e.0) as f64 / 1000.0
        )),
    );
    m.insert("export_slow".into(), export_json);
    m.insert("imported".into(), json!(done.restored));
    m.insert(
        "import_per_s".into(),
        json!(per_s(done.restored, import_secs)),
    );
    m.insert(
        "import_longest_command_ms".into(),
        json!(round2(
            import_slow.first().map_or(0, |e| e.0) as f64 / 1000.0
        )),
    );
    m.insert("import_slow".into(), import_json);
    Ok(Value::Object(m))
}

/// `wait`: N tasks one after another (default 500), each enqueued due now and awaited with
/// `Client::wait_result`, one worker process: the time from the ack (`finished_at`, Redis clock,
/// ms resolution) to the return of `wait_result` (local clock plus the offset), from the enqueue
/// to the return (µs), and the Redis cost per task of the loop (`profile`). With `--events`, the
/// queue has task events on: `wait_result` is woken by the final event instead of polling.
/// With `--workflow`, each task is a workflow of one member (a group) awaited with
/// `Client::wait_workflow`, and the times run from the workflow's end (`finished_at` of its
/// record, written before the member's ack) instead of the ack.
pub(crate) async fn wait(env: &mut Env, args: &Args) -> Result<Value> {
    use crate::stats::Percentiles;
    let load = crate::probe::load_avg();
    let n = args.tasks.unwrap_or(500);
    let shards = args.shards.unwrap_or(16);
    let ns = fresh_namespace();
    let client = client(env, &ns, shards).await?;
    if args.events {
        client.set_events(QUEUE, true).await?;
    }
    let mut pool = Pool::spawn(1, &spec(env, args, &ns, shards)).await?;
    pool.go().await?;
    // Let the worker subscribe and sweep first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pad = pad();
    let before = env.snapshot().await?;
    let mut done = Vec::with_capacity(n as usize);
    let mut round_trip = Vec::with_capacity(n as usize);
    let mut workflows = Vec::new();
    for i in 0..n {
        let t0 = Instant::now();
        if args.workflow {
            let id = if args.member_ms > 0 {
                let wf =
                    scheduler::workflow::group([task::held::new(i, args.member_ms)]).build()?;
                let handle = client.start_workflow(wf).await?;
                client
                    .wait_workflow(&handle, Duration::from_secs(30))
                    .await?;
                handle.id().to_owned()
            } else {
                let wf = scheduler::workflow::group([task::call(i, &pad)]).build()?;
                let handle = client.start_workflow(wf).await?;
                client
                    .wait_workflow(&handle, Duration::from_secs(30))
                    .await?;
                handle.id().to_owned()
            };
            workflows.push((id, (local_us() + env.offset_us) as f64 / 1000.0));
            round_trip.push(t0.elapsed().as_secs_f64() * 1000.0);
            continue;
        }
        let id = client
            .enqueue_request(task::call(i, &pad).into_request()?)
            .await?;
        client
            .wait_result::<()>(&id, Duration::from_secs(30))
            .await?;
        let back_ms = (local_us() + env.offset_us) as f64 / 1000.0;
        round_trip.push(t0.elapsed().as_secs_f64() * 1000.0);
        done.push((id, back_ms));
    }
    let after = env.snapshot().await?;
    let mut from_ack = Vec::with_capacity(done.len());
    for (id, back_ms) in &done {
        if let Some(at) = client.status(id).await?.finished_at_ms {
            from_ack.push(back_ms - at as f64);
        }
    }
    for (id, back_ms) in &workflows {
        if let Some(at) = client.workflow(id).await?.finished_at_ms {
            from_ack.push(back_ms - at as f64);
        }
    }
    pool.stop().await?;
    cleanup(env, args, &ns).await?;
    let ack = Percentiles::of(from_ack);
    let total = Percentiles::of(round_trip);
    println!(
        "{} of {n} tasks one after another (events {}): ack to return p50 {} p99 {} max {} ms (ack time in ms); enqueue to return p50 {} p99 {} ms",
        if args.workflow { "wait_workflow" } else { "wait_result" },
        if args.events { "on" } else { "off" },
        ack.p50,
        ack.p99,
        ack.max,
        total.p50,
        total.p99
    );
    let mut m = base(env, args, "wait", load);
    m.insert("tasks".into(), json!(n));
    m.insert("events".into(), json!(args.events));
    m.insert("workflow".into(), json!(args.workflow));
    m.insert("member_ms".into(), json!(args.member_ms));
    m.insert("ack_to_return_ms".into(), ack.to_json());
    m.insert("enqueue_to_return_ms".into(), total.to_json());
    m.insert("profile".into(), before.cost_to(&after).to_json(n));
    Ok(Value::Object(m))
}
