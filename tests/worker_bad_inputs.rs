//! Bad inputs, on the producer side (clear typed errors at enqueue or connect, never a hang) and
//! on the worker side (tasks it cannot run go to the dead set with a clear error, and the worker
//! keeps running).

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use scheduler::{
    task, Client, ClientConfig, Error, TaskContext, TaskError, TaskId, TaskRequest, TaskState,
    Worker,
};
use scheduler_testkit::oracle::wait_finished;
use scheduler_testkit::{RedisServer, Running};

/// Adds two numbers and counts its runs.
#[task(name = "add", queue = "bad")]
async fn add(ctx: TaskContext, a: u32, b: u32) -> Result<u32, TaskError> {
    ctx.state::<Arc<AtomicU64>>()?
        .fetch_add(1, Ordering::SeqCst);
    Ok(a + b)
}

/// Asserts that the worker still runs a good task to success.
async fn still_serving(client: &Client) {
    let id = add::new(20, 22).send(client).await.unwrap();
    let sum: u32 = client
        .wait_result(&id, Duration::from_secs(30))
        .await
        .expect("the worker keeps running after a bad task");
    assert_eq!(sum, 42);
}

/// Tasks the worker cannot run go to the dead set at once, each with an error saying why, and
/// the worker keeps serving after each: an unknown task name (the error names it), arguments
/// that are not MessagePack of the task's type ("cannot decode"), arguments of the wrong shape,
/// and a payload over the worker's cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_or_unknown_tasks_are_dead_lettered() {
    let redis = RedisServer::start();
    let url = redis.url();
    let runs = Arc::new(AtomicU64::new(0));
    let w = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace("badw")
            .queues(["bad"])
            .register(add)
            .state(Arc::clone(&runs))
            .max_payload_bytes(1024)
            .lock_ttl(Duration::from_secs(1))
            .sweep_interval(Duration::from_secs(1)),
    )
    .await;
    let client = Client::with_config(ClientConfig::new(&url).namespace("badw"))
        .await
        .unwrap();
    still_serving(&client).await;

    let unknown = client
        .enqueue_request(
            TaskRequest::new("nobody_registered_this", "bad", &(1u32, 2u32))
                .unwrap()
                .max_retries(5),
        )
        .await
        .unwrap();
    let info = wait_finished(&client, &unknown, Duration::from_secs(30)).await;
    assert_eq!(info.state, TaskState::Dead);
    assert_eq!(info.attempts, 1, "an unknown name is not retried");
    let err = info.last_error.unwrap_or_default();
    assert!(
        err.contains("nobody_registered_this") && err.contains("unknown task"),
        "{err}"
    );
    still_serving(&client).await;

    let garbage = client
        .enqueue_request(
            TaskRequest::from_encoded("add", "bad", b"\xff\xfe garbage".to_vec()).max_retries(5),
        )
        .await
        .unwrap();
    let info = wait_finished(&client, &garbage, Duration::from_secs(30)).await;
    assert_eq!(info.state, TaskState::Dead);
    assert_eq!(info.attempts, 1, "undecodable arguments are not retried");
    let err = info.last_error.unwrap_or_default();
    assert!(err.contains("cannot decode"), "{err}");
    still_serving(&client).await;

    // Valid MessagePack, wrong type: a string where (u32, u32) is expected.
    let wrong_shape = client
        .enqueue_request(TaskRequest::new("add", "bad", &"forty-two").unwrap())
        .await
        .unwrap();
    let info = wait_finished(&client, &wrong_shape, Duration::from_secs(30)).await;
    assert_eq!(info.state, TaskState::Dead);
    let err = info.last_error.unwrap_or_default();
    assert!(err.contains("cannot decode"), "{err}");
    still_serving(&client).await;

    // Under the client's cap (1 MiB), over this worker's (1 KiB).
    let big = client
        .enqueue_request(TaskRequest::from_encoded("add", "bad", vec![0xc0; 4096]))
        .await
        .unwrap();
    let info = wait_finished(&client, &big, Duration::from_secs(30)).await;
    assert_eq!(info.state, TaskState::Dead);
    let err = info.last_error.unwrap_or_default();
    assert!(err.contains("exceeds"), "{err}");
    still_serving(&client).await;

    let stats = client.queue_stats("bad").await.unwrap();
    assert_eq!(stats.dead, 4);
    let report = w.stop().await;
    assert_eq!(report.dead, 4);
    assert_eq!(report.succeeded, 5);
    assert_eq!(runs.load(Ordering::SeqCst), 5, "only the good tasks ran");
}

/// The client refuses bad requests before sending anything, with typed errors: a payload over
/// its cap (`PayloadTooLarge` with both sizes), a bad queue name, a priority over 9, a bad id;
/// nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_at_enqueue() {
    let redis = RedisServer::start();
    let url = redis.url();
    let client = Client::with_config(
        ClientConfig::new(&url)
            .namespace("badreq")
            .max_payload_bytes(1000),
    )
    .await
    .unwrap();

    let big = TaskRequest::from_encoded("add", "bad", vec![0xc0; 1001]);
    match client.enqueue_request(big.clone()).await {
        Err(Error::PayloadTooLarge { size, max }) => assert_eq!((size, max), (1001, 1000)),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    // In a bulk call, one bad request fails the whole call before anything is sent.
    let ok = TaskRequest::from_encoded("add", "bad", vec![0xc0]).id("would-be-created");
    assert!(matches!(
        client.enqueue_bulk(vec![ok, big]).await,
        Err(Error::PayloadTooLarge { .. })
    ));
    assert!(matches!(
        client.status(&TaskId::new("bad", "would-be-created")).await,
        Err(Error::NotFound(_))
    ));
    // Exactly at the cap is fine.
    client
        .enqueue_request(TaskRequest::from_encoded("add", "bad", vec![0xc0; 1000]))
        .await
        .unwrap();

    assert!(matches!(
        add::new(1, 2).queue("no spaces{}").send(&client).await,
        Err(Error::InvalidQueueName(_))
    ));
    assert!(matches!(
        add::new(1, 2).priority(10).send(&client).await,
        Err(Error::InvalidPriority(10))
    ));
    assert!(matches!(
        add::new(1, 2).id("").send(&client).await,
        Err(Error::InvalidTaskId(_))
    ));
    let stats = client.queue_stats("bad").await.unwrap();
    assert_eq!(stats.ready, 1, "only the request at the cap was created");
}

/// Malformed Redis URLs are `InvalidUrl` for the client and the worker builder, and an address
/// nobody listens on is an error within a bounded time, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_unreachable_redis_is_an_error_not_a_hang() {
    for url in [
        "not a url",
        "http://127.0.0.1:1/",
        "redis://127.0.0.1:notaport",
    ] {
        match Client::connect(url).await {
            Err(Error::InvalidUrl { url: got, .. }) => assert_eq!(got, url),
            other => panic!("{url}: expected InvalidUrl, got {other:?}"),
        }
        let built = Worker::builder().redis_url(url).register(add).build().await;
        assert!(
            matches!(built, Err(Error::InvalidUrl { .. })),
            "{url}: {built:?}"
        );
    }

    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let res = tokio::time::timeout(Duration::from_secs(60), Client::connect(&url))
        .await
        .expect("connecting to an unreachable Redis must fail, not hang");
    match res {
        Err(e @ Error::Redis(_)) => assert!(e.is_transient(), "{e}"),
        other => panic!("expected a Redis error, got {other:?}"),
    }
    let built = tokio::time::timeout(
        Duration::from_secs(60),
        Worker::builder().redis_url(&url).register(add).build(),
    )
    .await
    .expect("building a worker against an unreachable Redis must fail, not hang");
    assert!(matches!(built, Err(Error::Redis(_))), "{built:?}");
}

/// A queue's shard count is recorded on first use; a client or a worker configured with another
/// count gets `ShardMismatch` naming both counts, while one without a requirement adopts the
/// recorded count, and a worker serving that queue keeps running tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_mismatch_is_a_clear_error() {
    let redis = RedisServer::start();
    let url = redis.url();
    let cfg = || ClientConfig::new(&url).namespace("shards");
    let four = Client::with_config(cfg().queue_shards("bad", 4))
        .await
        .unwrap();
    let first = add::new(1, 1).send(&four).await.unwrap();
    assert_eq!(four.shards("bad").await.unwrap(), 4);

    let eight = Client::with_config(cfg().queue_shards("bad", 8))
        .await
        .unwrap();
    match add::new(1, 1).send(&eight).await {
        Err(Error::ShardMismatch {
            queue,
            configured,
            stored,
        }) => assert_eq!((queue.as_str(), configured, stored), ("bad", 8, 4)),
        other => panic!("expected ShardMismatch, got {other:?}"),
    }
    let built = Worker::builder()
        .redis_url(&url)
        .namespace("shards")
        .register(add)
        .queue_shards("bad", 8)
        .build()
        .await;
    assert!(
        matches!(
            built,
            Err(Error::ShardMismatch {
                configured: 8,
                stored: 4,
                ..
            })
        ),
        "{built:?}"
    );

    // No requirement: the recorded count is used, by clients and workers alike.
    let plain = Client::with_config(cfg().default_shards(32)).await.unwrap();
    assert_eq!(plain.shards("bad").await.unwrap(), 4);
    let runs = Arc::new(AtomicU64::new(0));
    let w = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace("shards")
            .register(add)
            .state(Arc::clone(&runs))
            .default_shards(32)
            .lock_ttl(Duration::from_secs(1)),
    )
    .await;
    let r: u32 = plain
        .wait_result(&first, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(r, 2);
    still_serving(&plain).await;
    w.stop().await;
}

/// The default payload cap of producer and worker: 1 MiB.
const CAP: usize = 1 << 20;

/// Takes a text and returns one of `out` bytes, so both directions can be sized exactly.
#[task(name = "blob", queue = "cap")]
async fn blob(_ctx: TaskContext, _data: String, out: u64) -> Result<String, TaskError> {
    Ok("r".repeat(out as usize))
}

/// The arguments of `blob` encoded to exactly `size` bytes (at least 70 kB), returning `out`.
fn blob_args(size: usize, out: u64) -> Vec<u8> {
    let probe = rmp_serde::to_vec(&("x".repeat(70_000), out)).unwrap();
    let data = "a".repeat(size - (probe.len() - 70_000));
    let v = rmp_serde::to_vec(&(data, out)).unwrap();
    assert_eq!(v.len(), size);
    v
}

/// Every size the API accepts works end to end, with the default caps (issue 9, point 4):
/// arguments of exactly 1 MiB are enqueued (alone and in a bulk call between small tasks) and
/// run, and a result of exactly 1 MiB is stored and read back whole. One byte over: arguments
/// are refused at enqueue with `PayloadTooLarge` before anything is sent, and a result is
/// refused by the worker, which buries the task saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_at_the_cap_work_end_to_end() {
    let redis = RedisServer::start();
    let url = redis.url();
    let w = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace("capw")
            .queues(["cap"])
            .queue_shards("cap", 2)
            .register(blob)
            .lock_ttl(Duration::from_secs(1))
            .sweep_interval(Duration::from_secs(1)),
    )
    .await;
    let client = Client::with_config(
        ClientConfig::new(&url)
            .namespace("capw")
            .queue_shards("cap", 2),
    )
    .await
    .unwrap();
    let req = |args: Vec<u8>| TaskRequest::from_encoded("blob", "cap", args);

    // Arguments at the cap, one task and a bulk call with small tasks around it.
    let one = client
        .enqueue_request(req(blob_args(CAP, 3)))
        .await
        .unwrap();
    let bulk = client
        .enqueue_bulk(vec![
            req(blob_args(70_000, 1)),
            req(blob_args(CAP, 2)),
            req(blob_args(70_000, 1)),
        ])
        .await
        .unwrap();
    assert!(bulk.iter().all(|(_, created)| *created), "{bulk:?}");
    let mut want = vec![(one, 3usize)];
    want.extend(bulk.into_iter().zip([1, 2, 1]).map(|((id, _), n)| (id, n)));
    for (id, n) in &want {
        let r: String = client
            .wait_result(id, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(r.len(), *n, "{id}");
    }

    // Arguments one byte over: a typed error, nothing sent.
    match client.enqueue_request(req(blob_args(CAP + 1, 1))).await {
        Err(Error::PayloadTooLarge { size, max }) => assert_eq!((size, max), (CAP + 1, CAP)),
        other => panic!("arguments over the cap: {other:?}"),
    }

    // A result of exactly the cap (a str32 header of 5 bytes), and one byte over.
    let at = client
        .enqueue_request(req(blob_args(100_000, (CAP - 5) as u64)))
        .await
        .unwrap();
    let r: String = client
        .wait_result(&at, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(r.len(), CAP - 5);
    let info = client.status(&at).await.unwrap();
    assert_eq!(info.result.map(|r| r.len()), Some(CAP));
    let over = client
        .enqueue_request(req(blob_args(100_000, (CAP - 4) as u64)))
        .await
        .unwrap();
    let info = wait_finished(&client, &over, Duration::from_secs(30)).await;
    assert_eq!(info.state, TaskState::Dead, "{:?}", info.last_error);
    let err = info.last_error.unwrap_or_default();
    assert!(
        err.contains(&format!("result of {} bytes exceeds", CAP + 1)),
        "{err}"
    );

    let report = w.stop().await;
    assert_eq!((report.succeeded, report.dead), (5, 1), "{report:?}");
}

/// An id without a task hash in a ready set (issue 9, point 5) does not delay the partition's
/// tasks: the worker is still woken at once for every new task. (The scripts published `r:` only
/// when the ready set was empty, so the stray kept the worker asleep until its next sweep.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_ready_id_does_not_delay_wake_ups() {
    let redis = RedisServer::start();
    let url = redis.url();
    let w = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace("stray")
            .queues(["bad"])
            .queue_shards("bad", 1)
            .register(add)
            .state(Arc::new(AtomicU64::new(0)))
            .lock_ttl(Duration::from_secs(1))
            // No sweep during the test: only wake-up messages bring the worker to the tasks.
            .sweep_interval(Duration::from_secs(600)),
    )
    .await;
    let client = Client::with_config(
        ClientConfig::new(&url)
            .namespace("stray")
            .queue_shards("bad", 1),
    )
    .await
    .unwrap();
    still_serving(&client).await;
    let p = client.store().partition("bad", 0);
    let mut conn = client.store().conn();
    redis::cmd("ZADD")
        .arg(p.keys.ready())
        .arg(1)
        .arg("no-such-task")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    for i in 0..3u32 {
        let t0 = std::time::Instant::now();
        let id = add::new(i, 1).send(&client).await.unwrap();
        let sum: u32 = client
            .wait_result(&id, Duration::from_secs(5))
            .await
            .expect("woken at once despite the stray id");
        assert_eq!(sum, i + 1);
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }
    w.stop().await;
}
