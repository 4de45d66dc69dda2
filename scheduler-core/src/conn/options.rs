//! [`ConnectOptions`]: URL, namespace, TLS, timeouts, health checks.

use std::time::Duration;

use super::tls::TlsConfig;

/// How to reach the task store: URL (any form of the [module docs](super)), key namespace, TLS
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
    pub(super) tls: Option<TlsConfig>,
    pub(super) connection_timeout: Duration,
    pub(super) response_timeout: Duration,
    pub(super) health_check: Option<HealthCheck>,
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
            namespace: crate::defaults::NAMESPACE.into(),
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
