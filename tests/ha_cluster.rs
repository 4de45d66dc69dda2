//! Redis Cluster: the partitions of one queue spread over every master, and the whole system
//! (producer, promoter, fetcher, acker, notifications) runs end to end on a real local cluster of
//! 3 masters and 3 replicas.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use scheduler::broker::conn::Mode;
use scheduler::{Client, ClientConfig, Error, TaskId, TaskRequest, TaskState};
use scheduler_testkit::cluster::RedisCluster;
use scheduler_testkit::ha::{ha_worker, Ledger};

/// Cluster tests start 6 servers each: one at a time per test binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn client(url: &str, ns: &str, shards: u16) -> Client {
    Client::with_config(
        ClientConfig::new(url)
            .namespace(ns)
            .queue_shards("ha", shards)
            .retry_attempts(20),
    )
    .await
    .expect("client connects to the cluster")
}

/// With 16 and with 64 shards, every master of a 3-master cluster serves some partitions of one
/// queue (counted with `CLUSTER KEYSLOT` of each partition's keys and `CLUSTER SLOTS`), all keys
/// of one partition share a slot, and a task enqueued in every partition lands on every master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_spread_over_all_masters() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "3 masters");
    let client = client(&cluster.url(), "spread", 16).await;
    assert_eq!(client.store().mode(), Mode::Cluster);
    for shards in [16u16, 64] {
        let queue = format!("q{shards}");
        let mut per_master: BTreeMap<u16, u32> = masters.iter().map(|m| (*m, 0)).collect();
        for s in 0..shards {
            let p = client.store().partition(&queue, s);
            let slot = cluster.keyslot(&p.keys.ready());
            for k in [
                p.keys.scheduled(),
                p.keys.active(),
                p.keys.dead(),
                p.keys.stats(),
                p.keys.lock(),
                p.keys.task("x"),
            ] {
                assert_eq!(cluster.keyslot(&k), slot, "{k} shares its partition's slot");
            }
            *per_master.entry(cluster.master_of_slot(slot)).or_default() += 1;
        }
        let spread: Vec<String> = per_master
            .iter()
            .map(|(m, n)| format!("master :{m} -> {n}"))
            .collect();
        println!(
            "spread of {shards} shards over 3 masters: {}",
            spread.join(", ")
        );
        assert!(
            per_master.values().all(|n| *n > 0),
            "every master serves some of the {shards} partitions: {per_master:?}"
        );
    }
    // One task per partition of a 16-shard queue: every master stores some.
    let reqs: Vec<TaskRequest> = (0..400)
        .map(|i| {
            TaskRequest::new("ha_note", "ha", &())
                .unwrap()
                .id(format!("t{i}"))
                .countdown(Duration::from_secs(600))
        })
        .collect();
    client.enqueue_bulk(reqs).await.expect("bulk enqueue");
    for m in &masters {
        let mut c = cluster.node_conn(*m).unwrap();
        let n: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
        println!("master :{m} holds {n} keys");
        assert!(n > 0, "master {m} holds some tasks");
    }
}

/// A few thousand tasks, now and delayed, over 16 shards of one queue on a cluster: a worker
/// runs every one exactly once and never before its due time; cancel and status work; the
/// scripts are flushed from every master halfway through the enqueues (NOSCRIPT falls back to
/// loading them, node by node, inside pipelines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_on_a_cluster() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let url = cluster.url();
    let ns = "e2e";
    const SHARDS: u16 = 16;
    const NOW: usize = 2000;
    const LATER: usize = 1000;
    let client = client(&url, ns, SHARDS).await;
    let ledger = Ledger::new();
    let worker = ha_worker(&url, ns, SHARDS, &ledger)
        .build()
        .await
        .expect("worker builds on the cluster");
    let stop = worker.shutdown_handle();
    let join = tokio::spawn(worker.run(std::future::pending()));

    // Tasks that are cancelled before they are due.
    let cancel_ids: Vec<TaskId> = client
        .enqueue_bulk((0..10).map(|i| {
            TaskRequest::new("ha_note", "ha", &())
                .unwrap()
                .id(format!("c{i}"))
                .countdown(Duration::from_secs(60))
        }))
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for id in &cancel_ids {
        client.cancel(id).await.expect("cancel on the cluster");
        assert_eq!(client.status(id).await.unwrap().state, TaskState::Cancelled);
    }

    let reqs: Vec<TaskRequest> = (0..NOW + LATER)
        .map(|i| {
            let r = TaskRequest::new("ha_note", "ha", &())
                .unwrap()
                .id(format!("t{i}"));
            if i < NOW {
                r
            } else {
                r.countdown(Duration::from_millis(100 + (i as u64 * 7) % 1900))
            }
        })
        .collect();
    let t0 = Instant::now();
    let mut it = reqs.into_iter().peekable();
    let mut batch_no = 0;
    while it.peek().is_some() {
        let batch: Vec<TaskRequest> = it.by_ref().take(500).collect();
        let ids = client
            .enqueue_bulk(batch)
            .await
            .expect("enqueue on the cluster");
        let at = ledger.now();
        let mut acked = ledger.acked.lock().unwrap();
        for (id, created) in ids {
            assert!(created, "{id} is new");
            acked.insert(id.id().to_owned(), (at, id.shard(SHARDS)));
        }
        drop(acked);
        batch_no += 1;
        if batch_no == 3 {
            for m in cluster.masters() {
                let mut c = cluster.node_conn(m).unwrap();
                let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
            }
        }
    }
    println!(
        "enqueued {} tasks over {SHARDS} shards in {:?}",
        NOW + LATER,
        t0.elapsed()
    );

    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let ran = ledger.runs.lock().unwrap().len();
        if ran >= NOW + LATER || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Leave time for a duplicate to show up, should there be one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.shutdown();
    let report = tokio::time::timeout(Duration::from_secs(20), join)
        .await
        .expect("worker stops")
        .unwrap();
    println!(
        "worker report on the cluster: {report:?}; all ran after {:?}",
        t0.elapsed()
    );

    let runs = ledger.runs.lock().unwrap().clone();
    let acked: Vec<String> = ledger.acked.lock().unwrap().keys().cloned().collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !runs.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} tasks never ran: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let twice: HashMap<&String, usize> = runs
        .iter()
        .filter(|(_, r)| r.len() > 1)
        .map(|(id, r)| (id, r.len()))
        .collect();
    assert!(twice.is_empty(), "tasks ran twice: {twice:?}");
    assert_eq!(runs.len(), NOW + LATER, "the cancelled tasks did not run");
    assert_eq!(
        ledger.early.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no run started early"
    );
    let stats = client
        .queue_stats("ha")
        .await
        .expect("queue stats on the cluster");
    println!("queue stats on the cluster: {stats:?}");
    assert_eq!(
        stats.counters.get("succeeded").copied(),
        Some((NOW + LATER) as u64)
    );
    assert_eq!((stats.scheduled, stats.ready, stats.running), (0, 0, 0));
    let one = TaskId::new("ha", "t0");
    assert_eq!(
        client.status(&one).await.unwrap().state,
        TaskState::Succeeded
    );
    assert!(matches!(
        client.status(&TaskId::new("ha", "nope")).await,
        Err(Error::NotFound(_))
    ));
}
