//! What every script test shares: the seeded and expected state of a partition, the runner of
//! one call, the runner of a table of cases, and the records scripts leave.

pub(crate) use std::collections::{BTreeMap, BTreeSet, HashMap};
pub(crate) use std::time::Duration;

pub(crate) use futures::StreamExt;
pub(crate) use redis::{Commands, Connection};
pub(crate) use scheduler::broker::info::take_blob;
pub(crate) use scheduler::broker::scripts::{
    AckItem, CancelReply, Claimed, Due, FailItem, NewTask, Outcome, Riders, MAX_BATCH,
};
pub(crate) use scheduler::broker::store::{Partition, Store};

pub(crate) use scheduler_testkit::RedisServer;

/// Every partition of these tests is shard 3, so a wrong shard in a message shows.
pub(crate) const SHARD: u16 = 3;
/// A due time or lease deadline far in the future (2096), never reached by a test.
pub(crate) const FAR: i64 = 4_000_000_000_000;
/// The arguments of every seeded task: MessagePack `[42]`.
pub(crate) const ARGS: &[u8] = &[0x91, 0x2a];
/// The `max_lost` of every reap call: leases a task may lose before it is buried.
pub(crate) const MAX_LOST: u32 = 2;
/// Sentinel published after a call, so we know every message of the call has arrived.
pub(crate) const END: &str = "--end--";

/// Score of a task in a ready set, as `_prelude.lua` computes it.
pub(crate) fn ready_score(priority: i64, t: i64) -> i64 {
    (9 - priority) * 10_000_000_000_000 + t
}

// ---------------------------------------------------------------------------------------------
// Expected values
// ---------------------------------------------------------------------------------------------

/// The Redis clock around one call: `TIME` just before and just after, unix ms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    pub(crate) t0: i64,
    pub(crate) t1: i64,
}

/// An expected value of a hash field, a sorted-set score or a reply number.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum W {
    /// This integer.
    I(i64),
    /// These bytes.
    B(Vec<u8>),
    /// The script's server clock plus this offset (ms): within `[t0 + off, t1 + off]`.
    Now(i64),
    /// An `attempt_log` (a JSON array, `log_attempt` in `_prelude.lua`) with these entries.
    Log(Vec<LogEntry>),
}

/// One expected entry of an `attempt_log`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogEntry {
    pub(crate) attempt: i64,
    pub(crate) started_at: Option<i64>,
    /// `None`: the script's server clock; `Some((a, b))`: within `[a, b]`.
    pub(crate) failed_at: Option<(i64, i64)>,
    pub(crate) worker: String,
    pub(crate) error: String,
}

impl LogEntry {
    fn matches(&self, got: &serde_json::Value, c: Clock) -> bool {
        let int = |k: &str| got.get(k).and_then(serde_json::Value::as_i64);
        let text = |k: &str| got.get(k).and_then(serde_json::Value::as_str);
        int("attempt") == Some(self.attempt)
            && int("started_at") == self.started_at
            && int("failed_at").is_some_and(|t| match self.failed_at {
                Some((a, b)) => (a..=b).contains(&t),
                None => (c.t0..=c.t1).contains(&t),
            })
            && text("worker") == Some(self.worker.as_str())
            && text("error") == Some(self.error.as_str())
    }
}

impl From<i64> for W {
    fn from(i: i64) -> Self {
        W::I(i)
    }
}

impl From<&str> for W {
    fn from(s: &str) -> Self {
        W::B(s.as_bytes().to_vec())
    }
}

impl From<&[u8]> for W {
    fn from(b: &[u8]) -> Self {
        W::B(b.to_vec())
    }
}

impl W {
    /// The bytes to write when seeding (seeds are exact).
    pub(crate) fn seed_bytes(&self) -> Vec<u8> {
        match self {
            W::I(i) => i.to_string().into_bytes(),
            W::B(b) => b.clone(),
            W::Now(_) | W::Log(_) => panic!("a seed holds exact values only"),
        }
    }

    pub(crate) fn matches_int(&self, got: i64, c: Clock) -> bool {
        match self {
            W::I(i) => got == *i,
            W::B(b) => b == got.to_string().as_bytes(),
            W::Now(off) => (c.t0 + off..=c.t1 + off).contains(&got),
            W::Log(_) => false,
        }
    }

    pub(crate) fn matches(&self, got: &[u8], c: Clock) -> bool {
        match self {
            W::B(b) => b == got,
            W::Log(want) => {
                serde_json::from_slice::<Vec<serde_json::Value>>(got).is_ok_and(|log| {
                    log.len() == want.len() && log.iter().zip(want).all(|(g, w)| w.matches(g, c))
                })
            }
            _ => std::str::from_utf8(got)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .is_some_and(|g| self.matches_int(g, c)),
        }
    }
}

/// The fields of a task hash.
#[derive(Debug, Clone)]
pub(crate) struct Rec(BTreeMap<&'static str, W>);

impl Rec {
    /// The fields `enqueue.lua` writes, in state `state`, with fixed times: due at 1000,
    /// enqueued at 900, priority 5, 3 retries, 30 s timeout, no attempt and no token yet (the
    /// queue is in the key, not in the hash).
    pub(crate) fn new(state: &str) -> Self {
        Rec(BTreeMap::from([
            ("name", W::from("job")),
            ("state", W::from(state)),
            ("max_retries", W::I(3)),
            ("timeout_ms", W::I(30_000)),
            ("priority", W::I(5)),
            ("run_at", W::I(1000)),
            ("enqueued_at", W::I(900)),
            ("args", W::from(ARGS)),
        ]))
    }

    pub(crate) fn with(mut self, field: &'static str, v: impl Into<W>) -> Self {
        self.0.insert(field, v.into());
        self
    }

    pub(crate) fn without(mut self, field: &'static str) -> Self {
        self.0.remove(field);
        self
    }

    /// This running task's attempt failed now with `error`: an entry appended to its
    /// `attempt_log` from its `attempts`, `started_at` and `worker` (`retry.lua`, `reap.lua`).
    pub(crate) fn failed(mut self, error: &str) -> Self {
        let int = |w: Option<&W>| match w {
            Some(W::I(i)) => Some(*i),
            _ => None,
        };
        let entry = LogEntry {
            attempt: int(self.0.get("attempts")).unwrap_or(0),
            started_at: int(self.0.get("started_at")),
            failed_at: None,
            worker: match self.0.get("worker") {
                Some(W::B(b)) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            },
            error: error.to_owned(),
        };
        let mut log = match self.0.remove("attempt_log") {
            Some(W::Log(l)) => l,
            _ => Vec::new(),
        };
        log.push(entry);
        self.0.insert("attempt_log", W::Log(log));
        self
    }
}

/// A task claimed by worker `w1` at 950, holding lease `token`, on its attempt `attempts`.
pub(crate) fn running(token: i64, attempts: i64) -> Rec {
    Rec::new("running")
        .with("token", token)
        .with("attempts", attempts)
        .with("worker", "w1")
        .with("started_at", 950)
}

/// The whole state of one partition: its task hashes (with TTL in ms, if any), sorted sets in
/// order with scores, and stats counters. A key not listed must not exist, except the drained
/// flag `…:drained`, which is checked only where a case names its value.
#[derive(Debug, Clone, Default)]
pub(crate) struct St {
    pub(crate) drained: Option<&'static str>,
    pub(crate) tasks: Vec<(&'static str, Rec, Option<i64>)>,
    pub(crate) scheduled: Vec<(&'static str, W)>,
    pub(crate) ready: Vec<(&'static str, W)>,
    pub(crate) active: Vec<(&'static str, W)>,
    pub(crate) dead: Vec<(&'static str, W)>,
    pub(crate) stats: Vec<(&'static str, i64)>,
}

impl St {
    pub(crate) fn task(mut self, id: &'static str, rec: Rec) -> Self {
        self.tasks.push((id, rec, None));
        self
    }

    /// A task hash that expires `ttl_ms` after the call.
    pub(crate) fn task_ttl(mut self, id: &'static str, rec: Rec, ttl_ms: i64) -> Self {
        self.tasks.push((id, rec, Some(ttl_ms)));
        self
    }

    pub(crate) fn sched(mut self, id: &'static str, score: impl Into<W>) -> Self {
        self.scheduled.push((id, score.into()));
        self
    }

    pub(crate) fn ready(mut self, id: &'static str, score: impl Into<W>) -> Self {
        self.ready.push((id, score.into()));
        self
    }

    pub(crate) fn active(mut self, id: &'static str, score: impl Into<W>) -> Self {
        self.active.push((id, score.into()));
        self
    }

    pub(crate) fn dead(mut self, id: &'static str, score: impl Into<W>) -> Self {
        self.dead.push((id, score.into()));
        self
    }

    /// The drained flag (`0`: the workers are claiming; `1`: a claim found the ready set empty).
    pub(crate) fn drained(mut self, v: &'static str) -> Self {
        self.drained = Some(v);
        self
    }

    pub(crate) fn stat(mut self, counter: &'static str, n: i64) -> Self {
        self.stats.push((counter, n));
        self
    }

    pub(crate) fn zsets(&self, p: &Partition) -> [(String, &[(&'static str, W)]); 4] {
        [
            (p.keys.scheduled(), &self.scheduled),
            (p.keys.ready(), &self.ready),
            (p.keys.active(), &self.active),
            (p.keys.dead(), &self.dead),
        ]
    }

    /// Writes this state into partition `p` with raw commands.
    pub(crate) fn seed(&self, conn: &mut Connection, p: &Partition) {
        for (id, rec, ttl) in &self.tasks {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(p.keys.task(id));
            for (f, v) in &rec.0 {
                cmd.arg(*f).arg(v.seed_bytes());
            }
            let _: () = cmd.query(conn).unwrap();
            if let Some(ms) = ttl {
                let _: () = redis::cmd("PEXPIRE")
                    .arg(p.keys.task(id))
                    .arg(*ms)
                    .query(conn)
                    .unwrap();
            }
        }
        for (key, set) in self.zsets(p) {
            for (id, score) in set {
                let _: () = redis::cmd("ZADD")
                    .arg(&key)
                    .arg(score.seed_bytes())
                    .arg(*id)
                    .query(conn)
                    .unwrap();
            }
        }
        if let Some(v) = self.drained {
            let _: () = redis::cmd("SET")
                .arg(p.keys.drained())
                .arg(v)
                .query(conn)
                .unwrap();
        }
        for (counter, n) in &self.stats {
            let _: () = redis::cmd("HSET")
                .arg(p.keys.stats())
                .arg(*counter)
                .arg(*n)
                .query(conn)
                .unwrap();
        }
    }
}

/// Every key of partition `p` (all share its hash tag).
pub(crate) fn partition_keys(conn: &mut Connection, p: &Partition) -> BTreeSet<String> {
    let stats = p.keys.stats();
    let base = stats
        .strip_suffix("stats")
        .expect("stats key ends in `stats`");
    redis::cmd("KEYS")
        .arg(format!("{base}*"))
        .query(conn)
        .unwrap()
}

/// Asserts that partition `p` holds exactly `want`, nothing more.
pub(crate) fn assert_state(conn: &mut Connection, p: &Partition, want: &St, c: Clock, case: &str) {
    let mut expect = BTreeSet::new();
    for (id, _, _) in &want.tasks {
        expect.insert(p.keys.task(id));
    }
    for (key, set) in want.zsets(p) {
        if !set.is_empty() {
            expect.insert(key);
        }
    }
    if !want.stats.is_empty() {
        expect.insert(p.keys.stats());
    }
    let mut got_keys = partition_keys(conn, p);
    let flag: Option<String> = got_keys
        .take(&p.keys.drained())
        .map(|k| redis::cmd("GET").arg(k).query(conn).unwrap());
    assert_eq!(got_keys, expect, "{case}: keys of the partition");
    if let Some(v) = want.drained {
        assert_eq!(flag.as_deref(), Some(v), "{case}: drained flag");
    }

    for (id, rec, ttl) in &want.tasks {
        let key = p.keys.task(id);
        let got: BTreeMap<String, Vec<u8>> = redis::cmd("HGETALL").arg(&key).query(conn).unwrap();
        let got_fields: Vec<&str> = got.keys().map(String::as_str).collect();
        let want_fields: Vec<&str> = rec.0.keys().copied().collect();
        assert_eq!(got_fields, want_fields, "{case}: fields of task {id}");
        for (field, w) in &rec.0 {
            let v = &got[*field];
            assert!(
                w.matches(v, c),
                "{case}: task {id} field {field} = {:?}, want {w:?} ({c:?})",
                String::from_utf8_lossy(v)
            );
        }
        let pttl: i64 = redis::cmd("PTTL").arg(&key).query(conn).unwrap();
        match ttl {
            None => assert_eq!(pttl, -1, "{case}: task {id} must not expire"),
            Some(t) => assert!(
                pttl <= *t && pttl > t - 2000,
                "{case}: task {id} PTTL {pttl}, want about {t}"
            ),
        }
    }

    for (key, set) in want.zsets(p) {
        let got: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(conn)
            .unwrap();
        let got_ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
        let want_ids: Vec<&str> = set.iter().map(|(id, _)| *id).collect();
        assert_eq!(got_ids, want_ids, "{case}: members of {key}");
        for ((id, score), (_, w)) in got.iter().zip(set) {
            assert!(
                score.fract() == 0.0 && w.matches_int(*score as i64, c),
                "{case}: score of {id} in {key} = {score}, want {w:?} ({c:?})"
            );
        }
    }

    let got: BTreeMap<String, i64> = redis::cmd("HGETALL")
        .arg(p.keys.stats())
        .query(conn)
        .unwrap();
    let want_stats: BTreeMap<String, i64> = want
        .stats
        .iter()
        .map(|(k, n)| (k.to_string(), *n))
        .collect();
    assert_eq!(got, want_stats, "{case}: stats");
}

/// An expected wake-up message.
#[derive(Debug, Clone)]
pub(crate) enum M {
    /// `r:<shard>`: the ready set got work.
    R,
    /// `s:<shard>:<due>`: the scheduled set got an earlier head.
    S(W),
    /// `c:<shard>:<id>`: the cancellation of running task `id` was requested.
    C(&'static str),
}

pub(crate) fn assert_msgs(got: &[String], want: &[M], c: Clock, case: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{case}: messages {got:?}, want {want:?}"
    );
    for (g, w) in got.iter().zip(want) {
        match w {
            M::R => assert_eq!(g, &format!("r:{SHARD}"), "{case}: message"),
            M::C(id) => assert_eq!(g, &format!("c:{SHARD}:{id}"), "{case}: message"),
            M::S(due) => {
                let n = g
                    .strip_prefix(&format!("s:{SHARD}:"))
                    .unwrap_or_else(|| panic!("{case}: message {g}, want s:{SHARD}:<due>"));
                assert!(
                    due.matches(n.as_bytes(), c),
                    "{case}: message {g}, want due {due:?} ({c:?})"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running one case
// ---------------------------------------------------------------------------------------------

/// A throwaway Redis and a store on it, namespace `t`.
pub(crate) struct Fx {
    pub(crate) server: RedisServer,
    pub(crate) store: Store,
}

pub(crate) async fn fx() -> Fx {
    let server = RedisServer::start();
    let store = Store::connect(&server.url(), "t").await.unwrap();
    Fx { server, store }
}

/// Reads the Redis clock (unix ms) the way `_prelude.lua` does.
pub(crate) fn server_ms(conn: &mut Connection) -> i64 {
    let (s, us): (i64, i64) = redis::cmd("TIME").query(conn).unwrap();
    s * 1000 + us / 1000
}

/// What one call gave.
pub(crate) struct Ran<T> {
    pub(crate) p: Partition,
    pub(crate) reply: T,
    pub(crate) clock: Clock,
    pub(crate) msgs: Vec<String>,
}

/// Seeds partition (`queue`, [`SHARD`]) with `seed`, listens on its wake-up channel, makes the
/// call, and collects the messages it published.
pub(crate) async fn run<T>(
    fx: &Fx,
    queue: &str,
    seed: &St,
    call: impl AsyncFnOnce(&Store, &Partition) -> T,
) -> Ran<T> {
    let p = fx.store.partition(queue, SHARD);
    let mut conn = fx.server.conn();
    seed.seed(&mut conn, &p);
    let mut sub = fx.store.redis_client().get_async_pubsub().await.unwrap();
    sub.subscribe(&p.channel).await.unwrap();
    let t0 = server_ms(&mut conn);
    let reply = call(&fx.store, &p).await;
    let t1 = server_ms(&mut conn);
    // Messages reach a subscriber in publish order: once the sentinel arrives, all of the
    // call's messages have.
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&p.channel)
        .arg(END)
        .query(&mut conn)
        .unwrap();
    let mut msgs = Vec::new();
    let mut stream = sub.on_message();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("no wake-up message within 5 s")
            .expect("pub/sub stream closed");
        let payload: String = msg.get_payload().unwrap();
        if payload == END {
            break;
        }
        msgs.push(payload);
    }
    Ran {
        p,
        reply,
        clock: Clock { t0, t1 },
        msgs,
    }
}

/// One row of a script's table: the partition it seeds, the state the call must leave and the
/// wake-up messages it must publish.
pub(crate) trait Case {
    /// What the case shows; every assertion message starts with it.
    fn name(&self) -> &'static str;
    /// The keys seeded in queue `q` before the call.
    fn seed(&self, q: &str) -> St;
    /// The whole state of queue `q`'s partition after the call.
    fn want(&self, q: &str) -> St;
    /// The wake-up messages the call publishes (none unless the table says).
    fn msgs(&self) -> &[M] {
        &[]
    }
}

/// Implements [`Case`] for a table's row type from its fields `name`, `seed` and `want` (both
/// `fn(&str) -> St`), and `msgs` when named.
macro_rules! table_case {
    ($t:ty) => {
        impl Case for $t {
            fn name(&self) -> &'static str {
                self.name
            }
            fn seed(&self, q: &str) -> St {
                (self.seed)(q)
            }
            fn want(&self, q: &str) -> St {
                (self.want)(q)
            }
        }
    };
    ($t:ty, msgs) => {
        impl Case for $t {
            fn name(&self) -> &'static str {
                self.name
            }
            fn seed(&self, q: &str) -> St {
                (self.seed)(q)
            }
            fn want(&self, q: &str) -> St {
                (self.want)(q)
            }
            fn msgs(&self) -> &[M] {
                &self.msgs
            }
        }
    };
}
pub(crate) use table_case;

/// The runner loop of every table, written once: one throwaway Redis; each case in its own queue
/// `<prefix><i>`, seeded, called once through `call`, its reply checked by `check`, then the
/// whole resulting state of the partition and the messages published asserted.
pub(crate) async fn run_table<C: Case, T>(
    prefix: &str,
    cases: &[C],
    call: impl AsyncFn(&C, &Store, &Partition) -> T,
    check: impl Fn(&C, &Ran<T>),
) {
    let fx = fx().await;
    for (i, case) in cases.iter().enumerate() {
        let q = format!("{prefix}{i}");
        let ran = run(&fx, &q, &case.seed(&q), async |s, p| call(case, s, p).await).await;
        check(case, &ran);
        let mut conn = fx.server.conn();
        assert_state(&mut conn, &ran.p, &case.want(&q), ran.clock, case.name());
        assert_msgs(&ran.msgs, case.msgs(), ran.clock, case.name());
    }
}

pub(crate) fn new_task(id: &str, due: Due, priority: u8) -> NewTask {
    NewTask {
        id: id.into(),
        name: "job".into(),
        args: ARGS.to_vec(),
        due,
        max_retries: 3,
        timeout_ms: 30_000,
        priority,
        headers: vec![],
        expires: None,
    }
}

/// The record `enqueue.lua` writes for [`new_task`], due at `run_at`.
pub(crate) fn enqueued(state: &str, priority: i64, run_at: W) -> Rec {
    Rec::new(state)
        .with("priority", priority)
        .with("run_at", run_at)
        .with("enqueued_at", W::Now(0))
}

/// A task in state `state` with priority `priority`, due at `run_at`.
pub(crate) fn at(state: &str, priority: i64, run_at: i64) -> Rec {
    Rec::new(state)
        .with("priority", priority)
        .with("run_at", run_at)
}

/// A ready task with priority `priority`, due at `run_at`, as in a ready set.
pub(crate) fn ready_task(priority: i64, run_at: i64) -> Rec {
    at("ready", priority, run_at)
}

/// What claim makes of a task: running under worker `w1`, started now.
pub(crate) fn claimed(rec: Rec, token: i64, attempts: i64) -> Rec {
    rec.with("state", "running")
        .with("token", token)
        .with("attempts", attempts)
        .with("worker", "w1")
        .with("started_at", W::Now(0))
}

/// What ack makes of a running task: succeeded now, no worker.
pub(crate) fn succeeded(rec: Rec) -> Rec {
    rec.with("state", "succeeded")
        .with("finished_at", W::Now(0))
}

/// What retry makes of a running task with retries left: scheduled at now + `delay`.
pub(crate) fn rescheduled(rec: Rec, error: &str, delay: i64) -> Rec {
    rec.with("state", "scheduled")
        .with("run_at", W::Now(delay))
        .with("error", error)
        .without("worker")
}

/// A task whose lease (token 3, attempt 1) expired and was reaped back to ready.
pub(crate) fn reaped() -> Rec {
    ready_task(5, 1000)
        .with("token", 3)
        .with("attempts", 1)
        .with("error", "lease expired: worker lost during attempt 1")
}

/// What retry makes of a running task with no retries left: dead now.
pub(crate) fn buried(rec: Rec, error: &str) -> Rec {
    rec.with("state", "dead")
        .with("error", error)
        .with("finished_at", W::Now(0))
        .without("worker")
}

/// A task that succeeded at 990 (seed value).
pub(crate) fn succeeded_at() -> Rec {
    running(2, 1)
        .with("state", "succeeded")
        .with("finished_at", 990)
}

/// A task that died at 990 on its fourth run, with lease token 4.
pub(crate) fn dead_at() -> Rec {
    Rec::new("dead")
        .with("attempts", 4)
        .with("token", 4)
        .with("started_at", 950)
        .with("error", "boom")
        .with("finished_at", 990)
}

/// What requeue makes of [`dead_at`]: ready now, attempts 0, error and token kept.
pub(crate) fn requeued() -> Rec {
    dead_at()
        .with("state", "ready")
        .with("attempts", 0)
        .with("run_at", W::Now(0))
        .without("finished_at")
}
