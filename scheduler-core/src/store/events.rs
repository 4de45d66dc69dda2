//! Task events' side in Redis (see `docs/events.md`): the per-queue setting
//! ([`crate::keys::Keys::events`]) kept in memory by every store, and publishing events on
//! the queues' channels ([`crate::keys::Keys::events_channel`]).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use redis::Pipeline;

use super::Store;
use crate::error::Result;
use crate::events::TaskEvent;

/// The queues with events on, as a store last read them.
#[derive(Debug, Default)]
pub(super) struct EventsSetting {
    queues: HashSet<String>,
    /// When they were read (never: `None`).
    read_at: Option<Instant>,
}

impl Store {
    /// Whether `queue` has events on, as this store last read the setting: no Redis command.
    pub fn events_on(&self, queue: &str) -> bool {
        let s = self.events.read().expect("events setting poisoned");
        !s.queues.is_empty() && s.queues.contains(queue)
    }

    /// Whether the setting this store holds was read more than `age` ago (or never).
    pub fn events_setting_older_than(&self, age: Duration) -> bool {
        let s = self.events.read().expect("events setting poisoned");
        s.read_at.is_none_or(|t| t.elapsed() > age)
    }

    /// Whether the caller should read the setting again ([`Store::load_events_setting`]): it is
    /// older than `age`. Says so once per period: the first caller takes the refresh.
    pub fn take_events_refresh(&self, age: Duration) -> bool {
        if !self.events_setting_older_than(age) {
            return false;
        }
        let mut s = self.events.write().expect("events setting poisoned");
        if s.read_at.is_some_and(|t| t.elapsed() <= age) {
            return false;
        }
        s.read_at = Some(Instant::now());
        true
    }

    /// Reads the queues with events on (`HKEYS <ns>:events`) and keeps them for
    /// [`Store::events_on`]; returns them.
    ///
    /// # Errors
    ///
    /// A Redis error (the setting in use is left as it was).
    pub async fn load_events_setting(&self) -> Result<HashSet<String>> {
        let mut conn = self.conn();
        let queues: HashSet<String> = redis::cmd("HKEYS")
            .arg(self.keys.events())
            .query_async(&mut conn)
            .await?;
        let mut s = self.events.write().expect("events setting poisoned");
        s.queues = queues.clone();
        s.read_at = Some(Instant::now());
        Ok(queues)
    }

    /// Turns events on or off for `queue`, in Redis (`HSET` / `HDEL <ns>:events <queue>`) and
    /// for this store. Workers apply it at their next heartbeat, other clients within
    /// [`crate::defaults::EVENTS_SETTING_REFRESH`].
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidQueueName`], or a Redis error.
    pub async fn write_events_setting(&self, queue: &str, on: bool) -> Result<()> {
        crate::id::validate_queue(queue)?;
        let mut conn = self.conn();
        if on {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            redis::cmd("HSET")
                .arg(self.keys.events())
                .arg(queue)
                .arg(now)
                .query_async::<()>(&mut conn)
                .await?;
        } else {
            redis::cmd("HDEL")
                .arg(self.keys.events())
                .arg(queue)
                .query_async::<()>(&mut conn)
                .await?;
        }
        let mut s = self.events.write().expect("events setting poisoned");
        if on {
            s.queues.insert(queue.to_owned());
        } else {
            s.queues.remove(queue);
        }
        Ok(())
    }

    /// Publishes `events`, each on its queue's channel, in one pipeline (one round trip; on a
    /// cluster, one per node the channels hash to, concurrently). Publishes whatever it is
    /// given: the callers check [`Store::events_on`].
    ///
    /// # Errors
    ///
    /// A Redis error (then some or none were published).
    pub async fn publish_events(&self, events: &[TaskEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut pipe = Pipeline::with_capacity(events.len());
        for e in events {
            pipe.cmd("PUBLISH")
                .arg(self.keys.events_channel(e.id.queue()))
                .arg(e.encode());
        }
        self.query_pipeline(&pipe).await?;
        Ok(())
    }
}
