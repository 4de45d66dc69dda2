//! Middleware on real redis-servers: the worker's run hooks (before, after with the outcome, on
//! dead) called in their documented order for successful, retried and dead runs; a `before`
//! that refuses a run; the client's enqueue hooks adding a header and refusing an enqueue with
//! a typed error, nothing written.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use scheduler::middleware::{EnqueueMiddleware, Middleware, Run, RunOutcome};
use scheduler::{
    async_trait, task, Client, ClientConfig, Error, TaskContext, TaskError, TaskId, TaskRequest,
    TaskState, Worker,
};
use scheduler_testkit::oracle::{wait_finished, wait_for};
use scheduler_testkit::{RedisServer, Running};

/// The calls every middleware of a test made, in order, shared by all of them.
type Log = Arc<Mutex<Vec<String>>>;

/// Records each of its hook calls as `<name>.<hook> <task> #<attempt>[ <outcome>]`.
struct Recorder {
    name: &'static str,
    log: Log,
}

impl Recorder {
    fn note(&self, hook: &str, run: &Run<'_>, extra: &str) {
        self.log.lock().unwrap().push(format!(
            "{}.{hook} {} #{}{extra}",
            self.name,
            run.name(),
            run.ctx().attempt()
        ));
    }
}

#[async_trait]
impl Middleware for Recorder {
    async fn before(&self, run: &Run<'_>) -> Result<(), TaskError> {
        self.note("before", run, "");
        Ok(())
    }

    async fn after(&self, run: &Run<'_>, outcome: &RunOutcome<'_>) {
        let shown = match outcome {
            RunOutcome::Succeeded { .. } => " succeeded".to_owned(),
            RunOutcome::Retry { error, .. } => format!(" retry: {error}"),
            RunOutcome::Fail { error } => format!(" fail: {error}"),
            RunOutcome::Cancelled { how } => format!(" cancelled: {how}"),
            _ => " other".to_owned(),
        };
        self.note("after", run, &shown);
    }

    async fn on_dead(&self, run: &Run<'_>, error: &str) {
        self.note("dead", run, &format!(": {error}"));
    }
}

/// Succeeds.
#[task(name = "mw_ok", queue = "mw")]
async fn mw_ok() -> Result<u32, TaskError> {
    Ok(7)
}

/// Fails its first run (retried at once), succeeds on the second.
#[task(name = "mw_flaky", queue = "mw", max_retries = 1)]
async fn mw_flaky(ctx: TaskContext) -> Result<(), TaskError> {
    if ctx.attempt() == 1 {
        return Err(TaskError::retry_after("not yet", Duration::ZERO));
    }
    Ok(())
}

/// Fails every run: with no retry allowed, its first failure buries it.
#[task(name = "mw_doomed", queue = "mw", max_retries = 0)]
async fn mw_doomed() -> Result<(), TaskError> {
    Err(TaskError::retry("boom"))
}

/// Fails in a way retrying cannot fix.
#[task(name = "mw_fatal", queue = "mw", max_retries = 3)]
async fn mw_fatal() -> Result<(), TaskError> {
    Err(TaskError::fail("bad input"))
}

async fn client(url: &str, ns: &str) -> Client {
    Client::with_config(ClientConfig::new(url).namespace(ns))
        .await
        .unwrap()
}

/// The log lines about task `name`, in order.
fn lines_of(log: &Log, name: &str) -> Vec<String> {
    let needle = format!(" {name} #");
    log.lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(&needle))
        .cloned()
        .collect()
}

/// Two middlewares, `outer` registered first: for every run `outer.before`, `inner.before`, the
/// handler, `inner.after`, `outer.after`; for a run that buried its task, then `inner.dead`,
/// `outer.dead`. Checked for a success, a failure retried then a success, a failure with no
/// retry left and a failure that cannot be retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_hooks_are_called_in_order_for_every_outcome() {
    let redis = RedisServer::start();
    let url = redis.url();
    let c = client(&url, "mw").await;
    let log = Log::default();
    let w = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace("mw")
            .register(mw_ok)
            .register(mw_flaky)
            .register(mw_doomed)
            .register(mw_fatal)
            .middleware(Recorder {
                name: "outer",
                log: Arc::clone(&log),
            })
            .middleware(Recorder {
                name: "inner",
                log: Arc::clone(&log),
            }),
    )
    .await;
    let ids: Vec<TaskId> = vec![
        mw_ok::new().send(&c).await.unwrap(),
        mw_flaky::new().send(&c).await.unwrap(),
        mw_doomed::new().send(&c).await.unwrap(),
        mw_fatal::new().send(&c).await.unwrap(),
    ];
    let mut states = Vec::new();
    for id in &ids {
        states.push(wait_finished(&c, id, Duration::from_secs(20)).await.state);
    }
    // Stopping waits for the `on_dead` hooks the last outcomes started.
    let report = w.stop().await;
    assert_eq!(
        states,
        [
            TaskState::Succeeded,
            TaskState::Succeeded,
            TaskState::Dead,
            TaskState::Dead
        ]
    );
    assert_eq!((report.succeeded, report.retried, report.dead), (2, 1, 2));

    assert_eq!(
        lines_of(&log, "mw_ok"),
        [
            "outer.before mw_ok #1",
            "inner.before mw_ok #1",
            "inner.after mw_ok #1 succeeded",
            "outer.after mw_ok #1 succeeded",
        ]
    );
    assert_eq!(
        lines_of(&log, "mw_flaky"),
        [
            "outer.before mw_flaky #1",
            "inner.before mw_flaky #1",
            "inner.after mw_flaky #1 retry: not yet",
            "outer.after mw_flaky #1 retry: not yet",
            "outer.before mw_flaky #2",
            "inner.before mw_flaky #2",
            "inner.after mw_flaky #2 succeeded",
            "outer.after mw_flaky #2 succeeded",
        ]
    );
    assert_eq!(
        lines_of(&log, "mw_doomed"),
        [
            "outer.before mw_doomed #1",
            "inner.before mw_doomed #1",
            "inner.after mw_doomed #1 retry: boom",
            "outer.after mw_doomed #1 retry: boom",
            "inner.dead mw_doomed #1: boom",
            "outer.dead mw_doomed #1: boom",
        ]
    );
    assert_eq!(
        lines_of(&log, "mw_fatal"),
        [
            "outer.before mw_fatal #1",
            "inner.before mw_fatal #1",
            "inner.after mw_fatal #1 fail: bad input",
            "outer.after mw_fatal #1 fail: bad input",
            "inner.dead mw_fatal #1: bad input",
            "outer.dead mw_fatal #1: bad input",
        ]
    );
    assert_eq!(log.lock().unwrap().len(), 4 + 8 + 6 + 6, "no other call");
}

/// Refuses runs of tasks carrying the header `blocked`, with a failure that cannot be retried.
struct Gate;

#[async_trait]
impl Middleware for Gate {
    async fn before(&self, run: &Run<'_>) -> Result<(), TaskError> {
        match run.ctx().header("blocked") {
            Some(why) => Err(TaskError::fail(format!("refused by the gate: {why}"))),
            None => Ok(()),
        }
    }
}

/// Handler runs of `mw_counted`.
static COUNTED: Mutex<u32> = Mutex::new(0);
/// How long the last run of `mw_counted` took, by its own clock.
static HANDLER_TOOK: Mutex<Duration> = Mutex::new(Duration::ZERO);
/// `Run::elapsed` in the innermost `after` of the last run of `mw_counted`.
static SEEN_ELAPSED: Mutex<Duration> = Mutex::new(Duration::ZERO);

/// Counts its runs, and times itself.
#[task(name = "mw_counted", queue = "mwgate", max_retries = 2)]
async fn mw_counted() -> Result<(), TaskError> {
    let t0 = std::time::Instant::now();
    *COUNTED.lock().unwrap() += 1;
    tokio::task::yield_now().await;
    *HANDLER_TOOK.lock().unwrap() = t0.elapsed();
    Ok(())
}

/// Notes `Run::elapsed` in `after`.
struct Timing;

#[async_trait]
impl Middleware for Timing {
    async fn after(&self, run: &Run<'_>, _outcome: &RunOutcome<'_>) {
        *SEEN_ELAPSED.lock().unwrap() = run.elapsed();
    }
}

/// A `before` that refuses: the handler does not run, the refusal is the run's outcome (here
/// the task is buried with its text), the middlewares registered before it get `after` and
/// `on_dead`, those after it get no call at all. A task it lets through runs as usual, and
/// `Run::elapsed` in `after` covers the handler's run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_before_replaces_the_handler() {
    let redis = RedisServer::start();
    let url = redis.url();
    let c = client(&url, "mwgate").await;
    let log = Log::default();
    let w = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace("mwgate")
            .register(mw_counted)
            .middleware(Recorder {
                name: "outer",
                log: Arc::clone(&log),
            })
            .middleware(Gate)
            .middleware(Recorder {
                name: "inner",
                log: Arc::clone(&log),
            })
            .middleware(Timing),
    )
    .await;
    let blocked = mw_counted::new()
        .header("blocked", "tenant 9 suspended")
        .send(&c)
        .await
        .unwrap();
    let info = wait_finished(&c, &blocked, Duration::from_secs(20)).await;
    assert_eq!(info.state, TaskState::Dead);
    assert_eq!(
        info.last_error.as_deref(),
        Some("refused by the gate: tenant 9 suspended")
    );
    assert_eq!(info.attempts, 1, "not retried");
    assert_eq!(*COUNTED.lock().unwrap(), 0, "the handler never ran");
    // `on_dead` runs once Redis confirmed the burial, on a task of its own: let it finish
    // before the next run logs.
    wait_for("outer.dead", Duration::from_secs(10), || {
        log.lock().unwrap().len() == 3
    })
    .await;

    let open = mw_counted::new().send(&c).await.unwrap();
    let info = wait_finished(&c, &open, Duration::from_secs(20)).await;
    w.stop().await;
    assert_eq!(info.state, TaskState::Succeeded);
    assert_eq!(*COUNTED.lock().unwrap(), 1);
    // `Run::elapsed` in `after` spans the handler's whole run.
    let (took, seen) = (*HANDLER_TOOK.lock().unwrap(), *SEEN_ELAPSED.lock().unwrap());
    assert!(
        seen >= took,
        "after saw {seen:?}, the handler took {took:?}"
    );
    assert_eq!(
        *log.lock().unwrap(),
        [
            "outer.before mw_counted #1",
            "outer.after mw_counted #1 fail: refused by the gate: tenant 9 suspended",
            "outer.dead mw_counted #1: refused by the gate: tenant 9 suspended",
            "outer.before mw_counted #1",
            "inner.before mw_counted #1",
            "inner.after mw_counted #1 succeeded",
            "outer.after mw_counted #1 succeeded",
        ]
    );
}

/// Stamps a tenant header on requests without one, refuses requests to the queue `closed`, and
/// records its calls.
struct Stamp {
    name: &'static str,
    log: Log,
}

#[async_trait]
impl EnqueueMiddleware for Stamp {
    async fn before_enqueue(&self, req: &mut TaskRequest) -> Result<(), Error> {
        self.log.lock().unwrap().push(format!(
            "{}.before {}/{}",
            self.name,
            req.queue_name(),
            req.task_name()
        ));
        if req.queue_name() == "closed" {
            return Err(Error::EnqueueRefused(format!(
                "{} refuses queue closed",
                self.name
            )));
        }
        if req.header_map().get("tenant").is_none() {
            req.insert_header("tenant", self.name);
        }
        Ok(())
    }

    async fn after_enqueue(&self, result: &Result<Vec<(TaskId, bool)>, Error>) {
        let n = result.as_ref().map_or(0, Vec::len);
        self.log
            .lock()
            .unwrap()
            .push(format!("{}.after {n} ok={}", self.name, result.is_ok()));
    }
}

/// Client middleware: `first` sees each request before `second` and the result after it; the
/// header the first one adds is on the stored task (the second one sees it and adds none); a
/// refusal fails the whole call with `Error::EnqueueRefused` before anything is written (the
/// good request of the same bulk call included), and calls no `after_enqueue`.
#[tokio::test]
async fn client_hooks_add_headers_and_refuse_with_a_typed_error() {
    let redis = RedisServer::start();
    let log = Log::default();
    let c = Client::with_config(
        ClientConfig::new(redis.url())
            .namespace("mwc")
            .middleware(Stamp {
                name: "first",
                log: Arc::clone(&log),
            })
            .middleware(Stamp {
                name: "second",
                log: Arc::clone(&log),
            }),
    )
    .await
    .unwrap();

    let id = c
        .enqueue_request(TaskRequest::new("job", "open", &1u8).unwrap())
        .await
        .unwrap();
    let info = c.status(&id).await.unwrap();
    assert_eq!(
        info.headers.get("tenant").map(String::as_str),
        Some("first")
    );
    assert_eq!(info.headers.len(), 1);
    assert_eq!(
        std::mem::take(&mut *log.lock().unwrap()),
        [
            "first.before open/job",
            "second.before open/job",
            "second.after 1 ok=true",
            "first.after 1 ok=true",
        ]
    );

    // The producer's own header wins: the middleware adds only what is missing.
    let own = c
        .enqueue_request(
            TaskRequest::new("job", "open", &2u8)
                .unwrap()
                .header("tenant", "42"),
        )
        .await
        .unwrap();
    assert_eq!(c.status(&own).await.unwrap().headers["tenant"], "42");
    log.lock().unwrap().clear();

    let good = TaskRequest::new("job", "open", &3u8).unwrap().id("good");
    let refused = TaskRequest::new("job", "closed", &4u8)
        .unwrap()
        .id("refused");
    let err = c.enqueue_bulk(vec![good, refused]).await.unwrap_err();
    assert!(
        matches!(&err, Error::EnqueueRefused(why) if why == "first refuses queue closed"),
        "{err:?}"
    );
    assert_eq!(err.kind(), "enqueue_refused");
    for id in ["open/good", "closed/refused"] {
        let id: TaskId = id.parse().unwrap();
        assert!(matches!(c.status(&id).await, Err(Error::NotFound(_))));
    }
    assert_eq!(
        *log.lock().unwrap(),
        [
            "first.before open/job",
            "second.before open/job",
            "first.before closed/job",
        ]
    );
}

/// Panics in `before` on a task's first run, and in `after` on every run.
struct Clumsy;

#[async_trait]
impl Middleware for Clumsy {
    async fn before(&self, run: &Run<'_>) -> Result<(), TaskError> {
        if run.ctx().attempt() == 1 {
            panic!("clumsy before");
        }
        Ok(())
    }

    async fn after(&self, _run: &Run<'_>, _outcome: &RunOutcome<'_>) {
        panic!("clumsy after");
    }

    fn name(&self) -> &'static str {
        "clumsy"
    }
}

/// Retried at once after a failed run.
#[task(name = "mw_sturdy", queue = "mwpanic", max_retries = 1)]
async fn mw_sturdy() -> Result<(), TaskError> {
    Ok(())
}

/// A panic in `before` fails the run like a handler's error (retried, its text naming the
/// middleware, the handler not run); a panic in `after` is ignored: the outer middleware still
/// gets its `after`, the outcome stands and the worker goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_hooks_fail_the_run_or_are_ignored() {
    let redis = RedisServer::start();
    let url = redis.url();
    let c = client(&url, "mwpanic").await;
    let log = Log::default();
    let w = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace("mwpanic")
            .register(mw_sturdy)
            .backoff(scheduler::Backoff::Fixed(Duration::ZERO))
            .middleware(Recorder {
                name: "outer",
                log: Arc::clone(&log),
            })
            .middleware(Clumsy),
    )
    .await;
    let id = mw_sturdy::new().send(&c).await.unwrap();
    let info = wait_finished(&c, &id, Duration::from_secs(20)).await;
    let report = w.stop().await;
    assert_eq!(info.state, TaskState::Succeeded);
    assert_eq!(info.attempts, 2);
    assert_eq!(
        info.last_error.as_deref(),
        Some("middleware clumsy panicked: clumsy before")
    );
    assert_eq!((report.succeeded, report.retried), (1, 1));
    assert_eq!(
        *log.lock().unwrap(),
        [
            "outer.before mw_sturdy #1",
            "outer.after mw_sturdy #1 retry: middleware clumsy panicked: clumsy before",
            "outer.before mw_sturdy #2",
            "outer.after mw_sturdy #2 succeeded",
        ]
    );
}
