//! [`connect`]: parses the URL, sets TLS up, and opens the connection of its mode; the
//! [`Endpoint`] a store keeps to open pub/sub connections later.

use std::sync::Arc;
use std::time::Duration;

use redis::{RedisError, RedisResult, TlsCertificates};

use super::cluster;
use super::options::ConnectOptions;
use super::sentinel;
use super::sentinel::SentinelShared;
use super::single;
use super::tls::TlsConfig;
use super::url::{parse, Target};
use super::Conn;
use crate::error::{Error, Result};

/// What a store keeps to open dedicated connections (pub/sub) in its mode.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(super) kind: EndpointKind,
    /// A client for one node: the server, the first seed node, or the master found at connect.
    pub(crate) node_client: redis::Client,
    pub(super) connection_timeout: Duration,
}

#[derive(Clone)]
pub(super) enum EndpointKind {
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

pub(super) fn node_client(
    url: &str,
    certs: Option<&TlsCertificates>,
) -> RedisResult<redis::Client> {
    match certs {
        Some(c) if url.starts_with("rediss") => redis::Client::build_with_tls(url, c.clone()),
        _ => redis::Client::open(url),
    }
}

/// The error for a URL the Redis client refused.
pub(super) fn bad_url(url: &str) -> impl Fn(RedisError) -> Error + Copy + '_ {
    move |source| Error::InvalidUrl {
        url: url.to_owned(),
        source,
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
    match target {
        Target::Single(u) => single::connect(&u, opts, certs.as_ref()).await,
        Target::Cluster {
            prefix,
            seeds,
            tail,
        } => cluster::connect(prefix, seeds, tail, opts, certs).await,
        Target::Sentinel {
            tls,
            sentinels,
            master,
            auth_url,
            sentinel_username,
            sentinel_password,
        } => {
            sentinel::connect(
                opts,
                certs,
                tls,
                sentinels,
                master,
                auth_url,
                (sentinel_username, sentinel_password),
            )
            .await
        }
    }
}
