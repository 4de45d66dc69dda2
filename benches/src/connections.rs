//! `connections`: single enqueues from many concurrent producers over one multiplexed connection
//! (one `Client`, what the library does) against a pool of multiplexed connections (a `deadpool`
//! pool of `Clients`, each with its own connection, checked out per call): throughput and
//! per-call latency at each concurrency. Same enqueue code, same Redis; only the connections
//! differ. docs/architecture.md has the figures and the decision.

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
    let mut m = base(env, args, "connections", load);
    m.insert("tasks_per_run".into(), json!(n));
    m.insert("queue".into(), json!(QUEUE));
    m.insert("shards".into(), json!(shards));
    m.insert("runs".into(), Value::Array(rows));
    Ok(Value::Object(m))
}
