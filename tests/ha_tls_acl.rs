//! TLS and ACL: the whole system over `rediss://` against a TLS-only Redis that requires client
//! certificates (made with `openssl` here), and as a Redis ACL user limited to the namespace's
//! keys and channels and the commands the system uses (the rule printed in
//! `docs/deployment.md`, read from there).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ha::{ha_worker, Ledger};
use common::tls::{Certs, TlsRedis};
use common::RedisServer;
use scheduler::conn::TlsConfig;
use scheduler::{Client, ClientConfig, TaskRequest, TaskState, WorkerBuilder};

/// Enqueues `n` tasks (half now, half after up to 1 s), runs them with `worker`, and checks
/// that every one ran exactly once and never early.
async fn run_tasks(client: &Client, worker: WorkerBuilder, ledger: &Arc<Ledger>, n: usize) {
    let worker = worker.build().await.expect("worker builds");
    let stop = worker.shutdown_handle();
    let join = tokio::spawn(worker.run(std::future::pending()));
    let reqs: Vec<TaskRequest> = (0..n)
        .map(|i| {
            let r = TaskRequest::new("ha_note", "ha", &())
                .unwrap()
                .id(format!("t{i}"));
            if i % 2 == 0 {
                r
            } else {
                r.countdown(Duration::from_millis(50 + (i as u64 * 13) % 950))
            }
        })
        .collect();
    let ids = client.enqueue_bulk(reqs).await.expect("enqueue");
    let deadline = Instant::now() + Duration::from_secs(20);
    while ledger.runs.lock().unwrap().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.shutdown();
    let report = tokio::time::timeout(Duration::from_secs(20), join)
        .await
        .expect("worker stops")
        .unwrap();
    println!("worker report: {report:?}");
    {
        let runs = ledger.runs.lock().unwrap();
        for (id, _) in &ids {
            assert_eq!(
                runs.get(id.id()).map(Vec::len),
                Some(1),
                "{id} ran exactly once"
            );
        }
    }
    assert_eq!(ledger.early.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(
        client.status(&ids[0].0).await.unwrap().state,
        TaskState::Succeeded
    );
}

/// Over `rediss://` with our CA and a client certificate, producer and worker (scripts, pipelines,
/// pub/sub wake-ups) run tasks end to end; without the CA, or without the client certificate,
/// the connection is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_end_to_end() {
    let Some(certs) = Certs::generate() else {
        return;
    };
    let server = TlsRedis::start(&certs);
    let url = format!("rediss://127.0.0.1:{}", server.port());
    let tls = TlsConfig::new()
        .ca_file(certs.ca())
        .unwrap()
        .client_cert_files(certs.cert(), certs.key())
        .unwrap();

    let no_ca = ClientConfig::new(&url).tls(
        TlsConfig::new()
            .client_cert_files(certs.cert(), certs.key())
            .unwrap(),
    );
    let err = Client::with_config(no_ca)
        .await
        .expect_err("a server signed by an unknown CA is refused");
    println!("without our CA: {err}");
    let no_cert = ClientConfig::new(&url).tls(TlsConfig::new().ca_file(certs.ca()).unwrap());
    let refused = match Client::with_config(no_cert).await {
        Err(e) => Some(e.to_string()),
        // TLS 1.3 reports a missing client certificate after the handshake: on first use.
        Ok(c) => c.queue_stats("ha").await.err().map(|e| e.to_string()),
    };
    println!("without a client certificate: {refused:?}");
    assert!(
        refused.is_some(),
        "the server requires a client certificate"
    );

    let ns = "tls";
    let client = Client::with_config(
        ClientConfig::new(&url)
            .namespace(ns)
            .queue_shards("ha", 4)
            .tls(tls.clone()),
    )
    .await
    .expect("connects over TLS");
    let ledger = Ledger::new();
    run_tasks(
        &client,
        ha_worker(&url, ns, 4, &ledger).tls(tls),
        &ledger,
        400,
    )
    .await;
}

/// The ACL rule of `docs/deployment.md`, for user `sched_app` with `password`.
fn acl_rule(password: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/deployment.md"))
        .expect("docs/deployment.md");
    let line = doc
        .lines()
        .find(|l| l.trim_start().starts_with("ACL SETUSER sched_app "))
        .expect("docs/deployment.md prints an `ACL SETUSER sched_app ...` line");
    line.split_whitespace()
        .skip(3)
        .map(|w| w.replace("<password>", password))
        .collect()
}

/// Sample arguments for `ACL DRYRUN` of each command the Lua scripts call.
fn sample_args(cmd: &str) -> Option<Vec<&'static str>> {
    let k = "sched:{q:0}:x";
    Some(match cmd {
        "TIME" => vec![],
        "DEL" | "EXISTS" | "GET" | "ZCARD" | "ZPOPMIN" | "HGETALL" => vec![k],
        "HGET" | "HMGET" | "HDEL" => vec![k, "f"],
        "HSET" => vec![k, "f", "v"],
        "HINCRBY" => vec![k, "f", "1"],
        "PEXPIRE" => vec![k, "1000"],
        "ZADD" => vec![k, "1", "m"],
        "ZREM" => vec![k, "m"],
        "ZRANGE" | "ZRANGEBYSCORE" => vec![k, "0", "1"],
        "ZSCORE" => vec![k, "m"],
        "SET" => vec![k, "v"],
        "PUBLISH" => vec!["sched:wake:q", "r:0"],
        _ => return None,
    })
}

/// A user limited by the documented rule (keys `~sched:*`, channels `&sched:*`, the commands
/// the system uses) runs the whole system: enqueue, promote, claim, ack, cancel, status, stats,
/// locks, heartbeat, wake-ups. Every command any `lua/*.lua` script calls is allowed (`ACL
/// DRYRUN`), and keys, channels and commands outside the rule are denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_limited_to_the_namespace() {
    let server = RedisServer::start();
    let mut admin = server.conn();
    let rule = acl_rule("s3cret-pw");
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("sched_app")
        .arg(&rule)
        .query(&mut admin)
        .expect("the documented rule is valid");
    println!("ACL SETUSER sched_app {}", rule.join(" "));

    // Every command of every script is allowed on the namespace's keys.
    let lua = concat!(env!("CARGO_MANIFEST_DIR"), "/lua");
    let mut called = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(lua).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for part in text.split("redis.call(").skip(1) {
            let name: String = part
                .trim_start_matches(['\'', '"'])
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect();
            called.insert(name.to_ascii_uppercase());
        }
    }
    for cmd in &called {
        let args = sample_args(cmd).unwrap_or_else(|| {
            panic!("a script calls {cmd}: allow it in docs/deployment.md and add it to sample_args")
        });
        let r: redis::RedisResult<String> = redis::cmd("ACL")
            .arg("DRYRUN")
            .arg("sched_app")
            .arg(cmd)
            .arg(&args)
            .query(&mut admin);
        assert_eq!(
            r.as_deref(),
            Ok("OK"),
            "scripts call {cmd}: the rule must allow it"
        );
    }
    println!("commands the scripts call, all allowed: {called:?}");

    let url = format!("redis://sched_app:s3cret-pw@127.0.0.1:{}", server.port());
    let client = Client::with_config(
        ClientConfig::new(&url)
            .namespace("sched")
            .queue_shards("ha", 4),
    )
    .await
    .expect("connects as sched_app");
    let ledger = Ledger::new();
    run_tasks(&client, ha_worker(&url, "sched", 4, &ledger), &ledger, 300).await;
    let c = client
        .enqueue_request(
            TaskRequest::new("ha_note", "ha", &())
                .unwrap()
                .countdown(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    client.cancel(&c).await.expect("cancel as sched_app");
    let stats = client.queue_stats("ha").await.expect("stats as sched_app");
    assert_eq!(stats.counters.get("succeeded").copied(), Some(300));

    // Outside the rule: denied.
    let mut conn = client.store().conn();
    for (what, cmd) in [
        (
            "a key outside the namespace",
            redis::cmd("GET").arg("other:key").clone(),
        ),
        (
            "a write outside the namespace",
            redis::cmd("SET").arg("other:key").arg(1).clone(),
        ),
        ("FLUSHALL", redis::cmd("FLUSHALL").clone()),
        (
            "CONFIG SET",
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory")
                .arg("1")
                .clone(),
        ),
        ("KEYS", redis::cmd("KEYS").arg("*").clone()),
        (
            "EVAL of an ad-hoc script",
            redis::cmd("EVAL").arg("return 1").arg(0).clone(),
        ),
    ] {
        let r: redis::RedisResult<redis::Value> = cmd.query_async(&mut conn).await;
        let e = r.expect_err(what);
        println!("denied, {what}: {e}");
        assert_eq!(
            e.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm),
            "{what} is denied with NOPERM"
        );
    }
    let mut pubsub = client.store().pubsub().await.unwrap();
    pubsub
        .subscribe("sched:wake:ha")
        .await
        .expect("the namespace's channels are allowed");
    let e = pubsub
        .subscribe("other:channel")
        .await
        .expect_err("a channel outside the namespace is denied");
    println!("denied, a channel outside the namespace: {e}");
}
