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

mod cluster;
mod connect;
mod options;
mod pubsub;
mod sentinel;
mod single;
mod slots;
mod tls;
mod url;

use cluster::ClusterConn;
pub(crate) use connect::{connect, Endpoint};
pub use options::{ConnectOptions, HealthCheck};
use sentinel::SentinelConn;
use single::SingleConn;
pub(crate) use slots::split_by_slot;
pub use tls::{TlsConfig, ENV_TLS_CA_FILE, ENV_TLS_CERT_FILE, ENV_TLS_KEY_FILE};

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisFuture, Value};

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
/// ([`crate::Error::is_transient`]); callers retry it.
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
