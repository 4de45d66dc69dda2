//! Connection modes: one Redis, a Redis Cluster, or a master found through Sentinel; plain TCP or
//! TLS; and [`Conn`], the one connection type every store method uses in all of them.
//!
//! | URL | mode |
//! |---|---|
//! | `redis://[user:password@]host:port[/db]` | one Redis (plain TCP) |
//! | `rediss://[user:password@]host:port[/db]` | one Redis over TLS |
//! | `redis+cluster://[user:password@]host1:port1,host2:port2` | Redis Cluster (seed nodes) |
//! | `rediss+cluster://...` | Redis Cluster over TLS |
//! | `redis+sentinel://[user:password@]host1:26379,host2:26379/<master>[/db]` | Sentinel |
//! | `rediss+sentinel://...` | Sentinel, TLS to the sentinels and the master |
//!
//! User and password authenticate to the data nodes (every node of a cluster, the master found
//! through Sentinel). Sentinels that need their own credentials take them as query parameters:
//! `?sentinel_username=...&sentinel_password=...`. TLS trusts the system's roots unless a
//! [`TlsConfig`] names a CA (and, for mutual TLS, a client certificate), given in
//! [`ConnectOptions::tls`] or through the environment ([`TlsConfig::from_env`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, RedisResult, TlsCertificates, TlsMode, Value,
};

use crate::error::{Error, Result};

/// Environment variable: path of a PEM file of CA certificates to trust for `rediss` URLs.
pub const ENV_TLS_CA_FILE: &str = "SCHEDULER_TLS_CA_FILE";
/// Environment variable: path of a PEM client certificate, for mutual TLS (with the key below).
pub const ENV_TLS_CERT_FILE: &str = "SCHEDULER_TLS_CERT_FILE";
/// Environment variable: path of the PEM private key of the client certificate.
pub const ENV_TLS_KEY_FILE: &str = "SCHEDULER_TLS_KEY_FILE";

/// Certificates for TLS connections (`rediss` URLs), all PEM.
///
/// Without one, TLS connections trust the system's root certificates and present no client
/// certificate.
///
/// # Examples
///
/// ```no_run
/// # fn demo() -> Result<(), scheduler_core::Error> {
/// use scheduler_core::conn::{ConnectOptions, TlsConfig};
/// let opts = ConnectOptions::new("rediss://redis.internal:6380")
///     .tls(TlsConfig::new().ca_file("/etc/redis/ca.pem")?);
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct TlsConfig {
    ca: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca", &self.ca.as_ref().map(|_| "<pem>"))
            .field("client_cert", &self.client.as_ref().map(|_| "<pem>"))
            .finish()
    }
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::InvalidConfig(format!(
            "cannot read the {what} file {}: {e}",
            path.display()
        ))
    })
}

impl TlsConfig {
    /// No CA (the system's roots), no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust exactly the CA certificates of this PEM text (instead of the system's roots).
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(pem.into());
        self
    }

    /// As [`TlsConfig::ca_pem`], read from a file.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when the file cannot be read.
    pub fn ca_file(self, path: impl AsRef<Path>) -> Result<Self> {
        Ok(self.ca_pem(read_pem(path.as_ref(), "CA certificate")?))
    }

    /// Present this client certificate and key (PEM) to servers that ask (mutual TLS).
    pub fn client_cert_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.client = Some((cert.into(), key.into()));
        self
    }

    /// As [`TlsConfig::client_cert_pem`], read from files.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when a file cannot be read.
    pub fn client_cert_files(self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self> {
        let c = read_pem(cert.as_ref(), "client certificate")?;
        let k = read_pem(key.as_ref(), "client key")?;
        Ok(self.client_cert_pem(c, k))
    }

    /// The configuration named by the environment: [`ENV_TLS_CA_FILE`], and [`ENV_TLS_CERT_FILE`]
    /// with [`ENV_TLS_KEY_FILE`]; `None` when none is set. Workers and the CLI use this, so a
    /// deployment sets certificates without code.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when a named file cannot be read, or only one of the client
    /// certificate and key is set.
    pub fn from_env() -> Result<Option<Self>> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let (ca, cert, key) = (
            var(ENV_TLS_CA_FILE),
            var(ENV_TLS_CERT_FILE),
            var(ENV_TLS_KEY_FILE),
        );
        if ca.is_none() && cert.is_none() && key.is_none() {
            return Ok(None);
        }
        let mut cfg = Self::new();
        if let Some(ca) = ca {
            cfg = cfg.ca_file(ca)?;
        }
        match (cert, key) {
            (Some(c), Some(k)) => cfg = cfg.client_cert_files(c, k)?,
            (None, None) => {}
            _ => {
                return Err(Error::InvalidConfig(format!(
                    "set both {ENV_TLS_CERT_FILE} and {ENV_TLS_KEY_FILE}, or neither"
                )))
            }
        }
        Ok(Some(cfg))
    }

    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }
}

/// How to reach the task store: URL (any form of the [module docs](self)), key namespace, TLS
/// certificates, timeouts.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), scheduler_core::Error> {
/// use scheduler_core::conn::ConnectOptions;
/// use scheduler_core::Store;
/// let store = Store::connect_with(
///     ConnectOptions::new("redis+cluster://10.0.0.1:6379,10.0.0.2:6379").namespace("jobs"),
/// )
/// .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub(crate) url: String,
    pub(crate) namespace: String,
    tls: Option<TlsConfig>,
    connection_timeout: Duration,
    response_timeout: Duration,
    health_check: Option<HealthCheck>,
}

/// How often a connection is checked with `PING`, and how long the reply may take before the
/// connection is replaced. See [`ConnectOptions::health_check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheck {
    /// Time between two checks.
    pub interval: Duration,
    /// Longest wait for the reply.
    pub timeout: Duration,
}

impl Default for HealthCheck {
    /// A `PING` every second, replaced after 3 s without a reply.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
        }
    }
}

impl ConnectOptions {
    /// Options for `url`, namespace `sched`, TLS certificates from the environment, a 5 s
    /// connection timeout, a 10 s response timeout and the default [`HealthCheck`].
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            namespace: "sched".into(),
            tls: None,
            connection_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            health_check: Some(HealthCheck::default()),
        }
    }

    /// Health check of the command connection (one Redis and TLS modes): a `PING` every
    /// `interval`; when one gets no reply within its `timeout`, or any request times out, the
    /// connection is replaced by a new one (requests already sent on the old one still get their
    /// replies or time out). A connection silently cut by the network (a black hole, or
    /// half-open after a fault) never fails by itself: without this, every request on it would
    /// time out, forever. `None` turns the periodic check off (a timed-out request still replaces
    /// the connection). Default: [`HealthCheck::default`]. Cluster and Sentinel connections have
    /// their own reconnection logic.
    pub fn health_check(mut self, check: Option<HealthCheck>) -> Self {
        self.health_check = check;
        self
    }

    /// Key namespace, the prefix of every key. Default `sched`.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }

    /// Certificates for `rediss` URLs. Default: [`TlsConfig::from_env`], else the system's roots.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How long one connection attempt may take. Default 5 s.
    pub fn connection_timeout(mut self, t: Duration) -> Self {
        self.connection_timeout = t;
        self
    }

    /// How long one request may wait for its reply. Default 10 s: a promote or claim of a full
    /// batch takes milliseconds, so only a dead or stalled server reaches it.
    pub fn response_timeout(mut self, t: Duration) -> Self {
        self.response_timeout = t;
        self
    }
}

/// Which kind of deployment a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// One Redis server (`redis://`, `rediss://`).
    Single,
    /// A Redis Cluster (`redis+cluster://`).
    Cluster,
    /// A master found through Sentinel (`redis+sentinel://`).
    Sentinel,
}

/// A parsed URL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Single(String),
    Cluster {
        /// `redis[s]://[userinfo@]`, the start of every node's URL.
        prefix: String,
        /// `host:port` of each seed node.
        seeds: Vec<String>,
        /// `[/db][?query]`, the end of every node's URL.
        tail: String,
    },
    Sentinel {
        tls: bool,
        /// `host:port` of each sentinel.
        sentinels: Vec<String>,
        master: String,
        /// `redis[s]://[userinfo@]x/[db]`, parsed for the credentials and db of the master.
        auth_url: String,
        sentinel_username: Option<String>,
        sentinel_password: Option<String>,
    },
}

fn invalid(url: &str, why: impl Into<String>) -> Error {
    Error::InvalidUrl {
        url: url.to_owned(),
        source: RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "invalid URL",
            why.into(),
        )),
    }
}

/// Percent-decodes a query value (`%XX`, `+` left as is).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let (b'%', Some(v)) = (b[i], hex) {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse(url: &str) -> Result<Target> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid(
            url,
            "no scheme (use redis://, redis+cluster://, redis+sentinel://)",
        ));
    };
    let (tls, kind) = match scheme.to_ascii_lowercase().as_str() {
        "redis" | "rediss" | "unix" | "redis+unix" => return Ok(Target::Single(url.to_owned())),
        "redis+cluster" => (false, Mode::Cluster),
        "rediss+cluster" => (true, Mode::Cluster),
        "redis+sentinel" => (false, Mode::Sentinel),
        "rediss+sentinel" => (true, Mode::Sentinel),
        other => return Err(invalid(url, format!("unsupported scheme {other:?}"))),
    };
    let node_scheme = if tls { "rediss" } else { "redis" };
    // Split off the query, then the path, then the user info (before the last '@').
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let default_port = if kind == Mode::Cluster { 6379 } else { 26379 };
    let hosts: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| {
            // `host`, `host:port`, `[v6]`, `[v6]:port`.
            let has_port = match h.rfind(']') {
                Some(end) => h[end..].contains(':'),
                None => h.contains(':'),
            };
            if has_port {
                h.to_owned()
            } else {
                format!("{h}:{default_port}")
            }
        })
        .collect();
    if hosts.is_empty() {
        return Err(invalid(url, "no host"));
    }
    let user = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    match kind {
        Mode::Cluster => {
            let tail = match (path.is_empty(), query.is_empty()) {
                (true, true) => String::new(),
                (false, true) => format!("/{path}"),
                (true, false) => format!("/?{query}"),
                (false, false) => format!("/{path}?{query}"),
            };
            Ok(Target::Cluster {
                prefix: format!("{node_scheme}://{user}"),
                seeds: hosts,
                tail,
            })
        }
        _ => {
            let mut segs = path.split('/').filter(|s| !s.is_empty());
            let master = segs
                .next()
                .map(percent_decode)
                .ok_or_else(|| invalid(url, "no master name (redis+sentinel://hosts/<master>)"))?;
            let db = segs.next().unwrap_or("0");
            let (mut sentinel_username, mut sentinel_password) = (None, None);
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                match k {
                    "sentinel_username" => sentinel_username = Some(percent_decode(v)),
                    "sentinel_password" => sentinel_password = Some(percent_decode(v)),
                    _ => {}
                }
            }
            Ok(Target::Sentinel {
                tls,
                sentinels: hosts,
                master,
                auth_url: format!("{node_scheme}://{user}localhost/{db}"),
                sentinel_username,
                sentinel_password,
            })
        }
    }
}

/// A connection to the task store in any [`Mode`]: cheap to clone (clones share it), usable from
/// many tasks at once, and it reconnects by itself. Every command of the `redis` crate works on
/// it (it implements [`ConnectionLike`]).
///
/// - One Redis: a multiplexed connection that reconnects with backoff.
/// - Cluster: routes each command by its key's slot (a script by its first key), follows
///   `MOVED`/`ASK`, reloads the slot map after a failover. A pipeline must keep to one slot; use
///   [`crate::Store::query_pipeline`] for one that spans partitions.
/// - Sentinel: asks the sentinels for the master, and asks again after any error that says the
///   master may have changed (connection lost, `READONLY`), so a failover heals by itself.
///
/// A request in flight while the connection breaks fails with a transient error
/// ([`Error::is_transient`]); callers retry it.
#[derive(Clone)]
pub struct Conn(Kind);

#[derive(Clone)]
enum Kind {
    Single(SingleConn),
    Cluster(ClusterConn),
    Sentinel(SentinelConn),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Conn").field(&self.mode()).finish()
    }
}

impl Conn {
    /// The mode of this connection.
    pub fn mode(&self) -> Mode {
        match self.0 {
            Kind::Single(_) => Mode::Single,
            Kind::Cluster(_) => Mode::Cluster,
            Kind::Sentinel(_) => Mode::Sentinel,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Kind::Single(c) => c.req_packed_command(cmd),
            Kind::Cluster(c) => c.req_packed_command(cmd),
            Kind::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Kind::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Kind::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Kind::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Kind::Single(c) => c.current().1.get_db(),
            Kind::Cluster(c) => c.current().1.get_db(),
            Kind::Sentinel(c) => c.0.db,
        }
    }
}

/// One Redis: a connection manager (which reconnects by itself after a dropped connection),
/// replaced by a new one when a request or a health check times out. A timeout does not make the
/// manager reconnect, and a connection that the network silently cut (no reset, no close) only
/// ever times out.
#[derive(Clone)]
struct SingleConn(Arc<SingleShared>);

struct SingleShared {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// The manager in use and its generation. A std mutex: held only to clone or replace it.
    current: Mutex<(u64, ConnectionManager)>,
}

impl SingleConn {
    fn current(&self) -> (u64, ConnectionManager) {
        self.0.current()
    }

    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut c) = self.current();
            let r = c.req_packed_command(cmd).await;
            if let Err(e) = &r {
                if e.is_timeout() {
                    self.0.replace(generation, e);
                }
            }
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (generation, mut c) = self.current();
            let r = c.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &r {
                if e.is_timeout() {
                    self.0.replace(generation, e);
                }
            }
            r
        })
    }
}

impl SingleShared {
    fn current(&self) -> (u64, ConnectionManager) {
        self.current.lock().expect("single conn poisoned").clone()
    }

    /// Replaces manager `generation` (unless a newer one replaced it already) by a new one that
    /// connects on first use. Requests in flight on the old one end as they would have.
    fn replace(&self, generation: u64, why: &dyn std::fmt::Display) {
        let mut cur = self.current.lock().expect("single conn poisoned");
        if cur.0 != generation {
            return;
        }
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()) {
            Ok(m) => {
                tracing::warn!(reason = %why, "replacing the connection to Redis");
                *cur = (generation + 1, m);
            }
            Err(e) => tracing::warn!(error = %e, "cannot replace the connection to Redis"),
        }
    }
}

/// Checks the connection with `PING` every `check.interval` and replaces it when the reply takes
/// longer than `check.timeout`. An error reply (Redis down, refused) is left to the manager's own
/// reconnection. Ends when the last clone of the connection is dropped.
fn spawn_health_check(shared: &Arc<SingleShared>, check: HealthCheck) {
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(check.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some((generation, mut c)) = weak.upgrade().map(|s| s.current()) else {
                return;
            };
            let reply = tokio::time::timeout(
                check.timeout,
                redis::cmd("PING").query_async::<Value>(&mut c),
            )
            .await;
            let timed_out = match &reply {
                Err(_) => true,
                Ok(Err(e)) => e.is_timeout(),
                Ok(Ok(_)) => false,
            };
            if timed_out {
                let Some(shared) = weak.upgrade() else { return };
                let why = format!("no reply to a health check within {:?}", check.timeout);
                shared.replace(generation, &why);
            }
        }
    });
}

/// A Redis Cluster connection, replaced by a new one (fresh slot map, fresh node connections)
/// when a request gets no answer within the stall limit. After `kill -9` of a master, the
/// redis-rs cluster client was seen to keep the slots of the dead node stuck for longer than
/// its own timeouts while a new client reached the promoted replica at once
/// (`tests/ha_cluster_failover.rs`).
#[derive(Clone)]
struct ClusterConn(Arc<ClusterShared>);

struct ClusterShared {
    client: redis::cluster::ClusterClient,
    /// The connection in use and its generation. A std mutex: held only to clone or replace it.
    current: Mutex<(u64, ClusterConnection)>,
    /// A replacement is being connected.
    replacing: std::sync::atomic::AtomicBool,
    /// Longest wait for a reply before the connection is replaced.
    stall: Duration,
}

impl ClusterConn {
    fn new(
        client: redis::cluster::ClusterClient,
        conn: ClusterConnection,
        stall: Duration,
    ) -> Self {
        Self(Arc::new(ClusterShared {
            client,
            current: Mutex::new((0, conn)),
            replacing: std::sync::atomic::AtomicBool::new(false),
            stall,
        }))
    }

    fn current(&self) -> (u64, ClusterConnection) {
        self.0
            .current
            .lock()
            .expect("cluster conn poisoned")
            .clone()
    }

    /// Runs `fut` on the current connection; a stall or a timeout replaces the connection.
    async fn guarded<T>(
        &self,
        generation: u64,
        fut: impl std::future::Future<Output = RedisResult<T>>,
    ) -> RedisResult<T> {
        match tokio::time::timeout(self.0.stall, fut).await {
            Ok(Err(e)) if e.is_timeout() => {
                self.replace(generation);
                Err(e)
            }
            Ok(r) => r,
            Err(_) => {
                self.replace(generation);
                Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "no reply from the Redis Cluster within the response timeout",
                )))
            }
        }
    }

    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut c) = self.current();
            self.guarded(generation, c.req_packed_command(cmd)).await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (generation, mut c) = self.current();
            self.guarded(generation, c.req_packed_commands(pipeline, offset, count))
                .await
        })
    }

    /// Connects a new client connection in the background and swaps it in, unless a newer
    /// generation is in use already or a replacement is under way.
    fn replace(&self, generation: u64) {
        if self.0.replacing.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = Arc::clone(&self.0);
        tokio::spawn(async move {
            let fresh =
                tokio::time::timeout(shared.stall * 2, shared.client.get_async_connection()).await;
            match fresh {
                Ok(Ok(c)) => {
                    let mut cur = shared.current.lock().expect("cluster conn poisoned");
                    if cur.0 == generation {
                        tracing::warn!(
                            "replacing the Redis Cluster connection after a request got no reply"
                        );
                        *cur = (generation + 1, c);
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot replace the Redis Cluster connection")
                }
                Err(_) => tracing::warn!("cannot replace the Redis Cluster connection: no answer"),
            }
            shared.replacing.store(false, Ordering::Release);
        });
    }
}

/// The master of a Sentinel deployment, found again whenever it may have changed.
#[derive(Clone)]
struct SentinelConn(Arc<SentinelShared>);

struct SentinelShared {
    /// Asks the sentinels. A tokio mutex: held across the lookup's awaits, so one lookup runs at
    /// a time and callers that queued behind it reuse its connection.
    resolver: tokio::sync::Mutex<SentinelClient>,
    /// The connection to the master we found, with its generation and address. A std mutex:
    /// held only to clone or replace it, never across an await.
    current: Mutex<Option<Current>>,
    generation: AtomicU64,
    config: AsyncConnectionConfig,
    db: i64,
    master_name: String,
    /// One client per sentinel, for the watchdog's address checks.
    sentinels: Vec<redis::Client>,
}

#[derive(Clone)]
struct Current {
    generation: u64,
    conn: MultiplexedConnection,
    /// `host:port` of the master, as the sentinels named it.
    addr: String,
}

/// How often the watchdog asks the sentinels which master they name.
const WATCH_EVERY: Duration = Duration::from_millis(500);

fn addr_string(a: &ConnectionAddr) -> String {
    match a {
        ConnectionAddr::Tcp(h, p)
        | ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => {
            format!("{h}:{p}")
        }
        other => format!("{other:?}"),
    }
}

/// Whether an error means the connection may be dead or the master may have moved: then we ask
/// the sentinels again before the next request.
fn master_may_have_moved(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown
            )
        )
}

impl SentinelShared {
    fn current(&self) -> Option<Current> {
        self.current.lock().expect("sentinel conn poisoned").clone()
    }

    async fn get(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(c) = self.current() {
            return Ok((c.generation, c.conn));
        }
        let mut resolver = self.resolver.lock().await;
        if let Some(c) = self.current() {
            return Ok((c.generation, c.conn));
        }
        // The lookup checks with `ROLE` that the node it names considers itself master.
        let client = resolver.async_get_client().await?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let addr = addr_string(client.get_connection_info().addr());
        tracing::info!(master = %addr, generation, "connected to the master named by Sentinel");
        *self.current.lock().expect("sentinel conn poisoned") = Some(Current {
            generation,
            conn: conn.clone(),
            addr,
        });
        Ok((generation, conn))
    }

    /// Forgets connection `generation` (unless a newer one replaced it already).
    fn forget(&self, generation: u64, why: &dyn std::fmt::Display) {
        let mut cur = self.current.lock().expect("sentinel conn poisoned");
        if cur.as_ref().is_some_and(|c| c.generation == generation) {
            tracing::warn!(reason = %why, "dropping the master connection; asking the sentinels again");
            *cur = None;
        }
    }

    /// A client for the master the sentinels name now (checked with `ROLE`).
    async fn master_client(&self) -> RedisResult<redis::Client> {
        self.resolver.lock().await.async_get_client().await
    }

    /// The master the first answering sentinel names, as `host:port`.
    async fn named_master(&self, conns: &mut [Option<MultiplexedConnection>]) -> Option<String> {
        for (client, slot) in self.sentinels.iter().zip(conns.iter_mut()) {
            if slot.is_none() {
                *slot = client
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await
                    .ok();
            }
            let Some(c) = slot.as_mut() else { continue };
            let reply: RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&self.master_name)
                .query_async(c)
                .await;
            match reply {
                Ok(Some((host, port))) => return Some(format!("{host}:{port}")),
                Ok(None) => {}
                Err(_) => *slot = None,
            }
        }
        None
    }
}

/// Watches which master the sentinels name, every [`WATCH_EVERY`], and drops our connection when
/// they name another one. A failover does not always close the connections to the old master
/// (Sentinel reconfigures a live old master as a replica only seconds later), and writes it takes
/// meanwhile are lost when it becomes a replica; the watchdog bounds that window to about
/// [`WATCH_EVERY`]. Ends when the last clone of the connection is dropped.
fn spawn_watchdog(shared: &Arc<SentinelShared>) {
    let weak = Arc::downgrade(shared);
    let n = shared.sentinels.len();
    tokio::spawn(async move {
        let mut conns: Vec<Option<MultiplexedConnection>> = vec![None; n];
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            let Some(cur) = shared.current() else {
                continue;
            };
            if let Some(named) = shared.named_master(&mut conns).await {
                if named != cur.addr {
                    let why = format!("the sentinels now name {named}, not {}", cur.addr);
                    shared.forget(cur.generation, &why);
                }
            }
        }
    });
}

impl SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut c) = self.0.get().await?;
            let r = c.req_packed_command(cmd).await;
            if let Err(e) = &r {
                if master_may_have_moved(e) {
                    self.0.forget(generation, e);
                }
            }
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (generation, mut c) = self.0.get().await?;
            let r = c.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &r {
                if master_may_have_moved(e) {
                    self.0.forget(generation, e);
                }
            }
            r
        })
    }
}

/// What a store keeps to open dedicated connections (pub/sub) in its mode.
#[derive(Clone)]
pub(crate) struct Endpoint {
    kind: EndpointKind,
    /// A client for one node: the server, the first seed node, or the master found at connect.
    pub(crate) node_client: redis::Client,
    connection_timeout: Duration,
}

#[derive(Clone)]
enum EndpointKind {
    Single,
    Cluster {
        /// `redis[s]://[userinfo@]`: the start of a node's URL.
        prefix: String,
        /// `host:port` of each seed node.
        seeds: Vec<String>,
        /// `[/db][?query]`: the end of a node's URL.
        tail: String,
        certs: Option<TlsCertificates>,
    },
    Sentinel(Arc<SentinelShared>),
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").finish_non_exhaustive()
    }
}

fn node_client(url: &str, certs: Option<&TlsCertificates>) -> RedisResult<redis::Client> {
    match certs {
        Some(c) if url.starts_with("rediss") => redis::Client::build_with_tls(url, c.clone()),
        _ => redis::Client::open(url),
    }
}

/// Connects in the mode `opts.url` names.
pub(crate) async fn connect(opts: &ConnectOptions) -> Result<(Conn, Endpoint)> {
    let url = opts.url.as_str();
    let target = parse(url)?;
    let tls = match &opts.tls {
        Some(t) => Some(t.clone()),
        None => TlsConfig::from_env()?,
    };
    let uses_tls = match &target {
        Target::Single(u) => u.starts_with("rediss"),
        Target::Cluster { prefix, .. } => prefix.starts_with("rediss"),
        Target::Sentinel { tls, .. } => *tls,
    };
    if uses_tls {
        // redis-rs builds rustls configs with the process-wide default crypto provider; install
        // ring unless the application installed one already (then this is a no-op).
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let certs = tls
        .as_ref()
        .filter(|_| uses_tls)
        .map(TlsConfig::certificates);
    let bad = |source: RedisError| Error::InvalidUrl {
        url: url.to_owned(),
        source,
    };
    match target {
        Target::Single(u) => {
            let client = node_client(&u, certs.as_ref()).map_err(bad)?;
            // The manager reconnects by itself after a dropped connection; a request in flight
            // at that moment fails with a transient error, which callers retry.
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(opts.connection_timeout))
                .set_response_timeout(Some(opts.response_timeout))
                .set_number_of_retries(4)
                .set_max_delay(Duration::from_secs(2));
            let conn = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
            let shared = Arc::new(SingleShared {
                client: client.clone(),
                config,
                current: Mutex::new((0, conn)),
            });
            if let Some(check) = opts.health_check {
                spawn_health_check(&shared, check);
            }
            Ok((
                Conn(Kind::Single(SingleConn(shared))),
                Endpoint {
                    kind: EndpointKind::Single,
                    node_client: client,
                    connection_timeout: opts.connection_timeout,
                },
            ))
        }
        Target::Cluster {
            prefix,
            seeds,
            tail,
        } => {
            let nodes: Vec<String> = seeds.iter().map(|h| format!("{prefix}{h}{tail}")).collect();
            let mut builder = ClusterClientBuilder::new(nodes.clone())
                .connection_timeout(opts.connection_timeout)
                .response_timeout(opts.response_timeout)
                .overall_response_timeout(Some(opts.response_timeout * 2))
                // Retries inside the cluster client cover MOVED and a node being replaced; a
                // failover takes seconds, and our callers retry transient errors beyond that.
                .retries(8)
                .min_retry_wait(50)
                .max_retry_wait(2000);
            if let Some(c) = &certs {
                builder = builder.certs(c.clone());
            }
            let client = builder.build().map_err(bad)?;
            let conn = client.get_async_connection().await?;
            // Replaced when a request stalls for 4 s: well past any call of ours (script calls
            // are bounded to milliseconds), well before the worker gives a call up (5 s).
            let conn = ClusterConn::new(
                client,
                conn,
                opts.response_timeout.min(Duration::from_secs(4)),
            );
            let seed = &nodes[0];
            let node_client = node_client(seed, certs.as_ref()).map_err(bad)?;
            Ok((
                Conn(Kind::Cluster(conn)),
                Endpoint {
                    kind: EndpointKind::Cluster {
                        prefix,
                        seeds,
                        tail,
                        certs,
                    },
                    node_client,
                    connection_timeout: opts.connection_timeout,
                },
            ))
        }
        Target::Sentinel {
            tls,
            sentinels,
            master,
            auth_url,
            sentinel_username,
            sentinel_password,
        } => {
            let scheme = if tls { "rediss" } else { "redis" };
            let addrs = sentinels
                .iter()
                .map(|h| {
                    format!("{scheme}://{h}")
                        .into_connection_info()
                        .map(|i| i.addr().clone())
                })
                .collect::<RedisResult<Vec<ConnectionAddr>>>()
                .map_err(bad)?;
            let auth = auth_url.into_connection_info().map_err(bad)?;
            let auth = auth.redis_settings();
            let mut builder =
                SentinelClientBuilder::new(addrs, &master, SentinelServerType::Master)
                    .map_err(bad)?
                    .set_client_to_redis_db(auth.db());
            if let Some(u) = auth.username() {
                builder = builder.set_client_to_redis_username(u);
            }
            if let Some(p) = auth.password() {
                builder = builder.set_client_to_redis_password(p);
            }
            if let Some(u) = &sentinel_username {
                builder = builder.set_client_to_sentinel_username(u);
            }
            if let Some(p) = &sentinel_password {
                builder = builder.set_client_to_sentinel_password(p);
            }
            if tls {
                builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
                if let Some(c) = &certs {
                    builder = builder
                        .set_client_to_redis_certificates(c.clone())
                        .set_client_to_sentinel_certificates(c.clone());
                }
            }
            let resolver = builder.build().map_err(bad)?;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(opts.connection_timeout))
                .set_response_timeout(Some(opts.response_timeout));
            let mut sentinel_settings = redis::RedisConnectionInfo::default();
            if let Some(u) = &sentinel_username {
                sentinel_settings = sentinel_settings.set_username(u);
            }
            if let Some(p) = &sentinel_password {
                sentinel_settings = sentinel_settings.set_password(p);
            }
            let watch = sentinels
                .iter()
                .map(|h| {
                    let info = format!("{scheme}://{h}")
                        .into_connection_info()?
                        .set_redis_settings(sentinel_settings.clone());
                    match &certs {
                        Some(c) if tls => redis::Client::build_with_tls(info, c.clone()),
                        _ => redis::Client::open(info),
                    }
                })
                .collect::<RedisResult<Vec<_>>>()
                .map_err(bad)?;
            let shared = Arc::new(SentinelShared {
                resolver: tokio::sync::Mutex::new(resolver),
                current: Mutex::new(None),
                generation: AtomicU64::new(0),
                config,
                db: auth.db(),
                master_name: master.clone(),
                sentinels: watch,
            });
            // Connect now, so a wrong master name or unreachable sentinels fail here.
            shared.get().await?;
            spawn_watchdog(&shared);
            let node_client = shared.master_client().await?;
            Ok((
                Conn(Kind::Sentinel(SentinelConn(Arc::clone(&shared)))),
                Endpoint {
                    kind: EndpointKind::Sentinel(shared),
                    node_client,
                    connection_timeout: opts.connection_timeout,
                },
            ))
        }
    }
}

/// Node addresses (`host:port`) from a `CLUSTER SLOTS` reply, masters and replicas.
fn cluster_slots_nodes(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Value::Array(ranges) = v else {
        return out;
    };
    for r in ranges {
        let Value::Array(items) = r else { continue };
        for node in items.iter().skip(2) {
            let Value::Array(n) = node else { continue };
            let host = match n.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => continue,
            };
            let Some(Value::Int(port)) = n.get(1) else {
                continue;
            };
            if host.is_empty() || *port <= 0 {
                continue;
            }
            let addr = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
    }
    out
}

impl Endpoint {
    /// `connect`, failed with an I/O timeout after the connection timeout.
    async fn timed<T>(
        &self,
        connect: impl std::future::Future<Output = RedisResult<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.connection_timeout, connect).await {
            Ok(r) => Ok(r?),
            Err(_) => {
                Err(RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)).into())
            }
        }
    }

    /// A connected pub/sub connection that receives every `PUBLISH` of the scripts.
    ///
    /// One Redis: that server. Sentinel: the master the sentinels name now. Cluster: any node,
    /// because a classic `PUBLISH` on one node is broadcast to every node of the cluster; we
    /// try the nodes of the current slot map, then the seed nodes, and take the first that
    /// answers, so after that node dies the next call lands on a live one.
    pub(crate) async fn pubsub(&self, conn: &Conn) -> Result<redis::aio::PubSub> {
        match &self.kind {
            // A connect that hangs (the network silently cut) fails after the connection timeout.
            EndpointKind::Single => self.timed(self.node_client.get_async_pubsub()).await,
            EndpointKind::Sentinel(shared) => {
                let client = shared.master_client().await?;
                self.timed(client.get_async_pubsub()).await
            }
            EndpointKind::Cluster {
                prefix,
                seeds,
                tail,
                certs,
            } => {
                let mut candidates = Vec::new();
                let mut c = conn.clone();
                if let Ok(Ok(v)) = tokio::time::timeout(
                    self.connection_timeout,
                    redis::cmd("CLUSTER")
                        .arg("SLOTS")
                        .query_async::<Value>(&mut c),
                )
                .await
                {
                    candidates = cluster_slots_nodes(&v);
                }
                // Spread listeners over the nodes rather than all on the first one.
                if !candidates.is_empty() {
                    let k = rand_index(candidates.len());
                    candidates.rotate_left(k);
                }
                for s in seeds {
                    if !candidates.contains(s) {
                        candidates.push(s.clone());
                    }
                }
                let mut last: Option<Error> = None;
                for addr in &candidates {
                    let url = format!("{prefix}{addr}{tail}");
                    let client = match node_client(&url, certs.as_ref()) {
                        Ok(c) => c,
                        Err(e) => {
                            last = Some(e.into());
                            continue;
                        }
                    };
                    match tokio::time::timeout(self.connection_timeout, client.get_async_pubsub())
                        .await
                    {
                        Ok(Ok(p)) => {
                            tracing::debug!(node = %addr, "listening for wake-ups on this cluster node");
                            return Ok(p);
                        }
                        Ok(Err(e)) => last = Some(e.into()),
                        Err(_) => {
                            last = Some(
                                RedisError::from((
                                    redis::ErrorKind::Io,
                                    "pub/sub connection timed out",
                                    addr.clone(),
                                ))
                                .into(),
                            )
                        }
                    }
                }
                Err(last.unwrap_or_else(|| {
                    RedisError::from((redis::ErrorKind::Io, "no cluster node reachable")).into()
                }))
            }
        }
    }
}

/// A pseudo-random index below `n` (load spreading only; no quality needed).
fn rand_index(n: usize) -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    (nanos ^ (std::process::id() as usize)) % n.max(1)
}

/// The first key of a command (a script's first key), which decides its cluster slot.
fn first_key(cmd: &Cmd) -> Option<Vec<u8>> {
    let mut args = cmd.args_iter().filter_map(|a| match a {
        redis::Arg::Simple(b) => Some(b),
        _ => None,
    });
    let name = args.next()?.to_ascii_uppercase();
    match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            args.next()?;
            let n: usize = std::str::from_utf8(args.next()?).ok()?.parse().ok()?;
            if n == 0 {
                None
            } else {
                args.next().map(<[u8]>::to_vec)
            }
        }
        b"TIME" | b"PING" | b"ECHO" | b"INFO" | b"DBSIZE" | b"CONFIG" | b"CLUSTER" | b"SCRIPT"
        | b"CLIENT" | b"COMMAND" | b"WAIT" | b"LASTSAVE" | b"ROLE" | b"PUBLISH" | b"SCAN" => None,
        _ => args.next().map(<[u8]>::to_vec),
    }
}

/// Splits `pipe` into pipelines of one cluster slot each, with the positions of their commands
/// in `pipe`. Commands without a key ride with the first group.
pub(crate) fn split_by_slot(pipe: &Pipeline, ignore_errors: bool) -> Vec<(Vec<usize>, Pipeline)> {
    use redis::cluster_routing::Slot;
    let mut order: Vec<Option<Slot>> = Vec::new();
    let mut groups: Vec<(Vec<usize>, Pipeline)> = Vec::new();
    let mut keyless = Vec::new();
    for (i, cmd) in pipe.cmd_iter().enumerate() {
        let Some(slot) = first_key(cmd).map(Slot::for_key) else {
            keyless.push(i);
            continue;
        };
        let g = match order.iter().position(|s| *s == Some(slot)) {
            Some(g) => g,
            None => {
                order.push(Some(slot));
                groups.push((Vec::new(), new_pipe(ignore_errors)));
                groups.len() - 1
            }
        };
        groups[g].0.push(i);
        groups[g].1.add_command(cmd.clone());
    }
    if !keyless.is_empty() {
        if groups.is_empty() {
            groups.push((Vec::new(), new_pipe(ignore_errors)));
        }
        let cmds: Vec<&Cmd> = pipe.cmd_iter().collect();
        for i in keyless {
            groups[0].0.push(i);
            groups[0].1.add_command(cmds[i].clone());
        }
    }
    groups
}

/// An empty pipeline, reporting failed commands in its replies with `ignore_errors`.
fn new_pipe(ignore_errors: bool) -> Pipeline {
    let mut p = Pipeline::new();
    if ignore_errors {
        p.ignore_errors();
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every URL form parses into its mode, with credentials, database and defaults.
    #[test]
    fn urls() {
        assert_eq!(
            parse("redis://u:p@h:1/2").unwrap(),
            Target::Single("redis://u:p@h:1/2".into())
        );
        assert_eq!(
            parse("rediss://h:1").unwrap(),
            Target::Single("rediss://h:1".into())
        );
        assert_eq!(
            parse("redis+cluster://u:p%40x@a:1,b:2,c").unwrap(),
            Target::Cluster {
                prefix: "redis://u:p%40x@".into(),
                seeds: vec!["a:1".into(), "b:2".into(), "c:6379".into()],
                tail: String::new(),
            }
        );
        assert_eq!(
            parse("rediss+cluster://[::1]:7000,[::1]/?protocol=resp2").unwrap(),
            Target::Cluster {
                prefix: "rediss://".into(),
                seeds: vec!["[::1]:7000".into(), "[::1]:6379".into()],
                tail: "/?protocol=resp2".into(),
            }
        );
        assert_eq!(
            parse("redis+sentinel://:pw@s1,s2:26380/mymaster/3?sentinel_password=x%21%é%").unwrap(),
            Target::Sentinel {
                tls: false,
                sentinels: vec!["s1:26379".into(), "s2:26380".into()],
                master: "mymaster".into(),
                auth_url: "redis://:pw@localhost/3".into(),
                sentinel_username: None,
                sentinel_password: Some("x!%é%".into()),
            }
        );
        assert!(matches!(
            parse("rediss+sentinel://s1/m").unwrap(),
            Target::Sentinel { tls: true, .. }
        ));
        for bad in [
            "h:1",
            "http://h",
            "redis+sentinel://s1",
            "redis+cluster:///x",
        ] {
            assert!(
                matches!(parse(bad), Err(Error::InvalidUrl { .. })),
                "{bad} should be refused"
            );
        }
    }

    /// A pipeline over several partitions splits into one pipeline per slot, keyless commands
    /// riding with the first, and positions map back to the original order.
    #[test]
    fn split() {
        let mut p = redis::pipe();
        p.cmd("TIME");
        p.zcard("ns:{q:0}:ready");
        p.zcard("ns:{q:1}:ready");
        p.cmd("EVALSHA")
            .arg("abc")
            .arg(2)
            .arg("ns:{q:0}:x")
            .arg("ns:{q:0}:y");
        p.cmd("EVALSHA").arg("abc").arg(0);
        let groups = split_by_slot(&p, false);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0, vec![1, 3, 0, 4]);
        assert_eq!(groups[1].0, vec![2]);
        assert_eq!(groups[0].1.len(), 4);
    }
}
