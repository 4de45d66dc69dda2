//! Flow-control limits that hold across every worker process and host: at most N runs at once
//! (concurrency) and at most N starts per period (rate), per task name, per queue, or per key
//! chosen at enqueue (a tenant, an account). The design, algorithms and error bounds are in
//! `docs/flow-control.md`.
//!
//! A limit is declared for a [`LimitScope`] and stored in Redis (`<ns>:limits`, readable with
//! `redis-cli HGETALL sched:limits`); workers read it when they start, when it changes (a
//! `limits` message) and every sweep interval. A keyed limit ([`LimitScope::key`]) gives each
//! key its own budget: a task takes part when it was enqueued with
//! [`crate::TaskRequest::limit_key`] for that family.
//!
//! # Examples
//!
//! ```no_run
//! # use std::time::Duration;
//! # async fn demo(client: &scheduler_core::Client) -> Result<(), scheduler_core::Error> {
//! use scheduler_core::limits::{Limit, LimitScope};
//! use scheduler_core::{Inspector, TaskRequest};
//!
//! let inspector = Inspector::new(client);
//! // At most 100 calls per second to the payment provider, across all workers.
//! inspector.set_limit(&LimitScope::task("charge_card")?, Limit::rate(100, Duration::from_secs(1))?).await?;
//! // At most 5 exports running at once per tenant.
//! inspector.set_limit(&LimitScope::key("tenant")?, Limit::concurrency(5)?).await?;
//! let req = TaskRequest::new("export", "exports", &42u64)?.limit_key("tenant", "tenant-42")?;
//! client.enqueue_request(req).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use ring::digest::{digest, SHA256};

use crate::error::{Error, Result};
use crate::headers::Headers;
use crate::id::validate_queue;

/// Most bytes of one limit key ([`crate::TaskRequest::limit_key`]): 1 KiB.
pub const MAX_LIMIT_KEY_BYTES: usize = 1024;

/// Longest rate-limit period: one day.
pub const MAX_RATE_PERIOD: Duration = Duration::from_secs(86_400);

/// The header a task's key for limit family `<family>` is carried in: `sched.limit.<family>`.
/// Headers travel with the task at no cost to tasks without them, and workers read them anyway.
pub const LIMIT_HEADER_PREFIX: &str = "sched.limit.";

/// What a limit applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitScope {
    /// Every task with this name, in any queue: one budget.
    Task(String),
    /// Every task of this queue: one budget.
    Queue(String),
    /// Tasks enqueued with a key of this family ([`crate::TaskRequest::limit_key`]): one budget
    /// per key.
    Key(String),
}

impl LimitScope {
    /// Every task named `name` (1–200 bytes, no control characters).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLimit`] for an empty or overlong name.
    pub fn task(name: &str) -> Result<Self> {
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(Error::InvalidLimit(format!("task name {name:?}")));
        }
        Ok(Self::Task(name.to_owned()))
    }

    /// Every task of `queue`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLimit`] for a malformed queue name.
    pub fn queue(queue: &str) -> Result<Self> {
        validate_queue(queue).map_err(|_| Error::InvalidLimit(format!("queue {queue:?}")))?;
        Ok(Self::Queue(queue.to_owned()))
    }

    /// Tasks keyed in `family` (1–64 of `A-Z a-z 0-9 _ - .`), one budget per key.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLimit`] for a malformed family name.
    pub fn key(family: &str) -> Result<Self> {
        validate_family(family)?;
        Ok(Self::Key(family.to_owned()))
    }

    /// The field of `<ns>:limits`: `task:<name>`, `queue:<queue>` or `key:<family>`.
    pub fn field(&self) -> String {
        match self {
            Self::Task(n) => format!("task:{n}"),
            Self::Queue(q) => format!("queue:{q}"),
            Self::Key(f) => format!("key:{f}"),
        }
    }

    /// The scope of a field of `<ns>:limits`, or `None` for a field this version does not know.
    pub fn from_field(field: &str) -> Option<Self> {
        let (kind, name) = field.split_once(':')?;
        match kind {
            "task" => Self::task(name).ok(),
            "queue" => Self::queue(name).ok(),
            "key" => Self::key(name).ok(),
            _ => None,
        }
    }
}

impl fmt::Display for LimitScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.field())
    }
}

fn validate_family(family: &str) -> Result<()> {
    validate_queue(family).map_err(|_| Error::InvalidLimit(format!("key family {family:?}")))
}

/// Checks a limit key: 1 to [`MAX_LIMIT_KEY_BYTES`] bytes; anything else goes (braces, colons,
/// unicode): the key only ever reaches Redis hashed into a budget's digest.
///
/// # Errors
///
/// [`Error::InvalidLimit`] otherwise.
pub fn validate_limit_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_LIMIT_KEY_BYTES {
        return Err(Error::InvalidLimit(format!(
            "limit key of {} bytes (1 to {MAX_LIMIT_KEY_BYTES})",
            key.len()
        )));
    }
    Ok(())
}

/// A limit: at most `concurrency` runs at once, and/or at most `rate.0` starts in any window of
/// `rate.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limit {
    concurrency: Option<u32>,
    rate: Option<(u32, Duration)>,
}

impl Limit {
    /// At most `n` runs at once.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLimit`] for 0.
    pub fn concurrency(n: u32) -> Result<Self> {
        Self::default().and_concurrency(n)
    }

    /// At most `n` starts in any window of `per` (a sliding window).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLimit`] for `n` = 0, or `per` under 1 ms or over [`MAX_RATE_PERIOD`].
    pub fn rate(n: u32, per: Duration) -> Result<Self> {
        Self::default().and_rate(n, per)
    }

    /// This limit, plus at most `n` runs at once.
    ///
    /// # Errors
    ///
    /// As [`Limit::concurrency`].
    pub fn and_concurrency(mut self, n: u32) -> Result<Self> {
        if n == 0 {
            return Err(Error::InvalidLimit("a concurrency limit of 0".into()));
        }
        self.concurrency = Some(n);
        Ok(self)
    }

    /// This limit, plus at most `n` starts per `per`.
    ///
    /// # Errors
    ///
    /// As [`Limit::rate`].
    pub fn and_rate(mut self, n: u32, per: Duration) -> Result<Self> {
        if n == 0 {
            return Err(Error::InvalidLimit("a rate limit of 0".into()));
        }
        if per < Duration::from_millis(1) || per > MAX_RATE_PERIOD {
            return Err(Error::InvalidLimit(format!(
                "a rate period of {per:?} (1 ms to 1 day)"
            )));
        }
        self.rate = Some((n, per));
        Ok(self)
    }

    /// Runs at once allowed, if limited.
    pub fn max_concurrency(&self) -> Option<u32> {
        self.concurrency
    }

    /// Starts allowed per period, if limited.
    pub fn max_rate(&self) -> Option<(u32, Duration)> {
        self.rate
    }

    /// The value stored in `<ns>:limits`: `concurrency=<n>` and/or `rate=<n>/<period ms>`.
    pub fn encode(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.concurrency {
            parts.push(format!("concurrency={n}"));
        }
        if let Some((n, per)) = self.rate {
            parts.push(format!("rate={n}/{}", per.as_millis()));
        }
        parts.join(" ")
    }

    /// Reads a value written by [`Limit::encode`] (or by hand, in the same form).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLimit`] for anything else, or a limit that cannot hold.
    pub fn decode(v: &str) -> Result<Self> {
        let bad = || Error::InvalidLimit(format!("unreadable limit {v:?}"));
        let mut limit = Self::default();
        for part in v.split_whitespace() {
            match part.split_once('=').ok_or_else(bad)? {
                ("concurrency", n) => {
                    limit = limit.and_concurrency(n.parse().map_err(|_| bad())?)?
                }
                ("rate", r) => {
                    let (n, ms) = r.split_once('/').ok_or_else(bad)?;
                    limit = limit.and_rate(
                        n.parse().map_err(|_| bad())?,
                        Duration::from_millis(ms.parse().map_err(|_| bad())?),
                    )?;
                }
                _ => return Err(bad()),
            }
        }
        if limit == Self::default() {
            return Err(bad());
        }
        Ok(limit)
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        if let Some(n) = self.concurrency {
            write!(f, "at most {n} at once")?;
            first = false;
        }
        if let Some((n, per)) = self.rate {
            if !first {
                f.write_str(", ")?;
            }
            write!(f, "at most {n} starts per {per:?}")?;
        }
        Ok(())
    }
}

/// The limits in force: scope -> limit, as read from `<ns>:limits`.
pub type LimitTable = HashMap<LimitScope, Limit>;

/// One budget a task must take a start from: a limit and, for a keyed one, the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Who it limits: the scope, and `=<key>` for a keyed limit (as operators see it in a
    /// parked task's `limited` field).
    pub label: String,
    /// Hex of the first 16 bytes of the SHA-256 of the scope (and key): the budget's hash tag.
    pub digest: String,
    /// The limit.
    pub limit: Limit,
}

impl Budget {
    fn new(scope: &LimitScope, key: Option<&str>, limit: Limit) -> Self {
        let mut input = scope.field().into_bytes();
        let mut label = scope.field();
        if let Some(k) = key {
            input.push(0);
            input.extend_from_slice(k.as_bytes());
            label.push('=');
            label.push_str(k);
        }
        let digest = digest(&SHA256, &input).as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self {
            label,
            digest,
            limit,
        }
    }
}

/// The budgets a task named `name` of `queue` with `headers` must take a start from, in a fixed
/// order (task, queue, then keys by family): empty for a task no limit applies to, which is
/// then never held back and costs nothing.
pub fn budgets_for(table: &LimitTable, queue: &str, name: &str, headers: &Headers) -> Vec<Budget> {
    if table.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let task = LimitScope::Task(name.to_owned());
    if let Some(l) = table.get(&task) {
        out.push(Budget::new(&task, None, *l));
    }
    let q = LimitScope::Queue(queue.to_owned());
    if let Some(l) = table.get(&q) {
        out.push(Budget::new(&q, None, *l));
    }
    for (h, key) in headers.range(LIMIT_HEADER_PREFIX.to_owned()..) {
        let Some(family) = h.strip_prefix(LIMIT_HEADER_PREFIX) else {
            break;
        };
        let scope = LimitScope::Key(family.to_owned());
        if let Some(l) = table.get(&scope) {
            out.push(Budget::new(&scope, Some(key), *l));
        }
    }
    out
}

/// The header that carries a task's key of limit family `family`.
///
/// # Errors
///
/// [`Error::InvalidLimit`] for a malformed family or key.
pub fn limit_header(family: &str, key: &str) -> Result<(String, String)> {
    validate_family(family)?;
    validate_limit_key(key)?;
    Ok((format!("{LIMIT_HEADER_PREFIX}{family}"), key.to_owned()))
}

impl Budget {
    /// The budget a limit of `scope` keeps: the scope's only one for a task or queue limit, the
    /// one of `key` for a keyed limit ([`LimitScope::Key`]).
    ///
    /// ```
    /// use scheduler_core::limits::{Budget, Limit, LimitScope};
    /// let tenant = LimitScope::key("tenant")?;
    /// let b = Budget::of(&tenant, Some("acme"), Limit::concurrency(5)?)?;
    /// assert_eq!(b.label, "key:tenant=acme");
    /// assert!(Budget::of(&tenant, None, Limit::concurrency(5)?).is_err());
    /// # Ok::<(), scheduler_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLimit`] for a keyed scope without a key or with a malformed one
    /// ([`validate_limit_key`]), or a key given to a task or queue scope.
    pub fn of(scope: &LimitScope, key: Option<&str>, limit: Limit) -> Result<Self> {
        match (scope, key) {
            (LimitScope::Key(_), Some(k)) => validate_limit_key(k)?,
            (LimitScope::Key(f), None) => {
                return Err(Error::InvalidLimit(format!(
                    "key:{f} keeps one budget per key: give the key"
                )))
            }
            (_, Some(_)) => {
                return Err(Error::InvalidLimit(format!(
                    "{scope} keeps one budget: it takes no key"
                )))
            }
            (_, None) => {}
        }
        Ok(Self::new(scope, key, limit))
    }
}

/// What one limit budget holds at one instant of the Redis clock
/// ([`crate::Inspector::limit_usage`]): the runs holding a concurrency slot, the tasks waiting
/// for one, the starts in the rate window. Read with plain commands (`ZCOUNT`, `ZCARD`), so the
/// figures of a busy budget may be a few starts apart from one another.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitUsage {
    /// The limit's scope.
    pub scope: LimitScope,
    /// The key of the budget, for a keyed limit; `None` for a task or queue limit.
    pub key: Option<String>,
    /// The limit in force.
    pub limit: Limit,
    /// Runs holding a concurrency slot whose lease has not ended (a holder whose worker died
    /// without releasing is not counted once its lease has passed); `None` without a
    /// concurrency limit.
    pub running: Option<u64>,
    /// Tasks parked until a concurrency slot frees; `None` without a concurrency limit. (Tasks
    /// the rate limit refused wait until a time instead, and are not counted here.)
    pub waiting: Option<u64>,
    /// Starts in the current window of the rate limit (the last period up to `at_ms`); `None`
    /// without a rate limit.
    pub started: Option<u64>,
    /// When the figures were read: unix ms, Redis clock.
    pub at_ms: i64,
}

impl LimitUsage {
    /// The budget as operators see it in a parked task's `limited` field: the scope, and
    /// `=<key>` for a keyed limit (`key:tenant=acme`).
    pub fn label(&self) -> String {
        match &self.key {
            Some(k) => format!("{}={k}", self.scope),
            None => self.scope.field(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_encode_and_decode() {
        let l = Limit::concurrency(5)
            .unwrap()
            .and_rate(100, Duration::from_secs(1))
            .unwrap();
        assert_eq!(l.encode(), "concurrency=5 rate=100/1000");
        assert_eq!(Limit::decode(&l.encode()).unwrap(), l);
        assert_eq!(l.max_concurrency(), Some(5));
        assert_eq!(l.max_rate(), Some((100, Duration::from_secs(1))));
        for bad in [
            "",
            "rate=0/1000",
            "concurrency=0",
            "rate=5/0",
            "rate=5",
            "x=1",
        ] {
            assert_eq!(
                Limit::decode(bad).unwrap_err().kind(),
                "invalid_limit",
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_limits_are_typed_errors() {
        assert!(matches!(Limit::concurrency(0), Err(Error::InvalidLimit(_))));
        assert!(matches!(
            Limit::rate(0, Duration::from_secs(1)),
            Err(Error::InvalidLimit(_))
        ));
        assert!(matches!(
            Limit::rate(1, Duration::ZERO),
            Err(Error::InvalidLimit(_))
        ));
        assert!(matches!(
            Limit::rate(1, Duration::from_secs(86_401)),
            Err(Error::InvalidLimit(_))
        ));
        assert!(matches!(
            LimitScope::key("a{b}"),
            Err(Error::InvalidLimit(_))
        ));
        assert!(matches!(LimitScope::queue(""), Err(Error::InvalidLimit(_))));
        assert!(matches!(
            limit_header("tenant", ""),
            Err(Error::InvalidLimit(_))
        ));
        assert!(limit_header("tenant", &"x".repeat(1025)).is_err());
    }

    #[test]
    fn scopes_round_trip_through_their_fields() {
        for s in [
            LimitScope::task("charge card").unwrap(),
            LimitScope::queue("emails").unwrap(),
            LimitScope::key("tenant").unwrap(),
        ] {
            assert_eq!(LimitScope::from_field(&s.field()), Some(s));
        }
        assert_eq!(LimitScope::from_field("other:x"), None);
    }

    #[test]
    fn budgets_come_from_name_queue_and_keys() {
        let mut table = LimitTable::new();
        table.insert(
            LimitScope::task("export").unwrap(),
            Limit::concurrency(2).unwrap(),
        );
        table.insert(
            LimitScope::key("tenant").unwrap(),
            Limit::concurrency(1).unwrap(),
        );
        let mut headers = Headers::new();
        assert_eq!(budgets_for(&table, "q", "other", &headers), vec![]);
        let (h, v) = limit_header("tenant", "{a}:b ü").unwrap();
        headers.insert(h, v);
        headers.insert("zzz".into(), "1".into());
        let b = budgets_for(&table, "q", "export", &headers);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].label, "task:export");
        assert_eq!(b[1].label, "key:tenant={a}:b ü");
        // The digest is hex: braces in the key never reach a hash tag.
        assert!(b[1].digest.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(b[1].digest.len(), 32);
        // Another key, another budget.
        headers.insert(h_of("tenant"), "other".into());
        assert_ne!(
            budgets_for(&table, "q", "export", &headers)[1].digest,
            b[1].digest
        );
    }

    fn h_of(family: &str) -> String {
        format!("{LIMIT_HEADER_PREFIX}{family}")
    }
}
