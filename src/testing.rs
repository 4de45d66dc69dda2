//! Helpers for testing code that schedules and runs tasks (feature `testing`; use it as a
//! dev-dependency): a throwaway `redis-server` per test, time travel for tasks scheduled days
//! ahead, and a drain that runs everything due and returns when the queues are idle. Guide:
//! `docs/testing.md`.
//!
//! ```no_run
//! use std::time::Duration;
//! use scheduler::testing::{advance, drain, TestRedis};
//! use scheduler::{task, TaskError, TaskState};
//!
//! #[task(queue = "coupons")]
//! async fn expire_coupon(code: String) -> Result<(), TaskError> {
//!     println!("coupon {code} expired");
//!     Ok(())
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = TestRedis::start()?;                  // its own redis-server, killed on drop
//! let client = redis.client().await?;               // a namespace marked for tests
//! let id = expire_coupon::new("WELCOME".into())
//!     .countdown(Duration::from_secs(30 * 86_400))  // 30 days ahead
//!     .send(&client)
//!     .await?;
//! assert_eq!(advance(&client, "coupons", Duration::from_secs(31 * 86_400)).await?, 1);
//! let worker = redis.worker().register(expire_coupon).build().await?;
//! drain(worker, &client, Duration::from_secs(10)).await?;
//! assert_eq!(client.status(&id).await?.state, TaskState::Succeeded);
//! # Ok(()) }
//! ```
//!
//! # Why time travel cannot reach production
//!
//! [`advance`] and [`make_due`] run a script that refuses, changing nothing, unless the
//! namespace carries the key `<ns>:testing`; only [`TestRedis::client`] and
//! [`TestRedis::client_in`] write it, on the redis-server that `TestRedis` started itself. Against
//! any other server they return [`Error::NotATestNamespace`].

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use scheduler_core::redis;
use scheduler_core::store::Travel;
use scheduler_core::{Client, ClientConfig, Error, Inspector, Result, TaskId};
use scheduler_worker::{Worker, WorkerBuilder, WorkerReport};

/// How many tasks one call of the time-travel script moves at most.
const TRAVEL_BATCH: u32 = 1_000;

/// A `redis-server` of the test's own on a free loopback port, with no persistence, in a temp
/// dir; killed (and the dir removed) on drop. `redis-server` must be on `PATH`.
#[derive(Debug)]
pub struct TestRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl TestRedis {
    /// Starts the server and waits (up to 10 s) until it answers `PING`; on a port taken by
    /// another process meanwhile it tries a new one, up to 5 times.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `redis-server` cannot be run (not on `PATH`), or did not come up.
    pub fn start() -> Result<Self> {
        let mut last = None;
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir = std::env::temp_dir().join(format!(
                "scheduler-test-{}-{port}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir)?;
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("cannot start redis-server (is it on PATH?): {e}"),
                    )
                })?;
            let mut server = TestRedis { child, port, dir };
            match server.wait_ready(Duration::from_secs(10)) {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| std::io::Error::other("redis-server did not start"))
            .into())
    }

    /// Waits for the first `PONG`, or the process to exit.
    fn wait_ready(&mut self, wait: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if self.ping().is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "redis-server on port {} exited: {status}",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(std::io::Error::other(format!(
            "redis-server on port {} did not answer PING in {wait:?}",
            self.port
        )))
    }

    fn ping(&self) -> redis::RedisResult<()> {
        let mut con = redis::Client::open(self.url())?.get_connection()?;
        redis::cmd("PING").query::<String>(&mut con).map(drop)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A client of this server in the default namespace, marked for tests.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn client(&self) -> Result<Client> {
        self.client_in(scheduler_core::defaults::NAMESPACE).await
    }

    /// A client of this server in `namespace`, marked for tests (key `<namespace>:testing`), so
    /// that [`advance`] and [`make_due`] work on it.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn client_in(&self, namespace: &str) -> Result<Client> {
        let client =
            Client::with_config(ClientConfig::new(self.url()).namespace(namespace)).await?;
        let mut con = redis::Client::open(self.url())?.get_connection()?;
        redis::cmd("SET")
            .arg(client.store().test_marker())
            .arg(1)
            .query::<()>(&mut con)?;
        Ok(client)
    }

    /// A worker builder connected to this server (default namespace): register tasks, then
    /// build it and give it to [`drain`]. Use `.namespace(...)` for the namespace of
    /// [`TestRedis::client_in`].
    pub fn worker(&self) -> WorkerBuilder {
        Worker::builder().redis_url(self.url())
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes every task of `queue` scheduled within `by` from now (by the Redis clock) due now,
/// retries waiting for their backoff included, and wakes the promoters; returns how many. Their
/// `run_at` becomes now. A running worker runs them at once; [`drain`] runs them too.
///
/// # Errors
///
/// [`Error::NotATestNamespace`] on a namespace not made by [`TestRedis`] (nothing changed);
/// [`Error::UnknownQueue`] for a queue nothing was enqueued to; a Redis error.
pub async fn advance(client: &Client, queue: &str, by: Duration) -> Result<u64> {
    let shards = Inspector::new(client).shards(queue).await?;
    let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX / 4);
    let mut moved = 0;
    for shard in 0..shards {
        let p = client.store().partition(queue, shard);
        loop {
            let most = TRAVEL_BATCH;
            let n = client
                .store()
                .time_travel(&p, Travel::Window { ms, most })
                .await?;
            moved += n;
            if n < u64::from(most) {
                break;
            }
        }
    }
    Ok(moved)
}

/// Makes the scheduled task `id` due now (its `run_at` too) and wakes the promoter; `false` when
/// it is not waiting for a later due time (already due, running, finished, or unknown).
///
/// # Errors
///
/// [`Error::NotATestNamespace`] on a namespace not made by [`TestRedis`] (nothing changed);
/// [`Error::UnknownQueue`]; a Redis error.
pub async fn make_due(client: &Client, id: &TaskId) -> Result<bool> {
    let shards = Inspector::new(client).shards(id.queue()).await?;
    let p = client.store().partition(id.queue(), id.shard(shards));
    let n = client
        .store()
        .time_travel(&p, Travel::Ids(&[id.id()]))
        .await?;
    Ok(n == 1)
}

/// Runs `worker` until every queue it serves is idle (nothing due, ready or running, seen twice
/// 20 ms apart), then shuts it down gracefully and returns its report. Tasks scheduled for
/// later (a retry's backoff, a countdown) are not waited for: [`advance`] makes them due.
///
/// # Errors
///
/// [`Error::Protocol`] when the queues are not idle within `timeout` (the worker is shut down
/// first); a Redis error of the checks.
pub async fn drain(worker: Worker, client: &Client, timeout: Duration) -> Result<WorkerReport> {
    let queues = worker.config().queues().to_vec();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let inspector = Inspector::new(client);
    let deadline = Instant::now() + timeout;
    let mut idle_checks = 0;
    let outcome = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        match idle(&inspector, &queues).await {
            Ok(true) => idle_checks += 1,
            Ok(false) => idle_checks = 0,
            Err(e) => break Err(e),
        }
        if idle_checks >= 2 {
            break Ok(());
        }
        if Instant::now() >= deadline {
            break Err(Error::Protocol(format!(
                "drain: queues {queues:?} not idle after {timeout:?}"
            )));
        }
    };
    let _ = stop.send(());
    let report = run
        .await
        .map_err(|e| Error::Protocol(format!("drain: the worker task failed: {e}")))?;
    outcome.map(|()| report)
}

/// Whether no queue of `queues` has a task due, ready or running.
async fn idle(inspector: &Inspector, queues: &[String]) -> Result<bool> {
    for q in queues {
        match inspector.queue(q).await {
            Ok(c) if c.total.due_now + c.total.ready + c.total.running > 0 => return Ok(false),
            // Nothing was ever enqueued to it.
            Ok(_) | Err(Error::UnknownQueue(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
