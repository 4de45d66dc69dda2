//! The defaults every part of the scheduler shares, each written once: the client, the worker,
//! the `Task` trait and `schedctl` read them from here.

use std::time::Duration;

/// Prefix of every Redis key: `sched:...`.
pub const NAMESPACE: &str = "sched";

/// Shards of a queue registered without an explicit count.
pub const SHARDS: u16 = 16;

/// The largest encoded arguments (or result) accepted: 1 MiB.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// Retries of a failed run (so at most 4 runs).
pub const MAX_RETRIES: u32 = 3;

/// Time limit of one run.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Queue of a task that names none.
pub const QUEUE: &str = "default";

/// How long a cancelled task's record is kept when no TTL was recorded with its cancellation
/// (`ClientConfig::cancelled_ttl` is recorded by the client that cancels).
pub const CANCELLED_TTL: Duration = Duration::from_secs(3600);

/// How long the record of a task that ended `expired` (not started by its deadline, see
/// [`crate::TaskRequest::expires_in`]) is kept: 24 hours, as a result by default.
pub const EXPIRED_TTL: Duration = Duration::from_secs(24 * 3600);

/// How old a client's copy of the task events setting may get before an enqueue or a
/// `wait_result` reads it again (one `HKEYS`, at most once per period per client).
pub const EVENTS_SETTING_REFRESH: Duration = Duration::from_secs(10);

/// How long `wait_result` waits for a task's final event before it reads the task again, in a
/// queue with events on (a safety net for an event lost: events are at most once).
pub const EVENTS_WAIT_RECHECK: Duration = Duration::from_secs(2);
