//! Failover on Redis Cluster during a steady run: a producer enqueues all along, a worker runs
//! the tasks, and one master is failed over, either killed (SIGKILL) or handed over with
//! `CLUSTER FAILOVER` on its replica. Nobody is restarted. Each test prints what was lost and
//! duplicated and how long writes and runs took to resume on the failed slots.
//!
//! What the system promises, and what these tests assert:
//! - Coordinated failover (`CLUSTER FAILOVER`): the master stops taking writes until its replica
//!   has caught up, so nothing acknowledged is lost.
//! - Killed master: replication is asynchronous, so enqueues the master acknowledged in its last
//!   instants, before they reached the replica, can be lost; only tasks of the killed master's
//!   partitions, acknowledged around the kill, may be. Any other state change lost that way
//!   (claim, ack, promote) is redone: such a task runs late or twice, never vanishes.
//! - Both: producers and workers go on by themselves, no task runs before its due time.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scheduler::{Client, ClientConfig};
use scheduler_testkit::cluster::RedisCluster;
use scheduler_testkit::ha::{ha_worker, produce, resume_after, settle, Ledger};

/// Cluster tests start 6 servers each: one at a time per test binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SHARDS: u16 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Kill,
    Coordinated,
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

async fn run(how: How) {
    let _serial = SERIAL.lock().await;
    let Some(mut cluster) = RedisCluster::start() else {
        return;
    };
    let url = cluster.url();
    let ns = "fo";
    // Enough retries (backoff up to 2 s each) to ride out a failover of a few seconds.
    let client = Client::with_config(
        ClientConfig::new(&url)
            .namespace(ns)
            .queue_shards("ha", SHARDS)
            .retry_attempts(30),
    )
    .await
    .unwrap();

    // The victim: the master serving the most partitions of the queue.
    let mut per_master: BTreeMap<u16, Vec<u16>> = BTreeMap::new();
    for s in 0..SHARDS {
        let slot = cluster.keyslot(&client.store().partition("ha", s).keys.ready());
        per_master
            .entry(cluster.master_of_slot(slot))
            .or_default()
            .push(s);
    }
    let (victim, shards) = per_master
        .iter()
        .max_by_key(|(_, v)| v.len())
        .map(|(m, v)| (*m, v.clone()))
        .unwrap();
    let affected: HashSet<u16> = shards.iter().copied().collect();
    let replica = cluster
        .replica_of(victim)
        .expect("the victim has a replica");

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
        Instant::now() + Duration::from_secs(9),
    ));

    tokio::time::sleep(Duration::from_secs(3)).await;
    let event = ledger.now();
    match how {
        How::Kill => tokio::task::block_in_place(|| cluster.kill(victim)),
        How::Coordinated => tokio::task::block_in_place(|| {
            let mut c = cluster.node_conn(replica).unwrap();
            let _: () = redis::cmd("CLUSTER").arg("FAILOVER").query(&mut c).unwrap();
        }),
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let done = tokio::task::block_in_place(|| {
            cluster.role(replica).as_deref() == Some("master")
                && cluster.wait_until(Duration::from_millis(1), false)
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica :{replica} was not promoted within 20 s"
        );
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
    let (write_resume, run_resume) = resume_after(&ledger, event, &affected);

    let what = match how {
        How::Kill => "SIGKILL of master",
        How::Coordinated => "CLUSTER FAILOVER of master",
    };
    let lost_window = outcome
        .lost
        .iter()
        .map(|(_, at, _)| *at)
        .fold(None, |w, at| {
            Some(match w {
                None => (at, at),
                Some((lo, hi)) => (std::cmp::min(lo, at), std::cmp::max(hi, at)),
            })
        });
    println!(
        "FAILOVER ({what} :{victim}, {} of {SHARDS} partitions): promoted after {} ms; \
         acked {}, ran {}, lost {}{}, duplicated {}, early {}, stuck {}; producer batches ok {} \
         failed {}, longest stall {} ms; after the event, writes to the failed slots resumed in \
         {:?} ms, runs in {:?} ms",
        shards.len(),
        ms(switched - event),
        outcome.acked,
        outcome.ran,
        outcome.lost.len(),
        lost_window.map_or(String::new(), |(lo, hi)| format!(
            " (acknowledged {} to {} ms around the event)",
            lo.as_millis() as i128 - event.as_millis() as i128,
            hi.as_millis() as i128 - event.as_millis() as i128
        )),
        outcome.duplicated.len(),
        outcome.early,
        outcome.stuck.len(),
        produced.batches_ok,
        produced.batches_failed,
        ms(produced.longest_stall),
        write_resume.map(ms),
        run_resume.map(ms),
    );
    println!("worker report: {report:?}");

    assert_eq!(produced.batches_failed, 0, "the producer never gave up");
    assert!(
        outcome.stuck.is_empty(),
        "every acknowledged task ran or was lost; stuck: {:?}",
        &outcome.stuck[..outcome.stuck.len().min(10)]
    );
    assert_eq!(outcome.early, 0, "no task ran before its due time");
    assert!(
        run_resume.is_some(),
        "tasks of the failed slots enqueued after the event ran"
    );
    match how {
        How::Coordinated => assert!(
            outcome.lost.is_empty(),
            "a coordinated failover loses nothing: {:?}",
            outcome.lost
        ),
        How::Kill => {
            for (id, at, shard) in &outcome.lost {
                assert!(
                    affected.contains(shard),
                    "{id} was lost but its partition {shard} was not on the killed master"
                );
                assert!(
                    *at + Duration::from_secs(2) >= event && *at <= switched,
                    "{id} was lost but acknowledged at {at:?}, far from the kill at {event:?}"
                );
            }
        }
    }
}

/// SIGKILL of a master mid-run: its replica takes over, producers and workers carry on; only
/// enqueues acknowledged by the killed master in its last instants may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_master_fails_over() {
    run(How::Kill).await;
}

/// `CLUSTER FAILOVER` on a replica mid-run: a coordinated hand-over, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinated_failover_loses_nothing() {
    run(How::Coordinated).await;
}
