//! Workflows on real redis-servers (docs/workflows.md): a chain passes results step to step; a
//! group's result lists its members' results in order; chains of groups pass lists and fan a
//! result out; a chord's callback runs exactly once,
//! also when members' completions are repeated and when a crash between recording the last
//! member and releasing the callback is repaired by the sweep; fail-fast cancels what is left;
//! continue passes the errors to the callback; workers killed without shutdown during a chord
//! lose nothing; a chord spread over a 3-master Cluster; `wait_workflow` woken by the
//! workflow's end when its queues have task events on; a member buried by a lease reap fails
//! the workflow at once (the reaping worker records it).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use scheduler::workflow::{
    chain, chain_group, chord, group, Partial, WorkflowHandle, WORKFLOW_HEADER,
};
use scheduler::{task, Client, ClientConfig, Error, TaskContext, TaskError, TaskId, TaskState};
use scheduler_testkit::oracle::wait_finished;
use scheduler_testkit::{RedisServer, Running};

const WAIT: Duration = Duration::from_secs(15);

/// How many times the callbacks ran.
#[derive(Default)]
struct Runs {
    collect: AtomicU32,
}

#[task(name = "wf_add", queue = "wf")]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

#[task(name = "wf_double", queue = "wf")]
async fn double(x: i64) -> Result<i64, TaskError> {
    Ok(x * 2)
}

/// Sleeps longer for lower `i`, so that members finish in reverse order; fails for good for a
/// negative `i`.
#[task(name = "wf_echo", queue = "wf")]
async fn echo(i: i64) -> Result<i64, TaskError> {
    if i < 0 {
        return Err(TaskError::fail("boom"));
    }
    tokio::time::sleep(Duration::from_millis(((20 - i) * 5).max(0) as u64)).await;
    Ok(i)
}

/// Fails its first attempt (retryable), succeeds on the next.
#[task(name = "wf_flaky", queue = "wf", max_retries = 3)]
async fn flaky(ctx: TaskContext, i: i64) -> Result<i64, TaskError> {
    if ctx.attempt() == 1 {
        return Err(TaskError::retry_after(
            "first attempt fails",
            Duration::ZERO,
        ));
    }
    Ok(i)
}

/// 20 ms of work, then `i`.
#[task(name = "wf_slow", queue = "wf")]
async fn slow(i: i64) -> Result<i64, TaskError> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(i)
}

/// 1.5 s of work, then `i`.
#[task(name = "wf_sleepy", queue = "wf")]
async fn sleepy(i: i64) -> Result<i64, TaskError> {
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    Ok(i)
}

#[task(name = "wf_boom", queue = "wf")]
async fn boom() -> Result<i64, TaskError> {
    Err(TaskError::fail("boom"))
}

#[task(name = "wf_collect", queue = "wf")]
async fn collect(ctx: TaskContext, label: String, v: Vec<i64>) -> Result<String, TaskError> {
    ctx.state::<Arc<Runs>>()?
        .collect
        .fetch_add(1, Ordering::SeqCst);
    Ok(format!("{label}:{}", v.iter().sum::<i64>()))
}

#[task(name = "wf_total", queue = "wf")]
async fn sum_of(v: Vec<i64>) -> Result<i64, TaskError> {
    Ok(v.iter().sum())
}

#[task(name = "wf_summary", queue = "wf")]
async fn summary(v: Vec<Result<i64, String>>) -> Result<String, TaskError> {
    Ok(v.iter()
        .map(|r| match r {
            Ok(n) => n.to_string(),
            Err(e) => format!("err({e})"),
        })
        .collect::<Vec<_>>()
        .join(","))
}

async fn client(url: &str, ns: &str) -> Client {
    Client::with_config(ClientConfig::new(url).namespace(ns))
        .await
        .unwrap()
}

async fn worker(url: &str, ns: &str, runs: &Arc<Runs>) -> Running {
    Running::start(
        scheduler::Worker::builder()
            .redis_url(url)
            .namespace(ns)
            .concurrency(8)
            .register(add)
            .register(double)
            .register(echo)
            .register(slow)
            .register(sleepy)
            .register(flaky)
            .register(boom)
            .register(collect)
            .register(summary)
            .register(sum_of)
            .state(Arc::clone(runs)),
    )
    .await
}

/// add(1, 2) = 3, add(10, 3) = 13, double(13) = 26: each step receives the previous result;
/// the steps after the first are held (due far in the future) until released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_passes_results_step_to_step() {
    let redis = RedisServer::start();
    let c = client(&redis.url(), "chain").await;
    let wf = chain(add::new(1, 2))
        .then_with(Partial::<add, _>::new((10,)))
        .then_with(Partial::<double, _>::new(()))
        .build()
        .unwrap()
        .id("c1")
        .header("tenant", "42");
    let h = c.start_workflow(wf).await.unwrap();
    let info = c.workflow("c1").await.unwrap();
    assert_eq!(
        (info.kind.as_str(), info.state.as_str()),
        ("chain", "running")
    );
    let steps: Vec<TaskId> = info.members.iter().map(|m| m.task.clone()).collect();
    assert_eq!(steps.len(), 3);
    let held = c.status(&steps[2]).await.unwrap();
    assert_eq!(held.state, TaskState::Scheduled);
    assert_eq!(held.run_at_ms, scheduler::workflow::HELD_DUE_MS);
    assert_eq!(held.headers[WORKFLOW_HEADER], "c1:2:0");
    assert_eq!(
        held.headers["tenant"], "42",
        "the workflow's headers on every step"
    );

    let runs = Arc::new(Runs::default());
    let w = worker(&redis.url(), "chain", &runs).await;
    let out: i64 = c.wait_workflow(&h, WAIT).await.unwrap();
    w.stop().await;
    assert_eq!(out, 26);
    let info = c.workflow("c1").await.unwrap();
    assert_eq!(info.state, "succeeded");
    for id in &steps {
        assert_eq!(c.status(id).await.unwrap().state, TaskState::Succeeded);
    }
    // The sweep drops a finished workflow from the index (the worker's janitor may have).
    c.sweep_workflows().await.unwrap();
    assert_eq!(c.sweep_workflows().await.unwrap(), 0);
}

/// Chains of groups: echo 1..3 in parallel (finishing in reverse order), their sum 6, then
/// add(i, 6) for i in 1..3 in parallel (each receiving the 6), their sum 24; and a step followed
/// by a group that does not receive, whose list is the result. A failing member of a chain's
/// group fails the chain and cancels the steps after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_of_groups_pass_lists_and_fan_out() {
    let redis = RedisServer::start();
    let c = client(&redis.url(), "cog").await;
    let wf = chain_group(group((1..=3).map(echo::new)))
        .then_with(Partial::<sum_of, _>::new(()))
        .then_group_with((1..=3).map(|i| Partial::<add, _>::new((i,))))
        .then_with(Partial::<sum_of, _>::new(()))
        .build()
        .unwrap()
        .id("g1");
    let h = c.start_workflow(wf).await.unwrap();
    let listed = chain(add::new(1, 2))
        .then_group(group((0..3).map(double::new)))
        .build()
        .unwrap();
    let listed = c.start_workflow(listed).await.unwrap();
    let failing = chain_group(group([echo::new(1), echo::new(-1)]))
        .then_with(Partial::<sum_of, _>::new(()))
        .build()
        .unwrap();
    let failing = c.start_workflow(failing).await.unwrap();
    let runs = Arc::new(Runs::default());
    let w = worker(&redis.url(), "cog", &runs).await;
    let out: i64 = c.wait_workflow(&h, WAIT).await.unwrap();
    assert_eq!(out, 7 + 8 + 9);
    let list: Vec<i64> = c.wait_workflow(&listed, WAIT).await.unwrap();
    assert_eq!(list, [0, 2, 4]);
    let err = c.wait_workflow(&failing, WAIT).await.unwrap_err();
    assert!(matches!(err, Error::WorkflowFailed { .. }), "{err:?}");
    let info = c.workflow(failing.id()).await.unwrap();
    let last = &info.members.last().unwrap().task;
    wait_finished(&c, last, WAIT).await;
    assert_eq!(c.status(last).await.unwrap().state, TaskState::Cancelled);
    w.stop().await;

    let info = c.workflow("g1").await.unwrap();
    assert_eq!(info.state, "succeeded");
    let stages: Vec<u32> = info.members.iter().map(|m| m.stage).collect();
    assert_eq!(stages, [0, 0, 0, 1, 2, 2, 2, 3]);
    // Each fanned-out member received the 6 after its own argument.
    for (i, m) in info.members.iter().filter(|m| m.stage == 2).enumerate() {
        let args: (i64, i64) =
            rmp_serde::from_slice(&c.status(&m.task).await.unwrap().args).unwrap();
        assert_eq!(args, (i as i64 + 1, 6));
    }
}

/// 20 members finishing in reverse order: the group's result is in member order. An empty
/// group, and a deadline on a held step, are refused when built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_lists_results_in_member_order() {
    let redis = RedisServer::start();
    let c = client(&redis.url(), "group").await;
    assert!(matches!(
        group(Vec::<scheduler::TaskCall<echo>>::new()).build(),
        Err(Error::InvalidWorkflow(_))
    ));
    assert!(matches!(
        chain(echo::new(1))
            .then(echo::new(2).expires_in(Duration::from_secs(60)))
            .build(),
        Err(Error::InvalidWorkflow(_))
    ));
    let wf = group((0..20).map(echo::new)).build().unwrap();
    let h = c.start_workflow(wf).await.unwrap();
    let runs = Arc::new(Runs::default());
    let w = worker(&redis.url(), "group", &runs).await;
    let out: Vec<i64> = c.wait_workflow(&h, WAIT).await.unwrap();
    w.stop().await;
    assert_eq!(out, (0..20).collect::<Vec<_>>());
}

/// A chord whose members each fail once and are retried: the callback runs once with every
/// result. Then every member's completion is reported again (as a worker whose ack reply was
/// lost runs the member again) and the sweep runs: the callback is not released again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_callback_runs_exactly_once_despite_retries_and_repeats() {
    let redis = RedisServer::start();
    let c = client(&redis.url(), "chord").await;
    let wf = chord(
        group((1..=10).map(flaky::new)),
        Partial::<collect, _>::new(("sum".to_owned(),)),
    )
    .build()
    .unwrap();
    let h = c.start_workflow(wf).await.unwrap();
    let runs = Arc::new(Runs::default());
    let w = worker(&redis.url(), "chord", &runs).await;
    let out: String = c.wait_workflow(&h, WAIT).await.unwrap();
    assert_eq!(out, "sum:55");
    let info = c.workflow(h.id()).await.unwrap();
    for m in info.members.iter().filter(|m| m.stage == 0) {
        assert_eq!(c.status(&m.task).await.unwrap().attempts, 2, "retried once");
        let header = format!("{}:{}:{}", h.id(), m.stage, m.index);
        let result = scheduler::encode_args(&99i64).unwrap();
        c.workflow_member_finished(&header, Ok(&result))
            .await
            .unwrap();
    }
    c.sweep_workflows().await.unwrap();
    let callback = &info.members.last().unwrap().task;
    let cb = c.status(callback).await.unwrap();
    assert_eq!((cb.state, cb.attempts), (TaskState::Succeeded, 1));
    w.stop().await;
    assert_eq!(runs.collect.load(Ordering::SeqCst), 1);
    // The first recorded results stand.
    let again: String = c.wait_workflow(&h, WAIT).await.unwrap();
    assert_eq!(again, "sum:55");
}

/// A crash after the last member was recorded and before the callback was released: the
/// sweep releases it; the members, never acknowledged, run again and change nothing; the
/// callback runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_release_is_repaired_once() {
    let redis = RedisServer::start();
    let c = client(&redis.url(), "crash").await;
    let wf = chord(
        group((1..=3).map(echo::new)),
        Partial::<collect, _>::new(("c".to_owned(),)),
    )
    .build()
    .unwrap()
    .id("k1");
    let h: WorkflowHandle<String> = c.start_workflow(wf).await.unwrap();
    // A worker records each member's result, and dies before releasing the callback.
    for i in 0..3u32 {
        let r = scheduler::encode_args(&(i64::from(i) + 1)).unwrap();
        let next = c.store().wf_done("k1", 0, i, Ok(&r)).await.unwrap();
        if i == 2 {
            assert!(matches!(
                next,
                scheduler::broker::WfNext::Release { stage: 1, .. }
            ));
        }
    }
    let info = c.workflow("k1").await.unwrap();
    let callback = info.members.last().unwrap().task.clone();
    assert_eq!(
        c.status(&callback).await.unwrap().state,
        TaskState::Scheduled
    );
    c.sweep_workflows().await.unwrap();
    assert_ne!(
        c.status(&callback).await.unwrap().run_at_ms,
        scheduler::workflow::HELD_DUE_MS,
        "released by the sweep"
    );
    let runs = Arc::new(Runs::default());
    let w = worker(&redis.url(), "crash", &runs).await;
    assert_eq!(c.wait_workflow(&h, WAIT).await.unwrap(), "c:6");
    for m in &info.members {
        wait_finished(&c, &m.task, WAIT).await;
    }
    w.stop().await;
    assert_eq!(runs.collect.load(Ordering::SeqCst), 1);
}

/// Fail-fast: a chain's failing step fails the workflow and cancels the step after it; a
/// chord's failing member cancels the member still waiting and the callback, which never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_cancels_the_rest() {
    let redis = RedisServer::start();
    let c = client(&redis.url(), "fail").await;
    let runs = Arc::new(Runs::default());
    let w = worker(&redis.url(), "fail", &runs).await;

    let wf = chain(add::new(1, 1))
        .then(boom::new())
        .then_with(Partial::<double, _>::new(()))
        .build()
        .unwrap();
    let h = c.start_workflow(wf).await.unwrap();
    match c.wait_workflow(&h, WAIT).await {
        Err(Error::WorkflowFailed { error, .. }) => assert!(error.contains("boom"), "{error}"),
        other => panic!("{other:?}"),
    }
    // The workflow fails as soon as the failing step's outcome is recorded in it, before that
    // step's own verdict is written (docs/workflows.md): wait for every member to finish.
    let info = c.workflow(h.id()).await.unwrap();
    let states: Vec<TaskState> = {
        let mut v = Vec::new();
        for m in &info.members {
            v.push(wait_finished(&c, &m.task, WAIT).await.state);
        }
        v
    };
    assert_eq!(
        states,
        [TaskState::Succeeded, TaskState::Dead, TaskState::Cancelled]
    );

    let wf = chord(
        group(vec![
            echo::new(1),
            echo::new(2).countdown(Duration::from_secs(3600)),
        ]),
        Partial::<collect, _>::new(("never".to_owned(),)),
    )
    .build()
    .unwrap();
    let h = c.start_workflow(wf).await.unwrap();
    // The first member succeeds; then the waiting member is cancelled by hand: the sweep records
    // it as failed, which fails the chord and cancels the callback.
    let info = c.workflow(h.id()).await.unwrap();
    wait_finished(&c, &info.members[0].task, WAIT).await;
    c.cancel_task(&info.members[1].task).await.unwrap();
    c.sweep_workflows().await.unwrap();
    match c.wait_workflow(&h, WAIT).await {
        Err(Error::WorkflowFailed { error, .. }) => assert!(error.contains("cancelled"), "{error}"),
        other => panic!("{other:?}"),
    }
    let cb = c.status(&info.members[2].task).await.unwrap();
    assert_eq!(cb.state, TaskState::Cancelled);
    w.stop().await;
    assert_eq!(runs.collect.load(Ordering::SeqCst), 0);
}

/// Continue: a member's failure does not fail the chord; the callback gets `Err` in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_passes_errors_to_the_callback() {
    let redis = RedisServer::start();
    let c = client(&redis.url(), "cont").await;
    let wf = chord(
        group([1, -1, 3].map(echo::new)).continue_on_error(),
        Partial::<summary, _>::new(()),
    )
    .build()
    .unwrap();
    let h = c.start_workflow(wf).await.unwrap();
    let runs = Arc::new(Runs::default());
    let w = worker(&redis.url(), "cont", &runs).await;
    let out: String = c.wait_workflow(&h, WAIT).await.unwrap();
    w.stop().await;
    assert_eq!(out, "1,err(boom),3");
}

/// A chord over a 3-master Redis Cluster: the workflow record and the members' partitions sit
/// on different masters (no script touches two of them); the callback gets every result in
/// order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_spread_over_a_cluster() {
    let Some(cluster) = scheduler_testkit::cluster::RedisCluster::start() else {
        return;
    };
    let url = cluster.url();
    let c = Client::with_config(
        ClientConfig::new(&url)
            .namespace("wfc")
            .queue_shards("wf", 16)
            .retry_attempts(20),
    )
    .await
    .unwrap();
    let wf = chord(
        group((1..=12).map(echo::new)),
        Partial::<collect, _>::new(("cluster".to_owned(),)),
    )
    .build()
    .unwrap()
    .id("spread");
    let h = c.start_workflow(wf).await.unwrap();
    let info = c.workflow("spread").await.unwrap();
    let shards = c.shards("wf").await.unwrap();
    let mut masters = std::collections::BTreeSet::new();
    for m in &info.members {
        let p = c.store().partition("wf", m.task.shard(shards));
        masters.insert(cluster.master_of_slot(cluster.keyslot(&p.keys.scheduled())));
    }
    assert!(
        masters.len() >= 2,
        "members on several masters: {masters:?}"
    );
    let record = cluster.keyslot(&c.store().keys().workflow("spread"));
    println!(
        "workflow record on master :{}, members on {masters:?}",
        cluster.master_of_slot(record)
    );
    let runs = Arc::new(Runs::default());
    let w = Running::start(
        scheduler::Worker::builder()
            .redis_url(&url)
            .namespace("wfc")
            .queue_shards("wf", 16)
            .register(echo)
            .register(collect)
            .state(Arc::clone(&runs)),
    )
    .await;
    let out: String = c.wait_workflow(&h, Duration::from_secs(30)).await.unwrap();
    w.stop().await;
    assert_eq!(out, format!("cluster:{}", (1..=12).sum::<i64>()));
    assert_eq!(runs.collect.load(Ordering::SeqCst), 1);
}

/// A worker killed without any shutdown (its runtime dropped: no hand-back, no pending ack
/// written, its leases and locks left to expire), three times during a chord of 300 members:
/// the next workers reap what it held, and the callback runs once with every result in order.
/// `WF_KILL_MEMBERS` and `WF_KILL_ROUNDS` change the sizes (docs/workflows.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_lose_nothing() {
    let env = |k: &str, d: i64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (members, rounds) = (env("WF_KILL_MEMBERS", 300), env("WF_KILL_ROUNDS", 3));
    let redis = RedisServer::start();
    let url = redis.url();
    let c = client(&url, "kill").await;
    let wf = chord(
        group((0..members).map(slow::new)),
        Partial::<collect, _>::new(("k".to_owned(),)),
    )
    .build()
    .unwrap();
    let h = c.start_workflow(wf).await.unwrap();
    let runs = Arc::new(Runs::default());
    let builder = || {
        scheduler::Worker::builder()
            .redis_url(&url)
            .namespace("kill")
            .concurrency(8)
            .lease(Duration::from_millis(500))
            .lock_ttl(Duration::from_millis(500))
            .register(slow)
            .register(collect)
            .state(Arc::clone(&runs))
    };
    let recorded = |info: &scheduler::workflow::WorkflowInfo| {
        info.members.iter().filter(|m| m.outcome.is_some()).count()
    };
    for round in 1..=rounds {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let w = builder().build().await.unwrap();
        rt.spawn(w.run(std::future::pending()));
        // Killed once it has recorded some more members.
        let target = (round * members / (rounds + 2)) as usize;
        while recorded(&c.workflow(h.id()).await.unwrap()) < target {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        rt.shutdown_background();
    }
    let w = Running::start(builder()).await;
    let out: String = c.wait_workflow(&h, Duration::from_secs(60)).await.unwrap();
    w.stop().await;
    assert_eq!(out, format!("k:{}", (0..members).sum::<i64>()));
    assert_eq!(runs.collect.load(Ordering::SeqCst), 1);
    let mut again = 0;
    for m in &c.workflow(h.id()).await.unwrap().members {
        let t = c.status(&m.task).await.unwrap();
        if t.attempts > 1 || t.lost > 0 {
            again += 1;
        }
    }
    println!("members run again after a kill (reaped leases): {again}");
}

/// Redis commands and script calls of the whole run, from `INFO`.
async fn redis_counts(url: &str) -> (u64, u64) {
    let client = scheduler::redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = scheduler::redis::cmd("INFO")
        .arg("all")
        .query_async(&mut conn)
        .await
        .unwrap();
    let field = |line: &str, key: &str| -> u64 {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut total = 0;
    let mut scripts = 0;
    for line in info.lines() {
        if let Some(v) = line.strip_prefix("total_commands_processed:") {
            total = v.trim().parse().unwrap();
        }
        if line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:") {
            let rest = line.split_once(':').unwrap().1;
            scripts += field(rest, "calls=");
        }
    }
    (total, scripts)
}

/// What a group member costs in Redis against the same task outside a workflow: 500 tasks each
/// way, one worker, a fresh redis-server each, commands counted by `INFO` (every command, those
/// scripts call included) from the start until all succeeded. Prints the figures of
/// docs/workflows.md; asserts nothing about them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_of_a_member() {
    const N: i64 = 500;
    let mut rows = Vec::new();
    for in_workflow in [false, true] {
        let redis = RedisServer::start();
        let url = redis.url();
        let c = client(&url, "cost").await;
        let runs = Arc::new(Runs::default());
        let w = worker(&url, "cost", &runs).await;
        let before = redis_counts(&url).await;
        let h = if in_workflow {
            let wf = group((0..N).map(add_one)).build().unwrap();
            Some(c.start_workflow(wf).await.unwrap())
        } else {
            c.enqueue_bulk((0..N).map(add_one)).await.unwrap();
            None
        };
        // The same wait both ways: the queue's `succeeded` counter every 50 ms (a member is
        // recorded in its workflow before its ack).
        while c.queue_stats("wf").await.unwrap().counters.get("succeeded") != Some(&(N as u64)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let after = redis_counts(&url).await;
        if let Some(h) = h {
            let out: Vec<i64> = c.wait_workflow(&h, WAIT).await.unwrap();
            assert_eq!(out, (1..=N).collect::<Vec<_>>());
        }
        w.stop().await;
        rows.push((
            in_workflow,
            (after.0 - before.0) as f64 / N as f64,
            (after.1 - before.1) as f64 / N as f64,
        ));
    }
    for (wf, cmds, scripts) in rows {
        println!(
            "{}: {cmds:.1} Redis commands per task, {scripts:.2} script calls per task",
            if wf { "group member" } else { "plain task  " }
        );
    }
}

fn add_one(i: i64) -> scheduler::TaskCall<add> {
    add::new(i, 1)
}

/// Completions recorded by hand, as workers would: a stage completed again (a member that ran
/// again) does not move the current stage back, and a member the record does not list changes
/// nothing.
#[tokio::test]
async fn repeated_and_unknown_completions_change_nothing() {
    let redis = RedisServer::start();
    let c = client(&redis.url(), "rep").await;
    let wf = chain(add::new(1, 1))
        .then_with(Partial::<double, _>::new(()))
        .then_with(Partial::<double, _>::new(()))
        .build()
        .unwrap()
        .id("r1");
    c.start_workflow(wf).await.unwrap();
    let two = scheduler::encode_args(&2i64).unwrap();
    let four = scheduler::encode_args(&4i64).unwrap();
    c.workflow_member_finished("r1:0:0", Ok(&two))
        .await
        .unwrap();
    c.workflow_member_finished("r1:1:0", Ok(&four))
        .await
        .unwrap();
    assert_eq!(c.workflow("r1").await.unwrap().current_stage, 2);
    let before = c.workflow("r1").await.unwrap();
    c.workflow_member_finished("r1:0:0", Ok(&four))
        .await
        .unwrap();
    c.workflow_member_finished("r1:0:7", Err("no such member"))
        .await
        .unwrap();
    c.workflow_member_finished("not a header", Ok(&two))
        .await
        .unwrap();
    assert_eq!(c.workflow("r1").await.unwrap(), before);
    // The last step was released with the second step's result as its argument.
    let last = c.status(&TaskId::new("wf", "r1.2.0")).await.unwrap();
    assert_ne!(last.run_at_ms, scheduler::workflow::HELD_DUE_MS);
    let args: (i64,) = rmp_serde::from_slice(&last.args).unwrap();
    assert_eq!(args, (4,));
}

/// The reads of key `key` by `HGETALL`, counted through `MONITOR` from now on.
async fn count_hgetall(url: &str, key: String) -> (Arc<AtomicU32>, tokio::task::JoinHandle<()>) {
    use futures::StreamExt;
    let reads = Arc::new(AtomicU32::new(0));
    let monitor = scheduler::redis::Client::open(url)
        .unwrap()
        .get_async_monitor()
        .await
        .unwrap();
    let counting = {
        let reads = Arc::clone(&reads);
        let key = format!("\"HGETALL\" \"{key}\"");
        tokio::spawn(async move {
            let mut lines = monitor.into_on_message::<String>();
            while let Some(l) = lines.next().await {
                if l.contains(&key) {
                    reads.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    (reads, counting)
}

/// In a queue with task events on, the workflow's record has the channel its end is published
/// on: `wait_workflow` reads the record, subscribes, reads it again and then sends nothing until
/// the end (no polling: its `HGETALL`s counted through `MONITOR`), then returns the result. A
/// workflow started while events were off has no channel and is polled, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_workflow_is_woken_by_the_workflows_end() {
    let redis = RedisServer::start();
    let url = redis.url();
    let c = client(&url, "wfev").await;
    c.set_events("wf", true).await.unwrap();
    let runs = Arc::new(Runs::default());
    let w = worker(&url, "wfev", &runs).await;
    // The janitor's first sweep (at the worker's start) is over before the workflow exists.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let wf = group([sleepy::new(5)]).build().unwrap().id("woken");
    let h = c.start_workflow(wf).await.unwrap();
    let (reads, counting) = count_hgetall(&url, "wfev:wf:{woken}".into()).await;
    let waiter = {
        let c = c.clone();
        let h = h.clone();
        tokio::spawn(async move { c.wait_workflow(&h, WAIT).await })
    };
    let read = || reads.load(Ordering::SeqCst);
    // The first read, then the read after subscribing...
    while read() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...then none while the member runs (polling would read every 5 to 250 ms).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(read(), 2, "no read while waiting for the end");
    assert!(!waiter.is_finished());
    let out: Vec<i64> = waiter.await.unwrap().unwrap();
    assert_eq!(out, vec![5]);
    // MONITOR reports the last read a moment after the waiter got its reply.
    let shown = tokio::time::Instant::now() + Duration::from_secs(2);
    while read() < 3 && tokio::time::Instant::now() < shown {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(read(), 3, "one read after the end");
    counting.abort();

    // Events off when it starts: no channel, polled (and still right).
    c.set_events("wf", false).await.unwrap();
    let wf = group([slow::new(6)]).build().unwrap().id("polled");
    let h = c.start_workflow(wf).await.unwrap();
    let (reads, counting) = count_hgetall(&url, "wfev:wf:{polled}".into()).await;
    let out: Vec<i64> = c.wait_workflow(&h, WAIT).await.unwrap();
    assert_eq!(out, vec![6]);
    let raw: Option<String> = scheduler::redis::cmd("HGET")
        .arg("wfev:wf:{polled}")
        .arg("events")
        .query_async(&mut c.store().conn())
        .await
        .unwrap();
    assert_eq!(raw, None);
    assert!(reads.load(Ordering::SeqCst) >= 1);
    counting.abort();
    w.stop().await;
}

/// A member whose worker vanished (its lease expired; a lost lease is one too many with
/// `max_lost_leases(0)`) is buried by the reap of a live worker, which records its end in the
/// workflow at once: the workflow fails (fail-fast) and its other member is cancelled within
/// seconds, not at the next workflow sweep (the janitor's, every 5 minutes by default, ran
/// once at the worker's start, before the workflow existed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_buried_by_a_reap_fails_the_workflow_at_once() {
    let redis = RedisServer::start();
    let url = redis.url();
    let c = client(&url, "wfreap").await;
    // Paused: the worker claims nothing of it (it still reaps its leases).
    c.shards("wfr").await.unwrap();
    assert!(scheduler::Inspector::new(&c).pause("wfr").await.unwrap());
    let runs = Arc::new(Runs::default());
    let w = Running::start(
        scheduler::Worker::builder()
            .redis_url(&url)
            .namespace("wfreap")
            .queues(["wfr"])
            .max_lost_leases(0)
            .sweep_interval(Duration::from_millis(100))
            .register(slow)
            .state(Arc::clone(&runs)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let wf = group([slow::new(1).queue("wfr"), slow::new(2).queue("wfr")])
        .build()
        .unwrap()
        .id("reaped");
    let h = c.start_workflow(wf).await.unwrap();
    let started = std::time::Instant::now();
    // A worker that claims one member with a lease of 1 ms and vanishes.
    let store = c.store();
    let shards = c.shards("wfr").await.unwrap();
    let mut lost = None;
    for shard in 0..shards {
        let claim = store
            .claim(&store.partition("wfr", shard), 1, 1, "lost#1")
            .await
            .unwrap();
        if let Some(t) = claim.tasks.first() {
            lost = Some(TaskId::new("wfr", t.id.clone()));
            break;
        }
    }
    let lost = lost.expect("a member claimed");
    let err = c.wait_workflow(&h, WAIT).await.unwrap_err();
    let elapsed = started.elapsed();
    let Error::WorkflowFailed { error, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        error.contains(lost.id()) && error.contains("lease expired"),
        "{error}"
    );
    eprintln!("workflow failed {elapsed:?} after its start (lease of 1 ms, reap sweep 100 ms)");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert_eq!(c.status(&lost).await.unwrap().state, TaskState::Dead);
    let info = c.workflow("reaped").await.unwrap();
    let other = info.members.iter().find(|m| m.task != lost).unwrap();
    assert_eq!(
        wait_finished(&c, &other.task, WAIT).await.state,
        TaskState::Cancelled
    );
    w.stop().await;
}
