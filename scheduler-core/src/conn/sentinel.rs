//! Sentinel: [`SentinelConn`], the master the sentinels name, found again after a failover, and
//! its watchdog.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, RedisResult, TlsCertificates, TlsMode, Value,
};

use super::connect::{bad_url, Endpoint, EndpointKind};
use super::options::ConnectOptions;
use super::{Conn, Kind};
use crate::error::Result;

/// The master of a Sentinel deployment, found again whenever it may have changed.
#[derive(Clone)]
pub(super) struct SentinelConn(pub(super) Arc<SentinelShared>);

pub(super) struct SentinelShared {
    /// Asks the sentinels. A tokio mutex: held across the lookup's awaits, so one lookup runs at
    /// a time and callers that queued behind it reuse its connection.
    pub(super) resolver: tokio::sync::Mutex<SentinelClient>,
    /// The connection to the master we found, with its generation and address. A std mutex:
    /// held only to clone or replace it, never across an await.
    pub(super) current: Mutex<Option<Current>>,
    pub(super) generation: AtomicU64,
    pub(super) config: AsyncConnectionConfig,
    pub(super) db: i64,
    pub(super) master_name: String,
    /// One client per sentinel, for the watchdog's address checks.
    pub(super) sentinels: Vec<redis::Client>,
}

#[derive(Clone)]
pub(super) struct Current {
    pub(super) generation: u64,
    pub(super) conn: MultiplexedConnection,
    /// `host:port` of the master, as the sentinels named it.
    pub(super) addr: String,
}

/// How often the watchdog asks the sentinels which master they name.
pub(super) const WATCH_EVERY: Duration = Duration::from_millis(500);

pub(super) fn addr_string(a: &ConnectionAddr) -> String {
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
pub(super) fn master_may_have_moved(e: &RedisError) -> bool {
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
    pub(super) fn current(&self) -> Option<Current> {
        self.current.lock().expect("sentinel conn poisoned").clone()
    }

    pub(super) async fn get(&self) -> RedisResult<(u64, MultiplexedConnection)> {
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
    pub(super) fn forget(&self, generation: u64, why: &dyn std::fmt::Display) {
        let mut cur = self.current.lock().expect("sentinel conn poisoned");
        if cur.as_ref().is_some_and(|c| c.generation == generation) {
            tracing::warn!(reason = %why, "dropping the master connection; asking the sentinels again");
            *cur = None;
        }
    }

    /// A client for the master the sentinels name now (checked with `ROLE`).
    pub(super) async fn master_client(&self) -> RedisResult<redis::Client> {
        self.resolver.lock().await.async_get_client().await
    }

    /// The master the first answering sentinel names, as `host:port`.
    pub(super) async fn named_master(
        &self,
        conns: &mut [Option<MultiplexedConnection>],
    ) -> Option<String> {
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
pub(super) fn spawn_watchdog(shared: &Arc<SentinelShared>) {
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
    pub(super) fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
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

    pub(super) fn req_packed_commands<'a>(
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

/// The credentials for the sentinels themselves: user name and password.
pub(super) type SentinelAuth = (Option<String>, Option<String>);

/// Connects to the master `master` that the sentinels at `sentinels` (`host:port`) name; the
/// master's credentials and database come from `auth_url`.
pub(super) async fn connect(
    opts: &ConnectOptions,
    certs: Option<TlsCertificates>,
    tls: bool,
    sentinels: Vec<String>,
    master: String,
    auth_url: String,
    (sentinel_username, sentinel_password): SentinelAuth,
) -> Result<(Conn, Endpoint)> {
    let bad = bad_url(&opts.url);
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
    let mut builder = SentinelClientBuilder::new(addrs, &master, SentinelServerType::Master)
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
