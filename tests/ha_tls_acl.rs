//! TLS and ACL: the whole system over `rediss://` against a TLS-only Redis that requires client
//! certificates (made with `openssl` here), and as a Redis ACL user limited to the namespace's
//! keys and channels and the commands the system uses (the rule printed in
//! `docs/deployment.md`, read from there).

use std::sync::Arc;
use std::time::{Duration, Instant};

use scheduler::TlsConfig;
use scheduler::{Client, ClientConfig, TaskRequest, TaskState, WorkerBuilder};
use scheduler_testkit::ha::{ha_worker, Ledger};
use scheduler_testkit::tls::{Certs, TlsRedis};
use scheduler_testkit::RedisServer;

/// `n` tasks `t0`.. of `ha_note`: the even ones due now, the odd ones after up to 1 s.
fn mixed_requests(n: usize) -> Vec<TaskRequest> {
    (0..n)
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
        .collect()
}

/// Enqueues `n` tasks (half now, half after up to 1 s), runs them with `worker`, and checks
/// that every one ran exactly once and never early.
async fn run_tasks(client: &Client, worker: WorkerBuilder, ledger: &Arc<Ledger>, n: usize) {
    let worker = worker.build().await.expect("worker builds");
    let stop = worker.shutdown_handle();
    let join = tokio::spawn(worker.run(std::future::pending()));
    let reqs = mixed_requests(n);
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
        "HSET" | "HSETNX" => vec![k, "f", "v"],
        "HINCRBY" => vec![k, "f", "1"],
        "PEXPIRE" => vec![k, "1000"],
        "ZADD" => vec![k, "1", "m"],
        "ZREM" => vec![k, "m"],
        "ZRANGE" | "ZRANGEBYSCORE" | "ZREMRANGEBYSCORE" | "ZCOUNT" => vec![k, "0", "1"],
        "ZSCORE" | "ZRANK" => vec![k, "m"],
        "SET" => vec![k, "v"],
        "PUBLISH" => vec!["sched:wake:q", "r:0"],
        "XADD" => vec![k, "*", "f", "v"],
        "XLEN" => vec![k],
        "XTRIM" => vec![k, "MAXLEN", "10"],
        "XACK" => vec![k, "archivers", "0-1"],
        "XDEL" => vec![k, "0-1"],
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

    // Every command of every script is allowed on the namespace's keys (but the test-only one).
    let called = script_commands(|n| !test_only(n));
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

/// The rule of `docs/deployment.md` for `user` (`sched_producer`, `sched_worker`).
fn role_rule(user: &str, password: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/deployment.md"))
        .expect("docs/deployment.md");
    let prefix = format!("ACL SETUSER {user} ");
    let line = doc
        .lines()
        .find(|l| l.trim_start().starts_with(&prefix))
        .unwrap_or_else(|| panic!("docs/deployment.md prints an `{prefix}...` line"));
    line.split_whitespace()
        .skip(3)
        .map(|w| w.replace("<password>", password))
        .collect()
}

/// `time_travel.lua` runs only on a redis-server that `scheduler::testing::TestRedis` started
/// (docs/testing.md), never under these rules.
fn test_only(script: &str) -> bool {
    script == "time_travel"
}

/// Commands called by the `lua/*.lua` scripts whose names pass `pick`, plus `_prelude.lua`
/// (prefixed to every script).
fn script_commands(pick: impl Fn(&str) -> bool) -> std::collections::BTreeSet<String> {
    let lua = concat!(env!("CARGO_MANIFEST_DIR"), "/lua");
    let mut called = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(lua).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name != "_prelude" && !pick(&name) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for part in text.split("redis.call(").skip(1) {
            let cmd: String = part
                .trim_start_matches(['\'', '"'])
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect();
            called.insert(cmd.to_ascii_uppercase());
        }
    }
    called
}

/// `ACL DRYRUN` of `cmd` as `user` with arguments suited to it, on keys the user's scripts
/// write: sorted sets on the ready set, strings on the lock and the drained flag, hashes on a
/// task record.
fn dryrun(admin: &mut redis::Connection, user: &str, cmd: &str) -> redis::RedisResult<String> {
    let zset = "sched:{ha:0}:ready";
    let hash = "sched:{ha:0}:t:x";
    let args: Vec<&str> = match cmd {
        "TIME" => vec![],
        "ZPOPMIN" | "ZCARD" => vec![zset],
        "ZADD" => vec![zset, "1", "m"],
        "ZREM" => vec![zset, "m"],
        "ZRANGE" | "ZRANGEBYSCORE" | "ZREMRANGEBYSCORE" => vec![zset, "0", "1"],
        "ZSCORE" => vec![zset, "m"],
        "GET" => vec!["sched:{ha:0}:lock"],
        // The scripts SET only the drained flag (`SET … GET`); locks are plain commands.
        "SET" => vec!["sched:{ha:0}:drained", "0", "GET"],
        "DEL" | "EXISTS" | "HGETALL" => vec![hash],
        "HGET" | "HMGET" | "HDEL" => vec![hash, "f"],
        "HSET" | "HSETNX" => vec![hash, "f", "v"],
        "HINCRBY" => vec![hash, "f", "1"],
        "PEXPIRE" => vec![hash, "1000"],
        "PUBLISH" => vec!["sched:wake:ha", "r:0"],
        "XADD" => vec!["sched:{ha:0}:archive", "*", "f", "v"],
        "XLEN" => vec!["sched:{ha:0}:archive"],
        "XTRIM" => vec!["sched:{ha:0}:archive", "MAXLEN", "10"],
        "XACK" => vec!["sched:{ha:0}:archive", "archivers", "0-1"],
        "XDEL" => vec!["sched:{ha:0}:archive", "0-1"],
        other => panic!("a script calls {other}: add it to dryrun() and to the documented rules"),
    };
    redis::cmd("ACL")
        .arg("DRYRUN")
        .arg(user)
        .arg(cmd)
        .arg(&args)
        .query(admin)
}

/// Fails its first attempt (retried after 100 ms), then succeeds: exercises the retry script.
#[scheduler::task(name = "acl_inc", queue = "ha")]
async fn acl_inc(n: u64) -> Result<u64, scheduler::TaskError> {
    Ok(n + 1)
}

#[scheduler::task(name = "acl_sum", queue = "ha")]
async fn acl_sum(v: Vec<u64>) -> Result<u64, scheduler::TaskError> {
    Ok(v.iter().sum())
}

#[scheduler::task(name = "acl_flaky", queue = "ha")]
async fn acl_flaky(ctx: scheduler::TaskContext) -> Result<(), scheduler::TaskError> {
    if ctx.attempt() < 2 {
        return Err(scheduler::TaskError::retry_after(
            "first attempt fails",
            Duration::from_millis(100),
        ));
    }
    Ok(())
}

/// Asserts that `cmd`, sent on `conn`, is refused with `NOPERM`.
async fn denied(
    conn: &mut impl redis::aio::ConnectionLike,
    who: &str,
    attempts: Vec<(&str, &mut redis::Cmd)>,
) {
    for (what, cmd) in attempts {
        let r: redis::RedisResult<redis::Value> = cmd.query_async(conn).await;
        let e = r.expect_err(what);
        println!("{who} denied, {what}: {e}");
        assert_eq!(
            e.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm),
            "{who}: {what} is denied with NOPERM ({e})"
        );
    }
}

/// Separate producer and worker users, each with the least privilege of its role (the two rules
/// of `docs/deployment.md`): each may run every command its scripts call, the system works with
/// exactly those rights (tasks now, delayed, retried, cancelled; a chord; status, stats;
/// heartbeats), and
/// each is denied what lies outside its role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_producer_and_worker_roles() {
    let server = RedisServer::start();
    let mut admin = server.conn();
    for (user, pw) in [("sched_producer", "p-pw"), ("sched_worker", "w-pw")] {
        let rule = role_rule(user, pw);
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(user)
            .arg(&rule)
            .query(&mut admin)
            .unwrap_or_else(|e| panic!("the documented rule of {user} is valid: {e}"));
    }

    // Each role may run every command of its scripts.
    let producer_scripts =
        |n: &str| matches!(n, "enqueue" | "enqueue_unique" | "cancel" | "wf_create");
    // Operators' scripts (schedctl requeue, delete, export, import, pause) belong to an operator
    // user.
    let operator_scripts = |n: &str| {
        matches!(
            n,
            "requeue" | "delete" | "export_page" | "restore" | "pause"
        )
    };
    let producer_cmds = script_commands(producer_scripts);
    let worker_cmds =
        script_commands(|n| !producer_scripts(n) && !operator_scripts(n) && !test_only(n));
    for (user, cmds) in [
        ("sched_producer", &producer_cmds),
        ("sched_worker", &worker_cmds),
    ] {
        for cmd in cmds {
            assert_eq!(
                dryrun(&mut admin, user, cmd).as_deref(),
                Ok("OK"),
                "{user}'s scripts call {cmd}: its rule must allow it"
            );
        }
        println!("{user}: the commands of its scripts, all allowed: {cmds:?}");
    }

    // The system works with exactly those rights.
    let port = server.port();
    let producer_url = format!("redis://sched_producer:p-pw@127.0.0.1:{port}");
    let worker_url = format!("redis://sched_worker:w-pw@127.0.0.1:{port}");
    let client = Client::with_config(
        ClientConfig::new(&producer_url)
            .namespace("sched")
            .queue_shards("ha", 4),
    )
    .await
    .expect("connects as sched_producer");
    assert_eq!(
        client.shards("ha").await.unwrap(),
        4,
        "the producer registers the queue"
    );
    let ledger = Ledger::new();
    let worker = ha_worker(&worker_url, "sched", 4, &ledger)
        .register(acl_flaky)
        .register(acl_inc)
        .register(acl_sum)
        .build()
        .await
        .expect("the worker starts as sched_worker");
    let stop = worker.shutdown_handle();
    let join = tokio::spawn(worker.run(std::future::pending()));
    let n = 200;
    let reqs = mixed_requests(n);
    client
        .enqueue_bulk(reqs)
        .await
        .expect("bulk enqueue as sched_producer");
    let flaky = client
        .enqueue_request(TaskRequest::new("acl_flaky", "ha", &()).unwrap())
        .await
        .expect("enqueue as sched_producer");
    // A unique-for window: its key `…:u:<digest>` is the producer's to write.
    let window = || {
        TaskRequest::new("ha_note", "ha", &())
            .unwrap()
            .countdown(Duration::from_secs(3600))
            .unique_key("acl")
            .unique_for(Duration::from_secs(60))
    };
    let held = client
        .enqueue_request(window())
        .await
        .expect("unique enqueue as sched_producer");
    assert_eq!(client.enqueue_request(window()).await.unwrap(), held);
    client.cancel(&held).await.unwrap();
    let later = client
        .enqueue_request(
            TaskRequest::new("ha_note", "ha", &())
                .unwrap()
                .countdown(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    client
        .cancel(&later)
        .await
        .expect("cancel as sched_producer");
    assert_eq!(
        client.status(&later).await.unwrap().state,
        TaskState::Cancelled
    );
    // A chord (docs/workflows.md): the producer writes its record and index, the worker
    // records its members and releases the callback.
    let wf = scheduler::workflow::chord(
        scheduler::workflow::group((0..4).map(acl_inc::new)),
        scheduler::workflow::Partial::<acl_sum, _>::new(()),
    )
    .build()
    .unwrap();
    let wf = client
        .start_workflow(wf)
        .await
        .expect("start a workflow as sched_producer");
    assert_eq!(
        client
            .wait_workflow(&wf, Duration::from_secs(30))
            .await
            .expect("a workflow runs as sched_worker"),
        10
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = ledger.runs.lock().unwrap().len() >= n
            && client.status(&flaky).await.unwrap().state == TaskState::Succeeded;
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "tasks did not complete in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The worker's heartbeat got written (its first one is sent at start).
    let beats: Vec<String> = redis::cmd("KEYS")
        .arg("sched:workers:*")
        .query(&mut admin)
        .unwrap();
    assert_eq!(
        beats.len(),
        1,
        "the worker writes its heartbeat as sched_worker"
    );
    // And stamps the worker index (ZADD, ZRANGEBYSCORE, ZREM: in its rule).
    let indexed: u64 = redis::cmd("ZCARD")
        .arg("sched:workers")
        .query(&mut admin)
        .unwrap();
    assert_eq!(
        indexed, 1,
        "the worker stamps the worker index as sched_worker"
    );
    let flaky_info = client.status(&flaky).await.unwrap();
    assert_eq!(flaky_info.attempts, 2, "retried once, as sched_worker");
    // The tasks, `flaky`, and the chord's 4 members and callback. The workflow records its
    // callback's outcome before the worker writes the callback's ack (docs/workflows.md), and
    // an ack may ride on the next promote: wait for the counter, at most 10 s.
    let want = n as u64 + 1 + 5;
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let stats = client
            .queue_stats("ha")
            .await
            .expect("stats as sched_producer");
        if stats.counters.get("succeeded").copied() == Some(want) || Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(stats.counters.get("succeeded").copied(), Some(want));
    // `later` and the unique-for window's task.
    assert_eq!(stats.counters.get("cancelled").copied(), Some(2));
    {
        let runs = ledger.runs.lock().unwrap();
        assert!(runs.values().all(|r| r.len() == 1), "every task ran once");
    }

    // The producer, outside its role.
    let store = client.store();
    let p = store.partition("ha", 0);
    let mut conn = store.conn();
    denied(
        &mut conn,
        "producer",
        vec![
            (
                "claiming (ZPOPMIN)",
                redis::cmd("ZPOPMIN").arg(p.keys.ready()),
            ),
            (
                "taking a promoter lock (SET)",
                redis::cmd("SET").arg(p.keys.lock()).arg("x"),
            ),
            (
                "writing a lease",
                redis::cmd("ZADD").arg(p.keys.active()).arg(1).arg("t0"),
            ),
            (
                "deleting the dead set",
                redis::cmd("DEL").arg(p.keys.dead()),
            ),
            (
                "writing a heartbeat",
                redis::cmd("HSET")
                    .arg("sched:workers:fake")
                    .arg("pid")
                    .arg(1),
            ),
        ],
    )
    .await;
    let e = store
        .claim(&p, 10, 30_000, "intruder")
        .await
        .expect_err("the producer cannot claim through the claim script either");
    println!("producer denied, the claim script: {e}");
    assert!(
        e.to_string().contains("NOPERM") || e.to_string().to_lowercase().contains("permission"),
        "{e}"
    );
    let e = store
        .lock_acquire(&p, "intruder", 10_000)
        .await
        .expect_err("the producer cannot take a promoter lock");
    println!("producer denied, lock_acquire: {e}");
    // It subscribes to task events (wait_result, watch), and to nothing outside the namespace.
    let mut pubsub = store.pubsub().await.unwrap();
    pubsub
        .subscribe("sched:events:ha")
        .await
        .expect("the producer subscribes to task events");
    let mut pubsub = store.pubsub().await.unwrap();
    let e = pubsub
        .subscribe("other:channel")
        .await
        .expect_err("the producer cannot subscribe outside the namespace");
    println!("producer denied, SUBSCRIBE: {e}");

    // Both, outside the namespace and the system's commands.
    let worker_client = Client::with_config(ClientConfig::new(&worker_url).namespace("sched"))
        .await
        .unwrap();
    for (who, c) in [("producer", &client), ("worker", &worker_client)] {
        let mut conn = c.store().conn();
        denied(
            &mut conn,
            who,
            vec![
                (
                    "a read outside the namespace",
                    redis::cmd("HGET").arg("other:key").arg("f"),
                ),
                (
                    "a write outside the namespace",
                    redis::cmd("HSET").arg("other:key").arg("f").arg(1),
                ),
                (
                    "PUBLISH on another channel",
                    redis::cmd("PUBLISH").arg("other:chan").arg("x"),
                ),
                ("FLUSHALL", &mut redis::cmd("FLUSHALL")),
                (
                    "CONFIG SET",
                    redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1"),
                ),
                ("KEYS", redis::cmd("KEYS").arg("*")),
                (
                    "EVAL of an ad-hoc script",
                    redis::cmd("EVAL").arg("return 1").arg(0),
                ),
            ],
        )
        .await;
    }
    // (The worker's scripts call EXISTS since issue 9, to tell a task hash without `state` from
    // none at all, so the worker role is no longer denied it.)
    let mut pubsub = worker_client.store().pubsub().await.unwrap();
    pubsub
        .subscribe("sched:wake:ha")
        .await
        .expect("the worker subscribes to the namespace's channels");
    let e = pubsub
        .subscribe("other:channel")
        .await
        .expect_err("a channel outside the namespace is denied");
    println!("worker denied, a channel outside the namespace: {e}");

    stop.shutdown();
    let report = tokio::time::timeout(Duration::from_secs(20), join)
        .await
        .expect("worker stops")
        .unwrap();
    println!("worker report: {report:?}");
    assert_eq!(report.stale, 0);
}
