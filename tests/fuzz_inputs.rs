//! Bad input fuzzing (issue 4, scenario 14), with proptest against one throwaway redis-server and
//! one real worker: random and truncated MessagePack arguments, valid MessagePack of the wrong
//! types, unknown task names and oversized arguments sent through the raw enqueue API
//! (`TaskRequest::from_encoded`), and task records whose fields were overwritten with garbage
//! straight in Redis.
//!
//! Checked for every generated input: no panic anywhere (producer, status reads, worker), the
//! worker keeps serving (a good task in every batch succeeds), and every task the worker cannot
//! run is dead-lettered at its first attempt with an error that says why: the expected outcome
//! is computed independently (cap, then registered name, then `rmp_serde` decoding of the
//! task's argument type).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use scheduler::{
    task, Client, ClientConfig, Error, ShutdownHandle, TaskContext, TaskError, TaskId, TaskInfo,
    TaskRequest, TaskState, Worker, WorkerReport,
};
use scheduler_testkit::RedisServer;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

const NS: &str = "fz";
const QUEUE: &str = "fz";
/// The worker's argument cap.
const WORKER_CAP: usize = 1024;
/// The producer's argument cap (bigger than the worker's: both caps are exercised).
const CLIENT_CAP: usize = 6000;

/// The one registered task: adds two numbers and counts its runs.
#[task(name = "fz_add", queue = "fz")]
async fn fz_add(ctx: TaskContext, a: u32, b: u32) -> Result<u64, TaskError> {
    ctx.state::<Arc<AtomicU64>>()?
        .fetch_add(1, Ordering::SeqCst);
    Ok(u64::from(a) + u64::from(b))
}

/// A bad (or accidentally good) task as the producer sends it.
#[derive(Debug, Clone)]
enum Input {
    /// Random bytes as the arguments of `fz_add`.
    Random(Vec<u8>),
    /// The arguments of `fz_add(a, b)`, encoded and then cut to `keep` bytes.
    Truncated(u32, u32, usize),
    /// Valid MessagePack of another type.
    WrongType(Vec<u8>),
    /// Good arguments under a name no worker registered.
    UnknownName(String),
    /// Arguments of this many bytes (valid MessagePack prefix, padded).
    Oversized(usize),
}

impl Input {
    /// The request, with its name and argument bytes.
    fn request(&self) -> (TaskRequest, String, Vec<u8>) {
        let (name, args) = match self {
            Input::Random(b) | Input::WrongType(b) => ("fz_add".to_owned(), b.clone()),
            Input::Truncated(a, b, keep) => {
                let mut v = rmp_serde::to_vec(&(a, b)).unwrap();
                v.truncate(*keep % v.len().max(1));
                ("fz_add".to_owned(), v)
            }
            Input::UnknownName(n) => (n.clone(), rmp_serde::to_vec(&(1u32, 2u32)).unwrap()),
            Input::Oversized(n) => {
                let mut v = rmp_serde::to_vec(&(1u32, 2u32)).unwrap();
                v.resize(*n, 0xc0);
                ("fz_add".to_owned(), v)
            }
        };
        let req = TaskRequest::from_encoded(name.clone(), QUEUE, args.clone()).max_retries(3);
        (req, name, args)
    }
}

/// What must happen to a request.
#[derive(Debug, PartialEq)]
enum Expect {
    /// Refused at enqueue with `PayloadTooLarge`; nothing created.
    Refused,
    /// Runs and succeeds.
    Succeeds,
    /// Dead at its first attempt, the error containing this text.
    Dead(&'static str),
}

fn expect(name: &str, args: &[u8]) -> Expect {
    if args.len() > CLIENT_CAP {
        Expect::Refused
    } else if args.len() > WORKER_CAP {
        Expect::Dead("exceeds")
    } else if name != "fz_add" {
        Expect::Dead("unknown task")
    } else if rmp_serde::from_slice::<(u32, u32)>(args).is_ok() {
        Expect::Succeeds
    } else {
        Expect::Dead("cannot decode")
    }
}

fn input() -> impl Strategy<Value = Input> {
    let wrong_type = prop_oneof![
        any::<String>().prop_map(|s| rmp_serde::to_vec(&s).unwrap()),
        any::<i64>().prop_map(|n| rmp_serde::to_vec(&n).unwrap()),
        any::<f64>().prop_map(|n| rmp_serde::to_vec(&n).unwrap()),
        any::<bool>().prop_map(|b| rmp_serde::to_vec(&b).unwrap()),
        proptest::collection::vec(any::<i64>(), 0..8).prop_map(|v| rmp_serde::to_vec(&v).unwrap()),
        (any::<String>(), any::<i32>()).prop_map(|t| rmp_serde::to_vec(&t).unwrap()),
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|t| rmp_serde::to_vec(&t).unwrap()),
        (any::<i64>(), any::<i64>()).prop_map(|t| rmp_serde::to_vec(&t).unwrap()),
        any::<u32>().prop_map(|a| rmp_serde::to_vec(&(a,)).unwrap()),
        Just(rmp_serde::to_vec(&()).unwrap()),
    ];
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Input::Random),
        2 => (any::<u32>(), any::<u32>(), any::<usize>()).prop_map(|(a, b, k)| Input::Truncated(a, b, k)),
        3 => wrong_type.prop_map(Input::WrongType),
        2 => "\\PC{1,40}"
            .prop_filter("not the registered name", |n| n != "fz_add")
            .prop_map(Input::UnknownName),
        2 => (WORKER_CAP + 1..CLIENT_CAP * 4 / 3).prop_map(Input::Oversized),
    ]
}

/// Garbage for one field of a stored task record.
#[derive(Debug, Clone)]
struct Corruption {
    field: &'static str,
    value: Vec<u8>,
}

fn corruption() -> impl Strategy<Value = Corruption> {
    // Fields the claim, ack and retry paths read back from the record. (`state` and `priority`
    // are left out here: `every_script_survives_damaged_records` below covers every field in
    // every state, script by script.) A `token` that is not a decimal integer (`nan`, `2.5`)
    // is buried by the claim script with the reason since issue 9; before, it cycled through
    // leases.
    let field = prop::sample::select(vec![
        "token",
        "attempts",
        "max_retries",
        "timeout_ms",
        "run_at",
        "name",
        "args",
    ]);
    let value = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        "-?[0-9]{1,25}(\\.[0-9]{1,5})?".prop_map(String::into_bytes),
        Just(b"nan".to_vec()),
        Just(b"inf".to_vec()),
        Just(b"-1".to_vec()),
    ];
    (field, value).prop_map(|(field, value)| Corruption { field, value })
}

/// One redis-server, one worker, one producer, shared by every case of a property.
struct Rig {
    rt: Runtime,
    _redis: RedisServer,
    client: Client,
    admin: redis::Client,
    runs: Arc<AtomicU64>,
    stop: ShutdownHandle,
    join: Option<JoinHandle<WorkerReport>>,
}

impl Rig {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let redis = RedisServer::start();
        let url = redis.url();
        let runs = Arc::new(AtomicU64::new(0));
        let (client, stop, join) = rt.block_on(async {
            let worker = Worker::builder()
                .redis_url(&url)
                .namespace(NS)
                .queues([QUEUE])
                .queue_shards(QUEUE, 4)
                .register(fz_add)
                .state(Arc::clone(&runs))
                .max_payload_bytes(WORKER_CAP)
                // Short: a run whose record is damaged while it runs ends by lease expiry.
                .lease(Duration::from_secs(1))
                .lock_ttl(Duration::from_secs(1))
                .sweep_interval(Duration::from_secs(1))
                .build()
                .await
                .expect("worker builds");
            let stop = worker.shutdown_handle();
            let join = tokio::spawn(worker.run(std::future::pending()));
            let client = Client::with_config(
                ClientConfig::new(&url)
                    .namespace(NS)
                    .queue_shards(QUEUE, 4)
                    .max_payload_bytes(CLIENT_CAP),
            )
            .await
            .unwrap();
            (client, stop, join)
        });
        Self {
            rt,
            admin: redis::Client::open(url).unwrap(),
            _redis: redis,
            client,
            runs,
            stop,
            join: Some(join),
        }
    }

    /// Stops the worker; its report. Panics if the worker task panicked.
    fn stop(mut self) -> WorkerReport {
        self.stop.shutdown();
        let join = self.join.take().unwrap();
        self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), join)
                .await
                .expect("worker stops within 30 s")
                .expect("the worker did not panic")
        })
    }

    fn assert_worker_alive(&self) {
        assert!(
            !self.join.as_ref().unwrap().is_finished(),
            "the worker stopped"
        );
    }
}

/// Polls until the task is finished; panics after 30 s.
async fn finished(client: &Client, id: &TaskId) -> TaskInfo {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = client.status(id).await.expect("status reads");
        if info.state.is_finished() {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} not finished after 30 s: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a good task and checks that the worker runs it.
async fn still_serving(client: &Client) {
    let id = fz_add::new(20, 22).send(client).await.unwrap();
    let sum: u64 = client
        .wait_result(&id, Duration::from_secs(30))
        .await
        .expect("the worker keeps serving");
    assert_eq!(sum, 42);
}

/// Bad arguments and names sent through the raw enqueue API: refused at enqueue when over the
/// producer's cap (typed error, nothing created), otherwise dead-lettered at the first attempt
/// with the reason (over the worker's cap, unknown name, undecodable), or run when the bytes
/// happen to decode; the worker keeps serving throughout.
#[test]
fn bad_arguments_and_names_are_dead_lettered_with_a_reason() {
    let rig = Rig::start();
    let mut runner = TestRunner::new(Config {
        cases: 40,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    });
    let counts = std::cell::RefCell::new([0u64; 3]);
    runner
        .run(&proptest::collection::vec(input(), 1..8), |inputs| {
            rig.rt.block_on(async {
                let mut sent = Vec::new();
                for input in &inputs {
                    let (req, name, args) = input.request();
                    let want = expect(&name, &args);
                    match rig.client.enqueue_request(req).await {
                        Err(Error::PayloadTooLarge { size, max }) => {
                            assert_eq!(want, Expect::Refused, "{input:?}");
                            assert_eq!((size, max), (args.len(), CLIENT_CAP));
                            counts.borrow_mut()[0] += 1;
                        }
                        Err(e) => panic!("enqueue of {input:?} failed: {e}"),
                        Ok(id) => {
                            assert_ne!(want, Expect::Refused, "{input:?} was accepted");
                            sent.push((id, want, input.clone()));
                        }
                    }
                }
                for (id, want, input) in sent {
                    let info = finished(&rig.client, &id).await;
                    match want {
                        Expect::Succeeds => {
                            assert_eq!(info.state, TaskState::Succeeded, "{input:?}: {info:?}");
                            counts.borrow_mut()[1] += 1;
                        }
                        Expect::Dead(why) => {
                            assert_eq!(info.state, TaskState::Dead, "{input:?}: {info:?}");
                            assert_eq!(info.attempts, 1, "{input:?} is not retried");
                            let err = info.last_error.clone().unwrap_or_default();
                            assert!(err.contains(why), "{input:?}: error {err:?} lacks {why:?}");
                            counts.borrow_mut()[2] += 1;
                        }
                        Expect::Refused => unreachable!(),
                    }
                }
                still_serving(&rig.client).await;
            });
            rig.assert_worker_alive();
            Ok(())
        })
        .unwrap();
    let [refused, ran, dead] = *counts.borrow();
    let runs = Arc::clone(&rig.runs);
    println!("refused at enqueue {refused}, ran (decodable by chance) {ran}, dead-lettered {dead}");
    let report = rig.stop();
    println!("worker report: {report:?}");
    assert!(
        refused > 0 && dead > 0,
        "the generator covered refusals and dead letters"
    );
    assert_eq!(report.dead, dead);
    assert_eq!(report.panicked, 0);
    // Only decodable tasks ran the handler: the by-chance ones and the good ones.
    assert_eq!(runs.load(Ordering::SeqCst), report.succeeded);
    assert!(report.succeeded >= ran);
}

/// Task records whose fields were overwritten with garbage straight in Redis, before a worker
/// claims them: status reads never panic (a typed error at worst), every such task still ends
/// in a final state, and the worker keeps serving.
#[test]
fn corrupted_task_records_do_not_break_the_worker() {
    let rig = Rig::start();
    let mut runner = TestRunner::new(Config {
        cases: 16,
        failure_persistence: None,
        max_shrink_iters: 32,
        ..Config::default()
    });
    let outcomes = std::cell::RefCell::new(std::collections::BTreeMap::<String, u64>::new());
    let case = |corrupt: Vec<Corruption>| {
        rig.rt.block_on(async {
            // Scheduled 1 s ahead, corrupted now, claimed once due.
            let id = fz_add::new(3, 4)
                .countdown(Duration::from_millis(1000))
                .send(&rig.client)
                .await
                .unwrap();
            let p = rig.client.store().partition(QUEUE, id.shard(4));
            let key = p.keys.task(id.id());
            let mut conn = rig.admin.get_multiplexed_async_connection().await.unwrap();
            for c in &corrupt {
                let _: () = redis::cmd("HSET")
                    .arg(&key)
                    .arg(c.field)
                    .arg(&c.value)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
            // A corrupted record reads as a TaskInfo or a typed error, never a panic.
            let _ = rig.client.status(&id).await;
            let deadline = Instant::now() + Duration::from_secs(40);
            let info = loop {
                match rig.client.status(&id).await {
                    Ok(info) if info.state.is_finished() => break Some(info),
                    Ok(_) | Err(Error::Protocol(_)) | Err(Error::Decode(_)) => {}
                    // Deleted at success when no result is kept; not expected here.
                    Err(Error::NotFound(_)) => break None,
                    Err(e) => panic!("status of a corrupted record: {e}"),
                }
                assert!(
                    Instant::now() < deadline,
                    "corrupted task {id} ({corrupt:?}) did not finish in 40 s"
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            };
            let label = info
                .map(|i| format!("{:?}", i.state))
                .unwrap_or_else(|| "gone".into());
            *outcomes.borrow_mut().entry(label).or_default() += 1;
            still_serving(&rig.client).await;
        });
        rig.assert_worker_alive();
    };
    // Found by this test: a `nan` run_at came back as due time i64::MIN and the lateness
    // subtraction overflowed in the executor, which left the task in flight for good (claim
    // now replies server now for an unreadable run_at).
    for fixed in [
        vec![Corruption {
            field: "run_at",
            value: b"nan".to_vec(),
        }],
        vec![Corruption {
            field: "timeout_ms",
            value: b"-1".to_vec(),
        }],
        vec![Corruption {
            field: "max_retries",
            value: b"garbage".to_vec(),
        }],
        vec![Corruption {
            field: "name",
            value: Vec::new(),
        }],
    ] {
        case(fixed);
    }
    runner
        .run(&proptest::collection::vec(corruption(), 1..4), |corrupt| {
            case(corrupt);
            Ok(())
        })
        .unwrap();
    println!("outcomes of corrupted records: {:?}", outcomes.borrow());
    let runs = Arc::clone(&rig.runs);
    let report = rig.stop();
    println!("worker report: {report:?}");
    assert_eq!(report.panicked, 0);
    // Every handler run was acked, or refused as stale (the fractional-token records).
    assert_eq!(runs.load(Ordering::SeqCst), report.succeeded + report.stale);
}

// ---------------------------------------------------------------------------------------------
// Every script against unreadable records (issue 9, point 5), without a worker: the scripts are
// driven through `Store`, so each call's failure (a Lua error) shows at once.
// ---------------------------------------------------------------------------------------------

/// Every field of a task record.
const FIELDS: [&str; 14] = [
    "state",
    "name",
    "args",
    "max_retries",
    "timeout_ms",
    "priority",
    "run_at",
    "enqueued_at",
    "token",
    "attempts",
    "lost",
    "worker",
    "error",
    "started_at",
];

/// What happens to the chosen field: deleted, or overwritten with these bytes.
fn damage() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        prop::sample::select(vec![
            "abc",
            "nan",
            "inf",
            "-inf",
            "-1",
            "2.5",
            "1e3",
            "0x10",
            "",
            "bogus",
            "running",
            "dead",
            "99999999999999999999999999",
        ])
        .prop_map(|s| Some(s.as_bytes().to_vec())),
        "-?[0-9]{1,20}".prop_map(|s| Some(s.into_bytes())),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Some),
    ]
}

/// One case: the target task's state and damage, a stray id, and what is done to the target.
#[derive(Debug, Clone)]
struct Damaged {
    /// `scheduled`, `ready`, `running` or `dead`.
    state: &'static str,
    field: &'static str,
    value: Option<Vec<u8>>,
    /// The set a stray id (no task hash) is put in.
    stray: &'static str,
    /// For a running target: `retry`, `retry_fatal`, `release`, `release_claim`, `extend`,
    /// `ack` or `none` (its lease expires); for a waiting one `cancel` or `none`.
    action: &'static str,
}

fn damaged() -> impl Strategy<Value = Damaged> {
    (
        prop::sample::select(vec!["scheduled", "ready", "running", "dead"]),
        prop::sample::select(FIELDS.to_vec()),
        damage(),
        prop::sample::select(vec!["scheduled", "ready", "active", "dead"]),
        prop::sample::select(vec![
            "retry",
            "retry_fatal",
            "release",
            "release_claim",
            "extend",
            "ack",
            "none",
            "cancel",
        ]),
    )
        .prop_map(|(state, field, value, stray, action)| Damaged {
            state,
            field,
            value,
            stray,
            action,
        })
}

/// Which sorted set a task in `state` must be in (none for final states but dead).
fn set_of(state: &str) -> Option<&'static str> {
    match state {
        "scheduled" => Some("scheduled"),
        "ready" => Some("ready"),
        "running" => Some("active"),
        "dead" => Some("dead"),
        _ => None,
    }
}

/// Runs one case in its own partition (queue `q`): builds bystanders in every state and the
/// target, damages the target's record, adds a stray id, then drives every script until the
/// bystanders have all run. Panics on any script error or broken invariant.
async fn damaged_case(store: &scheduler::broker::store::Store, q: &str, d: &Damaged) {
    use scheduler::broker::scripts::{Due, NewTask, Outcome};
    let p = store.partition(q, 0);
    let new = |id: &str, due: Due| NewTask {
        id: id.into(),
        name: "job".into(),
        args: vec![0x91, 0x2a],
        due,
        max_retries: 1,
        timeout_ms: 1000,
        priority: 5,
        headers: vec![],
        expires: None,
    };
    let ok = |o: Vec<Outcome>| assert!(o.iter().all(|o| *o == Outcome::Done), "{o:?}");
    // Running and dead ones first: claimed by `w0` with a 100 ms lease, `d` (and a dead target)
    // then buried.
    let mut first = vec![new("u", Due::Delay(0)), new("d", Due::Delay(0))];
    if matches!(d.state, "running" | "dead") {
        first.push(new("x", Due::Delay(0)));
    }
    ok(store.enqueue(&p, &first).await.unwrap());
    let c = store.claim(&p, 10, 100, "w0").await.unwrap();
    assert_eq!(c.tasks.len(), first.len());
    let mut fatal = vec![("d", 1, "fatal", None)];
    if d.state == "dead" {
        fatal.push(("x", 1, "fatal", None));
    }
    let out = store.retry(&p, &fatal).await.unwrap();
    assert!(out.iter().all(|o| *o == Outcome::Dead), "{out:?}");
    let mut later = vec![
        new("r", Due::Delay(0)),
        new("s", Due::Delay(150)),
        new("late", Due::Delay(0)),
    ];
    match d.state {
        "scheduled" => later.push(new("x", Due::Delay(150))),
        "ready" => later.push(new("x", Due::Delay(0))),
        _ => {}
    }
    ok(store.enqueue(&p, &later).await.unwrap());

    // The damage and the stray.
    let mut conn = store.conn();
    let key = p.keys.task("x");
    let mut cmd = match &d.value {
        None => redis::cmd("HDEL"),
        Some(_) => redis::cmd("HSET"),
    };
    cmd.arg(&key).arg(d.field);
    if let Some(v) = &d.value {
        cmd.arg(v.as_slice());
    }
    cmd.query_async::<()>(&mut conn).await.unwrap();
    let stray_key = match d.stray {
        "scheduled" => p.keys.scheduled(),
        "ready" => p.keys.ready(),
        "active" => p.keys.active(),
        _ => p.keys.dead(),
    };
    redis::cmd("ZADD")
        .arg(&stray_key)
        .arg(1)
        .arg("ghost")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();

    // The action on the target, each script called with it once.
    match (d.state, d.action) {
        ("running", "retry") => drop(store.retry(&p, &[("x", 1, "boom", Some(0))]).await.unwrap()),
        ("running", "retry_fatal") => {
            drop(store.retry(&p, &[("x", 1, "boom", None)]).await.unwrap())
        }
        ("running", "release") => drop(store.release(&p, &[("x", 1)]).await.unwrap()),
        ("running", "release_claim") => drop(store.release_claim(&p, "w0", 100).await.unwrap()),
        ("running", "extend") => drop(store.extend(&p, 60_000, &[("x", 1)]).await.unwrap()),
        ("running", "ack") => drop(
            store
                .ack_many(&[(&p, vec![("x", 1, &[][..])])], 60_000)
                .await
                .unwrap(),
        ),
        ("scheduled" | "ready", "cancel") => drop(store.cancel(&p, "x", 60_000).await.unwrap()),
        _ => {}
    }
    let mut dead_ids = vec!["d", "ghost"];
    if d.state == "dead" {
        dead_ids.push("x");
    }
    store.requeue(&p, &dead_ids).await.unwrap();

    // Drive: promote, claim, ack, reap until every bystander has run.
    let bystanders = ["u", "d", "r", "s", "late"];
    let mut runs: std::collections::HashMap<String, u32> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bystanders.iter().all(|b| runs.contains_key(*b)) {
        assert!(
            Instant::now() < deadline,
            "{d:?}: the partition stopped making progress; runs {runs:?}"
        );
        store.promote(&p, 100).await.unwrap();
        let c = store.claim(&p, 100, 60_000, "w1").await.unwrap();
        let acks: Vec<_> = c
            .tasks
            .iter()
            .map(|t| (t.id.as_str(), t.token, &[][..]))
            .collect();
        for t in &c.tasks {
            *runs.entry(t.id.clone()).or_default() += 1;
        }
        if !acks.is_empty() {
            let out = store.ack_many(&[(&p, acks)], 60_000).await.unwrap();
            ok(out.into_iter().flatten().collect());
        }
        store.reap(&p, 100, 5).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for b in bystanders {
        assert_eq!(runs[b], 1, "{d:?}: untouched task {b} runs once: {runs:?}");
    }
    store
        .trim_dead(&p, u64::MAX / 4, 1_000_000, 100)
        .await
        .unwrap();

    // Invariants: every task hash is in exactly the set its state names (dead ones with a
    // reason), and every member of a set other than the dead set has a hash.
    let mut members: std::collections::HashMap<String, Vec<&str>> = Default::default();
    for set in ["scheduled", "ready", "active", "dead"] {
        let key = match set {
            "scheduled" => p.keys.scheduled(),
            "ready" => p.keys.ready(),
            "active" => p.keys.active(),
            _ => p.keys.dead(),
        };
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap();
        for id in ids {
            members.entry(id).or_default().push(set);
        }
    }
    for id in ["u", "d", "r", "s", "late", "x"] {
        let (state, error): (Option<String>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(p.keys.task(id))
            .arg("state")
            .arg("error")
            .query_async(&mut conn)
            .await
            .unwrap();
        let sets = members.remove(id).unwrap_or_default();
        let Some(state) = state else {
            assert!(
                sets.is_empty(),
                "{d:?}: {id} has no state but is in {sets:?}"
            );
            continue;
        };
        assert!(
            [
                "scheduled",
                "ready",
                "running",
                "succeeded",
                "dead",
                "cancelled"
            ]
            .contains(&state.as_str()),
            "{d:?}: {id} left in state {state:?}"
        );
        let want: Vec<&str> = set_of(&state).into_iter().collect();
        assert_eq!(sets, want, "{d:?}: {id} is {state} and in {sets:?}");
        if state == "dead" {
            assert!(
                error.is_some_and(|e| !e.is_empty()),
                "{d:?}: {id} dead without a reason"
            );
        }
    }
    assert!(members.is_empty(), "{d:?}: stray members left: {members:?}");
}

/// Fuzzes every script with a damaged record (each field deleted, or set to a wrong type, `nan`,
/// `inf`, a huge or negative number, random bytes; in every waiting or running state, with a
/// stray id in one of the sets): no script call fails, every task ends in exactly the set its
/// state names (or dead with a reason), the partition keeps making progress (a later task is
/// still promoted, claimed and acknowledged), and every untouched task runs exactly once.
#[test]
fn every_script_survives_damaged_records() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();
    let store = rt
        .block_on(scheduler::broker::store::Store::connect(
            &redis.url(),
            "dmg",
        ))
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    });
    let n = std::cell::Cell::new(0u32);
    runner
        .run(&damaged(), |d| {
            n.set(n.get() + 1);
            rt.block_on(damaged_case(&store, &format!("q{}", n.get()), &d));
            Ok(())
        })
        .unwrap();
    // Fixed cases from the fault-injection run of issue 9.
    for (state, field, value) in [
        ("running", "attempts", Some(&b"abc"[..])),
        ("running", "max_retries", None),
        ("scheduled", "state", None),
        ("scheduled", "state", Some(&b"garbage"[..])),
        ("ready", "token", Some(&b"nan"[..])),
        ("dead", "state", None),
        // A known state that belongs to another set (seen once in CI as a random case: the
        // member was dropped and the task left in no set).
        ("ready", "state", Some(&b"dead"[..])),
        ("ready", "state", Some(&b"running"[..])),
        ("scheduled", "state", Some(&b"running"[..])),
        ("scheduled", "state", Some(&b"dead"[..])),
        ("running", "state", Some(&b"dead"[..])),
        ("running", "state", Some(&b"scheduled"[..])),
        // A dead task whose record names a live state (a random case in CI: `requeue` left it
        // in the dead set as `running`, in no set a script would ever repair it from).
        ("dead", "state", Some(&b"running"[..])),
        ("dead", "state", Some(&b"scheduled"[..])),
        ("dead", "state", Some(&b"succeeded"[..])),
    ] {
        for action in ["retry", "none"] {
            n.set(n.get() + 1);
            let d = Damaged {
                state,
                field,
                value: value.map(<[u8]>::to_vec),
                stray: "ready",
                action,
            };
            rt.block_on(damaged_case(&store, &format!("q{}", n.get()), &d));
        }
    }
}
