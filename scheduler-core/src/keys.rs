//! Every Redis key and channel name, one function each; nothing else formats a key.
//!
//! All keys of one partition (queue, shard) share the hash tag `{<queue>:<shard>}`, so every
//! script touches one Redis Cluster slot. See `docs/redis-layout.md` for what each holds.

/// Names of the keys of one namespace (default `sched`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    ns: String,
}

impl Keys {
    /// Key names under namespace `ns`.
    pub fn new(ns: impl Into<String>) -> Self {
        Self { ns: ns.into() }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Hash `<ns>:queues`: queue name -> shard count. Written once per queue, read by every client.
    pub fn queues(&self) -> String {
        format!("{}:queues", self.ns)
    }

    /// Pub/sub channel `<ns>:wake:<queue>`: `r:<shard>` when a ready set got work,
    /// `s:<shard>:<due ms>` when a scheduled set got a new head, `pause` / `resume` when the
    /// queue was paused or resumed.
    pub fn wake_channel(&self, queue: &str) -> String {
        format!("{}:wake:{}", self.ns, queue)
    }

    /// Hash `<ns>:paused`: queue name -> when it was paused (unix ms, Redis clock). Workers do
    /// not claim from a queue listed here (`pause.lua` writes it and publishes the change).
    pub fn paused(&self) -> String {
        format!("{}:paused", self.ns)
    }

    /// Hash `<ns>:workers:<worker id>`, with a TTL of three heartbeat intervals: a live worker's
    /// heartbeat (pid, queues, concurrency, running count, succeeded and failed counts, start time
    /// by the worker host's clock). The worker id is `<host>:<pid>:<random>`.
    pub fn worker(&self, worker_id: &str) -> String {
        format!("{}:workers:{}", self.ns, worker_id)
    }

    /// Pattern matching every worker heartbeat key, for `SCAN`.
    pub fn workers_pattern(&self) -> String {
        format!("{}:workers:*", self.ns)
    }

    /// Hash `<ns>:schedules`: schedule name -> queue, the index of every periodic schedule (the
    /// schedule itself lives in its partition, [`PartitionKeys::schedule`]).
    pub fn schedules(&self) -> String {
        format!("{}:schedules", self.ns)
    }

    /// String `<ns>:gauges:<queue>`, with a TTL of three `queue_metrics_interval`s: the worker
    /// id of the one worker that reads the queue's task counts for the `scheduler_queue_tasks`
    /// gauge (`SET NX PX`, renewed by its holder each time it reads).
    pub fn queue_gauges(&self, queue: &str) -> String {
        format!("{}:gauges:{}", self.ns, queue)
    }

    /// Hash `<ns>:archive`: the task history archive's setting for the namespace, field `bound`
    /// (entries each partition's archive stream keeps at most; absent or 0: the archive is off).
    /// Read by workers at start and on each heartbeat, and by clients when they connect.
    pub fn archive(&self) -> String {
        format!("{}:archive", self.ns)
    }

    /// The keys of partition (`queue`, `shard`).
    pub fn partition(&self, queue: &str, shard: u16) -> PartitionKeys {
        PartitionKeys {
            base: format!("{}:{{{}:{}}}", self.ns, queue, shard),
        }
    }
}

/// Key names of one partition, all under the hash tag `{<queue>:<shard>}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionKeys {
    base: String,
}

impl PartitionKeys {
    /// Sorted set `…:scheduled`: task id -> due time (unix ms), tasks waiting for their time.
    pub fn scheduled(&self) -> String {
        format!("{}:scheduled", self.base)
    }

    /// Sorted set `…:ready`: task id -> (9 - priority) * 1e13 + ms, tasks due and waiting for a
    /// worker. The ms part is the due time for promoted tasks, the server time of the hand-back
    /// for tasks reaped or released.
    pub fn ready(&self) -> String {
        format!("{}:ready", self.base)
    }

    /// Sorted set `…:active`: task id -> lease deadline (unix ms), tasks a worker is running.
    pub fn active(&self) -> String {
        format!("{}:active", self.base)
    }

    /// Sorted set `…:dead`: task id -> time of death (unix ms), tasks that failed for good.
    pub fn dead(&self) -> String {
        format!("{}:dead", self.base)
    }

    /// Hash `…:stats`: counters enqueued, promoted, succeeded, retried, dead, reaped, cancelled.
    pub fn stats(&self) -> String {
        format!("{}:stats", self.base)
    }

    /// String `…:drained`: `1` when a claim found the ready set empty (its `ZPOPMIN` returned
    /// fewer than asked, so the workers stopped looking), `0` once a script added to the ready
    /// set and published `r:<shard>`. Absent counts as `1`. A script that adds to the ready set
    /// publishes exactly when it finds the flag not `0`, so no stray member can mask a wake-up.
    pub fn drained(&self) -> String {
        format!("{}:drained", self.base)
    }

    /// String `…:lock`, with a TTL: token of the promoter that owns this partition.
    pub fn lock(&self) -> String {
        format!("{}:lock", self.base)
    }

    /// Hash `…:sch:<name>`: periodic schedule `name` (definition, next tick, revision,
    /// counters), in the partition its ticks' tasks go to (see `docs/schedules.md`).
    pub fn schedule(&self, name: &str) -> String {
        format!("{}:sch:{}", self.base, name)
    }

    /// Stream `…:archive`: finished attempts (succeeded, dead, cancelled) waiting to be stored in
    /// the history archive (PostgreSQL), in order of finishing; consumer group `archivers`.
    /// Written only while the archive is on (see [`Keys::archive`]).
    pub fn archive(&self) -> String {
        format!("{}:archive", self.base)
    }

    /// String `…:u:<digest>`, with a TTL of the window: the id of the task holding a unique-for
    /// window (throttle or debounce); `<digest>` is the hex of the first 16 bytes of the SHA-256
    /// of the unique key (see `docs/unique.md`).
    pub fn unique(&self, digest: &str) -> String {
        format!("{}:u:{}", self.base, digest)
    }

    /// Prefix of the task hashes, `…:t:`; scripts append the task id.
    pub fn task_prefix(&self) -> String {
        format!("{}:t:", self.base)
    }

    /// Hash `…:t:<id>`: the task record (name, queue, state, attempts, run_at, error, args...).
    pub fn task(&self, id: &str) -> String {
        format!("{}:t:{}", self.base, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key name, table-tested: a change of layout must be deliberate.
    #[test]
    fn key_names() {
        let k = Keys::new("sched");
        let p = k.partition("emails", 3);
        let table = [
            (k.queues(), "sched:queues"),
            (k.wake_channel("emails"), "sched:wake:emails"),
            (k.paused(), "sched:paused"),
            (k.worker("w1"), "sched:workers:w1"),
            (k.workers_pattern(), "sched:workers:*"),
            (p.scheduled(), "sched:{emails:3}:scheduled"),
            (p.ready(), "sched:{emails:3}:ready"),
            (p.active(), "sched:{emails:3}:active"),
            (p.dead(), "sched:{emails:3}:dead"),
            (p.stats(), "sched:{emails:3}:stats"),
            (p.lock(), "sched:{emails:3}:lock"),
            (p.drained(), "sched:{emails:3}:drained"),
            (p.task_prefix(), "sched:{emails:3}:t:"),
            (k.schedules(), "sched:schedules"),
            (k.queue_gauges("emails"), "sched:gauges:emails"),
            (p.schedule("daily"), "sched:{emails:3}:sch:daily"),
            (p.task("01J"), "sched:{emails:3}:t:01J"),
            (k.archive(), "sched:archive"),
            (p.archive(), "sched:{emails:3}:archive"),
            (p.unique("ab12"), "sched:{emails:3}:u:ab12"),
        ];
        for (got, want) in table {
            assert_eq!(got, want);
        }
        assert_eq!(k.namespace(), "sched");
    }
}
