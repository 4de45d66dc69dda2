//! `connections`: single enqueues from many concurrent producers over one multiplexed connection
//! (one `Client`, what the library does) against a pool of multiplexed connections (a `deadpool`
//! pool of `Clients`, each with its own connection, checked out per call): throughput and
//! per-call latency at each concurrency. Same enqueue code, same Redis; only the connections
//! differ. Then the worker's claim/ack path the same way: concurrent loops each claim a batch
//! from a partition (`claim.lua`) and acknowledge it (`ack.lua`), the calls a worker's fetcher
//! and acker make, over one connection or checked out of a pool per call. docs/architecture.md
//! has the figures and the decision.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::probe::Env;
use crate::scenarios::{base, client, fresh_namespace, per_s};
use crate::stats::Percentiles;
use crate::task::{self, pad, QUEUE};
use crate::Args;

/// Concurrent producers measured (the 64, 256 and 1,024).
const CONCURRENCY: [usize; 3] = [64, 256, 1024];
/// Pool sizes measured beside the single connection.
const POOL_SIZES: [usize; 2] = [4, 16];
/// Concurrent claim/ack loops measured: one per partition of the bench queue's 16 (a worker's
/// fetcher has at most one claim in flight per partition), and four per partition (several
/// workers' worth in one process).
const CLAIMERS: [usize; 2] = [16, 64];
/// Tasks per claim (a worker claims what its free slots and prefetch allow, up to 100).
const CLAIM_BATCH: u32 = 32;

/// How the producers reach Redis.
#[derive(Clone)]
enum Conns {
    /// One client, one multiplexed connection, shared by every producer.
    One(Arc<scheduler::Client>),
    /// A pool of clients; each call checks one out and returns it.
    Pool(deadpool::unmanaged::Pool<scheduler::Client>),
}

/// `n` single enqueues by `producers` concurrent producers; (seconds, per-call ms).
async fn run(conns: &Conns, n: u64, producers: usize) -> Result<(f64, Vec<f64>)> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..producers {
        let conns = conns.clone();
        let next = Arc::clone(&next);
        set.spawn(async move {
            let pad = pad();
            let mut took = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(took);
                }
                let t0 = Instant::now();
                match &conns {
                    Conns::One(c) => task::call(i, &pad).send(c).await?,
                    Conns::Pool(p) => {
                        let c = p.get().await.map_err(|e| anyhow::anyhow!("pool: {e:?}"))?;
                        task::call(i, &pad).send(&c).await?
                    }
                };
                took.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
        });
    }
    let mut all = Vec::with_capacity(n as usize);
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    Ok((started.elapsed().as_secs_f64(), all))
}

/// Claim/ack rounds by `loops` concurrent loops over the partitions of `shards`, until the
/// queue is empty: each round claims up to [`CLAIM_BATCH`] tasks of its partition and acks them
/// (results deleted); (seconds, tasks done, per-round ms).
async fn claim_ack(conns: &Conns, shards: u16, loops: usize) -> Result<(f64, u64, Vec<f64>)> {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..loops {
        let conns = conns.clone();
        let done = Arc::clone(&done);
        set.spawn(async move {
            let shard = (i % usize::from(shards)) as u16;
            let tag = format!("bench-claimer-{i}");
            let mut took = Vec::new();
            loop {
                let t0 = Instant::now();
                let claim = match &conns {
                    Conns::One(c) => {
                        let p = c.store().partition(QUEUE, shard);
                        c.store().claim(&p, CLAIM_BATCH, 60_000, &tag).await?
                    }
                    Conns::Pool(pool) => {
                        let c = pool
                            .get()
                            .await
                            .map_err(|e| anyhow::anyhow!("pool: {e:?}"))?;
                        let p = c.store().partition(QUEUE, shard);
                        c.store().claim(&p, CLAIM_BATCH, 60_000, &tag).await?
                    }
                };
                if claim.tasks.is_empty() {
                    return Ok::<_, anyhow::Error>(took);
                }
                let items: Vec<_> = claim
                    .tasks
                    .iter()
                    .map(|t| (t.id.as_str(), t.token, &b""[..]))
                    .collect();
                match &conns {
                    Conns::One(c) => {
                        let p = c.store().partition(QUEUE, shard);
                        c.store().ack_many(&[(&p, items)], 0).await?
                    }
                    Conns::Pool(pool) => {
                        let c = pool
                            .get()
                            .await
                            .map_err(|e| anyhow::anyhow!("pool: {e:?}"))?;
                        let p = c.store().partition(QUEUE, shard);
                        c.store().ack_many(&[(&p, items)], 0).await?
                    }
                };
                done.fetch_add(claim.tasks.len() as u64, Ordering::Relaxed);
                took.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    Ok((
        started.elapsed().as_secs_f64(),
        done.load(Ordering::Relaxed),
        all,
    ))
}

/// The `connections` scenario.
pub(crate) async fn connections(env: &mut Env, args: &Args) -> Result<Value> {
    let load = crate::probe::load_avg();
    let n = args.tasks.unwrap_or(20_000);
    let shards = args.shards.unwrap_or(16);
    let ns = fresh_namespace();
    let one = Arc::new(client(env, &ns, shards).await?);
    let mut rows = Vec::new();
    for producers in CONCURRENCY {
        let mut arms = vec![("one connection".to_owned(), 1, Conns::One(Arc::clone(&one)))];
        for size in POOL_SIZES {
            let mut clients = Vec::with_capacity(size);
            for _ in 0..size {
                clients.push(client(env, &ns, shards).await?);
            }
            arms.push((
                format!("pool of {size}"),
                size,
                Conns::Pool(deadpool::unmanaged::Pool::from(clients)),
            ));
        }
        for (label, size, conns) in arms {
            let (secs, took) = run(&conns, n, producers).await?;
            let lat = Percentiles::of(took);
            println!(
                "{producers:>5} producers, {label:<15}: {:>7.0} enqueues/s, per call p50 {:.2} ms, p99 {:.2} ms",
                per_s(n, secs),
                lat.p50,
                lat.p99
            );
            rows.push(json!({
                "producers": producers,
                "connections": size,
                "pooled": matches!(conns, Conns::Pool(_)),
                "enqueue_per_s": per_s(n, secs),
                "call_ms": lat.to_json(),
            }));
        }
    }
    crate::scenarios::cleanup(env, args, &ns).await?;
    // The worker's claim/ack path, in a namespace of its own: n ready tasks, drained by
    // claim/ack loops.
    let ns = fresh_namespace();
    let one = Arc::new(client(env, &ns, shards).await?);
    let mut claim_rows = Vec::new();
    for loops in CLAIMERS {
        let mut arms = vec![("one connection".to_owned(), 1, Conns::One(Arc::clone(&one)))];
        for size in POOL_SIZES {
            let mut clients = Vec::with_capacity(size);
            for _ in 0..size {
                clients.push(client(env, &ns, shards).await?);
            }
            arms.push((
                format!("pool of {size}"),
                size,
                Conns::Pool(deadpool::unmanaged::Pool::from(clients)),
            ));
        }
        for (label, size, conns) in arms {
            crate::scenarios::enqueue_due_in(&one, n, 500, std::time::Duration::ZERO).await?;
            let (secs, tasks, took) = claim_ack(&conns, shards, loops).await?;
            anyhow::ensure!(tasks == n, "claimed and acked {tasks} of {n} tasks");
            let lat = Percentiles::of(took);
            println!(
                "{loops:>5} claim/ack loops, {label:<15}: {:>7.0} tasks/s, per claim+ack round p50 {:.2} ms, p99 {:.2} ms",
                per_s(n, secs),
                lat.p50,
                lat.p99
            );
            claim_rows.push(json!({
                "loops": loops,
                "batch": CLAIM_BATCH,
                "connections": size,
                "pooled": matches!(conns, Conns::Pool(_)),
                "tasks_per_s": per_s(n, secs),
                "round_ms": lat.to_json(),
            }));
        }
    }
    crate::scenarios::cleanup(env, args, &ns).await?;
    let mut m = base(env, args, "connections", load);
    m.insert("tasks_per_run".into(), json!(n));
    m.insert("queue".into(), json!(QUEUE));
    m.insert("shards".into(), json!(shards));
    m.insert("runs".into(), Value::Array(rows));
    m.insert("claim_ack".into(), Value::Array(claim_rows));
    Ok(Value::Object(m))
}
