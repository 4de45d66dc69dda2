//! [`Store`]: one connection to Redis, the key names, and the plumbing every script call shares
//! (NOSCRIPT fallback in pipelines, retries of transient errors).

use std::future::Future;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{aio::ConnectionManagerConfig, Pipeline, ScriptInvocation, Value};

use crate::error::{Error, Result};
use crate::id::validate_queue;
use crate::keys::{Keys, PartitionKeys};

/// A handle to the task store: a multiplexed, self-reconnecting connection plus key names.
///
/// Cheap to clone; clones share the connection. Clients and workers are built on it; use it
/// directly only to write tools (it exposes every script as a typed method).
#[derive(Clone)]
pub struct Store {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("namespace", &self.keys.namespace())
            .finish_non_exhaustive()
    }
}

/// One partition (queue, shard) with its key names and wake-up channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Partition {
    /// The queue.
    pub queue: String,
    /// The shard within the queue.
    pub shard: u16,
    /// The partition's key names.
    pub keys: PartitionKeys,
    /// The queue's wake-up channel.
    pub channel: String,
}

impl Store {
    /// Connects to the Redis at `url` (`redis://[user:password@]host:port[/db]`) with key
    /// namespace `namespace`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] for a malformed URL, [`Error::Redis`] when Redis cannot be reached.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|source| Error::InvalidUrl {
            url: url.to_owned(),
            source,
        })?;
        // The manager reconnects by itself after a dropped connection; a request in flight at
        // that moment fails with a transient error, which callers retry (see `retry_transient`).
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(4)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(Self {
            client,
            conn,
            keys: Keys::new(namespace),
        })
    }

    /// The key names of this store's namespace.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The underlying Redis client, to open dedicated connections (pub/sub).
    pub fn redis_client(&self) -> &redis::Client {
        &self.client
    }

    /// A clone of the shared multiplexed connection, for plain commands.
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The partition (`queue`, `shard`).
    pub fn partition(&self, queue: &str, shard: u16) -> Partition {
        Partition {
            queue: queue.to_owned(),
            shard,
            keys: self.keys.partition(queue, shard),
            channel: self.keys.wake_channel(queue),
        }
    }

    /// Records `shards` as the shard count of `queue` unless one is recorded already, and returns
    /// the recorded count.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQueueName`], or a Redis error.
    pub async fn register_queue(&self, queue: &str, shards: u16) -> Result<u16> {
        validate_queue(queue)?;
        let mut conn = self.conn();
        let (_, stored): (bool, Option<u16>) = redis::pipe()
            .hset_nx(self.keys.queues(), queue, shards)
            .hget(self.keys.queues(), queue)
            .query_async(&mut conn)
            .await?;
        stored.ok_or_else(|| Error::Protocol(format!("queue {queue} vanished from the registry")))
    }

    /// Runs several invocations of one script in a single pipeline (one round trip) and returns
    /// their replies in order. Pipelines do not fall back from EVALSHA to EVAL by themselves, so on
    /// NOSCRIPT (a restarted or flushed Redis) we load the script and send the pipeline again.
    /// Callers keep one script kind per pipeline, so NOSCRIPT means that none of them ran.
    pub(crate) async fn run_pipeline(&self, invs: &[ScriptInvocation<'_>]) -> Result<Vec<Value>> {
        if invs.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn();
        let mut pipe = Pipeline::with_capacity(invs.len());
        for inv in invs {
            pipe.invoke_script(inv);
        }
        match pipe.query_async::<Vec<Value>>(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                invs[0].load_async(&mut conn).await?;
                Ok(pipe.query_async(&mut conn).await?)
            }
            other => Ok(other?),
        }
    }

    /// Runs one script invocation (EVALSHA, falling back to loading the script on NOSCRIPT).
    pub(crate) async fn run_script(&self, inv: &ScriptInvocation<'_>) -> Result<Value> {
        let mut conn = self.conn();
        Ok(inv.invoke_async(&mut conn).await?)
    }
}

/// Runs `op` and retries it while it fails with a transient error (connection lost, Redis loading,
/// failover), `attempts` times in all, backing off 50 ms, 100 ms, 200 ms... up to 2 s.
///
/// Use it only for operations that are safe to repeat: every script here is (enqueue is idempotent
/// by task id; fenced scripts reject a second application).
///
/// # Errors
///
/// The last error, once attempts are used up or the error is not transient.
pub async fn retry_transient<T, F, Fut>(attempts: u32, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(50);
    let mut left = attempts.max(1);
    loop {
        match op().await {
            Err(e) if e.is_transient() && left > 1 => {
                left -= 1;
                tracing::debug!(error = %e, "transient Redis error, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}
