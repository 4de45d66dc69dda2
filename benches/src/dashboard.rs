//! `dashboard`: what the web dashboard's pages cost with N pending tasks. Fills the bench queue
//! with N tasks due in an hour (and one worker heartbeat), then requests every page several times
//! through the router in process (rendering included, no network), with Redis's slow log
//! recording every command (`slowlog-log-slower-than 0`): page times, and the slowest command
//! any page sent.

use std::time::Duration;

use anyhow::{Context as _, Result};
use http_body_util::BodyExt as _;
use scheduler::dashboard::axum::body::Body;
use scheduler::dashboard::axum::http::Request;
use scheduler::dashboard::{router, DashboardConfig};
use scheduler::redis::{self, Value as RValue};
use scheduler::{Inspector, TaskState};
use serde_json::{json, Value};
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::probe::{round2, Env};
use crate::scenarios::{
    base, cleanup, client as bench_client, enqueue_due_in, fresh_namespace, slow_label,
};
use crate::task::QUEUE;
use crate::Args;

/// Requests of each page.
const ROUNDS: usize = 5;

pub(crate) async fn dashboard(env: &mut Env, args: &Args) -> Result<Value> {
    let load = crate::probe::load_avg();
    let n = args.tasks.unwrap_or(1_000_000);
    let shards = args.shards.unwrap_or(16);
    let ns = fresh_namespace();
    let client = bench_client(env, &ns, shards).await?;
    let fill = enqueue_due_in(&client, n, args.bulk_chunk, Duration::from_secs(3600)).await?;
    let used_memory = env.used_memory().await?;
    println!(
        "dashboard: {n} tasks due in an hour enqueued in {fill:.1} s; Redis used_memory {used_memory} bytes"
    );
    // One worker's heartbeat, as a worker writes it (hash and index entry), so that the workers
    // page lists one; no worker runs, so that every command in the slow log is a page's.
    let beat = client.store().keys().worker("bench-host:1:0");
    let mut conn = client.store().conn();
    redis::pipe()
        .hset_multiple(
            &beat,
            &[
                ("pid", "1"),
                ("queues", QUEUE),
                ("concurrency", "256"),
                ("running", "0"),
            ],
        )
        .ignore()
        .zadd(client.store().keys().worker_index(), "bench-host:1:0", 0)
        .ignore()
        .query_async::<()>(&mut conn)
        .await?;
    let inspector = Inspector::new(&client);
    anyhow::ensure!(
        inspector.workers().await?.len() == 1,
        "the worker is listed"
    );
    let first = inspector
        .tasks(QUEUE, TaskState::Scheduled, None, 1)
        .await?
        .tasks
        .into_iter()
        .next()
        .context("no scheduled task")?;
    let per_shard = n / u64::from(shards);
    let pages = [
        "/".to_owned(),
        "/api/overview".to_owned(),
        format!("/queues/{QUEUE}"),
        format!("/queues/{QUEUE}/scheduled"),
        // A page deep in the last shard: ZRANGE by offset, O(log n + page).
        format!(
            "/queues/{QUEUE}/scheduled?cursor={}:{}",
            shards - 1,
            per_shard / 2
        ),
        format!("/queues/{QUEUE}/scheduled?limit=1000"),
        format!("/queues/{QUEUE}/ready"),
        format!("/queues/{QUEUE}/dead"),
        format!("/tasks/{QUEUE}/{}", first.id.id()),
        "/workers".to_owned(),
        "/schedules".to_owned(),
    ];
    let app = router(&client, DashboardConfig::new());

    let old_slow = env.config_set("slowlog-log-slower-than", "0").await?;
    let old_len = env.config_set("slowlog-max-len", "100000").await?;
    redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async::<()>(&mut env.admin)
        .await?;
    let mut rows = Vec::new();
    for page in &pages {
        let mut ms = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let res = app
                .clone()
                .oneshot(Request::get(page.as_str()).body(Body::empty())?)
                .await?;
            let status = res.status();
            let bytes = res.into_body().collect().await?.to_bytes();
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(status.is_success(), "{page}: {status}");
            anyhow::ensure!(!bytes.is_empty(), "{page}: empty");
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "  {page:<48} median {:>8.2} ms, max {:>8.2} ms",
            ms[ROUNDS / 2],
            ms[ROUNDS - 1]
        );
        rows.push(json!({ "page": page, "median_ms": round2(ms[ROUNDS / 2]), "max_ms": round2(ms[ROUNDS - 1]) }));
    }
    let slow: Vec<RValue> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(&mut env.admin)
        .await?;
    env.config_set("slowlog-log-slower-than", &old_slow).await?;
    env.config_set("slowlog-max-len", &old_len).await?;
    let mut entries: Vec<(i64, String)> = slow
        .into_iter()
        .filter_map(|e| match e {
            RValue::Array(f) if f.len() >= 4 => {
                let us: i64 = redis::from_redis_value_ref(&f[2]).ok()?;
                let cmd: Vec<String> = redis::from_redis_value_ref(&f[3]).unwrap_or_default();
                Some((us, slow_label(&cmd)))
            }
            _ => None,
        })
        // The bench's own admin commands.
        .filter(|(_, label)| !label.starts_with("SLOWLOG") && !label.starts_with("CONFIG"))
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    let (max_us, max_cmd) = entries.first().cloned().unwrap_or((0, String::new()));
    let slowest_page = rows
        .iter()
        .map(|r| r["max_ms"].as_f64().unwrap_or(0.0))
        .fold(0.0, f64::max);
    println!(
        "  {} Redis commands; slowest {:.3} ms ({max_cmd}); slowest page {slowest_page:.2} ms",
        entries.len(),
        max_us as f64 / 1000.0
    );
    cleanup(env, args, &ns).await?;
    let mut m = base(env, args, "dashboard", load);
    m.insert("tasks".into(), json!(n));
    m.insert("shards".into(), json!(shards));
    m.insert("enqueue_s".into(), json!(round2(fill)));
    m.insert("used_memory".into(), json!(used_memory));
    m.insert("pages".into(), Value::Array(rows));
    m.insert("slowest_page_ms".into(), json!(round2(slowest_page)));
    m.insert("redis_commands".into(), json!(entries.len()));
    m.insert(
        "max_command_ms".into(),
        json!(round2(max_us as f64 / 1000.0)),
    );
    m.insert("max_command".into(), json!(max_cmd));
    Ok(Value::Object(m))
}
