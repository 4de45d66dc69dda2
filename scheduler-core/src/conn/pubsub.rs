//! Opening a pub/sub connection in each mode; on a cluster, choosing a live node.

use redis::{RedisError, RedisResult, Value};

use super::connect::{node_client, Endpoint, EndpointKind};
use super::Conn;
use crate::error::{Error, Result};

/// Node addresses (`host:port`) from a `CLUSTER SLOTS` reply, masters and replicas.
pub(super) fn cluster_slots_nodes(v: &Value) -> Vec<String> {
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
    pub(super) async fn timed<T>(
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
pub(super) fn rand_index(n: usize) -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    (nanos ^ (std::process::id() as usize)) % n.max(1)
}
