//! The seed both test files share: a throwaway Redis holding tasks in every listed state.
//!
//! Namespace `dash`:
//! - queue `emails` (2 shards): `later` due in an hour, `soon` due in 30 s, `now-1` and `now-2`
//!   ready;
//! - queue `billing` (2 shards): `doomed-a` and `doomed-b` dead (claimed, then failed for good,
//!   without a worker; `doomed-a`'s first run was lost with its worker, reaped, so its attempt
//!   history has two runs), `busy` running under a lease, with a progress report (40 %);
//! - schedule `nightly` (cron, 03:00 UTC) running `cleanup` on `emails`.

#![allow(dead_code)] // each test file uses part of it

use std::time::Duration;

use scheduler::{Client, ClientConfig, Schedule, Schedules, TaskId, TaskRequest};
use scheduler_testkit::RedisServer;

pub(crate) const NS: &str = "dash";
pub(crate) const ERROR: &str = "card declined: insufficient funds";

pub(crate) struct Seed {
    pub(crate) server: RedisServer,
    pub(crate) client: Client,
    pub(crate) dead: Vec<TaskId>,
    pub(crate) busy: TaskId,
}

fn req(queue: &str, name: &str, id: &str, args: &(u64, &str)) -> TaskRequest {
    TaskRequest::new(name, queue, args)
        .unwrap()
        .id(id)
        .max_retries(0)
}

pub(crate) async fn seed() -> Seed {
    let server = RedisServer::start();
    let client = Client::with_config(
        ClientConfig::new(server.url())
            .namespace(NS)
            .queue_shards("emails", 2)
            .queue_shards("billing", 2),
    )
    .await
    .unwrap();
    client
        .enqueue_request(
            req("emails", "send", "later", &(7, "hello")).countdown(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    client
        .enqueue_request(
            req("emails", "send", "soon", &(8, "soon")).countdown(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    for id in ["now-1", "now-2"] {
        client
            .enqueue_request(req("emails", "send", id, &(1, "now")))
            .await
            .unwrap();
    }
    // Dead without a worker: claim, then report a failure with no retry left.
    let store = client.store();
    let mut dead = Vec::new();
    for id in ["doomed-a", "doomed-b"] {
        let tid = client
            .enqueue_request(req("billing", "charge", id, &(99, "charge")))
            .await
            .unwrap();
        let p = store.partition("billing", tid.shard(2));
        if id == "doomed-a" {
            // A first run lost with its worker (a 1 ms lease, reaped): its attempt history
            // has two runs.
            let first = store.claim(&p, 10, 1, "w-lost").await.unwrap();
            assert_eq!(first.tasks.len(), 1);
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(store.reap(&p, 10, 5).await.unwrap().requeued, 1);
        }
        let claim = store.claim(&p, 10, 30_000, "w-test").await.unwrap();
        assert_eq!(claim.tasks.len(), 1, "only {id} is ready in its shard");
        store
            .retry(&p, &[(id, claim.tasks[0].token, ERROR, None)])
            .await
            .unwrap();
        dead.push(tid);
    }
    // Running: claimed by a worker that is still at it (a long lease).
    let busy = client
        .enqueue_request(req("billing", "slow", "busy", &(5, "slow")))
        .await
        .unwrap();
    let p = store.partition("billing", busy.shard(2));
    let claim = store.claim(&p, 10, 600_000, "w-test").await.unwrap();
    assert_eq!(claim.tasks.len(), 1);
    // Its handler reported its progress (`ctx.progress`).
    store
        .progress(&p, "busy", claim.tasks[0].token, 40, "8000 of 20000 rows")
        .await
        .unwrap();
    Schedules::new(&client)
        .add(
            &Schedule::cron("nightly", "0 0 3 * * *", "UTC")
                .unwrap()
                .request(TaskRequest::new("cleanup", "emails", &("tmp",)).unwrap()),
        )
        .await
        .unwrap();
    Seed {
        server,
        client,
        dead,
        busy,
    }
}

// The history archive's tests: the real PostgreSQL at 127.0.0.1:5432 (trust authentication,
// user `postgres`).

pub(crate) use scheduler_testkit::pg::PgDb;

/// Namespace of the archived tasks.
pub(crate) const HIST_NS: &str = "hist";

/// Succeeds with its argument doubled.
#[scheduler::task(name = "double", queue = "hq")]
async fn double(_ctx: scheduler::TaskContext, n: u64) -> Result<u64, scheduler::TaskError> {
    Ok(n * 2)
}

/// Fails every time.
#[scheduler::task(name = "doomed", queue = "hq")]
async fn doomed(_ctx: scheduler::TaskContext, n: u64) -> Result<(), scheduler::TaskError> {
    Err(scheduler::TaskError::retry_after(
        format!("doomed #{n}"),
        Duration::from_millis(10),
    ))
}

/// In namespace `hist` of `redis`, a worker archiving to `pg` runs `ok` tasks `ok<i>` that
/// succeed and `dead` that die (`dead<i>`, error `doomed #<i>`), and `cancelled` tasks
/// (`gone<i>`) are cancelled before they run; returns once all are rows in PostgreSQL.
pub(crate) async fn archived(
    redis: &RedisServer,
    pg: &PgDb,
    ok: u64,
    dead: u64,
    cancelled: u64,
) -> (Client, scheduler::archive::HistoryDb) {
    use scheduler::archive::{ArchiveConfig, HistoryDb, HistoryQuery};
    use scheduler::{TaskCall, Worker};

    let url = redis.url();
    let w = scheduler_testkit::Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace(HIST_NS)
            .register(double)
            .register(doomed)
            .queues(["hq"])
            .archive(ArchiveConfig::new(pg.url()).idle_poll(Duration::from_millis(20))),
    )
    .await;
    let c = Client::with_config(ClientConfig::new(&url).namespace(HIST_NS))
        .await
        .unwrap();
    for i in 0..ok {
        TaskCall::<double>::new((i,))
            .id(format!("ok{i}"))
            .send(&c)
            .await
            .unwrap();
    }
    for i in 0..dead {
        TaskCall::<doomed>::new((i,))
            .id(format!("dead{i}"))
            .max_retries(0)
            .send(&c)
            .await
            .unwrap();
    }
    for i in 0..cancelled {
        let id = TaskCall::<double>::new((i,))
            .id(format!("gone{i}"))
            .countdown(Duration::from_secs(3600))
            .send(&c)
            .await
            .unwrap();
        c.cancel(&id).await.unwrap();
    }
    let want = (ok + dead + cancelled) as usize;
    let db = HistoryDb::connect(&pg.url(), 2).await.unwrap();
    let start = std::time::Instant::now();
    loop {
        let n = db
            .query(&HistoryQuery::new(HIST_NS).limit(1000))
            .await
            .unwrap()
            .len();
        if n >= want {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{n} of {want} rows"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.stop().await;
    (c, db)
}

/// Namespace of the limited tasks ([`limited`]).
pub(crate) const LIM_NS: &str = "lim";
/// The concurrency limit of task `hold` ([`limited`]).
pub(crate) const HOLD_CONCURRENCY: u32 = 2;
/// How many `hold` tasks [`limited`] enqueues: one more than may run at once.
pub(crate) const HOLD_TASKS: u32 = HOLD_CONCURRENCY + 1;

/// Set once a test has read what it wanted: the `hold` tasks then finish.
static HOLD_RELEASED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs until [`release_holds`] (at most 60 s).
#[scheduler::task(name = "hold", queue = "lq")]
async fn hold(_ctx: scheduler::TaskContext, _n: u32) -> Result<(), scheduler::TaskError> {
    let start = std::time::Instant::now();
    while !HOLD_RELEASED.load(std::sync::atomic::Ordering::SeqCst)
        && start.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Lets every `hold` task finish.
pub(crate) fn release_holds() {
    HOLD_RELEASED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// In namespace `lim` of `redis`: task `hold` limited to [`HOLD_CONCURRENCY`] at once and 100
/// starts a minute, key family `tenant` to 5 at once; a worker (64 slots of its own) given
/// [`HOLD_TASKS`] `hold` tasks of tenant `acme`. Returns once the limit holds them: that many
/// running, the rest waiting for a slot (as `Inspector::limit_usage` reads it).
pub(crate) async fn limited(redis: &RedisServer) -> (Client, scheduler_testkit::Running) {
    use scheduler::limits::{Limit, LimitScope};
    use scheduler::{Inspector, TaskCall, Worker};

    let url = redis.url();
    let c = Client::with_config(ClientConfig::new(&url).namespace(LIM_NS))
        .await
        .unwrap();
    let i = Inspector::new(&c);
    i.set_limit(
        &LimitScope::task("hold").unwrap(),
        Limit::concurrency(HOLD_CONCURRENCY)
            .unwrap()
            .and_rate(100, Duration::from_secs(60))
            .unwrap(),
    )
    .await
    .unwrap();
    i.set_limit(
        &LimitScope::key("tenant").unwrap(),
        Limit::concurrency(5).unwrap(),
    )
    .await
    .unwrap();
    let w = scheduler_testkit::Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace(LIM_NS)
            .register(hold)
            .queues(["lq"]),
    )
    .await;
    for n in 0..HOLD_TASKS {
        TaskCall::<hold>::new((n,))
            .limit_key("tenant", "acme")
            .send(&c)
            .await
            .unwrap();
    }
    let start = std::time::Instant::now();
    loop {
        let u = i.limit_usage().await.unwrap();
        let figures = (u[0].running, u[0].waiting);
        if figures
            == (
                Some(HOLD_CONCURRENCY.into()),
                Some((HOLD_TASKS - HOLD_CONCURRENCY).into()),
            )
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{u:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (c, w)
}
