//! Timing of a real worker against a throwaway Redis: countdowns and etas are honoured and never
//! run early (judged on the Redis clock, the only clock the scheduler trusts), and an enqueue that
//! makes a new, earlier head wakes the promoter without waiting for a sweep.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use scheduler::redis::aio::ConnectionManager;
use scheduler::{task, Client, TaskContext, TaskError, TaskId, TaskState, Worker};
use scheduler_testkit::oracle::wait_for;
use scheduler_testkit::{RedisServer, Running};

/// Generous upper bound on lateness: only there to catch "never ran" or "ran at the next sweep",
/// never a speed claim.
const LATE_BOUND_MS: i64 = 1_000;

/// One run: (due ms the task saw, start ms), both on the Redis clock.
type Run = (i64, i64);

/// Start times of runs, on the Redis clock, by label.
#[derive(Clone)]
struct Starts {
    conn: ConnectionManager,
    /// label -> one entry per run.
    runs: Arc<Mutex<HashMap<String, Vec<Run>>>>,
}

impl Starts {
    async fn new(url: &str) -> Self {
        let conn = scheduler::redis::Client::open(url)
            .unwrap()
            .get_connection_manager()
            .await
            .unwrap();
        Self {
            conn,
            runs: Arc::default(),
        }
    }

    fn get(&self, label: &str) -> Vec<Run> {
        self.runs
            .lock()
            .unwrap()
            .get(label)
            .cloned()
            .unwrap_or_default()
    }

    fn count(&self) -> usize {
        self.runs.lock().unwrap().values().map(Vec::len).sum()
    }
}

/// The Redis server's clock, unix ms.
async fn redis_now_ms(conn: &mut ConnectionManager) -> scheduler::redis::RedisResult<i64> {
    let (s, us): (i64, i64) = scheduler::redis::cmd("TIME").query_async(conn).await?;
    Ok(s * 1000 + us / 1000)
}

/// Records when it started (Redis clock) and when it was due.
#[task(name = "record_start", queue = "timing")]
async fn record_start(ctx: TaskContext, label: String) -> Result<(), TaskError> {
    let starts = ctx.state::<Starts>()?;
    let now = redis_now_ms(&mut starts.conn.clone()).await?;
    starts
        .runs
        .lock()
        .unwrap()
        .entry(label)
        .or_default()
        .push((ctx.due_ms(), now));
    Ok(())
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Countdowns of 0, 200 ms, 500 ms and 1 s and etas (future and past) all run exactly once, never
/// before their due time on the Redis clock, and not more than a generous bound after it; the
/// due time recorded is enqueue time + countdown (or the eta itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delays_are_honoured_and_never_early() {
    let redis = RedisServer::start();
    let url = redis.url();
    let starts = Starts::new(&url).await;
    let worker = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace("timing1")
            .register(record_start)
            .state(starts.clone())
            .lock_ttl(Duration::from_secs(1)),
    )
    .await;
    let client = Client::with_config(scheduler::ClientConfig::new(&url).namespace("timing1"))
        .await
        .unwrap();

    let mut countdowns: Vec<(String, TaskId, u64)> = Vec::new();
    for ms in [0u64, 200, 500, 1_000] {
        for n in 0..3 {
            let label = format!("countdown-{ms}-{n}");
            let id = record_start::new(label.clone())
                .countdown(Duration::from_millis(ms))
                .send(&client)
                .await
                .unwrap();
            countdowns.push((label, id, ms));
        }
    }
    let mut etas: Vec<(String, TaskId, i64, bool)> = Vec::new();
    for (n, (offset_ms, future)) in [(700i64, true), (1_300, true), (-10_000, false)]
        .into_iter()
        .enumerate()
    {
        let label = format!("eta-{n}");
        let at = if future {
            SystemTime::now() + Duration::from_millis(offset_ms as u64)
        } else {
            SystemTime::now() - Duration::from_millis(offset_ms.unsigned_abs())
        };
        let id = record_start::new(label.clone())
            .eta(at)
            .send(&client)
            .await
            .unwrap();
        etas.push((label, id, unix_ms(at), future));
    }

    let total = countdowns.len() + etas.len();
    wait_for("every delayed task ran", Duration::from_secs(30), || {
        starts.count() >= total
    })
    .await;

    for (label, id, ms) in &countdowns {
        let info = client.status(id).await.unwrap();
        assert_eq!(info.state, TaskState::Succeeded, "{label}");
        assert_eq!(info.attempts, 1, "{label}");
        assert_eq!(
            info.run_at_ms,
            info.enqueued_at_ms + *ms as i64,
            "{label}: due = enqueue time + countdown"
        );
        let runs = starts.get(label);
        assert_eq!(runs.len(), 1, "{label} ran exactly once: {runs:?}");
        let (due, start) = runs[0];
        assert_eq!(due, info.run_at_ms, "{label}: the task saw its due time");
        assert!(start >= due, "{label} ran early: start {start} < due {due}");
        assert!(
            start - due < LATE_BOUND_MS,
            "{label} ran {} ms late",
            start - due
        );
    }
    for (label, id, at_ms, future) in &etas {
        let info = client.status(id).await.unwrap();
        assert_eq!(info.state, TaskState::Succeeded, "{label}");
        assert_eq!(info.run_at_ms, *at_ms, "{label}: due = eta");
        let runs = starts.get(label);
        assert_eq!(runs.len(), 1, "{label} ran exactly once: {runs:?}");
        let (due, start) = runs[0];
        assert_eq!(due, *at_ms, "{label}");
        assert!(start >= due, "{label} ran early: start {start} < due {due}");
        if *future {
            assert!(
                start - due < LATE_BOUND_MS,
                "{label} ran {} ms late",
                start - due
            );
        }
    }
    let report = worker.stop().await;
    assert_eq!(report.succeeded, total as u64);
}

/// With the safety sweep set far away (30 s), an enqueue that makes a new, earlier head wakes the
/// promoter: a 300 ms task enqueued after a 20 s one runs on time, and the ready notification
/// wakes the idle fetcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_earlier_head_wakes_the_promoter() {
    let redis = RedisServer::start();
    let url = redis.url();
    let starts = Starts::new(&url).await;
    let worker = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace("timing2")
            .queues(["timing2"])
            // One shard: both tasks share a partition, so the second is a new head of the first's.
            .queue_shards("timing2", 1)
            .register(record_start)
            .state(starts.clone())
            .sweep_interval(Duration::from_secs(30)),
    )
    .await;
    let client = Client::with_config(scheduler::ClientConfig::new(&url).namespace("timing2"))
        .await
        .unwrap();
    // Let the worker's promoter take its lock and go to sleep on an empty partition first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let far = record_start::new("far".into())
        .queue("timing2")
        .countdown(Duration::from_secs(20))
        .send(&client)
        .await
        .unwrap();
    // The promoter now sleeps until the 20 s head...
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...and this one must wake it.
    let near = record_start::new("near".into())
        .queue("timing2")
        .countdown(Duration::from_millis(300))
        .send(&client)
        .await
        .unwrap();
    wait_for("the near task ran", Duration::from_secs(15), || {
        !starts.get("near").is_empty()
    })
    .await;
    let (due, start) = starts.get("near")[0];
    assert!(start >= due, "ran early: start {start} < due {due}");
    assert!(
        start - due < LATE_BOUND_MS,
        "ran {} ms late: the promoter was not woken by the new head",
        start - due
    );
    assert_eq!(
        client.status(&near).await.unwrap().state,
        TaskState::Succeeded
    );
    assert_eq!(
        client.status(&far).await.unwrap().state,
        TaskState::Scheduled
    );
    worker.stop().await;
}
