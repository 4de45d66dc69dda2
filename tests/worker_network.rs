//! A worker far from Redis, and a network that breaks: the worker connects through a delaying TCP
//! proxy (`common/proxy.rs`), the producer connects directly.
//!
//! - Throughput and lateness at a 200 ± 50 ms round trip: the figures are printed (run with
//!   `--nocapture`); the assertions are functional (every task ran exactly once, never early).
//! - Healing: the proxy black-holes the worker's connections without closing them (bytes held,
//!   or lost with the connections left half-open), or resets them, for 10 s while tasks fall
//!   due; after the heal every task runs, and the worker resumes within a generous bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scheduler::{
    task, Client, ClientConfig, TaskContext, TaskError, TaskRequest, Worker, WorkerBuilder,
};
use scheduler_testkit::proxy::{Cut, Proxy};
use scheduler_testkit::{RedisServer, Running};
use tokio::time::Instant;

const QUEUE: &str = "net";

/// One run of a task.
#[derive(Debug, Clone)]
struct Run {
    id: String,
    label: String,
    /// Due time and claim time, Redis clock, unix ms.
    due_ms: i64,
    claimed_ms: i64,
    /// Local instant the handler started.
    started: Instant,
}

/// Every run, in start order.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<Vec<Run>>>);

impl Runs {
    fn all(&self) -> Vec<Run> {
        self.0.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn labelled(&self, label: &str) -> Vec<Run> {
        self.all()
            .into_iter()
            .filter(|r| r.label == label)
            .collect()
    }

    /// Ids that ran more than once.
    fn duplicates(&self) -> Vec<String> {
        let mut n: HashMap<String, u32> = HashMap::new();
        for r in self.all() {
            *n.entry(r.id).or_default() += 1;
        }
        n.into_iter()
            .filter(|(_, c)| *c > 1)
            .map(|(i, _)| i)
            .collect()
    }
}

/// Records the run of `ctx`.
fn record(ctx: &TaskContext, label: String) -> Result<(), TaskError> {
    let runs = ctx.state::<Runs>()?;
    runs.0.lock().unwrap().push(Run {
        id: ctx.id().to_string(),
        label,
        due_ms: ctx.due_ms(),
        claimed_ms: ctx.claimed_at_ms(),
        started: Instant::now(),
    });
    Ok(())
}

/// Records its run.
#[task(name = "net_task", queue = "net")]
async fn net_task(ctx: TaskContext, label: String) -> Result<(), TaskError> {
    record(&ctx, label)
}

/// Sleeps `ms`, then records its run.
#[task(name = "net_slow", queue = "net")]
async fn net_slow(ctx: TaskContext, label: String, ms: u64) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    record(&ctx, label)
}

/// Polls `cond` every 20 ms until it holds; false after `timeout`.
async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

fn redis_addr(redis: &RedisServer) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], redis.port()))
}

/// A producer connected directly to Redis.
async fn direct_client(redis: &RedisServer, ns: &str) -> Client {
    Client::with_config(ClientConfig::new(redis.url()).namespace(ns))
        .await
        .unwrap()
}

fn worker(url: &str, ns: &str, runs: &Runs) -> WorkerBuilder {
    Worker::builder()
        .redis_url(url)
        .namespace(ns)
        .register(net_task)
        .register(net_slow)
        .state(runs.clone())
}

fn request(label: &str, delay: Duration) -> TaskRequest {
    net_task::new(label.to_owned())
        .countdown(delay)
        .into_request()
        .unwrap()
}

/// The value at quantile `q` of sorted `v`.
fn quantile(v: &[i64], q: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Acknowledged successes of the queue, read directly from Redis.
async fn succeeded(client: &Client) -> u64 {
    client
        .queue_stats(QUEUE)
        .await
        .map(|s| s.counters.get("succeeded").copied().unwrap_or(0))
        .unwrap_or(0)
}

/// 6,000 tasks due now, a worker of concurrency 100 at a 200 ± 50 ms round trip: every task runs
/// exactly once and is acknowledged; prints the drain rate (first start to last start) and when
/// the last ack landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_through_a_200ms_round_trip() {
    const N: usize = 6_000;
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis_addr(&redis)).await.unwrap();
    proxy.set_delay(Duration::from_millis(100), Duration::from_millis(25));
    let client = direct_client(&redis, "net-drain").await;
    let reqs: Vec<TaskRequest> = (0..N).map(|_| request("drain", Duration::ZERO)).collect();
    client.enqueue_bulk(reqs).await.unwrap();

    let runs = Runs::default();
    let begun = Instant::now();
    let w = Running::start(worker(&proxy.url(), "net-drain", &runs).concurrency(100)).await;
    let all_ran = wait_until(Duration::from_secs(180), || runs.count() >= N).await;
    let acked = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = succeeded(&client).await;
            if n >= N as u64 || Instant::now() >= deadline {
                break n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let acked_after = begun.elapsed();
    let report = w.stop_within(Duration::from_secs(60)).await;
    let all = runs.all();
    assert!(all_ran, "only {} of {N} tasks ran", all.len());
    let first = all.iter().map(|r| r.started).min().unwrap();
    let last = all.iter().map(|r| r.started).max().unwrap();
    let span = (last - first).as_secs_f64();
    eprintln!(
        "drain at 200 ± 50 ms RTT, concurrency 100: {N} tasks, first start {:.2} s after the \
         worker started, first to last start {span:.2} s = {:.0} tasks/s; all acked {:.2} s after \
         start; {} connections through the proxy",
        (first - begun).as_secs_f64(),
        (N - 1) as f64 / span.max(1e-3),
        acked_after.as_secs_f64(),
        proxy.accepted(),
    );
    assert_eq!(acked, N as u64, "every task acknowledged");
    assert!(runs.duplicates().is_empty(), "no task ran twice");
    assert_eq!(report.claimed, N as u64);
    assert_eq!(report.succeeded, N as u64);
}

/// 100 tasks/s offered for 10 s, due 0.5-2.5 s after their enqueue, a worker at a 200 ± 50 ms
/// round trip: every task runs exactly once and never early; prints the lateness (claim time
/// minus due time, both on the Redis clock) p50, p99 and max.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lateness_at_100_per_second_through_a_200ms_round_trip() {
    const N: usize = 1_000;
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis_addr(&redis)).await.unwrap();
    proxy.set_delay(Duration::from_millis(100), Duration::from_millis(25));
    let client = direct_client(&redis, "net-late").await;
    let runs = Runs::default();
    let w = Running::start(worker(&proxy.url(), "net-late", &runs).concurrency(100)).await;
    // The worker is up once a first task ran.
    client
        .enqueue_request(request("warm-up", Duration::ZERO))
        .await
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || runs.count() == 1).await);

    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..N {
        tick.tick().await;
        let delay = Duration::from_millis(500 + (i as u64 * 617) % 2_000);
        client
            .enqueue_request(request("offered", delay))
            .await
            .unwrap();
    }
    let all_ran = wait_until(Duration::from_secs(120), || runs.count() > N).await;
    let report = w.stop_within(Duration::from_secs(60)).await;
    let offered = runs.labelled("offered");
    assert!(all_ran, "only {} of {N} tasks ran", offered.len());
    let mut late: Vec<i64> = offered.iter().map(|r| r.claimed_ms - r.due_ms).collect();
    late.sort_unstable();
    eprintln!(
        "lateness at 100 tasks/s offered, 200 ± 50 ms RTT, concurrency 100: p50 {} ms, p99 {} \
         ms, max {} ms ({} tasks)",
        quantile(&late, 0.5),
        quantile(&late, 0.99),
        late.last().unwrap(),
        late.len(),
    );
    assert!(late[0] >= 0, "a task was claimed {} ms early", -late[0]);
    assert!(runs.duplicates().is_empty(), "no task ran twice");
    assert_eq!(report.succeeded, N as u64 + 1);
}

/// How the worker's connections break for 10 s.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Black hole, bytes held and delivered after the heal.
    Hold,
    /// Black hole, bytes lost and the connections left half-open for good.
    HalfOpen,
    /// Black hole, and every connection reset at the heal.
    Reset,
}

/// A worker through the proxy (20 ± 5 ms each way); warm-up tasks run; the proxy breaks the
/// worker's connections for 10 s while tasks fall due (enqueued directly during the cut, due 1-8 s
/// into it); after the heal more tasks are enqueued, due now. Every task runs exactly once, and
/// the last of them starts within 15 s of the heal. Prints when the first task started after the
/// heal and when the last one did.
async fn heals_after(fault: Fault, ns: &str) {
    const BATCH: usize = 30;
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis_addr(&redis)).await.unwrap();
    proxy.set_delay(Duration::from_millis(20), Duration::from_millis(5));
    let client = direct_client(&redis, ns).await;
    let runs = Runs::default();
    let w = Running::start(worker(&proxy.url(), ns, &runs).concurrency(20)).await;
    for _ in 0..BATCH {
        client
            .enqueue_request(request("before", Duration::ZERO))
            .await
            .unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(30), || runs.count() == BATCH).await,
        "the worker runs tasks before the cut"
    );
    // Let the acks land.
    tokio::time::sleep(Duration::from_millis(500)).await;

    proxy.cut(match fault {
        Fault::HalfOpen => Cut::Drop,
        Fault::Hold | Fault::Reset => Cut::Hold,
    });
    let cut_at = Instant::now();
    for i in 0..BATCH {
        let delay = Duration::from_millis(1_000 + (i as u64 * 7_000) / BATCH as u64);
        client
            .enqueue_request(request("during", delay))
            .await
            .unwrap();
    }
    tokio::time::sleep_until(cut_at + Duration::from_secs(10)).await;
    if matches!(fault, Fault::Reset) {
        proxy.reset_all();
    }
    proxy.heal();
    let healed = Instant::now();
    for _ in 0..BATCH {
        client
            .enqueue_request(request("after", Duration::ZERO))
            .await
            .unwrap();
    }
    let all_ran = wait_until(Duration::from_secs(60), || runs.count() >= 3 * BATCH).await;
    let since_heal = |r: &Run| r.started.saturating_duration_since(healed).as_secs_f64();
    let all = runs.all();
    let resumed = all.iter().filter(|r| r.started >= healed).map(since_heal);
    let first = resumed.clone().fold(f64::INFINITY, f64::min);
    let last = resumed.fold(0.0, f64::max);
    let during_cut = all.iter().filter(|r| r.started < healed).count() - BATCH;
    eprintln!(
        "{fault:?}: cut 10 s, {} of {} tasks ran (started during the cut: {during_cut}); after \
         the heal the first task started at +{first:.2} s, the last at +{last:.2} s; {} \
         connections through the proxy",
        all.len(),
        3 * BATCH,
        proxy.accepted(),
    );
    let report = w.stop_within(Duration::from_secs(60)).await;
    assert!(
        all_ran,
        "{fault:?}: only {} of {} tasks ran within 60 s of the heal",
        all.len(),
        3 * BATCH
    );
    assert!(
        last <= 15.0,
        "{fault:?}: the last task started {last:.1} s after the heal"
    );
    assert!(runs.duplicates().is_empty(), "no task ran twice");
    assert_eq!(report.succeeded, 3 * BATCH as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heals_after_a_black_hole_that_holds_the_bytes() {
    heals_after(Fault::Hold, "net-hold").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heals_after_a_black_hole_that_leaves_connections_half_open() {
    heals_after(Fault::HalfOpen, "net-half-open").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heals_after_a_black_hole_ended_by_resets() {
    heals_after(Fault::Reset, "net-reset").await;
}

/// The prefetch is bounded and gives back what it did not start: a worker of concurrency 2 with
/// prefetch multiplier 2 (a cap of 4 tasks beyond its concurrency) holds 4 tasks: 2 running and
/// 2 waiting for a slot, as the adaptive prefetch holds `min(concurrency, claim_batch, cap)`
/// beyond concurrency until a task has finished (these take 1.5 s); stopped while they run, it
/// finishes the 2 and hands the 2 others back at once, unstarted and without counting an
/// attempt; a second worker then runs every remaining task exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_is_bounded_and_handed_back_at_shutdown() {
    const N: usize = 20;
    let redis = RedisServer::start();
    let client = direct_client(&redis, "net-prefetch").await;
    let mut ids = Vec::new();
    for _ in 0..N {
        // Long enough that no task finishes before the stop, on a loaded machine too (with
        // 1.5 s, a run ended first once and freed a slot for a fifth claim).
        let req = net_slow::new("slow".to_owned(), 4_000)
            .into_request()
            .unwrap();
        ids.push(client.enqueue_request(req).await.unwrap());
    }
    let runs = Runs::default();
    let first = Running::start(
        worker(&redis.url(), "net-prefetch", &runs)
            .concurrency(2)
            .prefetch_multiplier(2),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stats = client.queue_stats(QUEUE).await.unwrap();
    assert_eq!(stats.running, 4, "2 running + 2 prefetched hold leases");
    let report = first.stop_within(Duration::from_secs(60)).await;
    eprintln!("first worker: {report:?}");
    assert_eq!(report.claimed, 4);
    assert_eq!(report.succeeded, 2);
    assert_eq!(report.released, 2);
    assert_eq!(report.prefetch_peak, 2);
    let stats = client.queue_stats(QUEUE).await.unwrap();
    assert_eq!((stats.running, stats.ready), (0, N as u64 - 2));
    let mut not_started = 0;
    for id in &ids {
        let info = client.status(id).await.unwrap();
        if info.attempts == 0 {
            not_started += 1;
        }
    }
    assert_eq!(not_started, N - 2, "handed-back tasks keep their attempts");

    let second = Running::start(worker(&redis.url(), "net-prefetch", &runs).concurrency(20)).await;
    assert!(wait_until(Duration::from_secs(30), || runs.count() == N).await);
    let report = second.stop_within(Duration::from_secs(60)).await;
    assert_eq!(report.succeeded, N as u64 - 2);
    assert!(runs.duplicates().is_empty(), "no task ran twice");
}

/// Tasks of [`net_busy`] running now.
#[derive(Clone, Default)]
struct Busy(Arc<std::sync::atomic::AtomicUsize>);

/// Counts itself in [`Busy`] while it sleeps `ms`, then records its run.
#[task(name = "net_busy", queue = "net")]
async fn net_busy(ctx: TaskContext, label: String, ms: u64) -> Result<(), TaskError> {
    use std::sync::atomic::Ordering;
    let busy = ctx.state::<Busy>()?;
    busy.0.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    busy.0.fetch_sub(1, Ordering::SeqCst);
    record(&ctx, label)
}

/// On a direct local connection the adaptive prefetch stays small: a worker of concurrency 8
/// (default prefetch multiplier 8, so a cap of 64 tasks beyond concurrency) runs 40-60 ms tasks
/// from 1,000 ready ones. Every 5 ms the test reads the queue's leases from Redis (`active`: claimed
/// and not yet acknowledged) minus the tasks running and those finished whose acknowledgement
/// has not landed: the tasks claimed and not started. The worker's own `prefetch_peak` (tasks
/// held beyond concurrency) stays within `concurrency`: what it holds before anything finished
/// (`min(concurrency, claim_batch, cap)`), then `ceil(2 × 160 tasks/s × claim round trip)`, a
/// task or two with a claim taking a few milliseconds. The Redis count (which may err low by a
/// task or two, as its reads are not simultaneous) stays within `2 × concurrency`, and within
/// `concurrency` after the first second. Before the adaptive prefetch it was 64-72.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_prefetch_stays_small() {
    use std::sync::atomic::Ordering;
    const N: usize = 1_000;
    const CONCURRENCY: usize = 8;
    let redis = RedisServer::start();
    let client = direct_client(&redis, "net-local").await;
    // 40 to 60 ms, so that tasks started together do not all finish together.
    let reqs: Vec<TaskRequest> = (0..N as u64)
        .map(|i| {
            net_busy::new("busy".to_owned(), 40 + (i * 7) % 21)
                .into_request()
                .unwrap()
        })
        .collect();
    client.enqueue_bulk(reqs).await.unwrap();
    let runs = Runs::default();
    let busy = Busy::default();
    let w = Running::start(
        worker(&redis.url(), "net-local", &runs)
            .register(net_busy)
            .state(busy.clone())
            .concurrency(CONCURRENCY),
    )
    .await;
    let begun = Instant::now();
    let mut peak = 0u64;
    let mut steady_peak = 0u64;
    let mut samples = 0u64;
    let mut sum = 0u64;
    // 5 s of the drain (1,000 × 50 ms / 8 = 6.25 s).
    while Instant::now() < begun + Duration::from_secs(5) {
        // Leased, less running, less finished but not yet acknowledged. The local counts are
        // read after Redis: a task that finishes meanwhile is still leased (its ack takes a
        // round trip) and counted as finished, and one counted in both errs low by one.
        let stats = client.queue_stats(QUEUE).await.unwrap();
        let acked = stats.counters.get("succeeded").copied().unwrap_or(0);
        let running = busy.0.load(Ordering::SeqCst) as u64;
        let finished = runs.count() as u64;
        let ahead = stats
            .running
            .saturating_sub(running + finished.saturating_sub(acked));
        peak = peak.max(ahead);
        if Instant::now() >= begun + Duration::from_secs(1) {
            steady_peak = steady_peak.max(ahead);
        }
        sum += ahead;
        samples += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ran = runs.count();
    let report = w.stop_within(Duration::from_secs(60)).await;
    eprintln!(
        "local prefetch, concurrency {CONCURRENCY}, 40-60 ms tasks: {ran} ran in 5 s ({:.0} tasks/s); \
         leases held beyond the running tasks (Redis, {samples} samples): peak {peak}, peak \
         after the first second {steady_peak}, mean {:.1}; worker's prefetch_peak {}",
        ran as f64 / 5.0,
        sum as f64 / samples.max(1) as f64,
        report.prefetch_peak,
    );
    assert!(
        ran as f64 >= 0.8 * 5.0 * CONCURRENCY as f64 * 20.0,
        "the worker keeps its slots busy: {ran} ran in 5 s"
    );
    assert!(
        peak <= 2 * CONCURRENCY as u64,
        "leases held beyond the running tasks peaked at {peak}"
    );
    assert!(
        steady_peak <= CONCURRENCY as u64,
        "leases held beyond the running tasks peaked at {steady_peak} after the first second"
    );
    assert!(
        report.prefetch_peak <= CONCURRENCY as u64,
        "prefetch_peak {}",
        report.prefetch_peak
    );
    assert!(runs.duplicates().is_empty(), "no task ran twice");
}
