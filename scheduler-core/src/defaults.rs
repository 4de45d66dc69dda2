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
