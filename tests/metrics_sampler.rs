//! The queue gauges (`WorkerBuilder::queue_metrics`) are read by one worker per queue at a time,
//! not by every worker: seen through MONITOR on a real redis-server, the reads of a queue's
//! counts (each renews the sampler key: `PEXPIRE <ns>:gauges:<queue>`, then the `ZCARD`s, one
//! pipeline) come from one worker's connection, and another worker takes over when that one
//! stops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use scheduler::{task, TaskError, Worker};
use scheduler_testkit::{RedisServer, Running};

/// Never enqueued: it only makes the workers serve the queue.
#[task(name = "idle", queue = "sampled")]
async fn idle() -> Result<(), TaskError> {
    Ok(())
}

/// The client address of each renewal of the queue `sampled`'s sampler key and each count of its
/// dead set by a client MONITOR showed, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// Starts a worker serving `sampled` that reads its gauges every `every`.
async fn worker(url: &str, every: Duration) -> Running {
    Running::start(
        Worker::builder()
            .redis_url(url)
            .namespace("g")
            .register(idle)
            .queue_metrics(every),
    )
    .await
}

/// The distinct client addresses among `seen[from..]`.
fn readers(seen: &Seen, from: usize) -> Vec<String> {
    let mut a: Vec<String> = seen.lock().unwrap()[from..].to_vec();
    a.sort();
    a.dedup();
    a
}

/// Waits until `seen` holds more than `n` entries (20 s at most).
async fn wait_more(seen: &Seen, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.lock().unwrap().len() <= n {
        assert!(tokio::time::Instant::now() < deadline, "no read seen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Worker A starts first and takes the queue; with B running beside it, every count read for
/// a second comes from A alone. Once A stops, B takes over within three intervals and is then
/// the only reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_at_a_time_reads_a_queue_s_counts() {
    let redis = RedisServer::start();
    let url = redis.url();
    let every = Duration::from_millis(100);
    let seen: Seen = Arc::default();
    let monitor = redis::Client::open(url.as_str())
        .unwrap()
        .get_async_monitor()
        .await
        .unwrap();
    let watching = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let mut lines = monitor.into_on_message::<String>();
            while let Some(l) = lines.next().await {
                // `<time> [<db> <addr>] "PEXPIRE" "g:gauges:sampled" "<ms>"`, and the count
                // of dead tasks (only the gauges count that set).
                let renewal = l.contains("\"PEXPIRE\"") && l.contains("\"g:gauges:sampled\"");
                let count = l.contains("\"ZCARD\"") && l.contains("{sampled:0}:dead\"");
                if !(renewal || count) {
                    continue;
                }
                let addr = l
                    .split_once('[')
                    .and_then(|(_, r)| r.split_once(']'))
                    .and_then(|(inside, _)| inside.split_whitespace().nth(1))
                    .unwrap_or_default()
                    .to_owned();
                // Scripts count the dead set too (their commands show as `lua`).
                if addr != "lua" {
                    seen.lock().unwrap().push(addr);
                }
            }
        })
    };

    let a = worker(&url, every).await;
    wait_more(&seen, 0).await;
    let b = worker(&url, every).await;
    let from = seen.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_more(&seen, from).await;
    let first = readers(&seen, 0);
    assert_eq!(first.len(), 1, "two workers read the counts: {first:?}");

    a.stop().await;
    // The key A held expires three intervals after its last renewal; then B takes it.
    tokio::time::sleep(every * 3 + Duration::from_millis(300)).await;
    let from = seen.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_more(&seen, from).await;
    let after = readers(&seen, from);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after, first, "B did not take over");
    b.stop().await;
    watching.abort();
}
