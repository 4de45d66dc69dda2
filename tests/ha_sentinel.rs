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

/// A 1-second periodic schedule on two workers through Sentinel, result TTL 0, and
/// `SENTINEL FAILOVER` mid-run: prints the ticks missed and run twice (the ledger of every run
/// is the oracle; `docs/schedules.md` reports the figures). What holds in every run: no tick ran
/// early, and every tick due more than a lookahead (5 s) plus 2 s away from the failover (before
/// the command, or after the sentinels switched) ran exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_schedule_ticks() {
    use scheduler::redis::AsyncCommands;
    use scheduler::{Schedule, Schedules};
    use scheduler_testkit::ha::ha_note;

    let setup = tokio::task::block_in_place(SentinelSetup::start);
    let url = setup.url();
    let ns = "sentt";
    let client = Client::with_config(
        ClientConfig::new(&url)
            .namespace(ns)
            .queue_shards("ha", SHARDS)
            .retry_attempts(30),
    )
    .await
    .expect("client connects through the sentinels");
    let new = setup.first_replica.port();
    let ledger = Ledger::new();
    let mut stops = Vec::new();
    let mut joins = Vec::new();
    for _ in 0..2 {
        let worker = ha_worker(&url, ns, SHARDS, &ledger)
            .result_ttl(Duration::ZERO)
            .schedule(
                Schedule::every("tick", Duration::from_secs(1))
                    .unwrap()
                    .task(ha_note::new())
                    .unwrap(),
            )
            .build()
            .await
            .unwrap();
        stops.push(worker.shutdown_handle());
        joins.push(tokio::spawn(worker.run(std::future::pending())));
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (secs, us): (i64, i64) = redis::cmd("TIME")
        .query_async(&mut client.store().conn())
        .await
        .unwrap();
    // The failover command, on the Redis clock (ms).
    let event_ms = secs * 1000 + us / 1000;
    let event = ledger.now();
    tokio::task::block_in_place(|| setup.failover());
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::task::block_in_place(|| setup.master_port()) != Some(new) {
        assert!(Instant::now() < deadline, "no failover within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let switched_ms = event_ms + (ledger.now() - event).as_millis() as i64;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let schedules = Schedules::new(&client);
    schedules.pause("tick").await.unwrap();
    let drain = Instant::now() + Duration::from_secs(30);
    loop {
        let st = client.queue_stats("ha").await.unwrap();
        if st.scheduled + st.ready + st.running == 0 || Instant::now() > drain {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for s in &stops {
        s.shutdown();
    }
    for j in joins {
        let _ = tokio::time::timeout(Duration::from_secs(20), j).await;
    }
    let info = schedules.get("tick").await.unwrap();
    let mut conn = client.store().conn();
    let keys: Vec<String> = conn.keys(format!("{ns}:*:sch:tick")).await.unwrap();
    let created_at: i64 = conn.hget(&keys[0], "created_at").await.unwrap();
    let first = (created_at / 1000 + 1) * 1000;
    let last = info.last_tick_ms.unwrap();
    let runs = ledger.runs.lock().unwrap().clone();
    let mut per_tick: std::collections::HashMap<i64, usize> = Default::default();
    for (id, r) in &runs {
        let tick: i64 = id
            .strip_prefix("tick@")
            .and_then(|t| t.split('~').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("not a tick id: {id}"));
        *per_tick.entry(tick).or_default() += r.len();
    }
    let ticks: Vec<i64> = (0..=(last - first) / 1000)
        .map(|i| first + i * 1000)
        .collect();
    let missed: Vec<i64> = ticks
        .iter()
        .copied()
        .filter(|t| !per_tick.contains_key(t))
        .collect();
    let twice: Vec<i64> = ticks
        .iter()
        .copied()
        .filter(|t| per_tick.get(t).is_some_and(|n| *n > 1))
        .collect();
    let rel = |t: &i64| t - event_ms;
    println!(
        "schedule through SENTINEL FAILOVER: sentinels switched {} ms after the command; ticks {}, \
         missed {} (at {:?} ms from the command), ran twice {} (at {:?} ms), fired {}, skipped {}",
        switched_ms - event_ms,
        ticks.len(),
        missed.len(),
        missed.iter().map(rel).collect::<Vec<_>>(),
        twice.len(),
        twice.iter().map(rel).collect::<Vec<_>>(),
        info.fired,
        info.skipped
    );
    assert!(ticks.len() >= 15, "{ticks:?}");
    assert_eq!(ledger.early.load(std::sync::atomic::Ordering::Relaxed), 0);
    let near = |t: &i64| *t >= event_ms - 7_000 && *t <= switched_ms + 7_000;
    for t in missed.iter().chain(&twice) {
        assert!(
            near(t),
            "tick {t} ({} ms from the failover command) was missed or ran twice",
            rel(t)
        );
    }
}
