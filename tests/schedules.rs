//! Periodic schedules against real throwaway Redis servers and in-process workers: every tick
//! fires exactly once across several workers, misfire and overlap policies, declarations that
//! change nothing, run-time management, bad input.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scheduler::redis::AsyncCommands;
use scheduler::{
    task, Client, ClientConfig, Declared, Error, Misfire, Overlap, Schedule, Schedules, TaskCall,
    TaskContext, TaskError, TaskRequest, Worker, WorkerBuilder,
};
use scheduler_testkit::{RedisServer, Running};

/// Runs per task id, with the start and end of each run (ms since the test's start).
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<HashMap<String, Vec<Span>>>>);

/// Start and end of one run, ms since the test's start.
type Span = (u128, u128);

impl Runs {
    fn ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.0.lock().unwrap().keys().cloned().collect();
        v.sort();
        v
    }
    fn twice(&self) -> usize {
        self.0
            .lock()
            .unwrap()
            .values()
            .filter(|r| r.len() > 1)
            .count()
    }
    fn spans(&self) -> Vec<Span> {
        let mut v: Vec<_> = self.0.lock().unwrap().values().flatten().copied().collect();
        v.sort();
        v
    }
}

/// A clock shared by the handlers of one test.
#[derive(Clone)]
struct Epoch(std::time::Instant);

/// Records its run, takes `ms` milliseconds.
#[task(name = "beat", queue = "sch")]
async fn beat(ctx: TaskContext, ms: u64) -> Result<(), TaskError> {
    let runs = ctx.state::<Runs>()?;
    let epoch = ctx.state::<Epoch>()?;
    let start = epoch.0.elapsed().as_millis();
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let end = epoch.0.elapsed().as_millis();
    runs.0
        .lock()
        .unwrap()
        .entry(ctx.id().id().to_owned())
        .or_default()
        .push((start, end));
    Ok(())
}

fn builder(redis: &RedisServer, ns: &str, runs: &Runs, epoch: &Epoch) -> WorkerBuilder {
    Worker::builder()
        .redis_url(redis.url())
        .namespace(ns)
        .register(beat)
        .queues(["sch"])
        .default_shards(4)
        .result_ttl(Duration::ZERO)
        .state(runs.clone())
        .state(epoch.clone())
}

async fn client(redis: &RedisServer, ns: &str) -> Client {
    Client::with_config(
        ClientConfig::new(redis.url())
            .namespace(ns)
            .default_shards(4),
    )
    .await
    .unwrap()
}

/// The tick time in a tick task id `<name>@<ms>[~k]`.
fn tick_of(id: &str) -> i64 {
    let t = id.split('@').nth(1).unwrap();
    t.split('~').next().unwrap().parse().unwrap()
}

/// Four workers declare the same 1-second schedule (the first declaration creates it, the
/// others change nothing) with result TTL 0, for at least 20 ticks; one is stopped half-way.
/// Every tick between the first and the last run ran exactly once: 0 missed, 0 twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_tick_runs_exactly_once_on_four_workers() {
    let redis = RedisServer::start();
    let (runs, epoch) = (Runs::default(), Epoch(std::time::Instant::now()));
    let every = || {
        Schedule::every("each-second", Duration::from_secs(1))
            .unwrap()
            .task(TaskCall::<beat>::new((0,)))
            .unwrap()
    };
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(
            Running::start(
                builder(&redis, "x1", &runs, &epoch)
                    .schedule(every())
                    .schedule_poll(Duration::from_millis(200)),
            )
            .await,
        );
    }
    let schedules = Schedules::new(&client(&redis, "x1").await);
    assert_eq!(
        schedules.declare(&every()).await.unwrap(),
        Declared::Unchanged
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    workers.pop().unwrap().stop().await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    for w in workers {
        w.stop().await;
    }
    let ticks: Vec<i64> = runs.ids().iter().map(|id| tick_of(id)).collect();
    let (first, last) = (ticks[0], *ticks.last().unwrap());
    let span = ((last - first) / 1000 + 1) as usize;
    let missed = span - ticks.len();
    eprintln!(
        "ticks {span}, ran {}, missed {missed}, twice {}",
        ticks.len(),
        runs.twice()
    );
    assert!(ticks.len() >= 20, "{} ticks", ticks.len());
    assert_eq!(missed, 0, "{ticks:?}");
    assert_eq!(runs.twice(), 0);
    let info = schedules.get("each-second").await.unwrap();
    assert_eq!(info.origin, "code");
    // Ticks enqueued ahead and not run before the workers stopped are the difference.
    assert!(info.fired as usize >= ticks.len());
}

/// Misfire policies: schedules added with no worker running, their ticks passing for 3.5 s,
/// then one pass of the schedule component (what every worker runs each second) and a worker:
/// of the missed ticks, skip runs none, fire-once one, catch-up 2 two; the rest count as skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misfire_policies() {
    let redis = RedisServer::start();
    let (runs, epoch) = (Runs::default(), Epoch(std::time::Instant::now()));
    let c = client(&redis, "x2").await;
    let schedules = Schedules::new(&c);
    let call = || TaskCall::<beat>::new((0,));
    let policies = [
        ("skip", Misfire::Skip, 0),
        ("once", Misfire::FireOnce, 1),
        ("two", Misfire::CatchUp(2), 2),
    ];
    for (name, m, _) in policies {
        let s = Schedule::every(name, Duration::from_secs(1))
            .unwrap()
            .task(call())
            .unwrap()
            .misfire(m);
        assert_eq!(schedules.add(&s).await.unwrap(), Declared::Created);
    }
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    // Pass at least 100 ms after a second and 200 ms before the next, so that the ticks missed
    // at the pass are exactly those up to the second read here.
    let mut conn = c.store().conn();
    let last_missed = loop {
        let (secs, us): (i64, i64) = scheduler::redis::cmd("TIME")
            .query_async(&mut conn)
            .await
            .unwrap();
        if (100_000..800_000).contains(&us) {
            break secs * 1000;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut missed_total = HashMap::new();
    for (name, _, _) in policies {
        let next = schedules.get(name).await.unwrap().next_ms.unwrap();
        missed_total.insert(name, (last_missed - next) / 1000 + 1);
    }
    schedules.fire_due(Duration::from_secs(5)).await.unwrap();
    let w = Running::start(builder(&redis, "x2", &runs, &epoch)).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    w.stop().await;
    for (name, _, keep) in policies {
        let ran = runs
            .ids()
            .iter()
            .filter(|id| id.starts_with(&format!("{name}@")) && tick_of(id) <= last_missed)
            .count();
        let info = schedules.get(name).await.unwrap();
        let missed = missed_total[name];
        eprintln!(
            "{name}: missed {missed}, ran {ran}, skipped {}",
            info.skipped
        );
        assert!(missed >= 3, "{missed}");
        assert_eq!(ran as i64, keep, "{name}");
        assert_eq!(info.skipped as i64, missed - keep, "{name}");
    }
}

/// A schedule added a moment before its first tick, first read by a ticker after that tick
/// (a worker that declares it, then starts): the first tick is enqueued, due at once, not
/// dropped as a misfire (`FIRST_TICK_GRACE_MS`); every tick from the first to the last enqueued
/// is created once, none skipped. A first tick further in the past is a misfire
/// (`misfire_policies`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_tick_after_declaration_is_not_a_misfire() {
    let redis = RedisServer::start();
    let c = client(&redis, "x8").await;
    let schedules = Schedules::new(&c);
    let mut conn = c.store().conn();
    // Add it 100 to 300 ms before a second: its first tick.
    loop {
        let (_, us): (i64, i64) = scheduler::redis::cmd("TIME")
            .query_async(&mut conn)
            .await
            .unwrap();
        if (700_000..900_000).contains(&us) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = Schedule::every("early", Duration::from_secs(1))
        .unwrap()
        .task(TaskCall::<beat>::new((0,)))
        .unwrap();
    assert_eq!(schedules.add(&s).await.unwrap(), Declared::Created);
    let first = schedules.get("early").await.unwrap().next_ms.unwrap();
    // The first pass comes 500 to 700 ms after the first tick.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (secs, us): (i64, i64) = scheduler::redis::cmd("TIME")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(secs * 1000 + us / 1000 > first, "the first tick has passed");
    let report = schedules.fire_due(Duration::from_secs(5)).await.unwrap();
    let info = schedules.get("early").await.unwrap();
    let last = info.last_tick_ms.unwrap();
    assert!(report.created >= 1);
    assert_eq!(info.skipped, 0);
    assert_eq!(info.fired as i64, (last - first) / 1000 + 1);
    assert_eq!(info.next_ms, Some(last + 1000));
}

/// Overlap: runs of 2.5 s on a 1-second schedule. With `Overlap::Skip` no two runs overlap and
/// ticks are counted as skipped; with `Allow` runs do overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_policies() {
    let redis = RedisServer::start();
    for (ns, policy) in [("x3", Overlap::Skip), ("x4", Overlap::Allow)] {
        let (runs, epoch) = (Runs::default(), Epoch(std::time::Instant::now()));
        let s = Schedule::every("slow", Duration::from_secs(1))
            .unwrap()
            .task(TaskCall::<beat>::new((2_500,)))
            .unwrap()
            .overlap(policy);
        let w = Running::start(
            builder(&redis, ns, &runs, &epoch)
                .concurrency(8)
                .schedule(s)
                .schedule_poll(Duration::from_millis(100)),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(9)).await;
        w.stop_within(Duration::from_secs(30)).await;
        let spans = runs.spans();
        let overlaps = spans.windows(2).filter(|w| w[1].0 < w[0].1).count();
        let info = Schedules::new(&client(&redis, ns).await)
            .get("slow")
            .await
            .unwrap();
        eprintln!(
            "{policy:?}: runs {}, overlaps {overlaps}, skipped {}",
            spans.len(),
            info.skipped
        );
        assert!(spans.len() >= 2);
        match policy {
            Overlap::Skip => {
                assert_eq!(overlaps, 0, "{spans:?}");
                assert!(info.skipped > 0);
            }
            Overlap::Allow => assert!(overlaps > 0, "{spans:?}"),
        }
    }
}

/// Declaring again changes nothing; a change is an update; pause stops ticks, resume and
/// trigger work, remove deletes; a code declaration removed from code is not deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_update_pause_trigger_remove() {
    let redis = RedisServer::start();
    let c = client(&redis, "x5").await;
    let schedules = Schedules::new(&c);
    let s = |n: u64| {
        Schedule::cron("nightly", "0 0 3 * * *", "Europe/Paris")
            .unwrap()
            .task(TaskCall::<beat>::new((n,)))
            .unwrap()
    };
    assert_eq!(schedules.declare(&s(1)).await.unwrap(), Declared::Created);
    let before = schedules.get("nightly").await.unwrap();
    assert_eq!(schedules.declare(&s(1)).await.unwrap(), Declared::Unchanged);
    assert_eq!(schedules.get("nightly").await.unwrap(), before);
    assert_eq!(schedules.declare(&s(2)).await.unwrap(), Declared::Updated);
    let after = schedules.get("nightly").await.unwrap();
    assert_ne!(after.args, before.args);
    assert_eq!(after.next_ms, before.next_ms);
    schedules.pause("nightly").await.unwrap();
    assert!(schedules.get("nightly").await.unwrap().paused);
    schedules.resume("nightly").await.unwrap();
    let id = schedules.trigger("nightly").await.unwrap();
    assert!(id.id().starts_with("nightly@now-"));
    assert_eq!(schedules.list().await.unwrap().len(), 1);
    // Readable with redis-cli: one hash in the partition, the index names its queue.
    let mut conn = c.store().conn();
    let q: String = conn.hget("x5:schedules", "nightly").await.unwrap();
    assert_eq!(q, "sch");
    assert!(schedules.remove("nightly").await.unwrap());
    assert!(!schedules.remove("nightly").await.unwrap());
    assert!(matches!(
        schedules.pause("nightly").await,
        Err(Error::ScheduleNotFound(_))
    ));
}

/// Bad input gets a typed error at the call, and nothing is stored or fired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused() {
    let redis = RedisServer::start();
    let invalid = |r: Result<Schedule, Error>| matches!(r, Err(Error::InvalidSchedule { .. }));
    assert!(invalid(Schedule::cron("a", "0 61 * * * *", "UTC")));
    assert!(invalid(Schedule::cron(
        "a",
        "0 30 2 * * *",
        "Europe/Atlantis"
    )));
    assert!(invalid(Schedule::every("a", Duration::ZERO)));
    assert!(invalid(Schedule::every("bad name", Duration::from_secs(1))));
    // A schedule for a task the worker has not registered.
    let req = TaskRequest::new("nobody", "sch", &()).unwrap();
    let s = Schedule::every("orphan", Duration::from_secs(1))
        .unwrap()
        .request(req);
    let err = Worker::builder()
        .redis_url(redis.url())
        .namespace("x6")
        .register(beat)
        .schedule(s.clone())
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownScheduleTask { ref task, .. } if task == "nobody"),
        "{err}"
    );
    // No task given, a bad priority: refused by the run-time API too.
    let c = client(&redis, "x6").await;
    let schedules = Schedules::new(&c);
    let bare = Schedule::every("bare", Duration::from_secs(1)).unwrap();
    assert!(matches!(
        schedules.add(&bare).await,
        Err(Error::InvalidSchedule { .. })
    ));
    let loud = TaskRequest::new("beat", "sch", &(0u64,))
        .unwrap()
        .priority(12);
    assert!(matches!(
        schedules.add(&bare.request(loud)).await,
        Err(Error::InvalidPriority(12))
    ));
    assert!(schedules.list().await.unwrap().is_empty());
    let mut conn = c.store().conn();
    let keys: Vec<String> = conn.keys("x6:*sch:*").await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

/// Four worker processes (`test_worker` of `tools/chaos`) declare the same 1-second schedule
/// with result TTL 0; one is SIGSTOPped for 4 s and resumed, one SIGKILLed, over at least 20
/// ticks. Every tick between the first and the last recorded ran (0 missed), and the schedule
/// created exactly one task per tick (`fired` = distinct ticks enqueued, none created twice).
/// Runs of one task repeated after a lost lease (the stopped process) are at-least-once
/// execution, counted apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tick_once_across_worker_processes_stopped_and_killed() {
    use std::process::{Command, Stdio};

    use scheduler_testkit::{tool_bin, ChildGuard};

    let redis = RedisServer::start();
    let url = redis.url();
    let spawn = || {
        ChildGuard(
            Command::new(tool_bin("test_worker"))
                .args(["--redis-url", &url, "--namespace", "xp", "--queue", "sch"])
                .args(["--lease-ms", "2000", "--shutdown-timeout-ms", "2000"])
                .args(["--record-list", "xp:runs", "--schedule-every-ms", "1000"])
                .args(["--schedule-poll-ms", "200", "--result-ttl-ms", "0"])
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start the test worker"),
        )
    };
    let mut procs: Vec<ChildGuard> = (0..4).map(|_| spawn()).collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    procs[0].signal(19); // SIGSTOP
    tokio::time::sleep(Duration::from_secs(4)).await;
    procs[0].signal(18); // SIGCONT
    tokio::time::sleep(Duration::from_secs(3)).await;
    procs[1].signal(9); // SIGKILL
    tokio::time::sleep(Duration::from_secs(14)).await;
    for p in &procs {
        p.signal(15);
    }
    for p in &mut procs {
        p.wait_timeout(Duration::from_secs(30));
    }
    let mut conn = redis.conn();
    let runs: Vec<String> =
        scheduler::redis::Commands::lrange(&mut conn, "xp:runs", 0, -1).unwrap();
    let mut per_tick: HashMap<i64, usize> = HashMap::new();
    for r in &runs {
        let id = r.rsplit_once(':').unwrap().0;
        *per_tick.entry(tick_of(id)).or_default() += 1;
    }
    let mut ticks: Vec<i64> = per_tick.keys().copied().collect();
    ticks.sort_unstable();
    let span = ((ticks[ticks.len() - 1] - ticks[0]) / 1000 + 1) as usize;
    let missed = span - ticks.len();
    let rerun = per_tick.values().filter(|n| **n > 1).count();
    let fired: u64 = {
        let c = client(&redis, "xp").await;
        Schedules::new(&c).get("tick").await.unwrap().fired
    };
    let last_tick = {
        let c = client(&redis, "xp").await;
        Schedules::new(&c)
            .get("tick")
            .await
            .unwrap()
            .last_tick_ms
            .unwrap()
    };
    let enqueued = ((last_tick - ticks[0]) / 1000 + 1) as u64;
    eprintln!(
        "processes: ticks {span}, ran {}, missed {missed}, runs repeated after a lost lease {rerun}, fired {fired}, ticks enqueued since the first run {enqueued}",
        ticks.len()
    );
    assert!(ticks.len() >= 20, "{ticks:?}");
    assert_eq!(missed, 0, "{ticks:?}");
    // One task per tick: the schedule created exactly as many tasks as there are ticks from
    // the first (which ran) to the last it enqueued (the last ones may not have run before the
    // processes stopped).
    assert_eq!(fired, enqueued);
}

/// `schedule_write.lua` alone: a write from a stale revision or past its deadline changes
/// nothing; an applied write bumps `rev`, creates its tasks once (an existing id is left alone and
/// not counted in `fired`); the overlap guard answers busy before the tick, busy-past-tick after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_write_script_guards() {
    use scheduler::broker::{ScheduleTask, ScheduleWrite, ScheduleWriteArgs};

    let redis = RedisServer::start();
    let c = client(&redis, "x7").await;
    let store = c.store();
    let p = store.partition("sch", 0);
    let mut conn = c.store().conn();
    let (secs, _): (i64, i64) = scheduler::redis::cmd("TIME")
        .query_async(&mut conn)
        .await
        .unwrap();
    let now = secs * 1000;
    let task = |id: &str, due: i64| ScheduleTask {
        id: id.into(),
        name: "beat".into(),
        args: vec![0x91, 0x00],
        due_ms: due,
        max_retries: 0,
        timeout_ms: 1000,
        priority: 0,
    };
    let field = |k: &str, v: &str| (k.to_owned(), v.as_bytes().to_vec());
    let write =
        |rev: i64, deadline: i64, guard: Option<i64>, tasks: Vec<ScheduleTask>| ScheduleWriteArgs {
            expected_rev: rev,
            deadline_ms: deadline,
            guard_tick_ms: guard,
            fields: vec![field("next", "1"), field("last_id", "s@1")],
            tasks,
            ..Default::default()
        };
    let key = p.keys.schedule("s");
    // A record that does not exist has revision 0.
    let w = write(1, 0, None, vec![]);
    assert_eq!(
        store.schedule_write(&p, "s", &w).await.unwrap(),
        ScheduleWrite::Stale
    );
    let w = write(0, now - 10_000, None, vec![]);
    assert_eq!(
        store.schedule_write(&p, "s", &w).await.unwrap(),
        ScheduleWrite::TooLate
    );
    let exists: bool = conn.exists(&key).await.unwrap();
    assert!(!exists, "nothing written");
    let w = write(0, 0, None, vec![task("s@1", now + 60_000)]);
    assert_eq!(
        store.schedule_write(&p, "s", &w).await.unwrap(),
        ScheduleWrite::Done(1)
    );
    // The same tick again (from the new revision): the task exists, nothing created or counted.
    let w = write(1, 0, None, vec![task("s@1", now + 60_000)]);
    assert_eq!(
        store.schedule_write(&p, "s", &w).await.unwrap(),
        ScheduleWrite::Done(0)
    );
    let (rev, fired): (i64, i64) = scheduler::redis::cmd("HMGET")
        .arg(&key)
        .arg("rev")
        .arg("fired")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((rev, fired), (2, 1));
    // `last_id` (s@1) is scheduled: the overlap guard holds the next tick.
    let w = write(2, 0, Some(now + 120_000), vec![task("s@2", now + 120_000)]);
    assert_eq!(
        store.schedule_write(&p, "s", &w).await.unwrap(),
        ScheduleWrite::Busy
    );
    let w = write(2, 0, Some(now - 1_000), vec![task("s@2", now - 1_000)]);
    assert_eq!(
        store.schedule_write(&p, "s", &w).await.unwrap(),
        ScheduleWrite::BusyPastTick
    );
    let created: bool = conn.exists(p.keys.task("s@2")).await.unwrap();
    assert!(!created);
}

/// A schedule whose record cannot be read (edited by hand) is counted as failed by a pass of the
/// schedule component, and does not hold up the other schedules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_schedule_does_not_hold_up_the_others() {
    let redis = RedisServer::start();
    let c = client(&redis, "x8").await;
    let schedules = Schedules::new(&c);
    for name in ["a-broken", "b-fine"] {
        let s = Schedule::every(name, Duration::from_secs(1))
            .unwrap()
            .task(TaskCall::<beat>::new((0,)))
            .unwrap();
        schedules.add(&s).await.unwrap();
    }
    let shards = c.shards("sch").await.unwrap();
    let p = c
        .store()
        .partition("sch", scheduler::broker::id::shard_of("a-broken", shards));
    let mut conn = c.store().conn();
    let _: () = conn
        .hset(p.keys.schedule("a-broken"), "kind", "weekly-ish")
        .await
        .unwrap();
    let report = schedules.fire_due(Duration::from_secs(5)).await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    assert!(report.created >= 4, "{report:?}");
    assert!(schedules.get("b-fine").await.unwrap().fired >= 4);
}

/// Counts its runs; `#[task(cron)]` declares its schedule, every second.
#[task(
    name = "tidy",
    queue = "sch",
    cron = "* * * * * *",
    tz = "Europe/Paris",
    max_retries = 1
)]
async fn tidy(ctx: TaskContext) -> Result<(), TaskError> {
    ctx.state::<Runs>()?
        .0
        .lock()
        .unwrap()
        .entry(ctx.id().id().to_owned())
        .or_default()
        .push((0, 0));
    Ok(())
}

/// An hourly schedule with an expression that cannot parse.
#[task(name = "broken", queue = "sch", cron = "0 61 * * *")]
async fn broken() {}

/// A task with `cron` declares its schedule when a worker registers it (named after the task,
/// its queue, retries and zone from the attribute, no arguments) and its ticks run; a second
/// worker declaring it changes nothing. A bad expression fails the build, storing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_attribute_declares_a_cron_schedule() {
    let redis = RedisServer::start();
    let runs = Runs::default();
    let build = || {
        Worker::builder()
            .redis_url(redis.url())
            .namespace("x8")
            .register(tidy)
            .queues(["sch"])
            .result_ttl(Duration::ZERO)
            .state(runs.clone())
    };
    let first = Running::start(build()).await;
    let second = Running::start(build()).await;
    let c = client(&redis, "x8").await;
    let info = Schedules::new(&c).get("tidy").await.unwrap();
    assert_eq!(info.task, "tidy");
    assert_eq!(info.queue, "sch");
    assert_eq!(info.max_retries, 1);
    assert_eq!(info.origin, "code");
    assert_eq!(info.args, scheduler::encode_args(&()).unwrap());
    assert!(
        matches!(&info.spec, scheduler::Spec::Cron { expr, tz } if expr == "* * * * * *" && tz == "Europe/Paris"),
        "{:?}",
        info.spec
    );
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    first.stop().await;
    second.stop().await;
    let ticks = runs.ids();
    assert!(ticks.len() >= 2, "{ticks:?}");
    assert!(ticks.iter().all(|id| id.starts_with("tidy@")), "{ticks:?}");
    assert_eq!(runs.twice(), 0);

    let Err(err) = Worker::builder()
        .redis_url(redis.url())
        .namespace("x9")
        .register(broken)
        .build()
        .await
    else {
        panic!("a bad cron expression must fail the build");
    };
    assert!(
        matches!(err, Error::InvalidSchedule { ref name, .. } if name == "broken"),
        "{err}"
    );
    let c = client(&redis, "x9").await;
    assert!(Schedules::new(&c).list().await.unwrap().is_empty());
}
