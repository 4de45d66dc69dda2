//! Logical export and import (`scheduler::backup`) against real throwaway Redis servers:
//! export, `FLUSHALL`, import, and every task runs exactly once at its due time by the Redis
//! clock; dead tasks stay dead with their errors; importing twice creates nothing; 16 shards
//! into 4; onto a 3-master Redis Cluster; bad files refused with nothing written; a workflow
//! not finished comes back and finishes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scheduler::backup::format::FORMAT_VERSION;
use scheduler::backup::{
    Exporter, FormatError, Frame, FrameReader, ImportReport, Importer, TaskRecord,
};
use scheduler::workflow::{chain, Partial};
use scheduler::{
    task, Client, ClientConfig, Error, Inspector, Schedule, Schedules, Spec, TaskCall, TaskContext,
    TaskError, TaskId, TaskRequest, TaskState, Worker, WorkerBuilder,
};
use scheduler_testkit::cluster::RedisCluster;
use scheduler_testkit::oracle::wait_for;
use scheduler_testkit::{RedisServer, Running};

const Q: &str = "bk";

/// One run: when it was claimed by the Redis clock (ms), and which attempt it was.
type Run = (i64, u32);

/// Per task id, every run.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<HashMap<String, Vec<Run>>>>);

impl Runs {
    fn total(&self) -> usize {
        self.0.lock().unwrap().values().map(Vec::len).sum()
    }
}

/// Records its run.
#[task(name = "rec", queue = "bk")]
async fn rec(ctx: TaskContext, _n: u64, _text: String) -> Result<(), TaskError> {
    let runs = ctx.state::<Runs>()?;
    runs.0
        .lock()
        .unwrap()
        .entry(ctx.id().id().to_owned())
        .or_default()
        .push((ctx.claimed_at_ms(), ctx.attempt()));
    Ok(())
}

/// Fails for good.
#[task(name = "doomed", queue = "bk")]
async fn doomed(_ctx: TaskContext, n: u64) -> Result<(), TaskError> {
    Err(TaskError::fail(format!("doomed #{n}")))
}

/// Adds (workflow steps).
#[task(name = "add", queue = "bk")]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

/// Doubles (workflow steps).
#[task(name = "double", queue = "bk")]
async fn double(x: i64) -> Result<i64, TaskError> {
    Ok(x * 2)
}

fn worker(url: &str, ns: &str, runs: &Runs) -> WorkerBuilder {
    Worker::builder()
        .redis_url(url)
        .namespace(ns)
        .register(rec)
        .register(doomed)
        .register(add)
        .register(double)
        .queues([Q])
        .default_shards(4)
        .state(runs.clone())
}

async fn client(url: &str, ns: &str, shards: u16) -> Client {
    Client::with_config(
        ClientConfig::new(url)
            .namespace(ns)
            .queue_shards(Q, shards)
            .retry_attempts(20),
    )
    .await
    .unwrap()
}

/// Reads the task records of an export file.
fn records(file: &[u8]) -> Vec<TaskRecord> {
    let (mut r, _) = FrameReader::new(file).unwrap();
    let mut out = Vec::new();
    while let Some(f) = r.next_record().unwrap() {
        if let Frame::Task(t) = f {
            out.push(t);
        }
    }
    out
}

async fn export(c: &Client) -> Vec<u8> {
    let mut file = Vec::new();
    Exporter::new(c)
        .batch(7)
        .export(&mut file, |_| {})
        .await
        .unwrap();
    file
}

async fn import(c: &Client, file: &[u8]) -> ImportReport {
    Importer::verify(file).unwrap();
    Importer::new(c).import(file, |_| {}).await.unwrap()
}

/// Enqueues `n` tasks with ids `<prefix><i>`, arguments `(i, "text i")`; every third one due
/// `delay` from now, the others at once.
async fn enqueue(c: &Client, prefix: &str, n: u64, delay: Duration) {
    let reqs: Vec<TaskRequest> = (0..n)
        .map(|i| {
            let r = TaskRequest::new("rec", Q, &(i, format!("text {i}")))
                .unwrap()
                .id(format!("{prefix}{i}"))
                .priority((i % 10) as u8);
            if i % 3 == 0 {
                r.countdown(delay)
            } else {
                r
            }
        })
        .collect();
    c.enqueue_bulk(reqs).await.unwrap();
}

/// Scheduled (delayed), ready, running and dead tasks and a schedule survive export, `FLUSHALL`
/// and import: every live task runs exactly once, none before its due time by the Redis clock
/// (the clock the worker claims by); the delayed ones due after the import were scheduled, not
/// ready; dead ones stay dead with their error and attempts; a second import creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_flushall_import_runs_each_once_on_time() {
    let redis = RedisServer::start();
    let (url, ns) = (redis.url(), "bk1");
    let c = client(&url, ns, 4).await;
    // Dead tasks: a worker runs them once, they fail for good.
    let runs = Runs::default();
    let w = Running::start(worker(&url, ns, &runs)).await;
    for i in 0..5u64 {
        TaskCall::<doomed>::new((i,))
            .id(format!("dead{i}"))
            .max_retries(0)
            .send(&c)
            .await
            .unwrap();
    }
    let inspector = Inspector::new(&c);
    for _ in 0..500 {
        if inspector.queue(Q).await.unwrap().total.dead == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.stop().await;
    assert_eq!(inspector.queue(Q).await.unwrap().total.dead, 5);
    // A task retrying: its first run failed, its second is due in 4 s (claimed and failed by
    // hand; priority 9 so that its shard's claim takes it first).
    c.enqueue_request(
        TaskRequest::new("rec", Q, &(1u64, "again".to_owned()))
            .unwrap()
            .id("retry1")
            .priority(9),
    )
    .await
    .unwrap();
    let p = c.store().partition(Q, TaskId::new(Q, "retry1").shard(4));
    let claim = c.store().claim(&p, 1, 60_000, "test:1:0#0").await.unwrap();
    assert_eq!(claim.tasks[0].id, "retry1");
    c.store()
        .retry(
            &p,
            &[("retry1", claim.tasks[0].token, "flaky once", Some(4_000))],
        )
        .await
        .unwrap();
    // 60 tasks, 20 due in 4 s, 40 ready; 3 of the ready ones claimed (running) by hand.
    enqueue(&c, "t", 60, Duration::from_secs(4)).await;
    let mut running = 0;
    for shard in 0..4 {
        let p = c.store().partition(Q, shard);
        running += c
            .store()
            .claim(&p, 1, 600_000, "test:1:0#1")
            .await
            .unwrap()
            .tasks
            .len();
    }
    assert!(running > 0);
    Schedules::new(&c)
        .add(
            &Schedule::every("hourly", Duration::from_secs(3600))
                .unwrap()
                .task(TaskCall::<rec>::new((7, "s".into())))
                .unwrap(),
        )
        .await
        .unwrap();

    let ids = (0..5)
        .map(|i| format!("dead{i}"))
        .chain((0..60).map(|i| format!("t{i}")))
        .chain(["retry1".to_owned()]);
    let mut statuses = BTreeMap::new();
    for id in ids {
        statuses.insert(id.clone(), c.status(&TaskId::new(Q, id)).await.unwrap());
    }
    let file = export(&c).await;
    let recs = records(&file);
    assert_eq!(recs.len(), 66, "every task once");
    let by_state = |s: &str| recs.iter().filter(|r| r.state == s).count();
    assert_eq!(by_state("dead"), 5);
    assert_eq!(by_state("scheduled"), 21);
    assert_eq!(by_state("ready"), 40, "running ones are exported as ready");
    for r in &recs {
        let s = &statuses[&r.id];
        assert_eq!(r.args, s.args, "{}: args byte for byte", r.id);
        assert_eq!((r.run_at_ms, r.priority), (s.run_at_ms, s.priority));
    }

    redis.cmd(&["FLUSHALL"]).unwrap();
    let c = client(&url, ns, 4).await;
    let done = import(&c, &file).await;
    assert_eq!((done.restored, done.existed, done.schedules), (66, 0, 1));
    let now = Inspector::new(&c).server_time_ms().await.unwrap();
    for r in &recs {
        let info = c.status(&TaskId::new(Q, &r.id)).await.unwrap();
        let want = match r.state.as_str() {
            "dead" => TaskState::Dead,
            _ if r.run_at_ms > now => TaskState::Scheduled,
            _ => TaskState::Ready,
        };
        assert_eq!(info.state, want, "{}", r.id);
        assert_eq!(info.args, r.args);
        let old: &scheduler::TaskInfo = &statuses[&r.id];
        // A running task is exported without its current run, as a release counts it.
        let ran = u32::from(old.state == TaskState::Running);
        assert_eq!(
            (
                info.attempts + ran,
                &info.last_error,
                info.max_retries,
                info.timeout_ms
            ),
            (
                old.attempts,
                &old.last_error,
                old.max_retries,
                old.timeout_ms
            ),
            "{}: history kept",
            r.id
        );
        if r.state == "dead" {
            assert_eq!(info.last_error, old.last_error);
            assert!(info.last_error.as_deref().unwrap().starts_with("doomed #"));
            assert_eq!(info.attempts, old.attempts);
            assert_eq!(info.finished_at_ms, old.finished_at_ms);
        }
    }
    let again = import(&c, &file).await;
    assert_eq!((again.restored, again.existed), (0, 66));
    assert_eq!(again.schedules_existed, 1);
    let counts = Inspector::new(&c).queue(Q).await.unwrap().total;
    assert_eq!(
        counts.scheduled + counts.ready + counts.dead,
        66,
        "no duplicates"
    );
    let sch = Schedules::new(&c).list().await.unwrap();
    assert_eq!(sch.len(), 1);
    assert_eq!(sch[0].spec, Spec::Every(Duration::from_secs(3600)));
    assert_eq!(sch[0].args, scheduler::encode_args(&(7u64, "s")).unwrap());

    // Run them: each of the 61 exactly once, never claimed before its due time nor long after
    // it (the delayed ones on time: within 3 s, a loose bound for a loaded machine); the
    // retrying one runs as its second attempt.
    let runs = Runs::default();
    let w = Running::start(worker(&url, ns, &runs)).await;
    let r2 = runs.clone();
    wait_for("61 runs", Duration::from_secs(30), move || r2.total() >= 61).await;
    w.stop().await;
    let got = runs.0.lock().unwrap().clone();
    for r in recs.iter().filter(|r| r.state != "dead") {
        let claimed = &got[&r.id];
        assert_eq!(claimed.len(), 1, "{} ran once", r.id);
        assert!(claimed[0].0 >= r.run_at_ms, "{} ran early", r.id);
        if r.run_at_ms > now {
            let late = claimed[0].0 - r.run_at_ms;
            assert!(late < 3_000, "{} ran {late} ms late", r.id);
        }
    }
    assert_eq!(got["retry1"][0].1, 2, "the retry budget carried over");
    assert!(got.keys().all(|id| !id.starts_with("dead")));
    for i in 0..5 {
        let info = c.status(&TaskId::new(Q, format!("dead{i}"))).await.unwrap();
        assert_eq!(info.state, TaskState::Dead);
    }
}

/// A file from 16 shards goes into a namespace whose queue has 4: every task lands in the shard
/// its id hashes to under 4, with its arguments byte for byte; the queue keeps 4 shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_shards_into_four() {
    let redis = RedisServer::start();
    let src = client(&redis.url(), "src16", 16).await;
    enqueue(&src, "x", 300, Duration::from_secs(3600)).await;
    let file = export(&src).await;
    let dst = client(&redis.url(), "dst4", 4).await;
    assert_eq!(dst.shards(Q).await.unwrap(), 4);
    let done = import(&dst, &file).await;
    assert_eq!(done.restored, 300);
    let counts = Inspector::new(&dst).queue(Q).await.unwrap();
    assert_eq!(counts.per_shard.len(), 4);
    assert_eq!(counts.total.scheduled, 100);
    assert_eq!(counts.total.ready, 200);
    assert!(counts.per_shard.iter().all(|s| s.scheduled + s.ready > 0));
    for i in 0..300 {
        let id = TaskId::new(Q, format!("x{i}"));
        let (a, b) = (
            src.status(&id).await.unwrap(),
            dst.status(&id).await.unwrap(),
        );
        assert_eq!(a.args, b.args);
        assert_eq!((a.state, a.run_at_ms), (b.state, b.run_at_ms));
        assert_eq!(
            Inspector::new(&dst).task(&id).await.unwrap().shard,
            id.shard(4)
        );
    }
    // A new queue takes the shard count the importer is told, else the source's.
    let other = client(&redis.url(), "dst-new", 16).await;
    Importer::new(&other)
        .shards(Q, 8)
        .import(&file[..], |_| {})
        .await
        .unwrap();
    assert_eq!(Inspector::new(&other).shards(Q).await.unwrap(), 8);
}

/// Cluster tests start 6 servers each: one at a time per test binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A file from a single Redis goes onto a 3-master Cluster (partitions spread over the
/// masters); importing twice creates nothing; exporting from the cluster gives the same tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onto_a_cluster_and_back() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let src = client(&redis.url(), "single", 16).await;
    enqueue(&src, "c", 200, Duration::from_secs(3600)).await;
    let file = export(&src).await;
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let dst = client(&cluster.url(), "clu", 16).await;
    assert_eq!(import(&dst, &file).await.restored, 200);
    assert_eq!(import(&dst, &file).await.existed, 200);
    let counts = Inspector::new(&dst).queue(Q).await.unwrap().total;
    assert_eq!((counts.scheduled, counts.ready), (67, 133));
    let back = export(&dst).await;
    let mut a = records(&file);
    let mut b = records(&back);
    a.sort_by(|x, y| x.id.cmp(&y.id));
    b.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(a, b, "the cluster holds what the file held");
}

/// Bad files: truncated, corrupted, a newer version. Each is refused by `verify`; `import`
/// stops with `ImportStopped`, says how many it imported (none here: the bad spot comes before
/// the first batch is written), and nothing is in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_refused_and_nothing_is_half_imported() {
    let redis = RedisServer::start();
    let src = client(&redis.url(), "good", 4).await;
    enqueue(&src, "b", 30, Duration::from_secs(3600)).await;
    let file = export(&src).await;
    let mut corrupted = file.clone();
    let mid = file.len() / 2;
    corrupted[mid] ^= 0x01;
    let mut newer = file.clone();
    newer[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_be_bytes());
    let cases: [(&str, &[u8]); 3] = [
        ("truncated", &file[..file.len() - 3]),
        ("corrupted", &corrupted),
        ("newer", &newer),
    ];
    for (what, bytes) in cases {
        let e = Importer::verify(bytes).unwrap_err();
        let Error::BadExportFile(f) = &e else {
            panic!("{what}: {e:?}")
        };
        match what {
            "truncated" => assert!(matches!(f, FormatError::Truncated { .. })),
            "newer" => assert!(matches!(
                f,
                FormatError::NewerVersion { found, supported }
                    if *found == FORMAT_VERSION + 1 && *supported == FORMAT_VERSION
            )),
            _ => assert!(matches!(
                f,
                FormatError::Checksum { .. } | FormatError::Corrupt { .. }
            )),
        }
        let dst = client(&redis.url(), &format!("bad-{what}"), 4).await;
        let e = Importer::new(&dst).import(bytes, |_| {}).await.unwrap_err();
        let Error::ImportStopped { done, source } = e else {
            panic!("{what}: {e:?}")
        };
        assert!(
            matches!(*source, Error::BadExportFile(_)),
            "{what}: {source:?}"
        );
        assert_eq!(done, ImportReport::default(), "{what}");
        if what != "newer" {
            let c = Inspector::new(&dst).queue(Q).await.unwrap().total;
            assert_eq!(c.scheduled + c.ready, 0, "{what}: nothing written");
        }
    }
}

/// A file damaged past the first batch the importer writes (7,000 tasks, the trailer cut off):
/// `import` stops with `ImportStopped`, whose `done` counts exactly the tasks now in Redis
/// (nothing half-imported without saying so); importing the good file then restores the rest
/// and finds the others there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_stopped_part_way_says_how_many() {
    let redis = RedisServer::start();
    let src = client(&redis.url(), "part-src", 4).await;
    const N: u64 = 7000;
    enqueue(&src, "p", N, Duration::from_secs(3600)).await;
    let file = export(&src).await;
    let dst = client(&redis.url(), "part-dst", 4).await;
    let in_redis = || async {
        let c = Inspector::new(&dst).queue(Q).await.unwrap().total;
        c.scheduled + c.ready
    };
    let e = Importer::new(&dst)
        .import(&file[..file.len() - 3], |_| {})
        .await
        .unwrap_err();
    let Error::ImportStopped { done, source } = e else {
        panic!("{e:?}")
    };
    assert!(
        matches!(*source, Error::BadExportFile(FormatError::Truncated { .. })),
        "{source:?}"
    );
    assert!(
        done.restored > 0 && done.restored < N,
        "part of the file was written: {done:?}"
    );
    assert_eq!(done.existed, 0);
    assert_eq!(
        in_redis().await,
        done.restored,
        "done counts what is in Redis"
    );
    let again = import(&dst, &file).await;
    assert_eq!(
        (again.restored, again.existed),
        (N - done.restored, done.restored)
    );
    assert_eq!(in_redis().await, N);
}

/// A workflow not finished (a chain: first step ready, the others held) survives export,
/// `FLUSHALL` and import: its record and index entry come back with its tasks, a second import
/// creates nothing, and a worker then runs it to the right result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_survives_export_and_import() {
    let redis = RedisServer::start();
    let (url, ns) = (redis.url(), "bkwf");
    let c = client(&url, ns, 4).await;
    let wf = chain(add::new(1, 2))
        .then_with(Partial::<add, _>::new((10,)))
        .then_with(Partial::<double, _>::new(()))
        .build()
        .unwrap()
        .id("w1");
    let h = c.start_workflow(wf).await.unwrap();
    let file = export(&c).await;
    assert_eq!(Importer::verify(&file[..]).unwrap().workflows, 1);
    redis.cmd(&["FLUSHALL"]).unwrap();
    let c = client(&url, ns, 4).await;
    let done = import(&c, &file).await;
    assert_eq!((done.restored, done.workflows), (3, 1));
    let again = import(&c, &file).await;
    assert_eq!((again.existed, again.workflows_existed), (3, 1));
    assert_eq!(c.workflow("w1").await.unwrap().state, "running");
    let runs = Runs::default();
    let w = Running::start(worker(&url, ns, &runs)).await;
    let out: i64 = c.wait_workflow(&h, Duration::from_secs(30)).await.unwrap();
    w.stop().await;
    assert_eq!(out, 26, "(1 + 2 + 10) * 2");
    assert_eq!(c.workflow("w1").await.unwrap().state, "succeeded");
}

/// `export_page.lua` continues after the previous page's last member even when that member has
/// left the set: among members of equal score (ordered by id), the next page starts at the first
/// id after the cursor's, so no member that stayed is skipped or read twice.
#[tokio::test]
async fn pages_continue_after_a_member_that_left() {
    let redis = RedisServer::start();
    let c = client(&redis.url(), "pages", 1).await;
    let due = std::time::SystemTime::now() + Duration::from_secs(3600);
    let reqs: Vec<TaskRequest> = (0..10)
        .map(|i| {
            TaskRequest::new("rec", Q, &(i as u64, String::new()))
                .unwrap()
                .id(format!("a{i}"))
                .eta(due)
        })
        .collect();
    c.enqueue_bulk(reqs).await.unwrap();
    let p = c.store().partition(Q, 0);
    let set = p.keys.scheduled();
    let ids = |page: &[scheduler::broker::ExportedTask]| {
        page.iter().map(|t| t.id.clone()).collect::<Vec<_>>()
    };
    let first = c.store().export_page(&p, &set, None, 3).await.unwrap();
    assert_eq!(ids(&first), ["a0", "a1", "a2"]);
    assert!(first.iter().all(|t| t.fields.contains_key("args")));
    let last = first.last().unwrap();
    // The cursor member and the one after it leave the set.
    let inspector = Inspector::new(&c);
    inspector.delete(&TaskId::new(Q, "a2")).await.unwrap();
    inspector.delete(&TaskId::new(Q, "a3")).await.unwrap();
    let cursor = Some((last.score.as_str(), last.id.as_str()));
    let second = c.store().export_page(&p, &set, cursor, 3).await.unwrap();
    assert_eq!(ids(&second), ["a4", "a5", "a6"]);
    // A cursor id before every remaining member, and one after all of them.
    let third = c
        .store()
        .export_page(&p, &set, Some((last.score.as_str(), "a")), 2)
        .await
        .unwrap();
    assert_eq!(ids(&third), ["a0", "a1"]);
    let end = c
        .store()
        .export_page(&p, &set, Some((last.score.as_str(), "b")), 5)
        .await
        .unwrap();
    assert!(end.is_empty());
}
