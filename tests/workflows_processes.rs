//! Workflows run by worker processes (`test_worker`, `tools/chaos`) on a real redis-server: a
//! chord of 1,000 members while a supervisor SIGKILLs one of three worker processes every 2 s and
//! starts a new one in its place (the callback is released once, runs once, and receives all
//! 1,000 results in order; chains of 10 steps running meanwhile keep their order); and a chain of
//! 10 steps whose result lists the steps in the order they ran (docs/workflows.md).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use scheduler::redis::AsyncCommands;
use scheduler::workflow::{chain, chord, group, Partial, WorkflowHandle};
use scheduler::{task, Client, ClientConfig, TaskError, TaskState};
use scheduler_testkit::{tool_bin, ChildGuard, RedisServer};

/// The same task as `test_worker` registers: sleeps `ms`, then returns `2 n`.
#[task(name = "wf_member", max_retries = 3)]
async fn wf_member(n: u64, ms: u64) -> Result<u64, TaskError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(n * 2)
}

/// The same task as `test_worker` registers: `acc` with `step` appended.
#[task(name = "wf_append", max_retries = 3)]
async fn wf_append(step: u32, mut acc: Vec<u32>) -> Result<Vec<u32>, TaskError> {
    acc.push(step);
    Ok(acc)
}

/// The same task as `test_worker` registers (there it also records its run): returns `results`.
#[task(name = "wf_total", max_retries = 3)]
async fn wf_total(results: Vec<u64>) -> Result<Vec<u64>, TaskError> {
    Ok(results)
}

const CHORD_QUEUE: &str = "chord";
const CHAIN_QUEUE: &str = "chains";

/// An environment variable as a number, or `default`.
fn env(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn client(url: &str, ns: &str) -> Client {
    Client::with_config(ClientConfig::new(url).namespace(ns))
        .await
        .unwrap()
}

/// Starts `test_worker` serving both queues, with a 1 s lease and promoter lock.
fn spawn_worker(url: &str, ns: &str, list: &str, concurrency: u64) -> ChildGuard {
    let child = Command::new(tool_bin("test_worker"))
        .args(["--redis-url", url, "--namespace", ns])
        .args(["--queue", &format!("{CHORD_QUEUE},{CHAIN_QUEUE}")])
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--lease-ms", "1000", "--lock-ttl-ms", "1000"])
        .args(["--record-list", list])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the test worker");
    ChildGuard(child)
}

/// A chain of `wf_append` steps 0..`steps`, on the chain queue: its result is the steps in the
/// order they ran.
fn append_chain(steps: u32) -> scheduler::workflow::Workflow<Vec<u32>> {
    let mut c = chain(wf_append::new(0, Vec::new()).queue(CHAIN_QUEUE));
    for step in 1..steps {
        c = c.then_with(Partial::<wf_append, _>::new((step,)).queue(CHAIN_QUEUE));
    }
    c.build().unwrap()
}

/// Members of the workflow whose outcome is recorded.
async fn recorded(c: &Client, id: &str) -> usize {
    let info = c.workflow(id).await.unwrap();
    info.members
        .iter()
        .filter(|m| m.stage == 0 && m.outcome.is_some())
        .count()
}

/// A chord of `WF_PROC_MEMBERS` (1,000) `wf_member` tasks of `WF_PROC_MEMBER_MS` (100) ms each,
/// and `WF_PROC_CHAINS` (10) chains of 10 steps, run by `WF_PROC_WORKERS` (3) worker processes
/// of concurrency `WF_PROC_CONCURRENCY` (4), lease 1 s. Once a tenth of the members are
/// recorded, a supervisor SIGKILLs one process every 2 s (in turn) and starts a new one in its
/// place, until the chord's members are all recorded; kills stop there, because a process killed
/// while it runs the callback would run it again as any task (at least once), which is not what
/// this test is about. The callback is released once: it ran on attempt 1, once (its own
/// record in Redis), and received every result in member order; every chain's result lists its
/// steps in order. Prints the figures of docs/workflows.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_survives_worker_processes_killed_every_2s() {
    let members = env("WF_PROC_MEMBERS", 1000);
    let member_ms = env("WF_PROC_MEMBER_MS", 100);
    let chains = env("WF_PROC_CHAINS", 10);
    let workers = env("WF_PROC_WORKERS", 3) as usize;
    let concurrency = env("WF_PROC_CONCURRENCY", 4);
    let kill_every = Duration::from_millis(env("WF_PROC_KILL_EVERY_MS", 2000));
    let redis = RedisServer::start();
    let url = redis.url();
    let (ns, list) = ("chordkill", "chordkill:record");
    let c = client(&url, ns).await;
    // Built before the clock starts (the first call may build the binary).
    tool_bin("test_worker");

    let wf = chord(
        group((0..members).map(|n| wf_member::new(n, member_ms).queue(CHORD_QUEUE))),
        Partial::<wf_total, _>::new(()).queue(CHORD_QUEUE),
    )
    .build()
    .unwrap()
    .id("big");
    let started = Instant::now();
    let h: WorkflowHandle<Vec<u64>> = c.start_workflow(wf).await.unwrap();
    let mut chain_handles = Vec::new();
    for _ in 0..chains {
        chain_handles.push(c.start_workflow(append_chain(10)).await.unwrap());
    }
    let mut procs: Vec<ChildGuard> = (0..workers)
        .map(|_| spawn_worker(&url, ns, list, concurrency))
        .collect();

    let first_kill_at = (members / 10) as usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    while recorded(&c, h.id()).await < first_kill_at {
        assert!(
            Instant::now() < deadline,
            "no progress before the first kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut kills = 0usize;
    let all = members as usize;
    'supervise: loop {
        // Checked right before each kill: no kill once every member is recorded.
        if recorded(&c, h.id()).await == all {
            break;
        }
        let victim = kills % workers;
        procs[victim].signal(9);
        assert!(
            procs[victim]
                .wait_timeout(Duration::from_secs(10))
                .is_some(),
            "SIGKILL ends the worker process"
        );
        procs[victim] = spawn_worker(&url, ns, list, concurrency);
        kills += 1;
        let next = Instant::now() + kill_every;
        while Instant::now() < next {
            if recorded(&c, h.id()).await == all {
                break 'supervise;
            }
            assert!(
                Instant::now() < deadline,
                "the chord's members never all ran"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let members_done = started.elapsed();

    let out = c.wait_workflow(&h, Duration::from_secs(60)).await.unwrap();
    let total = started.elapsed();
    assert_eq!(
        out,
        (0..members).map(|n| n * 2).collect::<Vec<_>>(),
        "every result, in member order"
    );
    for ch in &chain_handles {
        let steps = c.wait_workflow(ch, Duration::from_secs(60)).await.unwrap();
        assert_eq!(steps, (0..10).collect::<Vec<u32>>(), "steps in order");
    }
    let info = c.workflow(h.id()).await.unwrap();
    assert_eq!(info.state, "succeeded");
    let callback = &info.members.last().unwrap().task;
    let cb = c.status(callback).await.unwrap();
    assert_eq!(
        (cb.state, cb.attempts, cb.lost),
        (TaskState::Succeeded, 1, 0),
        "the callback released once, run once"
    );
    let mut conn = c.store().conn();
    let runs: Vec<String> = conn.lrange(list, 0, -1).await.unwrap();
    assert_eq!(runs, [format!("wf_total:1:{members}")], "one callback run");

    let mut again = 0;
    for m in info.members.iter().filter(|m| m.stage == 0) {
        let t = c.status(&m.task).await.unwrap();
        assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
        if t.attempts > 1 || t.lost > 0 {
            again += 1;
        }
    }
    drop(procs);
    println!(
        "{members} members of {member_ms} ms, {chains} chains of 10, {workers} processes x \
         {concurrency}: {kills} kills (every {kill_every:?}), {again} members run again, \
         members done in {members_done:.1?}, callback result in {total:.1?}"
    );
}

/// A chain of 10 `wf_append` steps run by one worker process: each step receives the list
/// of the steps before it, so the result, 0 to 9, is the order the steps ran in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_ten_steps_keeps_its_order() {
    let redis = RedisServer::start();
    let url = redis.url();
    let c = client(&url, "chain10").await;
    let h = c.start_workflow(append_chain(10)).await.unwrap();
    let _worker = spawn_worker(&url, "chain10", "chain10:record", 4);
    let steps = c.wait_workflow(&h, Duration::from_secs(30)).await.unwrap();
    assert_eq!(steps, (0..10).collect::<Vec<u32>>());
    let info = c.workflow(h.id()).await.unwrap();
    assert_eq!(info.members.len(), 10);
    let mut finished = Vec::new();
    for m in &info.members {
        let t = c.status(&m.task).await.unwrap();
        assert_eq!(t.state, TaskState::Succeeded);
        finished.push(t.finished_at_ms);
    }
    assert!(
        finished.windows(2).all(|w| w[0] <= w[1]),
        "each step finished after the one before: {finished:?}"
    );
}
