//! Task events on real redis-servers: a queue's subscriber sees each task's life in order
//! (enqueued, started, progress, succeeded; retried and dead; failed; cancelled before and
//! while running), `watch`
//! sees one task's events only, `wait_result` is woken by the final event (and stays correct
//! for a task finished before it subscribed, and in a queue without events), a queue without
//! events gets none, and a run lost with its worker shows as retried (`reap.lua`); a task
//! whose deadline passed before it started shows as expired (`claim.lua`, `promote.lua`), and
//! the ticks of a periodic schedule as enqueued (`schedule_write.lua`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use scheduler::{
    task, Backoff, Client, ClientConfig, EventKind, EventStream, Schedule, Schedules, TaskContext,
    TaskError, TaskEvent, TaskId, Worker, WorkerBuilder,
};
use scheduler_testkit::{RedisServer, Running};
use tokio::sync::Notify;

/// Reports half-way progress, then returns 7.
#[task(name = "ev_ok", queue = "ev")]
async fn ev_ok(ctx: TaskContext) -> Result<u32, TaskError> {
    ctx.progress(50, "half").await?;
    Ok(7)
}

/// Always fails with a retryable error.
#[task(name = "ev_flaky", queue = "ev", max_retries = 1)]
async fn ev_flaky() -> Result<(), TaskError> {
    Err(TaskError::retry("boom"))
}

/// Fails with an error retrying cannot fix.
#[task(name = "ev_fatal", queue = "ev")]
async fn ev_fatal() -> Result<(), TaskError> {
    Err(TaskError::fail("bad input"))
}

/// Waits for the test's go, then returns its argument doubled.
#[task(name = "ev_gated", queue = "ev")]
async fn ev_gated(ctx: TaskContext, x: u32) -> Result<u32, TaskError> {
    ctx.state::<Arc<Notify>>()?.notified().await;
    Ok(x * 2)
}

/// Runs until its cancellation is requested, then stops.
#[task(name = "ev_stoppable", queue = "ev")]
async fn ev_stoppable(ctx: TaskContext) -> Result<(), TaskError> {
    ctx.cancelled().await;
    Err(TaskError::fail("stopped"))
}

/// Returns its argument, in a queue without events.
#[task(name = "quiet_echo", queue = "quiet")]
async fn quiet_echo(x: u32) -> Result<u32, TaskError> {
    Ok(x)
}

const NS: &str = "events";

async fn client(url: &str) -> Client {
    Client::with_config(ClientConfig::new(url).namespace(NS))
        .await
        .unwrap()
}

fn worker(url: &str) -> WorkerBuilder {
    Worker::builder()
        .redis_url(url)
        .namespace(NS)
        .queues(["ev", "quiet"])
        .backoff(Backoff::exponential(
            Duration::from_millis(10),
            1.0,
            Duration::from_millis(10),
        ))
        .register(ev_ok)
        .register(ev_flaky)
        .register(ev_fatal)
        .register(ev_gated)
        .register(ev_stoppable)
        .register(quiet_echo)
}

/// The events of task `id` on `events` up to its final one (20 s at most).
async fn life(events: &mut EventStream, id: &TaskId) -> Vec<TaskEvent> {
    let mut out = Vec::new();
    let collect = async {
        while let Some(e) = events.next().await {
            if &e.id != id {
                continue;
            }
            let done = e.kind.is_final();
            out.push(e);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), collect)
        .await
        .expect("the task finishes within 20 s");
    out
}

fn kinds(events: &[TaskEvent]) -> Vec<(EventKind, u32)> {
    events.iter().map(|e| (e.kind, e.attempt)).collect()
}

/// One subscriber of the queue sees a succeeding task's enqueued, started, progress (with its
/// percent and message) and succeeded; a failing task's retried then dead, with the error; a
/// non-retryable failure's failed; a withdrawn task's cancelled, and a running one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_subscriber_sees_each_tasks_life_in_order() {
    let redis = RedisServer::start();
    let url = redis.url();
    let c = client(&url).await;
    c.set_events("ev", true).await.unwrap();
    let mut events = c.events("ev").await.unwrap();
    let w = Running::start(worker(&url).state(Arc::new(Notify::new()))).await;

    // Due a moment later, so that the enqueue's event (published by this client after the
    // enqueue) comes before the worker's: docs/events.md, "Order".
    let id = ev_ok::new()
        .countdown(Duration::from_millis(200))
        .send(&c)
        .await
        .unwrap();
    let seen = life(&mut events, &id).await;
    assert_eq!(
        kinds(&seen),
        [
            (EventKind::Enqueued, 0),
            (EventKind::Started, 1),
            (EventKind::Progress, 1),
            (EventKind::Succeeded, 1)
        ]
    );
    assert_eq!(seen[2].progress, Some(50));
    assert_eq!(seen[2].message, "half");
    assert!(seen.windows(2).all(|w| w[0].at_ms <= w[1].at_ms + 5));
    assert_eq!(c.result::<u32>(&id).await.unwrap(), Some(7));

    let id = ev_flaky::new()
        .countdown(Duration::from_millis(200))
        .send(&c)
        .await
        .unwrap();
    let seen = life(&mut events, &id).await;
    assert_eq!(
        kinds(&seen),
        [
            (EventKind::Enqueued, 0),
            (EventKind::Started, 1),
            (EventKind::Retried, 1),
            (EventKind::Started, 2),
            (EventKind::Dead, 2)
        ]
    );
    assert_eq!(seen[2].message, "boom");
    assert_eq!(seen[4].message, "boom");

    let id = ev_fatal::new()
        .countdown(Duration::from_millis(200))
        .send(&c)
        .await
        .unwrap();
    let seen = life(&mut events, &id).await;
    assert_eq!(
        kinds(&seen),
        [
            (EventKind::Enqueued, 0),
            (EventKind::Started, 1),
            (EventKind::Failed, 1)
        ]
    );
    assert_eq!(seen[2].message, "bad input");

    let id = ev_ok::new()
        .countdown(Duration::from_secs(3600))
        .send(&c)
        .await
        .unwrap();
    c.cancel(&id).await.unwrap();
    let seen = life(&mut events, &id).await;
    assert_eq!(
        kinds(&seen),
        [(EventKind::Enqueued, 0), (EventKind::Cancelled, 0)]
    );

    // Cancelled while running: the worker publishes `cancelled` once Redis ended the run.
    let id = ev_stoppable::new()
        .countdown(Duration::from_millis(200))
        .send(&c)
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("events within 20 s")
            .expect("subscribed");
        if e.id == id {
            seen.push(e);
        }
    }
    c.cancel(&id).await.unwrap();
    seen.extend(life(&mut events, &id).await);
    assert_eq!(
        kinds(&seen),
        [
            (EventKind::Enqueued, 0),
            (EventKind::Started, 1),
            (EventKind::Cancelled, 1)
        ]
    );
    w.stop().await;
}

/// `watch` sees the events of its task only; a queue without events publishes none (its
/// subscriber gets nothing while its tasks run), and turning events off stops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_one_task_and_queues_without_events_publish_none() {
    let redis = RedisServer::start();
    let url = redis.url();
    let c = client(&url).await;
    c.set_events("ev", true).await.unwrap();
    let mut quiet = c.events("quiet").await.unwrap();
    let w = Running::start(worker(&url).state(Arc::new(Notify::new()))).await;

    let other = ev_ok::new().countdown(Duration::from_millis(200));
    let mine = ev_ok::new().countdown(Duration::from_millis(200));
    let other = other.send(&c).await.unwrap();
    let id = mine.id("watched").send(&c).await.unwrap();
    let mut watch = c.watch(&id).await.unwrap();
    // Subscribed after the enqueue: from `started` on.
    let seen = life(&mut watch, &id).await;
    assert_eq!(
        kinds(&seen),
        [
            (EventKind::Started, 1),
            (EventKind::Progress, 1),
            (EventKind::Succeeded, 1)
        ]
    );
    assert!(seen.iter().all(|e| e.id == id && e.id != other));

    let q = quiet_echo::new(5).send(&c).await.unwrap();
    assert_eq!(
        c.wait_result::<u32>(&q, Duration::from_secs(20))
            .await
            .unwrap(),
        5
    );
    // Off: no more events for `ev` (this client knows at once; the worker at its heartbeat).
    c.set_events("ev", false).await.unwrap();
    assert!(!c.store().events_on("ev"));
    w.stop().await;
    // Nothing was published on the quiet queue's channel: the stream holds no event.
    let nothing = tokio::time::timeout(Duration::from_millis(200), quiet.next()).await;
    assert!(
        nothing.is_err(),
        "no event in a queue without events: {nothing:?}"
    );
}

/// `wait_result` in a queue with events returns the result once the final event arrives,
/// reading the task only when it starts waiting while it waits (no polling: `HGETALL`
/// counted); for a task finished before the call it returns at once; a dead task's error and
/// a queue without events work as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_result_is_woken_by_the_final_event() {
    let redis = RedisServer::start();
    let url = redis.url();
    let c = client(&url).await;
    c.set_events("ev", true).await.unwrap();
    let gate = Arc::new(Notify::new());
    let w = Running::start(worker(&url).state(Arc::clone(&gate))).await;

    let id = ev_gated::new(21).send(&c).await.unwrap();
    // Every read of the task's record, seen through MONITOR.
    let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let monitor = redis::Client::open(url.as_str())
        .unwrap()
        .get_async_monitor()
        .await
        .unwrap();
    let counting = {
        let reads = Arc::clone(&reads);
        let key = format!(":t:{}\"", id.id());
        tokio::spawn(async move {
            let mut lines = monitor.into_on_message::<String>();
            while let Some(l) = lines.next().await {
                if l.contains("\"HGETALL\"") && l.contains(&key) {
                    reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        })
    };
    let waiter = {
        let c = c.clone();
        let id = id.clone();
        tokio::spawn(async move { c.wait_result::<u32>(&id, Duration::from_secs(20)).await })
    };
    let read = || reads.load(std::sync::atomic::Ordering::SeqCst);
    // The waiter has read the task once (and found it unfinished)...
    while read() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...and, while the task runs, reads it no more (it would every 5 to 250 ms by polling).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(read(), 1, "no read while waiting for the event");
    assert!(!waiter.is_finished());
    gate.notify_one();
    assert_eq!(waiter.await.unwrap().unwrap(), 42);
    counting.abort();

    // Finished before the call: its event is long gone, the first read finds the result.
    assert_eq!(
        c.wait_result::<u32>(&id, Duration::from_secs(20))
            .await
            .unwrap(),
        42
    );
    let dead = ev_fatal::new().send(&c).await.unwrap();
    let err = c
        .wait_result::<()>(&dead, Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(
        matches!(err, scheduler::Error::TaskFailed { .. }),
        "{err:?}"
    );
    let q = quiet_echo::new(3).send(&c).await.unwrap();
    assert_eq!(
        c.wait_result::<u32>(&q, Duration::from_secs(20))
            .await
            .unwrap(),
        3
    );
    w.stop().await;
}

/// A run lost with its worker (its lease expired, `reap.lua` put the task back) shows as
/// `retried` with the reason, published by the reaping script itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_lost_with_its_worker_shows_as_retried() {
    let redis = RedisServer::start();
    let url = redis.url();
    let c = client(&url).await;
    c.set_events("ev", true).await.unwrap();
    let mut events = c.events("ev").await.unwrap();
    // No worker: the test claims with a lease of 1 ms and reaps, as a lost worker's would be.
    let id = ev_ok::new().send(&c).await.unwrap();
    let store = c.store();
    let p = store.partition("ev", id.shard(c.shards("ev").await.unwrap()));
    let claim = store.claim(&p, 10, 1, "lost-worker").await.unwrap();
    assert_eq!(claim.tasks.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let reaped = store.reap(&p, 100, 3).await.unwrap();
    assert_eq!(reaped.requeued, 1);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("events within 20 s")
            .expect("subscribed");
        if e.id == id {
            seen.push(e);
        }
    }
    assert_eq!(
        kinds(&seen),
        [(EventKind::Enqueued, 0), (EventKind::Retried, 1)]
    );
    assert_eq!(
        seen[1].message,
        "lease expired: worker lost during attempt 1"
    );
}

/// The next `n` events of `events` (20 s at most).
async fn next_events(events: &mut EventStream, n: usize) -> Vec<TaskEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        let e = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("events within 20 s")
            .expect("subscribed");
        out.push(e);
    }
    out
}

/// Asserts that `events` receives nothing for 200 ms.
async fn assert_silent(events: &mut EventStream) {
    let nothing = tokio::time::timeout(Duration::from_millis(200), events.next()).await;
    assert!(nothing.is_err(), "no event expected: {nothing:?}");
}

/// A task whose deadline passed before it started ends `expired` in the script that finds it:
/// `claim.lua` (it was ready), `promote.lua` moving it (scheduled) and `promote.lua` leasing it
/// straight to the caller. Each publishes `expired` with the reason in a queue with events on;
/// in a queue without events, nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_expired_unstarted_publish_expired() {
    let redis = RedisServer::start();
    let url = redis.url();
    let c = client(&url).await;
    c.set_events("ev", true).await.unwrap();
    let mut events = c.events("ev").await.unwrap();
    let mut quiet = c.events("quiet").await.unwrap();
    let store = c.store();
    // No worker: the test claims and promotes every partition as a worker would.
    let (ev_shards, quiet_shards) = (
        c.shards("ev").await.unwrap(),
        c.shards("quiet").await.unwrap(),
    );
    let deadline = Duration::from_millis(100);
    let pass = || tokio::time::sleep(Duration::from_millis(300));
    let lease = 60_000;

    // Ready when its deadline passes: the claim ends it.
    let ready = ev_ok::new().expires_in(deadline).send(&c).await.unwrap();
    let q = quiet_echo::new(1)
        .expires_in(deadline)
        .send(&c)
        .await
        .unwrap();
    pass().await;
    let mut expired = 0;
    for (queue, n) in [("ev", ev_shards), ("quiet", quiet_shards)] {
        for shard in 0..n {
            let claim = store
                .claim(&store.partition(queue, shard), 10, lease, "w#1")
                .await
                .unwrap();
            assert!(claim.tasks.is_empty());
            expired += claim.expired;
        }
    }
    assert_eq!(expired, 2);
    let seen = next_events(&mut events, 2).await;
    assert!(seen.iter().all(|e| e.id == ready), "{seen:?}");
    assert_eq!(
        kinds(&seen),
        [(EventKind::Enqueued, 0), (EventKind::Expired, 0)]
    );
    assert!(
        seen[1].message.starts_with("deadline ")
            && seen[1].message.ends_with(" passed before the task started"),
        "{}",
        seen[1].message
    );
    assert_eq!(
        c.status(&ready).await.unwrap().state,
        scheduler::TaskState::Expired
    );
    assert_eq!(
        c.status(&q).await.unwrap().state,
        scheduler::TaskState::Expired
    );

    // Scheduled when its deadline passes: the promote ends it, moving (want 0) or leasing
    // (want 10) alike.
    for want in [0, 10] {
        let id = ev_ok::new()
            .countdown(Duration::from_millis(20))
            .expires_in(deadline)
            .send(&c)
            .await
            .unwrap();
        pass().await;
        let mut expired = 0;
        for shard in 0..ev_shards {
            let (promoted, leased) = store
                .promote_claim(&store.partition("ev", shard), 100, want, lease, "w#2")
                .await
                .unwrap();
            assert!(leased.is_empty());
            expired += promoted.expired;
        }
        assert_eq!(expired, 1, "want {want}");
        let seen = next_events(&mut events, 2).await;
        assert!(seen.iter().all(|e| e.id == id), "{seen:?}");
        assert_eq!(
            kinds(&seen),
            [(EventKind::Enqueued, 0), (EventKind::Expired, 0)]
        );
        assert!(seen[1].message.starts_with("deadline "));
    }
    assert_silent(&mut quiet).await;
    assert_silent(&mut events).await;
}

/// The ticks of a periodic schedule are created by `schedule_write.lua`, which publishes their
/// `enqueued` events in a queue with events on (one per task it created, none for a tick that
/// existed), and none in a queue without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_ticks_publish_enqueued() {
    let redis = RedisServer::start();
    let url = redis.url();
    let c = client(&url).await;
    c.set_events("ev", true).await.unwrap();
    let mut events = c.events("ev").await.unwrap();
    let mut quiet = c.events("quiet").await.unwrap();
    let schedules = Schedules::new(&c);
    let every = |name: &str| Schedule::every(name, Duration::from_secs(1)).unwrap();
    schedules
        .add(&every("loud").task(ev_ok::new()).unwrap())
        .await
        .unwrap();
    schedules
        .add(&every("hush").task(quiet_echo::new(1)).unwrap())
        .await
        .unwrap();
    let report = schedules.fire_due(Duration::from_secs(3)).await.unwrap();
    assert!(report.created >= 2, "{report:?}");
    // The ticks of "hush" publish nothing: those of "loud" are the events.
    let info = schedules.get("loud").await.unwrap();
    let loud = info.fired;
    assert!(loud >= 1, "{info:?}");
    let seen = next_events(&mut events, loud as usize).await;
    for e in &seen {
        assert_eq!((e.kind, e.attempt), (EventKind::Enqueued, 0), "{e:?}");
        assert!(e.id.id().starts_with("loud"), "{e:?}");
        let state = c.status(&e.id).await.unwrap().state;
        assert!(
            matches!(
                state,
                scheduler::TaskState::Scheduled | scheduler::TaskState::Ready
            ),
            "{state:?}"
        );
    }
    let ids: std::collections::HashSet<_> = seen.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), seen.len());
    // A second pass publishes for the ticks it created only (none for those that exist).
    schedules.fire_due(Duration::from_secs(3)).await.unwrap();
    let more = schedules.get("loud").await.unwrap().fired - loud;
    let seen = next_events(&mut events, more as usize).await;
    assert!(seen.iter().all(|e| !ids.contains(&e.id)), "{seen:?}");
    assert_silent(&mut events).await;
    assert_silent(&mut quiet).await;
}
