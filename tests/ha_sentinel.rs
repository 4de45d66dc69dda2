//! Sentinel: one master, one replica, three sentinels. Producers and a worker connect through
//! `redis+sentinel://`, and `SENTINEL FAILOVER` promotes the replica mid-run; both go on by
//! themselves. Prints what was lost and duplicated.
//!
//! What the system promises: Sentinel's failover is not coordinated with clients. The old master
//! keeps its clients until Sentinel reconfigures it as a replica, and our connection leaves it
//! as soon as the sentinels name the new master (checked every 500 ms, and at once on any
//! connection error or `READONLY`); enqueues the old master acknowledged in that window are lost
//! when it resyncs from the new one. Only tasks acknowledged around the failover may be lost;
//! everything else runs, never early.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scheduler::broker::conn::Mode;
use scheduler::{Client, ClientConfig, Error};
use scheduler_testkit::ha::{ha_worker, produce, resume_after, settle, Ledger};
use scheduler_testkit::sentinel::SentinelSetup;

const SHARDS: u16 = 8;

/// A run through Sentinel survives `SENTINEL FAILOVER`: the producer never gives up, the worker
/// follows the new master, every acknowledged task runs except those acknowledged by the old
/// master around the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_mid_run() {
    failover_run("SENTINEL FAILOVER", None).await;
}

/// The same run with `wait_for_replicas(1, 500 ms)`: an enqueue is acknowledged only once the
/// replica has it, so the failover loses no acknowledged task; the old master's unreplicated
/// writes time out in `WAIT` and are retried against the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_with_replica_acks_loses_nothing() {
    let lost = failover_run(
        "SENTINEL FAILOVER, wait_for_replicas(1, 500 ms)",
        Some((1, Duration::from_millis(500))),
    )
    .await;
    assert_eq!(
        lost, 0,
        "an enqueue confirmed by the replica survives its promotion"
    );
}

/// On a Redis without replicas, `wait_for_replicas` turns every enqueue into a typed
/// [`Error::NotReplicated`] once the retries are spent; the master still holds the task, and
/// nothing runs twice if the caller retries.
#[tokio::test]
async fn wait_for_replicas_without_a_replica_is_a_typed_error() {
    let server = scheduler_testkit::RedisServer::start();
    let client = Client::with_config(
        ClientConfig::new(server.url())
            .namespace("norep")
            .retry_attempts(2)
            .wait_for_replicas(1, Duration::from_millis(50)),
    )
    .await
    .unwrap();
    let req = scheduler::TaskRequest::new("job", "q", &(1u8,))
        .unwrap()
        .id("only-once");
    let err = client.enqueue_request(req.clone()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotReplicated {
                confirmed: 0,
                wanted: 1
            }
        ),
        "{err:?}"
    );
    let id = scheduler::TaskId::new("q", "only-once");
    assert_eq!(
        client.status(&id).await.unwrap().state,
        scheduler::TaskState::Ready
    );
    assert!(client.enqueue_request(req).await.is_err());
    assert_eq!(client.queue_stats("q").await.unwrap().ready, 1);
}

/// One Sentinel failover under load, the producer's client waiting for `replica_wait` (replicas,
/// timeout) if given; prints the figures, checks what holds in every configuration, returns the
/// number of acknowledged tasks lost.
async fn failover_run(label: &str, replica_wait: Option<(u32, Duration)>) -> usize {
    let setup = tokio::task::block_in_place(SentinelSetup::start);
    let url = setup.url();
    let ns = "sent";
    let mut config = ClientConfig::new(&url)
        .namespace(ns)
        .queue_shards("ha", SHARDS)
        .retry_attempts(30);
    if let Some((n, timeout)) = replica_wait {
        config = config.wait_for_replicas(n, timeout);
    }
    let client = Client::with_config(config)
        .await
        .expect("client connects through the sentinels");
    assert_eq!(client.store().mode(), Mode::Sentinel);
    let old = setup.first_master.port();
    let new = setup.first_replica.port();
    assert_eq!(setup.master_port(), Some(old));

    let ledger = Ledger::new();
    let worker = ha_worker(&url, ns, SHARDS, &ledger).build().await.unwrap();
    let stop = worker.shutdown_handle();
    let join = tokio::spawn(worker.run(std::future::pending()));
    let producer = tokio::spawn(produce(
        client.clone(),
        Arc::clone(&ledger),
        SHARDS,
        "p",
        10,
        Duration::from_millis(25),
        Instant::now() + Duration::from_secs(8),
    ));

    tokio::time::sleep(Duration::from_secs(2)).await;
    let event = ledger.now();
    tokio::task::block_in_place(|| setup.failover());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let switched = tokio::task::block_in_place(|| {
            setup.master_port() == Some(new)
                && redis::cmd("ROLE")
                    .query::<Vec<redis::Value>>(&mut setup.first_replica.conn())
                    .ok()
                    .and_then(|v| v.into_iter().next())
                    .and_then(|v| redis::from_redis_value::<String>(v).ok())
                    .as_deref()
                    == Some("master")
        });
        if switched {
            break;
        }
        assert!(Instant::now() < deadline, "no failover within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let switched = ledger.now();

    let produced = producer.await.unwrap();
    let outcome = settle(&client, &ledger, Instant::now() + Duration::from_secs(20)).await;
    stop.shutdown();
    let report = tokio::time::timeout(Duration::from_secs(20), join)
        .await
        .expect("worker stops")
        .unwrap();
    let all: HashSet<u16> = (0..SHARDS).collect();
    let (write_resume, run_resume) = resume_after(&ledger, switched, &all);
    let rel = |d: Duration| d.as_millis() as i128 - event.as_millis() as i128;
    println!(
        "{label} (:{old} -> :{new}): sentinels switched after {} ms; acked {}, ran {}, \
         lost {}{}, duplicated {}, early {}, stuck {}; producer batches ok {} failed {}, longest \
         stall {} ms; after the switch, writes resumed in {:?} ms, runs in {:?} ms",
        rel(switched),
        outcome.acked,
        outcome.ran,
        outcome.lost.len(),
        match (outcome.lost.first(), outcome.lost.last()) {
            (Some(a), Some(b)) => format!(
                " (acknowledged {} to {} ms after the failover command)",
                rel(a.1),
                rel(b.1)
            ),
            _ => String::new(),
        },
        outcome.duplicated.len(),
        outcome.early,
        outcome.stuck.len(),
        produced.batches_ok,
        produced.batches_failed,
        produced.longest_stall.as_millis(),
        write_resume.map(|d| d.as_millis()),
        run_resume.map(|d| d.as_millis()),
    );
    println!("worker report: {report:?}");

    assert_eq!(produced.batches_failed, 0, "the producer never gave up");
    assert!(
        outcome.stuck.is_empty(),
        "every acknowledged task ran or was lost; stuck: {:?}",
        &outcome.stuck[..outcome.stuck.len().min(10)]
    );
    assert_eq!(outcome.early, 0, "no task ran before its due time");
    if replica_wait.is_none() {
        assert!(run_resume.is_some(), "tasks enqueued after the switch ran");
    }
    // With replica acks, the new master has no replica until Sentinel turns the old master into
    // one, so enqueues wait (and their tasks may run before the acknowledgement arrives); that
    // every acknowledged task ran is what `stuck` checks above.
    for (id, at, _) in &outcome.lost {
        assert!(
            *at + Duration::from_secs(2) >= event && *at <= switched + Duration::from_secs(2),
            "{id} was lost but acknowledged at {at:?}, far from the failover ({event:?}..{switched:?})"
        );
    }
    outcome.lost.len()
}
