//! One Redis: [`SingleConn`], a connection manager replaced when a request or a health check
//! times out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, TlsCertificates, Value};

use super::connect::{bad_url, node_client, Endpoint, EndpointKind};
use super::options::{ConnectOptions, HealthCheck};
use super::{Conn, Kind};
use crate::error::Result;

/// One Redis: a connection manager (which reconnects by itself after a dropped connection),
/// replaced by a new one when a request or a health check times out. A timeout does not make the
/// manager reconnect, and a connection that the network silently cut (no reset, no close) only
/// ever times out.
#[derive(Clone)]
pub(super) struct SingleConn(pub(super) Arc<SingleShared>);

pub(super) struct SingleShared {
    pub(super) client: redis::Client,
    pub(super) config: ConnectionManagerConfig,
    /// The manager in use and its generation. A std mutex: held only to clone or replace it.
    pub(super) current: Mutex<(u64, ConnectionManager)>,
}

impl SingleConn {
    pub(super) fn current(&self) -> (u64, ConnectionManager) {
        self.0.current()
    }

    pub(super) fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
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

    pub(super) fn req_packed_commands<'a>(
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
    pub(super) fn current(&self) -> (u64, ConnectionManager) {
        self.current.lock().expect("single conn poisoned").clone()
    }

    /// Replaces manager `generation` (unless a newer one replaced it already) by a new one that
    /// connects on first use. Requests in flight on the old one end as they would have.
    pub(super) fn replace(&self, generation: u64, why: &dyn std::fmt::Display) {
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
pub(super) fn spawn_health_check(shared: &Arc<SingleShared>, check: HealthCheck) {
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

/// Connects to the one Redis at `u`.
pub(super) async fn connect(
    u: &str,
    opts: &ConnectOptions,
    certs: Option<&TlsCertificates>,
) -> Result<(Conn, Endpoint)> {
    let bad = bad_url(&opts.url);
    let client = node_client(u, certs).map_err(bad)?;
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
