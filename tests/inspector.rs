//! `Inspector` against a real redis-server: counts, pages across shards, the newest, one task
//! decoded, workers, and the actions (cancel, requeue, delete) with their refusals.

use std::collections::HashSet;
use std::time::Duration;

use scheduler::{Client, ClientConfig, Error, Inspector, TaskId, TaskRequest, TaskState};
use scheduler_testkit::RedisServer;

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
