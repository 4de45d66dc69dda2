//! racing-promoters: many promoters on one partition at once move every task once.

use crate::*;

/// Scenario 3: `n` tasks due within `window_ms` on a one-shard queue, promoted by 8 concurrent
/// loops calling the promote script directly (no lock at all). Every task must be moved exactly
/// once: the moves counted by the callers, the partition's `promoted` counter and its ready set
/// all equal `n`, and the scheduled set ends empty.
pub(crate) async fn run_race(
    n: usize,
    window_ms: i64,
    lead_ms: i64,
) -> anyhow::Result<(String, bool)> {
    let dir = std::env::temp_dir().join(format!("sched-chaos-race-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir)?;
    let redis = start_redis(&["--save", "", "--appendonly", "no"], &dir)?;
    let url = redis.url();
    let client = Client::with_config(
        ClientConfig::new(&url)
            .namespace(NS)
            .queue_shards("race", 1),
    )
    .await?;
    let base = now_ms() + lead_ms;
    let mut reqs = Vec::with_capacity(n);
    for i in 0..n {
        let due = base + (i as i64 * window_ms) / n as i64;
        reqs.push(
            chaos_rec::new(0, 0)
                .queue("race")
                .id(format!("r{i}"))
                .eta(UNIX_EPOCH + Duration::from_millis(due as u64))
                .into_request()?,
        );
    }
    for chunk in reqs.chunks(5_000) {
        client.enqueue_bulk(chunk.to_vec()).await?;
    }
    let store = client.store().clone();
    let p = store.partition("race", 0);
    let end = base + window_ms + 500;
    let t0 = Instant::now();
    let mut joins = Vec::new();
    for _ in 0..8 {
        let (store, p) = (store.clone(), p.clone());
        joins.push(tokio::spawn(async move {
            let (mut moved, mut calls) = (0u64, 0u64);
            loop {
                let r = store.promote(&p, 1_000).await?;
                calls += 1;
                moved += r.moved;
                if r.moved == 0 {
                    if r.next_due_ms.is_none() && r.server_now_ms > end {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            anyhow::Ok((moved, calls))
        }));
    }
    let (mut moved, mut calls) = (0u64, 0u64);
    for j in joins {
        let (m, c) = j.await??;
        moved += m;
        calls += c;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let stats = client.queue_stats("race").await?;
    let promoted = stats.counters.get("promoted").copied().unwrap_or(0);
    let slow = slowlog_max(&redis);
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
    let ok = moved == n as u64
        && promoted == n as u64
        && stats.ready == n as u64
        && stats.scheduled == 0;
    Ok((
        format!(
            "{{\"scenario\":\"racing-promoters\",\"tasks\":{n},\"promoters\":8,\"promote_calls\":{calls},\"moved_by_callers\":{moved},\"promoted_counter\":{promoted},\"ready\":{},\"scheduled_left\":{},\"window_ms\":{window_ms},\"elapsed_s\":{elapsed:.1},\"slowlog_max_us\":{slow},\"ok\":{ok}}}",
            stats.ready, stats.scheduled
        ),
        ok,
    ))
}
