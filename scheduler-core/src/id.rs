//! Task ids, queue names and the stable hash that picks a task's shard.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Identifies one task: the queue it lives in and its id within the deployment.
///
/// Its text form is `<queue>/<id>` (what `Display` prints and `FromStr` parses), so one string
/// is enough for an operator or another service to find the task again.
///
/// # Examples
///
/// ```
/// use scheduler_core::TaskId;
/// let id: TaskId = "emails/order-42".parse().unwrap();
/// assert_eq!(id.queue(), "emails");
/// assert_eq!(id.id(), "order-42");
/// assert_eq!(id.to_string(), "emails/order-42");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId {
    queue: String,
    id: String,
}

impl TaskId {
    /// A task id from its queue and id. Validity is checked when it is used.
    pub fn new(queue: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            id: id.into(),
        }
    }

    /// A new unique id in `queue`: a ULID (time-ordered, 26 characters).
    pub fn generate(queue: impl Into<String>) -> Self {
        Self::new(queue, ulid::Ulid::new().to_string())
    }

    /// The queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The id within the queue's keys.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The shard of this task among `shards` shards: CRC-32 (IEEE) of the id, modulo `shards`.
    /// Stable across processes, hosts and versions.
    pub fn shard(&self, shards: u16) -> u16 {
        shard_of(&self.id, shards)
    }
}

/// CRC-32 (IEEE) of `id` modulo `shards` (`shards` 0 is treated as 1).
pub fn shard_of(id: &str, shards: u16) -> u16 {
    (crc32fast::hash(id.as_bytes()) % u32::from(shards.max(1))) as u16
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.queue, self.id)
    }
}

impl FromStr for TaskId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.split_once('/') {
            Some((q, id)) if !q.is_empty() && !id.is_empty() => Ok(Self::new(q, id)),
            _ => Err(Error::InvalidTaskId(s.to_owned())),
        }
    }
}

/// Checks a queue name: 1 to 64 characters of `A-Z a-z 0-9 _ - .`.
///
/// # Errors
///
/// [`Error::InvalidQueueName`] otherwise (braces would break the hash tag, `/` the id form).
pub fn validate_queue(queue: &str) -> Result<(), Error> {
    let ok = !queue.is_empty()
        && queue.len() <= 64
        && queue
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidQueueName(queue.to_owned()))
    }
}

/// Checks a task id: 1 to 200 bytes, no ASCII control characters.
///
/// # Errors
///
/// [`Error::InvalidTaskId`] otherwise.
pub fn validate_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > 200 || id.chars().any(|c| c.is_ascii_control()) {
        Err(Error::InvalidTaskId(id.to_owned()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shard function is CRC-32 modulo the count: fixed values, so a change is caught.
    #[test]
    fn shard_is_stable() {
        assert_eq!(crc32fast::hash(b"abc"), 0x3524_41C2);
        assert_eq!(shard_of("abc", 16), (0x3524_41C2u32 % 16) as u16);
        assert_eq!(shard_of("abc", 1), 0);
        assert_eq!(shard_of("abc", 0), 0);
        let spread: std::collections::HashSet<u16> =
            (0..1000).map(|i| shard_of(&format!("t{i}"), 16)).collect();
        assert_eq!(spread.len(), 16);
    }

    /// Text form round-trips, and malformed text is a typed error.
    #[test]
    fn parse_and_display() {
        let id: TaskId = "q/a/b".parse().unwrap();
        assert_eq!((id.queue(), id.id()), ("q", "a/b"));
        assert_eq!(id.to_string(), "q/a/b");
        for bad in ["", "q", "/x", "q/"] {
            assert!(
                matches!(bad.parse::<TaskId>(), Err(Error::InvalidTaskId(_))),
                "{bad}"
            );
        }
    }

    /// Queue names that would break keys are refused.
    #[test]
    fn queue_names() {
        for good in ["default", "emails", "a.b-c_9"] {
            assert!(validate_queue(good).is_ok());
        }
        for bad in ["", "a{b}", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_queue(bad).is_err(), "{bad}");
        }
        assert!(validate_id("x\n").is_err());
        assert!(validate_id("ok-id").is_ok());
    }
}
