//! `Inspector` against a real redis-server: counts, pages across shards, the newest, one task
//! decoded, workers (through their index, without `SCAN`), and the actions (cancel, requeue,
//! delete) with their refusals.

use std::collections::HashSet;
use std::time::Duration;

use scheduler::{Client, ClientConfig, Error, Inspector, TaskId, TaskRequest, TaskState, Worker};
use scheduler_testkit::{RedisServer, Running};

const SHARDS: u16 = 4;

fn req(id: &str) -> TaskRequest {
    TaskRequest::new("job", "q", &(1u8, "x")).unwrap().id(id)
}

async fn client(server: &RedisServer) -> Client {
    let config = ClientConfig::new(server.url()).queue_shards("q", SHARDS);
    Client::with_config(config).await.unwrap()
}

/// Claims every ready task of `id`'s shard as worker `w`, and returns their tokens by id.
async fn claim(client: &Client, id: &TaskId) -> Vec<(String, i64)> {
    let store = client.store();
    let p = store.partition("q", id.shard(SHARDS));
    let claimed = store.claim(&p, 100, 60_000, "w").await.unwrap();
    claimed.tasks.into_iter().map(|t| (t.id, t.token)).collect()
}

#[tokio::test]
async fn pages_cover_every_task_once_across_shards() {
    let server = RedisServer::start();
    let client = client(&server).await;
    let inspector = Inspector::new(&client);
    let n = 53;
    let reqs: Vec<_> = (0..n)
        .map(|i| req(&format!("t{i}")).countdown(Duration::from_secs(60 + i)))
        .collect();
    client.enqueue_bulk(reqs).await.unwrap();

    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = inspector
            .tasks("q", TaskState::Scheduled, cursor.as_deref(), 10)
            .await
            .unwrap();
        assert_eq!(page.total, n);
        assert!(page.tasks.len() <= 10);
        for t in &page.tasks {
            assert!(seen.insert(t.id.clone()), "{} listed twice", t.id);
            assert_eq!(t.name.as_deref(), Some("job"));
            assert_eq!(t.shard, t.id.shard(SHARDS));
        }
        pages += 1;
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len() as u64, n);
    assert_eq!(pages, 6, "53 tasks in pages of 10");

    // Within a shard, soonest due first.
    let page = inspector
        .tasks("q", TaskState::Scheduled, None, 100)
        .await
        .unwrap();
    for w in page.tasks.windows(2) {
        if w[0].shard == w[1].shard {
            assert!(w[0].score <= w[1].score);
        }
    }
    // The newest: latest due first, across shards.
    let newest = inspector
        .newest("q", TaskState::Scheduled, 3)
        .await
        .unwrap();
    let ids: Vec<String> = newest.tasks.iter().map(|t| t.id.to_string()).collect();
    assert_eq!(ids, ["q/t52", "q/t51", "q/t50"]);

    assert!(matches!(
        inspector.tasks("q", TaskState::Succeeded, None, 10).await,
        Err(Error::NotListed(TaskState::Succeeded))
    ));
    assert!(matches!(
        inspector
            .tasks("q", TaskState::Scheduled, Some("x"), 10)
            .await,
        Err(Error::InvalidCursor(_))
    ));
    assert!(matches!(
        inspector.queue("nope").await,
        Err(Error::UnknownQueue(q)) if q == "nope"
    ));
    // Looking did not register the queue.
    let names: Vec<String> = inspector
        .queues()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, ["q"]);
}

#[tokio::test]
async fn counts_detail_and_actions() {
    let server = RedisServer::start();
    let client = client(&server).await;
    let inspector = Inspector::new(&client);
    client
        .enqueue_request(req("later").countdown(Duration::from_secs(60)))
        .await
        .unwrap();
    let run = client.enqueue_request(req("run")).await.unwrap();
    let claimed = claim(&client, &run).await;
    assert_eq!(claimed.len(), 1);
    let die = client.enqueue_request(req("die")).await.unwrap();
    let tokens = claim(&client, &die).await;
    let token = tokens.iter().find(|(i, _)| i == "die").unwrap().1;
    let p = client.store().partition("q", die.shard(SHARDS));
    client
        .store()
        .retry(&p, &[("die", token, "boom", None)])
        .await
        .unwrap();
    let ready = client.enqueue_request(req("ready")).await.unwrap();

    let c = inspector.queue("q").await.unwrap();
    assert_eq!(c.per_shard.len(), SHARDS as usize);
    let t = &c.total;
    // `run` and `die` may share a shard: claiming one claimed both; `die` then died.
    assert_eq!(
        (t.scheduled, t.ready + t.running, t.dead),
        (1, 2, 1),
        "{t:?}"
    );
    assert_eq!(t.counters["enqueued"], 4);
    assert_eq!(t.counters["dead"], 1);

    // One task, decoded, with its lease while it runs.
    let d = inspector.task(&run).await.unwrap();
    let info = d.info.as_ref().unwrap();
    assert_eq!(info.state, TaskState::Running);
    assert_eq!(info.name, "job");
    assert!(d.lease_deadline_ms.unwrap() > d.server_now_ms);
    assert_eq!(d.fields["state"], b"running");
    assert!(d.key.ends_with(":t:run"), "{}", d.key);
    // Listed while it runs: its worker (the claim's tag), its start, its lease end as the score.
    let running = inspector
        .tasks("q", TaskState::Running, None, 10)
        .await
        .unwrap();
    let r = running.tasks.iter().find(|t| t.id == run).unwrap();
    assert_eq!(r.worker.as_deref(), Some("w"));
    let started = r.started_at_ms.unwrap();
    assert!(started <= d.server_now_ms && started > d.server_now_ms - 60_000);
    assert_eq!(Some(r.score), d.lease_deadline_ms);

    // Dead: listed with its error, requeued, then deleted.
    let dead = inspector.newest("q", TaskState::Dead, 10).await.unwrap();
    assert_eq!(dead.tasks.len(), 1);
    assert_eq!(dead.tasks[0].error.as_deref(), Some("boom"));
    assert!(inspector.requeue(&die).await.unwrap());
    assert!(!inspector.requeue(&die).await.unwrap(), "no longer dead");
    inspector.delete(&die).await.unwrap();
    assert!(matches!(
        inspector.task(&die).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        inspector.delete(&die).await,
        Err(Error::NotFound(_))
    ));

    // A running task is not deleted; a ready one is, and leaves its set.
    assert!(matches!(
        inspector.delete(&run).await,
        Err(Error::Running(_))
    ));
    inspector.delete(&ready).await.unwrap();
    let c = inspector.queue("q").await.unwrap();
    assert_eq!((c.total.ready, c.total.dead), (0, 0));
    assert_eq!(c.total.counters["deleted"], 2);

    // Cancel goes through the client's script.
    inspector.cancel(&TaskId::new("q", "later")).await.unwrap();
    assert_eq!(
        inspector.queue("q").await.unwrap().total.scheduled,
        0,
        "cancelled"
    );

    // Bulk requeue of the newest dead: none left.
    assert_eq!(
        inspector.requeue_dead("q", Some(5)).await.unwrap().requeued,
        0
    );
    // No worker runs here.
    assert!(inspector.workers().await.unwrap().is_empty());
}

/// `purge` deletes every task of a state across shards in batches, reports progress after each
/// batch, leaves an id without a record alone (and terminates), refuses running, and
/// `requeue_dead_with_progress` reports its batches too.
#[tokio::test]
async fn purge_deletes_a_state_in_batches() {
    let server = RedisServer::start();
    let client = client(&server).await;
    let inspector = Inspector::new(&client);
    let n = 900u64;
    let reqs: Vec<_> = (0..n)
        .map(|i| req(&format!("p{i}")).countdown(Duration::from_secs(600)))
        .collect();
    client.enqueue_bulk(reqs).await.unwrap();
    client.enqueue_request(req("stays-ready")).await.unwrap();
    // An id in the dead set whose record is gone.
    let store = client.store();
    let p = store.partition("q", 0);
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(p.keys.dead())
        .arg(1)
        .arg("orphan")
        .query_async(&mut conn)
        .await
        .unwrap();

    let mut seen = Vec::new();
    let tally = inspector
        .purge("q", TaskState::Scheduled, |t| seen.push(t.deleted))
        .await
        .unwrap();
    assert_eq!(tally.deleted, n);
    assert_eq!((tally.running, tally.not_found), (0, 0));
    assert!(
        seen.len() >= 5,
        "900 over 4 shards in batches of 200: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(seen.last(), Some(&n));
    let c = inspector.queue("q").await.unwrap().total;
    assert_eq!((c.scheduled, c.ready), (0, 1));
    assert_eq!(c.counters.get("deleted"), Some(&n));
    assert!(matches!(
        inspector.task(&TaskId::new("q", "p7")).await,
        Err(Error::NotFound(_))
    ));

    let dead = inspector.purge("q", TaskState::Dead, |_| {}).await.unwrap();
    assert_eq!((dead.deleted, dead.not_found), (0, 1));
    assert!(matches!(
        inspector.purge("q", TaskState::Running, |_| {}).await,
        Err(Error::NotPurgeable(TaskState::Running))
    ));
    assert!(matches!(
        inspector.purge("nope", TaskState::Dead, |_| {}).await,
        Err(Error::UnknownQueue(_))
    ));
    let mut calls = 0;
    let t = inspector
        .requeue_dead_with_progress("q", None, |_| calls += 1)
        .await
        .unwrap();
    assert_eq!((t.requeued, t.not_found, calls), (0, 1, 1));
}

/// Does nothing: a task for the worker of `workers_come_from_the_index_not_a_scan`.
#[scheduler::task(name = "idle_job", queue = "q")]
async fn idle_job() {}

/// Workers are found through the worker index (`<ns>:workers`), not by scanning the keyspace:
/// a running worker is listed with no `SCAN` sent; an index entry whose heartbeat hash is gone
/// (a stopped worker) is not listed, and once an hour old a heartbeat removes it; a worker that
/// stops leaves the index and the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_come_from_the_index_not_a_scan() {
    let server = RedisServer::start();
    let client = client(&server).await;
    let inspector = Inspector::new(&client);
    let keys = client.store().keys().clone();
    let mut admin = server.conn();
    // Stopped workers' leftovers, without their hashes: one beat two hours ago (the heartbeats
    // remove it), one a minute ago (kept, but not listed).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let _: () = redis::cmd("ZADD")
        .arg(keys.worker_index())
        .arg(now_ms - 7_200_000)
        .arg("old:1:0")
        .arg(now_ms - 60_000)
        .arg("recent:1:0")
        .query(&mut admin)
        .unwrap();
    assert!(inspector.workers().await.unwrap().is_empty());

    let w = Running::start(
        Worker::builder()
            .redis_url(server.url())
            .queues(["q"])
            .default_shards(SHARDS)
            .register(idle_job)
            .heartbeat_interval(Duration::from_millis(200)),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let listed = inspector.workers().await.unwrap();
        let index: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.worker_index())
            .arg(0)
            .arg(-1)
            .query(&mut admin)
            .unwrap();
        if !listed.is_empty() && !index.contains(&"old:1:0".to_owned()) {
            assert!(index.contains(&"recent:1:0".to_owned()), "kept: {index:?}");
            break listed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "worker not listed or stale entry not removed: {listed:?} {index:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(listed.len(), 1, "only the live worker: {listed:?}");
    assert_eq!(listed[0].queues, vec!["q".to_owned()]);
    assert_eq!(listed[0].pid, Some(std::process::id()));

    // Listing sends no SCAN.
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut admin)
        .unwrap();
    assert_eq!(inspector.workers().await.unwrap().len(), 1);
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut admin)
        .unwrap();
    assert!(stats.contains("cmdstat_zrange:"), "{stats}");
    assert!(!stats.contains("cmdstat_scan:"), "{stats}");

    // A clean stop removes the worker from the index and the list.
    let id = listed[0].id.clone();
    w.stop().await;
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(keys.worker_index())
        .arg(&id)
        .query(&mut admin)
        .unwrap();
    assert_eq!(score, None, "{id} left the index");
    assert!(inspector.workers().await.unwrap().is_empty());
}

/// Does nothing: the runs whose lateness `lateness_comes_from_the_heartbeats` reads.
#[scheduler::task(name = "on_time", queue = "late")]
async fn on_time(_n: u32) {}

/// A worker counts how late its runs started, per queue, in its heartbeat, without a Redis
/// command per run: `Inspector::lateness` reads every run of the last minute (here 20 due now
/// and 10 due 300 ms after enqueue: all started, none early), and `WorkerInfo::lateness` shows
/// the worker's own histogram.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lateness_comes_from_the_heartbeats() {
    let server = RedisServer::start();
    let client = Client::with_config(ClientConfig::new(server.url()).queue_shards("late", 2))
        .await
        .unwrap();
    let inspector = Inspector::new(&client);
    assert!(inspector.lateness().await.unwrap().is_empty());
    let w = Running::start(
        Worker::builder()
            .redis_url(server.url())
            .queues(["late"])
            .queue_shards("late", 2)
            .register(on_time)
            .heartbeat_interval(Duration::from_millis(100)),
    )
    .await;
    let mut reqs = Vec::new();
    for i in 0..30u32 {
        let r = TaskRequest::new("on_time", "late", &(i,)).unwrap();
        reqs.push(if i < 10 {
            r.countdown(Duration::from_millis(300))
        } else {
            r
        });
    }
    client.enqueue_bulk(reqs).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let h = loop {
        let all = inspector.lateness().await.unwrap();
        if let Some(h) = all.get("late").filter(|h| h.count() == 30) {
            break h.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "30 runs not in the heartbeats: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (p50, p99) = (h.quantile(0.5).unwrap(), h.quantile(0.99).unwrap());
    assert!(p50 >= 0 && p99 >= p50, "p50 {p50} p99 {p99}");
    let workers = inspector.workers().await.unwrap();
    assert_eq!(workers[0].lateness.get("late"), Some(&h));
    w.stop().await;
}
