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

    /// Sorted set `<ns>:workers`: worker id -> its last heartbeat (unix ms, by the worker host's
    /// clock). The index of the heartbeat hashes, so that listing the workers reads the workers,
    /// not the keyspace. A member whose hash has expired is a stopped worker: readers skip it,
    /// and every heartbeat removes members that have not beaten for an hour.
    pub fn worker_index(&self) -> String {
        format!("{}:workers", self.ns)
    }

    /// Pattern matching every worker heartbeat key, for `SCAN` (`redis-cli --scan`).
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

    /// Hash `<ns>:limits`: flow-control limits, field = scope (`task:<name>`, `queue:<queue>`,
    /// `key:<family>`), value = the limit (`concurrency=5 rate=100/1000`; see
    /// [`crate::limits`]). Read by workers at start, on a `limits` message and after every
    /// (re)subscription of their listener.
    pub fn limits(&self) -> String {
        format!("{}:limits", self.ns)
    }

    /// The keys of one limit budget (a scope, and for a keyed limit one key), all under the hash
    /// tag `{lim:<digest>}`: one Cluster slot per budget, whatever bytes the key holds.
    pub fn limit_budget(&self, digest: &str) -> [String; 4] {
        let base = format!("{}:{{lim:{}}}", self.ns, digest);
        [
            format!("{base}:run"),
            format!("{base}:log"),
            format!("{base}:wait"),
            format!("{base}:next"),
        ]
    }

    /// Hash `<ns>:wf:{<workflow id>}`: a workflow's record (docs/workflows.md), in its own
    /// Cluster slot (hash tag `{<workflow id>}`): kind, policy, state, stages, each member's task
    /// id, and each finished member's outcome and result.
    pub fn workflow(&self, id: &str) -> String {
        format!("{}:wf:{{{}}}", self.ns, id)
    }

    /// Sorted set `<ns>:workflows`: workflow id -> creation time (unix ms, host clock), the
    /// workflows not finished yet, for the sweep that repairs them (`Client::sweep_workflows`).
    pub fn workflows(&self) -> String {
        format!("{}:workflows", self.ns)
    }

    /// Hash `<ns>:events`: queue name -> when its task events were turned on (unix ms). A queue
    /// listed here has its task events published on [`Keys::events_channel`]; read by workers at
    /// start and on each heartbeat, and by clients when they connect and every
    /// [`crate::defaults::EVENTS_SETTING_REFRESH`] after.
    pub fn events(&self) -> String {
        format!("{}:events", self.ns)
    }

    /// Pub/sub channel `<ns>:events:<queue>`: the task events of `queue`
    /// ([`crate::events::TaskEvent::encode`]) while it has events on.
    pub fn events_channel(&self, queue: &str) -> String {
        format!("{}:events:{}", self.ns, queue)
    }

    /// Pub/sub channel `<ns>:events:wf:<workflow id>`: `succeeded` or `failed`, published once
    /// by `wf_done.lua` when the workflow ends, if its record has the field `events` (written
    /// at its start when every member's queue had task events on); wakes
    /// `Client::wait_workflow`. Queue names have no `:`, so it is no queue's channel.
    pub fn workflow_events_channel(&self, id: &str) -> String {
        format!("{}:events:wf:{}", self.ns, id)
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
            (k.worker_index(), "sched:workers"),
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
