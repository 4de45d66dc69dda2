//! Redis Cluster: [`ClusterConn`], the cluster client replaced when a request stalls.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, TlsCertificates, Value};

use super::connect::{bad_url, node_client, Endpoint, EndpointKind};
use super::options::ConnectOptions;
use super::{Conn, Kind};
use crate::error::Result;

/// A Redis Cluster connection, replaced by a new one (fresh slot map, fresh node connections)
/// when a request gets no answer within the stall limit. After `kill -9` of a master, the
/// redis-rs cluster client was seen to keep the slots of the dead node stuck for longer than
/// its own timeouts while a new client reached the promoted replica at once
/// (`tests/ha_cluster_failover.rs`).
#[derive(Clone)]
pub(super) struct ClusterConn(pub(super) Arc<ClusterShared>);

pub(super) struct ClusterShared {
    pub(super) client: redis::cluster::ClusterClient,
    /// The connection in use and its generation. A std mutex: held only to clone or replace it.
    pub(super) current: Mutex<(u64, ClusterConnection)>,
    /// A replacement is being connected.
    pub(super) replacing: std::sync::atomic::AtomicBool,
    /// Longest wait for a reply before the connection is replaced.
    pub(super) stall: Duration,
}

impl ClusterConn {
    pub(super) fn new(
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

    pub(super) fn current(&self) -> (u64, ClusterConnection) {
        self.0
            .current
            .lock()
            .expect("cluster conn poisoned")
            .clone()
    }

    /// Runs `fut` on the current connection; a stall or a timeout replaces the connection.
    pub(super) async fn guarded<T>(
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

    pub(super) fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut c) = self.current();
            self.guarded(generation, c.req_packed_command(cmd)).await
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
            self.guarded(generation, c.req_packed_commands(pipeline, offset, count))
                .await
        })
    }

    /// Connects a new client connection in the background and swaps it in, unless a newer
    /// generation is in use already or a replacement is under way.
    pub(super) fn replace(&self, generation: u64) {
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

/// Connects to the cluster of seed nodes `seeds`, each reached at `{prefix}{seed}{tail}`.
pub(super) async fn connect(
    prefix: String,
    seeds: Vec<String>,
    tail: String,
    opts: &ConnectOptions,
    certs: Option<TlsCertificates>,
) -> Result<(Conn, Endpoint)> {
    let bad = bad_url(&opts.url);
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
