//! The task history archive (`scheduler_worker::archive`) against throwaway Redis servers and the
//! real PostgreSQL at 127.0.0.1:5432 (trust authentication, user `postgres`): each test creates a
//! database of its own and drops it. Every finished attempt (succeeded, dead, cancelled) lands in
//! PostgreSQL exactly once, also with two archivers of which one stops mid-batch; with
//! PostgreSQL unreachable tasks keep running, the streams buffer up to the bound, drop and count
//! the oldest, and drain once it is back.
//!
//! Sizes: `ARCHIVE_TASKS` (default 3,000) is the number of tasks of the two-archiver test, and
//! `ARCHIVE_OUTAGE_SECS` (default 0: as long as the tasks take to finish) how long PostgreSQL
//! stays away at least. docs/storage.md gives the run with the sizes (100,000 tasks,
//! 30 s).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use scheduler::{task, Client, ClientConfig, Error, TaskCall, TaskContext, TaskError, Worker};
use scheduler_testkit::pg::PgDb;
use scheduler_testkit::proxy::{Cut, Proxy};
use scheduler_testkit::{RedisServer, Running};
use scheduler_worker::archive::{ArchiveConfig, Archiver, HistoryDb, HistoryQuery};
use tokio_util::sync::CancellationToken;

const Q: &str = "arch";

/// An environment variable as a number, or `default`.
fn env(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Waits until the namespace's streams are empty and nothing is dropped: every entry stored
/// and acknowledged.
async fn wait_drained(c: &Client, limit: Duration) {
    let start = Instant::now();
    while backlog(c).await != (0, 0) {
        assert!(
            start.elapsed() < limit,
            "streams not drained after {limit:?}: {:?}",
            backlog(c).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Succeeds with its argument doubled.
#[task(name = "ok", queue = "arch")]
async fn ok(_ctx: TaskContext, n: u64) -> Result<u64, TaskError> {
    Ok(n * 2)
}

/// Fails on its first attempt, succeeds on the second.
#[task(name = "flaky", queue = "arch")]
async fn flaky(ctx: TaskContext, _n: u64) -> Result<(), TaskError> {
    if ctx.attempt() == 1 {
        Err(TaskError::retry_after(
            "first try",
            Duration::from_millis(10),
        ))
    } else {
        Ok(())
    }
}

/// Fails every time.
#[task(name = "doomed", queue = "arch")]
async fn doomed(_ctx: TaskContext, n: u64) -> Result<(), TaskError> {
    Err(TaskError::retry_after(
        format!("doomed #{n}"),
        Duration::from_millis(10),
    ))
}

fn worker(url: &str, ns: &str) -> scheduler::WorkerBuilder {
    Worker::builder()
        .redis_url(url)
        .namespace(ns)
        .register(ok)
        .register(flaky)
        .register(doomed)
        .queues([Q])
        .default_shards(4)
}

async fn client(url: &str, ns: &str) -> Client {
    Client::with_config(ClientConfig::new(url).namespace(ns).queue_shards(Q, 4))
        .await
        .unwrap()
}

/// Rows per (task id, attempt), and per state.
async fn rows(db: &HistoryDb, ns: &str) -> Vec<scheduler_worker::archive::HistoryRow> {
    db.query(&HistoryQuery::new(ns).limit(1_000_000))
        .await
        .unwrap()
}

async fn wait_rows(db: &HistoryDb, ns: &str, n: usize, limit: Duration) {
    let start = Instant::now();
    loop {
        let got = rows(db, ns).await.len();
        if got >= n {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{got} of {n} rows in PostgreSQL after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Entries left in the namespace's archive streams, and dropped over the bound.
async fn backlog(c: &Client) -> (u64, u64) {
    let store = c.store();
    let mut total = (0, 0);
    for s in 0..4 {
        let (len, dropped) = store.archive_backlog(&store.partition(Q, s)).await.unwrap();
        total.0 += len;
        total.1 += dropped;
    }
    total
}

/// Tasks run with the archive on: every finished attempt is in PostgreSQL exactly once, with
/// its state, attempt, result or error and arguments; retried attempts that were not final
/// are not rows; cancelled and expired tasks are; the streams end empty. A wrong PostgreSQL URL is a typed
/// error at build time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_finished_attempt_stored_once() {
    let redis = RedisServer::start();
    let pg = PgDb::create("archive_once");
    let (url, ns) = (redis.url(), "ar1");

    // Unreachable PostgreSQL: Error::Archive at build, naming the URL without its password.
    let refused = worker(&url, ns)
        .archive(ArchiveConfig::new(
            "postgres://postgres:hunter2@127.0.0.1:1/none",
        ))
        .build()
        .await;
    match refused {
        Err(Error::Archive(text)) => {
            assert!(
                text.contains("127.0.0.1:1") && !text.contains("hunter2"),
                "{text}"
            )
        }
        other => panic!("expected Error::Archive, got {:?}", other.map(|_| ())),
    }
    // A URL that does not parse, and a database the (reachable) server does not have: the
    // same typed error, with the cause.
    for (bad, cause) in [
        ("postgres//nowhere", "invalid PostgreSQL URL"),
        (
            "postgres://postgres@127.0.0.1:5432/no_such_db_arch17",
            "does not exist",
        ),
    ] {
        match HistoryDb::connect(bad, 1).await {
            Err(Error::Archive(text)) => assert!(text.contains(cause), "{bad}: {text}"),
            other => panic!(
                "{bad}: expected Error::Archive, got {:?}",
                other.map(|_| ())
            ),
        }
    }

    // Tasks that cannot start by their deadline: due in 100 ms, expiring at 200 ms, enqueued
    // before any worker runs; the worker's promoter ends them `expired`.
    let early = client(&url, ns).await;
    for i in 0..5u64 {
        TaskCall::<ok>::new((i,))
            .id(format!("exp{i}"))
            .countdown(Duration::from_millis(100))
            .expires_in(Duration::from_millis(200))
            .send(&early)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let w = Running::start(
        worker(&url, ns).archive(
            ArchiveConfig::new(pg.url())
                .bound(10_000)
                .idle_poll(Duration::from_millis(20)),
        ),
    )
    .await;
    let c = client(&url, ns).await;
    assert_eq!(
        c.store().archive_bound(),
        10_000,
        "the client read the setting"
    );
    for i in 0..300u64 {
        TaskCall::<ok>::new((i,))
            .id(format!("ok{i}"))
            .send(&c)
            .await
            .unwrap();
    }
    for i in 0..20u64 {
        TaskCall::<flaky>::new((i,))
            .id(format!("flaky{i}"))
            .send(&c)
            .await
            .unwrap();
        TaskCall::<doomed>::new((i,))
            .id(format!("doomed{i}"))
            .max_retries(1)
            .send(&c)
            .await
            .unwrap();
    }
    for i in 0..10u64 {
        let id = TaskCall::<ok>::new((i,))
            .id(format!("later{i}"))
            .countdown(Duration::from_secs(3600))
            .send(&c)
            .await
            .unwrap();
        c.cancel(&id).await.unwrap();
    }
    let db = HistoryDb::connect(&pg.url(), 1).await.unwrap();
    wait_rows(&db, ns, 355, Duration::from_secs(60)).await;
    // Nothing more arrives: give a late duplicate every chance to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.stop().await;
    let all = rows(&db, ns).await;
    assert_eq!(all.len(), 355, "one row per finished attempt");
    let by_id: HashMap<&str, &scheduler_worker::archive::HistoryRow> =
        all.iter().map(|r| (r.task_id.as_str(), r)).collect();
    assert_eq!(by_id.len(), 355, "no task twice");
    for i in 0..300u64 {
        let r = by_id[format!("ok{i}").as_str()];
        assert_eq!(
            (r.state.as_str(), r.attempt, r.name.as_str()),
            ("succeeded", 1, "ok")
        );
        let result: u64 = rmp_serde::from_slice(r.result.as_deref().unwrap()).unwrap();
        assert_eq!(result, i * 2);
        let (arg,): (u64,) = rmp_serde::from_slice(&r.args).unwrap();
        assert_eq!(arg, i);
        assert_eq!(r.queue, Q);
        assert!(r.worker.is_some() && r.started_at_ms.is_some() && r.enqueued_at_ms.is_some());
        assert!(r.archived_at_ms + 5 >= r.finished_at_ms, "{r:?}");
    }
    for i in 0..20u64 {
        let r = by_id[format!("flaky{i}").as_str()];
        assert_eq!((r.state.as_str(), r.attempt), ("succeeded", 2));
        let r = by_id[format!("doomed{i}").as_str()];
        assert_eq!((r.state.as_str(), r.attempt), ("dead", 2));
        assert_eq!(r.error.as_deref(), Some(format!("doomed #{i}").as_str()));
    }
    for i in 0..10u64 {
        let r = by_id[format!("later{i}").as_str()];
        assert_eq!((r.state.as_str(), r.attempt), ("cancelled", 0));
    }
    for i in 0..5u64 {
        let r = by_id[format!("exp{i}").as_str()];
        assert_eq!((r.state.as_str(), r.attempt), ("expired", 0));
        assert!(r.result.is_none() && r.error.is_some(), "{r:?}");
    }
    // The searches schedctl history offers.
    let dead = db
        .query(&HistoryQuery::new(ns).state("dead").limit(1000))
        .await
        .unwrap();
    assert_eq!(dead.len(), 20);
    let one = db.query(&HistoryQuery::new(ns).id("ok7")).await.unwrap();
    assert_eq!(one.len(), 1);
    let named = db
        .query(&HistoryQuery::new(ns).name("flaky").queue(Q).limit(1000))
        .await
        .unwrap();
    assert_eq!(named.len(), 20);
    let newest = all.iter().map(|r| r.finished_at_ms).max().unwrap();
    let late = db
        .query(&HistoryQuery::new(ns).since_ms(newest).limit(1000))
        .await
        .unwrap();
    assert!(!late.is_empty() && late.iter().all(|r| r.finished_at_ms == newest));
    assert!(db
        .query(&HistoryQuery::new(ns).until_ms(0))
        .await
        .unwrap()
        .is_empty());
    // Paging with `after` (the dashboard's history page): pages of 40 give every row once, in
    // the order of one big query, ties of finishing time included.
    let mut paged = Vec::new();
    let mut q = HistoryQuery::new(ns).limit(40);
    loop {
        let page = db.query(&q).await.unwrap();
        let Some(last) = page.last() else { break };
        q = q.after(last.cursor());
        paged.extend(page);
    }
    assert_eq!(paged, all, "paged = one query");
    assert_eq!(
        backlog(&c).await,
        (0, 0),
        "streams drained, nothing dropped"
    );
}

/// Two archivers, one of which stops mid-batch (it read a batch and inserted half of it, then
/// died; and one aborted while it runs): the other takes the pending entries over and every
/// finished attempt is in PostgreSQL exactly once. `ARCHIVE_TASKS` tasks (default 3,000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_archivers_one_killed_mid_batch() {
    let redis = RedisServer::start();
    let pg = PgDb::create("archive_two");
    let (url, ns) = (redis.url(), "ar2");
    let c = client(&url, ns).await;
    // The archive on for the namespace, no archiver yet: the workers only append.
    c.store().write_archive_setting(100_000).await.unwrap();
    let w = Running::start(worker(&url, ns)).await;
    let n = env("ARCHIVE_TASKS", 3000);
    // Generous limits that grow with the size: a correctness check, not a speed one.
    let limit = Duration::from_secs(60 + n / 500);
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        let reqs: Vec<_> = chunk
            .iter()
            .map(|i| {
                scheduler::TaskRequest::new("ok", Q, &(i,))
                    .unwrap()
                    .id(format!("t{i}"))
            })
            .collect();
        c.enqueue_bulk(reqs).await.unwrap();
    }
    let start = Instant::now();
    while backlog(&c).await.0 < n {
        assert!(start.elapsed() < limit, "tasks did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.stop().await;

    let db = HistoryDb::connect(&pg.url(), 2).await.unwrap();
    let store = c.store().clone();
    let parts: Vec<_> = (0..4).map(|s| store.partition(Q, s)).collect();
    // Archiver "crashed": reads a batch of shard 0, stores half of it, dies before XACK.
    store.archive_group(&parts[0]).await.unwrap();
    let (batch, _) = store
        .archive_read(&parts[0], "crashed", 100, false)
        .await
        .unwrap();
    assert_eq!(batch.len(), 100);
    assert_eq!(db.insert(ns, &parts[0], &batch[..50]).await.unwrap(), 50);

    // Archiver "aborted": runs, and is aborted once it has stored something.
    // (It never takes over entries: the crashed batch is left to the survivor.)
    let cfg = ArchiveConfig::new(pg.url())
        .batch(50)
        .claim_idle(Duration::from_secs(3600))
        .idle_poll(Duration::from_millis(10));
    let a = Archiver::new(
        store.clone(),
        db.clone(),
        parts.clone(),
        cfg.clone(),
        "aborted",
    );
    let handle = tokio::spawn(a.run(CancellationToken::new()));
    let start = Instant::now();
    while rows(&db, ns).await.len() < 500 {
        assert!(start.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    handle.abort();
    let _ = handle.await;
    let before = rows(&db, ns).await.len();
    assert!(before < n as usize, "aborted before the end ({before})");

    // The survivor takes over what the two left pending, and stores the rest.
    let stop = CancellationToken::new();
    let cfg = cfg.claim_idle(Duration::from_millis(300));
    let b = Archiver::new(store.clone(), db.clone(), parts.clone(), cfg, "survivor");
    let survivor = tokio::spawn(b.run(stop.clone()));
    // Drained streams: every entry stored and acknowledged (polling the stream lengths, not
    // the table, which a large run would read whole each time).
    wait_drained(&c, limit).await;
    stop.cancel();
    let report = survivor.await.unwrap();
    assert!(
        report.claimed >= 100,
        "took over the crashed batch: {report:?}"
    );
    let all = rows(&db, ns).await;
    assert_eq!(all.len(), n as usize);
    let mut ids: Vec<&str> = all.iter().map(|r| r.task_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n as usize, "every task once");
    assert!(all.iter().all(|r| r.state == "succeeded" && r.attempt == 1));
}

/// PostgreSQL unreachable while tasks keep running: they all finish, the streams hold the
/// newest `bound` entries per partition and count the dropped ones; once PostgreSQL is back
/// the buffer drains: rows + dropped = finished attempts. PostgreSQL is made unreachable by a
/// TCP proxy in front of the shared server (which a test must not stop): open connections are
/// reset and new ones hang, the harder case for the archiver (it needs its time-outs, where a
/// stopped server refuses at once); the bench's `--pg-outage-data` stops a real server.
/// It stays away `ARCHIVE_OUTAGE_SECS` at least (default 0: until the tasks finish).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_away_tasks_run_buffer_bounded_then_drains() {
    let redis = RedisServer::start();
    let pg = PgDb::create("archive_away");
    let (url, ns) = (redis.url(), "ar3");
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap())
        .await
        .unwrap();
    let via = format!("postgres://postgres@{}/{}", proxy.addr(), pg.name());
    const BOUND: u64 = 50;
    let w = Running::start(
        worker(&url, ns).archive(
            ArchiveConfig::new(via)
                .bound(BOUND)
                .idle_poll(Duration::from_millis(20))
                .retry_pause(Duration::from_millis(200)),
        ),
    )
    .await;
    let c = client(&url, ns).await;
    let db = HistoryDb::connect(&pg.url(), 1).await.unwrap();
    // Some tasks archived while PostgreSQL is there.
    for i in 0..40u64 {
        TaskCall::<ok>::new((i,))
            .id(format!("a{i}"))
            .send(&c)
            .await
            .unwrap();
    }
    wait_rows(&db, ns, 40, Duration::from_secs(30)).await;

    // PostgreSQL away: connections reset, new ones hang.
    proxy.cut(Cut::Drop);
    proxy.reset_all();
    let cut_at = Instant::now();
    const AWAY: u64 = 600;
    let reqs: Vec<_> = (0..AWAY)
        .map(|i| {
            scheduler::TaskRequest::new("ok", Q, &(i,))
                .unwrap()
                .id(format!("b{i}"))
        })
        .collect();
    c.enqueue_bulk(reqs).await.unwrap();
    // Every task runs: execution never waits for PostgreSQL.
    let inspector = scheduler::Inspector::new(&c);
    let start = Instant::now();
    loop {
        let stats = inspector.queue(Q).await.unwrap();
        if stats.total.ready + stats.total.running + stats.total.scheduled == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "tasks stalled: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outage = Duration::from_secs(env("ARCHIVE_OUTAGE_SECS", 0));
    while cut_at.elapsed() < outage {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (held, dropped) = backlog(&c).await;
    assert!(held <= 4 * BOUND, "the streams keep the bound: {held}");
    assert!(dropped > 0, "the oldest were dropped and counted");
    let stored_before = rows(&db, ns).await.len() as u64;
    assert_eq!(
        stored_before, 40,
        "nothing reached PostgreSQL while it was away"
    );

    // Back: the buffer drains.
    proxy.heal();
    let start = Instant::now();
    loop {
        let (held, _) = backlog(&c).await;
        let stored = rows(&db, ns).await.len() as u64;
        if held == 0 && stored + backlog(&c).await.1 == 40 + AWAY {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not drained: {held} held, {stored} stored, {dropped} dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, dropped) = backlog(&c).await;
    let stored = rows(&db, ns).await.len() as u64;
    assert!(stored > stored_before, "the buffer drained into PostgreSQL");
    assert_eq!(
        stored + dropped,
        40 + AWAY,
        "every attempt stored or counted as dropped"
    );
    w.stop().await;
}
