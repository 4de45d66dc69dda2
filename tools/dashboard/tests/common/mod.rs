//! The seed both test files share: a throwaway Redis holding tasks in every listed state.
//!
//! Namespace `dash`:
//! - queue `emails` (2 shards): `later` due in an hour, `soon` due in 30 s, `now-1` and `now-2`
//!   ready;
//! - queue `billing` (2 shards): `doomed-a` and `doomed-b` dead (claimed, then failed for good,
//!   without a worker), `busy` running under a lease;
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
    assert_eq!(
        store
            .claim(&p, 10, 600_000, "w-test")
            .await
            .unwrap()
            .tasks
            .len(),
        1
    );
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
