//! Losing workers against a throwaway Redis: a worker process killed with SIGKILL mid-task (its
//! tasks run again elsewhere once their lease expires, counted as an attempt), and graceful
//! shutdowns, in-process and by SIGTERM to a worker process (unfinished tasks are handed back at
//! once, uncounted; tasks that finish within the timeout are acknowledged, not run again).
//!
//! The worker processes are `test_worker` (`tools/chaos`).

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scheduler::redis::aio::ConnectionManager;
use scheduler::redis::AsyncCommands;
use scheduler::{
    task, Client, ClientConfig, TaskContext, TaskError, TaskId, TaskInfo, TaskState, Worker,
};
use scheduler_testkit::{tool_bin, ChildGuard, RedisServer, Running};
use tokio::sync::watch;

/// Where `sleep_then_record` writes, as in `test_worker` (`tools/chaos`).
#[derive(Debug)]
struct Recorder {
    conn: ConnectionManager,
    list: String,
}

/// The same task as `test_worker` (`tools/chaos`) registers: sleeps `ms`, then appends
/// `<tag>:<attempt>` to the record list.
#[task(name = "sleep_then_record", max_retries = 3)]
async fn sleep_then_record(ctx: TaskContext, ms: u64, tag: String) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let rec = ctx.state::<Recorder>()?;
    let mut conn = rec.conn.clone();
    let _: i64 = conn
        .rpush(&rec.list, format!("{tag}:{}", ctx.attempt()))
        .await?;
    Ok(())
}

/// Completed runs by task id.
#[derive(Clone, Default)]
struct Completions(Arc<Mutex<HashMap<String, u32>>>);

impl Completions {
    fn add(&self, ctx: &TaskContext) {
        *self
            .0
            .lock()
            .unwrap()
            .entry(ctx.id().id().to_owned())
            .or_default() += 1;
    }

    fn of(&self, id: &TaskId) -> u32 {
        self.0.lock().unwrap().get(id.id()).copied().unwrap_or(0)
    }
}

/// How long `long_job` takes on this worker.
struct JobLength(Duration);

/// Opened by the test to let `short_job` finish.
struct Gate(watch::Sender<bool>);

/// Runs for the worker's [`JobLength`], then counts its completion.
#[task(name = "long_job", queue = "drain")]
async fn long_job(ctx: TaskContext) -> Result<(), TaskError> {
    tokio::time::sleep(ctx.state::<JobLength>()?.0).await;
    ctx.state::<Completions>()?.add(&ctx);
    Ok(())
}

/// Waits until the [`Gate`] opens, then counts its completion.
#[task(name = "short_job", queue = "drain")]
async fn short_job(ctx: TaskContext) -> Result<(), TaskError> {
    let mut open = ctx.state::<Gate>()?.0.subscribe();
    let _ = open.wait_for(|o| *o).await;
    ctx.state::<Completions>()?.add(&ctx);
    Ok(())
}

async fn client(url: &str, ns: &str) -> Client {
    Client::with_config(ClientConfig::new(url).namespace(ns))
        .await
        .unwrap()
}

async fn recorder(url: &str, list: &str) -> Recorder {
    Recorder {
        conn: scheduler::redis::Client::open(url)
            .unwrap()
            .get_connection_manager()
            .await
            .unwrap(),
        list: list.to_owned(),
    }
}

/// Statuses of `ids`, in order.
async fn statuses(client: &Client, ids: &[TaskId]) -> Vec<TaskInfo> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(client.status(id).await.unwrap());
    }
    out
}

/// Polls the statuses of `ids` every 20 ms until `cond` holds for them; panics after `timeout`.
async fn wait_statuses(
    client: &Client,
    ids: &[TaskId],
    what: &str,
    timeout: Duration,
    cond: impl Fn(&[TaskInfo]) -> bool,
) -> Vec<TaskInfo> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let infos = statuses(client, ids).await;
        if cond(&infos) {
            return infos;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}: {infos:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count(infos: &[TaskInfo], state: TaskState) -> usize {
    infos.iter().filter(|i| i.state == state).count()
}

/// Whether `id` is in its partition's `ready` and `active` sorted sets.
async fn membership(client: &Client, id: &TaskId) -> (bool, bool) {
    let shards = client.shards(id.queue()).await.unwrap();
    let p = client.store().partition(id.queue(), id.shard(shards));
    let mut conn = client.store().conn();
    let ready: Option<f64> = conn.zscore(p.keys.ready(), id.id()).await.unwrap();
    let active: Option<f64> = conn.zscore(p.keys.active(), id.id()).await.unwrap();
    (ready.is_some(), active.is_some())
}

/// Starts `test_worker` (`tools/chaos`) on `queue` with these extra flags.
fn spawn_test_worker(
    url: &str,
    ns: &str,
    queue: &str,
    extra: &[&str],
    stdout: Stdio,
) -> ChildGuard {
    let bin = tool_bin("test_worker");
    let child = Command::new(bin)
        .args(["--redis-url", url, "--namespace", ns, "--queue", queue])
        .args(extra)
        .env("RUST_LOG", "error")
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the test worker");
    ChildGuard(child)
}

/// A worker process killed with SIGKILL while running three 2-second tasks (two more wait behind
/// them, concurrency 3): once the 1 s leases expire, another worker reaps and runs everything.
/// The interrupted tasks complete on attempt 2 (the lost run counted), the waiting ones on
/// attempt 1, each task completes exactly once and the killed runs never completed. A run lost
/// with its worker uses up no retry (issue 9): an interrupted task with `max_retries` 0 runs
/// again too, and completes on attempt 2 with one lost lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_tasks_run_again_after_their_lease() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (ns, queue, list) = ("crash", "crash", "crash:record");
    let client = client(&url, ns).await;
    let mut child = spawn_test_worker(
        &url,
        ns,
        queue,
        &[
            "--concurrency",
            "3",
            // No prefetch: every task this worker claims is one it runs.
            "--prefetch-multiplier",
            "0",
            "--lease-ms",
            "1000",
            "--lock-ttl-ms",
            "1000",
            "--record-list",
            list,
        ],
        Stdio::null(),
    );

    // No retries for handler failures. Enqueued and running first, so that exactly two of the
    // four others can run beside it (ready order holds within a partition only).
    let fragile = sleep_then_record::new(5_000, "fragile".into())
        .queue(queue)
        .max_retries(0)
        .send(&client)
        .await
        .unwrap();
    wait_statuses(
        &client,
        std::slice::from_ref(&fragile),
        "the worker process runs the fragile task",
        Duration::from_secs(60),
        |i| i[0].state == TaskState::Running,
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            sleep_then_record::new(2_000, format!("t{i}"))
                .queue(queue)
                .send(&client)
                .await
                .unwrap(),
        );
    }
    let infos = wait_statuses(
        &client,
        &ids,
        "the worker process runs two tasks besides the fragile one",
        Duration::from_secs(30),
        |i| count(i, TaskState::Running) == 2,
    )
    .await;
    assert_eq!(
        client.status(&fragile).await.unwrap().state,
        TaskState::Running
    );
    child.signal(9);
    assert!(
        child.wait_timeout(Duration::from_secs(10)).is_some(),
        "SIGKILL ends the worker process"
    );
    let was_running: Vec<bool> = infos
        .iter()
        .map(|i| i.state == TaskState::Running)
        .collect();
    // Killed mid-task: the record still says running, under the dead worker's lease.
    let after_kill = statuses(&client, &ids).await;
    for (info, running) in after_kill.iter().zip(&was_running) {
        if *running {
            assert_eq!(info.state, TaskState::Running, "{info:?}");
            assert_eq!(info.attempts, 1);
        }
    }

    let w = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace(ns)
            .queues([queue])
            .register(sleep_then_record)
            .state(recorder(&url, list).await)
            .concurrency(4)
            .lease(Duration::from_secs(1))
            .max_lost_leases(1)
            .lock_ttl(Duration::from_secs(1))
            .sweep_interval(Duration::from_millis(500)),
    )
    .await;
    let infos = wait_statuses(
        &client,
        &ids,
        "every task succeeded",
        Duration::from_secs(30),
        |i| count(i, TaskState::Succeeded) == i.len(),
    )
    .await;
    let info = wait_statuses(
        &client,
        std::slice::from_ref(&fragile),
        "the fragile task finished",
        Duration::from_secs(30),
        |i| i[0].state.is_finished(),
    )
    .await
    .remove(0);
    let report = w.stop().await;
    assert_eq!(
        (info.state, info.attempts, info.lost),
        (TaskState::Succeeded, 2, 1),
        "{info:?}"
    );
    let err = info.last_error.unwrap_or_default();
    assert!(err.contains("lease expired"), "{err}");

    let mut conn = client.store().conn();
    let mut records: Vec<String> = conn.lrange(list, 0, -1).await.unwrap();
    records.sort();
    let mut expected = Vec::new();
    for (i, (info, running)) in infos.iter().zip(&was_running).enumerate() {
        let attempt = if *running { 2 } else { 1 };
        assert_eq!(info.attempts, attempt, "t{i}: {info:?}");
        expected.push(format!("t{i}:{attempt}"));
    }
    expected.push("fragile:2".to_owned());
    expected.sort();
    assert_eq!(
        records, expected,
        "each task completed once, the killed runs never"
    );
    assert_eq!(report.reaped, 3, "three requeued: {report:?}");
    assert_eq!(report.succeeded, 5);
    assert_eq!(
        report.stale, 0,
        "leases of running tasks were renewed: {report:?}"
    );
}

/// A worker process frozen with SIGSTOP mid-task loses its lease: another worker reaps the task
/// and runs it to success on attempt 2. When the frozen process resumes and finishes its stale
/// run, its outcome is rejected by the fencing token (reported as stale) and the task's record
/// is left as the lease holder wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_cannot_overwrite_a_reclaimed_task() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (ns, queue, list) = ("pause", "pause", "pause:record");
    let client = client(&url, ns).await;
    let mut child = spawn_test_worker(
        &url,
        ns,
        queue,
        &[
            "--concurrency",
            "1",
            "--lease-ms",
            "1000",
            "--lock-ttl-ms",
            "1000",
            "--shutdown-timeout-ms",
            "5000",
            "--record-list",
            list,
        ],
        Stdio::piped(),
    );
    let id = sleep_then_record::new(1_500, "t".into())
        .queue(queue)
        .send(&client)
        .await
        .unwrap();
    let ids = [id.clone()];
    wait_statuses(
        &client,
        &ids,
        "the worker process runs the task",
        Duration::from_secs(60),
        |i| i[0].state == TaskState::Running,
    )
    .await;
    child.signal(19);

    let w = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace(ns)
            .queues([queue])
            .register(sleep_then_record)
            .state(recorder(&url, list).await)
            .lease(Duration::from_secs(1))
            .lock_ttl(Duration::from_secs(1))
            .sweep_interval(Duration::from_millis(500)),
    )
    .await;
    let info = wait_statuses(
        &client,
        &ids,
        "another worker ran the task",
        Duration::from_secs(30),
        |i| i[0].state.is_finished(),
    )
    .await
    .remove(0);
    assert_eq!(
        (info.state, info.attempts),
        (TaskState::Succeeded, 2),
        "{info:?}"
    );

    // Resume the frozen process: its run finishes and tries to ack with the old token.
    child.signal(18);
    let mut conn = client.store().conn();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let records: Vec<String> = conn.lrange(list, 0, -1).await.unwrap();
        if records.len() == 2 {
            assert_eq!(
                records,
                ["t:2", "t:1"],
                "the stale run finished after the new one"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{records:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.signal(15);
    let status = child
        .wait_timeout(Duration::from_secs(20))
        .expect("the worker process exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.lines().any(|l| l == "stale=1"), "{out}");
    assert!(out.lines().any(|l| l == "succeeded=0"), "{out}");

    let after = client.status(&id).await.unwrap();
    assert_eq!(after, info, "the stale outcome changed nothing");
    let report = w.stop().await;
    assert_eq!((report.succeeded, report.reaped, report.stale), (1, 1, 0));
}

/// In-process graceful shutdown with a 300 ms timeout while three 5-second tasks and two gated
/// tasks run: the gated tasks, let go right after the shutdown starts, finish within the timeout
/// and are acknowledged; the three long ones are handed back at once (not after their 30 s lease)
/// to `ready` with the attempt uncounted; a new worker runs them to success, and nothing runs to
/// completion twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_hands_back_unfinished_tasks() {
    let redis = RedisServer::start();
    let url = redis.url();
    let client = client(&url, "drain").await;
    let done = Completions::default();
    let (gate_tx, _) = watch::channel(false);
    let gate = Gate(gate_tx);
    let builder = |length: Duration| {
        Worker::builder()
            .redis_url(&url)
            .namespace("drain")
            .queues(["drain"])
            .register(long_job)
            .register(short_job)
            .state(done.clone())
            .state(JobLength(length))
            .concurrency(8)
            .lease(Duration::from_secs(30))
            .lock_ttl(Duration::from_secs(1))
            .shutdown_timeout(Duration::from_millis(300))
    };
    let gate_open = gate.0.clone();
    let first = Running::start(builder(Duration::from_secs(5)).state(gate)).await;

    let mut long = Vec::new();
    for _ in 0..3 {
        long.push(long_job::new().send(&client).await.unwrap());
    }
    let mut short = Vec::new();
    for _ in 0..2 {
        short.push(short_job::new().send(&client).await.unwrap());
    }
    let all: Vec<TaskId> = long.iter().chain(&short).cloned().collect();
    wait_statuses(
        &client,
        &all,
        "all five run",
        Duration::from_secs(30),
        |i| count(i, TaskState::Running) == 5,
    )
    .await;

    let started = tokio::time::Instant::now();
    first.shutdown();
    gate_open.send_replace(true);
    let report = first.join_report().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?}: it must not wait for the long tasks or their leases"
    );
    assert_eq!(report.released, 3, "{report:?}");
    assert_eq!(report.succeeded, 2, "{report:?}");

    for id in &long {
        let info = client.status(id).await.unwrap();
        assert_eq!(info.state, TaskState::Ready, "{info:?}");
        assert_eq!(info.attempts, 0, "a handed-back run is not counted");
        assert_eq!(info.worker, None);
        assert_eq!(membership(&client, id).await, (true, false), "{id}");
        assert_eq!(done.of(id), 0);
    }
    for id in &short {
        let info = client.status(id).await.unwrap();
        assert_eq!((info.state, info.attempts), (TaskState::Succeeded, 1));
        assert_eq!(membership(&client, id).await, (false, false), "{id}");
    }

    let (gate_tx, _) = watch::channel(true);
    let second = Running::start(builder(Duration::ZERO).state(Gate(gate_tx))).await;
    let infos = wait_statuses(
        &client,
        &long,
        "the handed-back tasks succeed on a new worker",
        Duration::from_secs(30),
        |i| count(i, TaskState::Succeeded) == i.len(),
    )
    .await;
    for info in &infos {
        assert_eq!(info.attempts, 1, "{info:?}");
    }
    let report = second.stop().await;
    assert_eq!(
        report.succeeded, 3,
        "the acknowledged tasks did not run again"
    );
    for id in &all {
        assert_eq!(done.of(id), 1, "{id} completed exactly once");
    }
}

/// SIGTERM to a worker process running two 3-second tasks with a 300 ms shutdown timeout: it
/// exits 0 promptly, reports both tasks released, and they are back in `ready` at once with
/// attempts 0; another worker then runs them to success on their first counted attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_back_running_tasks() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (ns, queue, list) = ("term", "term", "term:record");
    let client = client(&url, ns).await;
    let mut child = spawn_test_worker(
        &url,
        ns,
        queue,
        &[
            "--concurrency",
            "4",
            "--lease-ms",
            "30000",
            "--lock-ttl-ms",
            "1000",
            "--shutdown-timeout-ms",
            "300",
            "--record-list",
            list,
        ],
        Stdio::piped(),
    );
    let mut ids = Vec::new();
    for i in 0..2 {
        ids.push(
            sleep_then_record::new(3_000, format!("t{i}"))
                .queue(queue)
                .send(&client)
                .await
                .unwrap(),
        );
    }
    wait_statuses(
        &client,
        &ids,
        "the worker process runs both tasks",
        Duration::from_secs(60),
        |i| count(i, TaskState::Running) == 2,
    )
    .await;

    child.signal(15);
    let status = child
        .wait_timeout(Duration::from_secs(20))
        .expect("the worker process exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.lines().any(|l| l == "released=2"), "{out}");
    assert!(out.lines().any(|l| l == "succeeded=0"), "{out}");

    for id in &ids {
        let info = client.status(id).await.unwrap();
        assert_eq!(
            (info.state, info.attempts),
            (TaskState::Ready, 0),
            "{info:?}"
        );
        assert_eq!(membership(&client, id).await, (true, false), "{id}");
    }
    let mut conn = client.store().conn();
    let records: Vec<String> = conn.lrange(list, 0, -1).await.unwrap();
    assert!(
        records.is_empty(),
        "nothing completed on the stopped worker: {records:?}"
    );

    let w = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace(ns)
            .queues([queue])
            .register(sleep_then_record)
            .state(recorder(&url, list).await)
            .lock_ttl(Duration::from_secs(1)),
    )
    .await;
    let infos = wait_statuses(
        &client,
        &ids,
        "the handed-back tasks succeed",
        Duration::from_secs(30),
        |i| count(i, TaskState::Succeeded) == i.len(),
    )
    .await;
    assert!(infos.iter().all(|i| i.attempts == 1), "{infos:?}");
    w.stop().await;
    let mut records: Vec<String> = conn.lrange(list, 0, -1).await.unwrap();
    records.sort();
    assert_eq!(records, ["t0:1", "t1:1"]);
}
